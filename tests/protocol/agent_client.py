#!/usr/bin/env python3
"""Independent client of the che-backup agent control protocol, version 1.

Written from protocol.md only, to check that the specification and the agent agree.
Library: AgentConnection, handshake(), seal_secrets(), backup_message(), restore_message(),
run_request().
Command line: ``agent_client.py --address ADDR --token-file FILE conformance
[--files-repo URL --repo-password PW]`` runs a battery of checks against a running agent.
``... backup --repo URL [--parts A,B]`` and ``... restore --repo URL --snapshot ID [--parts A,B]``
drive one backup or restore (benchmarks) and print a JSON summary line; the repository password
comes from --repo-password or $BACKUP_REPOSITORY_PASSWORD. A backup writes no snapshot (only the
controller does): restore a snapshot that `chebackup server:backup` wrote.
"""

import argparse
import base64
import hashlib
import hmac
import itertools
import json
import os
import random
import socket
import sys
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PROTOCOLS = [1]
TIMEOUT = 15.0
MAX_LINE = 1 << 20
CONTROLLER_LABEL = b"chebackup-controller-v1"
AGENT_LABEL = b"chebackup-agent-v1"
SESSION_LABEL = b"chebackup-session-v1"
ERROR_CODES = {"bad_json", "line_too_long", "unknown_type", "invalid_request",
               "unsupported_version", "unauthorized", "out_of_order", "busy", "unknown_request",
               "cancelled", "repository", "source_failed", "restore_failed", "internal"}


class ProtocolError(Exception):
    """The agent broke the protocol, or the conversation did not go as a check expects."""


def b64(data):
    """Standard base64 of bytes, as text."""
    return base64.b64encode(data).decode("ascii")


def unb64(text):
    """Strictly decode standard base64; raise ProtocolError if it is not."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError, AttributeError) as error:
        raise ProtocolError(f"not base64: {text!r}") from error


def proof(token, label, agent_nonce, controller_nonce):
    """HMAC-SHA256(token, label ‖ Na ‖ Nc): the proofs and the session key."""
    return hmac.new(token, label + agent_nonce + controller_nonce, hashlib.sha256).digest()


def seal_secrets(session_key, request_id, secrets):
    """Seal RepositorySecrets: base64(nonce ‖ ciphertext ‖ tag), AAD "secrets:" + id."""
    nonce = os.urandom(12)
    sealed = AESGCM(session_key).encrypt(nonce, json.dumps(secrets).encode(),
                                         b"secrets:" + request_id.encode())
    return b64(nonce + sealed)


def backup_message(request_id, url, box, parts=None):
    """A backup request for repository `url` with an already sealed secrets box."""
    message = {"type": "backup", "id": request_id,
               "repository": {"url": url, "secrets": {"box": box}}}
    if parts is not None:
        message["parts"] = parts
    return message


def restore_message(request_id, url, box, snapshot, parts=None):
    """A restore request of `snapshot` (64 hex digits) with an already sealed secrets box."""
    message = {"type": "restore", "id": request_id, "snapshot": snapshot,
               "repository": {"url": url, "secrets": {"box": box}}}
    if parts is not None:
        message["parts"] = parts
    return message


class AgentConnection:
    """One connection to an agent: line framing, an inbox of unclaimed messages, a raw log."""

    def __init__(self, address, timeout=TIMEOUT):
        """Connect to `HOST:PORT` or `unix:/path`; every receive times out after `timeout`."""
        if address.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = address[len("unix:"):]
        else:
            host, _, port = address.rpartition(":")
            self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            target = (host.strip("[]"), int(port))
        self.sock.settimeout(timeout)
        self.sock.connect(target)
        self.buffer = b""
        self.received = bytearray()   # everything the agent sent, to look for leaked secrets
        self.inbox = []               # messages read but not yet claimed
        self.finished = set()         # ids whose final message arrived
        self.stray = []               # messages about a request after its final message
        self.hello = self.session_key = None

    def close(self):
        """Close the socket."""
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, message):
        """Send one JSON message as a line."""
        self.send_raw(json.dumps(message).encode() + b"\n")

    def send_raw(self, data):
        """Send raw bytes (the caller supplies the newlines)."""
        self.sock.sendall(data)

    def read_line(self):
        """The next non-empty line without its "\\r\\n"; ProtocolError if the agent closes."""
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                if line.removesuffix(b"\r"):
                    return line.removesuffix(b"\r")
            chunk = self.sock.recv(65536)   # raises socket.timeout: a check never hangs
            if not chunk:
                raise ProtocolError("connection closed by the agent")
            self.received += chunk
            self.buffer += chunk

    def read_message(self):
        """The next message from the socket; it must be a JSON object with a string type."""
        line = self.read_line()
        try:
            message = json.loads(line)
        except ValueError as error:
            raise ProtocolError(f"agent sent a line that is not JSON: {line[:200]!r}") from error
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ProtocolError(f"agent sent a line that is not a typed object: {line[:200]!r}")
        if message.get("id") in self.finished:
            self.stray.append(message)
        return message

    def take(self, predicate):
        """The first message (inbox first) matching `predicate`; others go to the inbox."""
        for index, message in enumerate(self.inbox):
            if predicate(message):
                return self.inbox.pop(index)
        while True:
            message = self.read_message()
            if predicate(message):
                return message
            self.inbox.append(message)

    def next_error(self, without_id=False):
        """The next error message (only one without an id, if asked)."""
        return self.take(lambda m: m["type"] == "error" and not (without_id and "id" in m))

    def final(self, request_id):
        """Collect events for `request_id` until its result or error: (final, events)."""
        events = []
        while True:
            try:
                message = self.take(lambda m: m.get("id") == request_id)
            except socket.timeout as error:
                raise ProtocolError(f"no final message for {request_id} within {TIMEOUT:g} s "
                                    f"(after {len(events)} events)") from error
            if message["type"] == "event":
                events.append(message)
            elif message["type"] in ("result", "error"):
                self.finished.add(request_id)
                return message, events
            else:
                raise ProtocolError(f"unexpected message for {request_id}: {message}")

    def request(self, message):
        """Send a request and wait for its final message: (final, events)."""
        self.send(message)
        return self.final(message["id"])

    def expect_closed(self):
        """Raise ProtocolError unless the agent closes the connection within the timeout."""
        if self.buffer.strip() or self.inbox:
            raise ProtocolError(f"unexpected data before close: {self.buffer[:200]!r}")
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return
        except socket.timeout as error:
            raise ProtocolError("the agent did not close the connection") from error
        if chunk:
            raise ProtocolError(f"the agent sent more instead of closing: {chunk[:200]!r}")


def read_hello(conn):
    """Read the agent's hello and check its fields and types."""
    hello = conn.read_message()
    if hello["type"] != "hello":
        raise ProtocolError(f"first message is not hello: {hello}")
    for field, kind in (("protocols", list), ("role", str), ("agentVersion", str),
                        ("installationId", str), ("capabilities", list), ("nonce", str)):
        if not isinstance(hello.get(field), kind):
            raise ProtocolError(f"hello.{field} missing or not a {kind.__name__}: {hello}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in hello["protocols"]):
        raise ProtocolError(f"hello.protocols holds a non-integer: {hello['protocols']}")
    if not all(isinstance(v, str) for v in hello["capabilities"]):
        raise ProtocolError(f"hello.capabilities holds a non-string: {hello['capabilities']}")
    if hello["role"] not in ("postgres", "files"):
        raise ProtocolError(f"hello.role is {hello['role']!r}")
    if len(unb64(hello["nonce"])) != 32:
        raise ProtocolError("hello.nonce is not 32 bytes")
    conn.hello = hello
    return hello


def handshake(conn, token, protocol=None, proof_token=None):
    """Authenticate: send auth, verify the agent's proof in welcome, derive the session key.

    `protocol` and `proof_token` override the version and the token of our proof (negative
    checks); with an override the agent's reply is returned unverified.
    """
    hello = read_hello(conn)
    common = sorted(set(hello["protocols"]) & set(PROTOCOLS))
    if protocol is None and not common:
        conn.close()
        raise ProtocolError(f"no common version: agent {hello['protocols']}, us {PROTOCOLS}")
    agent_nonce, controller_nonce = unb64(hello["nonce"]), os.urandom(32)
    mine = proof(proof_token or token, CONTROLLER_LABEL, agent_nonce, controller_nonce)
    conn.send({"type": "auth", "protocol": protocol or common[-1],
               "nonce": b64(controller_nonce), "proof": b64(mine)})
    reply = conn.read_message()
    if protocol is not None or proof_token is not None:
        return reply
    expected = proof(token, AGENT_LABEL, agent_nonce, controller_nonce)
    if reply["type"] != "welcome" or not isinstance(reply.get("proof"), str) \
            or not hmac.compare_digest(unb64(reply["proof"]), expected):
        conn.close()   # an impostor learns nothing and gets no secrets
        raise ProtocolError(f"expected a welcome with the agent's correct proof, got {reply}")
    conn.session_key = proof(token, SESSION_LABEL, agent_nonce, controller_nonce)
    return reply


# Conformance checks: each takes the options, returns an optional note, raises on failure. --

def expect_error(message, code, request_id=None):
    """Raise ProtocolError unless `message` is an error with `code` (and `request_id`)."""
    if message.get("type") != "error" or message.get("code") != code:
        raise ProtocolError(f"expected error {code}, got {message}")
    if not isinstance(message.get("message"), str):
        raise ProtocolError(f"error without a message string: {message}")
    if request_id is not None and message.get("id") != request_id:
        raise ProtocolError(f"error should carry id {request_id!r}: {message}")


def authed(opts):
    """A new authenticated connection."""
    conn = AgentConnection(opts.address)
    handshake(conn, opts.token)
    return conn


def ping_works(conn, request_id="p-after"):
    """Raise ProtocolError unless a ping on `conn` gets result state pong."""
    final, _ = conn.request({"type": "ping", "id": request_id})
    if final.get("type") != "result" or final.get("state") != "pong":
        raise ProtocolError(f"ping: {final}")


def status(conn, request_id):
    """(state, running) from a status request."""
    final, _ = conn.request({"type": "status", "id": request_id})
    if final.get("type") != "result":
        raise ProtocolError(f"status: {final}")
    return final.get("state"), final.get("running")


def check_hello(opts):
    """hello is well-formed and offers protocol 1."""
    with AgentConnection(opts.address) as conn:
        hello = read_hello(conn)
        if 1 not in hello["protocols"]:
            raise ProtocolError(f"protocols lacks 1: {hello['protocols']}")
        return f"role {hello['role']}, {hello['agentVersion']}, {hello['capabilities']}"


def check_auth_ping_status(opts):
    """Good auth gets a welcome with the right proof; ping says pong, status idle."""
    with authed(opts) as conn:
        ping_works(conn, "p1")
        if status(conn, "s1")[0] != "idle":
            raise ProtocolError("status is not idle")


def refused(opts, code, misbehave):
    """Read hello, let `misbehave(conn, hello)` send; expect an error (`code`) and a close."""
    with AgentConnection(opts.address) as conn:
        misbehave(conn, read_hello(conn))
        reply = conn.read_message()
        if code is not None:
            expect_error(reply, code)
        elif reply["type"] != "error":
            raise ProtocolError(f"expected an error, got {reply}")
        conn.expect_closed()
        return f"code {reply['code']}"


def check_wrong_token(opts):
    """A wrong proof gets unauthorized and a close; so does a malformed nonce (any code)."""
    with AgentConnection(opts.address) as conn:
        expect_error(handshake(conn, opts.token, proof_token=b"not-the-token-0123"),
                     "unauthorized")
        conn.expect_closed()

    def short_nonce(conn, hello):
        """auth with a 16-byte nonce and a proof over it."""
        nonce = os.urandom(16)
        mine = proof(opts.token, CONTROLLER_LABEL, unb64(hello["nonce"]), nonce)
        conn.send({"type": "auth", "protocol": 1, "nonce": b64(nonce), "proof": b64(mine)})
    return "16-byte nonce: " + refused(opts, None, short_nonce)


def check_request_before_auth(opts):
    """A ping before auth gets out_of_order and a close."""
    refused(opts, "out_of_order", lambda conn, _: conn.send({"type": "ping", "id": "p0"}))


def check_garbage_before_auth(opts):
    """A non-JSON line before auth gets bad_json and a close."""
    refused(opts, "bad_json", lambda conn, _: conn.send_raw(b"not json\n"))


def check_unsupported_version(opts):
    """auth with protocol 99 (correct proof) gets unsupported_version and a close."""
    with AgentConnection(opts.address) as conn:
        expect_error(handshake(conn, opts.token, protocol=99), "unsupported_version")
        conn.expect_closed()


def check_bad_json_after_auth(opts):
    """After auth a non-JSON line gets bad_json and the connection still works."""
    with authed(opts) as conn:
        conn.send_raw(b"this is not json\n")
        expect_error(conn.next_error(without_id=True), "bad_json")
        ping_works(conn)


def check_malformed_messages(opts):
    """Array, no type, unknown type, non-string id, missing fields: stable codes."""
    with authed(opts) as conn:
        conn.send_raw(b"[1, 2, 3]\n")
        expect_error(conn.next_error(without_id=True), "bad_json")
        conn.send({"id": "nt1", "hello": "no type"})
        untyped = conn.next_error()
        if untyped.get("code") not in ("invalid_request", "unknown_type"):
            raise ProtocolError(f"object without type: {untyped}")
        conn.send({"type": "frobnicate", "id": "u1"})
        expect_error(conn.next_error(), "unknown_type", "u1")
        for message, request_id in (({"type": "ping", "id": 42}, None), ({"type": "ping"}, None),
                                    ({"type": "cancel", "id": "c-no-target"}, "c-no-target")):
            conn.send(message)
            expect_error(conn.next_error(), "invalid_request", request_id)
        ping_works(conn)
    return f"object without type -> {untyped['code']}"


def check_oversize_line(opts):
    """A line twice the limit gets line_too_long; the connection and the agent live on."""
    with authed(opts) as conn:
        conn.send_raw(b"A" * (2 * opts.max_line_length) + b"\n")
        expect_error(conn.next_error(without_id=True), "line_too_long")
        ping_works(conn)
    with authed(opts) as conn:
        ping_works(conn)


def fuzz_lines(rng, count):
    """`count` malformed lines (no newline inside, never blank), each worth one error."""
    ping = b'{"type":"ping","id":"fz"}'
    fixed = [b"[" * 10000, b'{"a":' * 10000, b"[" * 10000 + b"]" * 10000, b"\x00" * 64,
             b'{"type":"ping\x00","id":"z"}', ping + b"\x00", b"\xff\xfe" + ping,
             '"h\u00e9llo \u2713 \U0001F389"'.encode(), b'"\\ud800"', b"null", b"123",
             '{"type":"p\u00efng","id":"\u00fc"}'.encode(), b"true", b"[]", b"}{",
             b'{"type":"status"}', b'{"type":"backup","id":"fb"}', b'{"type":"cancel"}',
             b'{"type":"ping","id":"x"', b"\r\r\rx\r"]
    tokens = [b"{", b"[", b'"', b":", b",", b"1", b"true", b"null", b"}", b"]"]
    lines = []
    for index in range(count):
        if index < len(fixed):
            line = fixed[index]
        elif index % 4 == 0:
            line = rng.randbytes(rng.randint(1, rng.choice([100, 3000, 100000])))
        elif index % 4 == 1:
            line = ping[:rng.randint(1, len(ping) - 1)]
        elif index % 4 == 2:
            line = "".join(chr(rng.choice([rng.randint(0x20, 0xD7FF),
                                           rng.randint(0xE000, 0x10FFFF)]))
                           for _ in range(rng.randint(1, 200))).encode()
        else:
            line = rng.choice(tokens) * rng.randint(1, 5000)
        line = line.replace(b"\n", b"?")
        if not line.replace(b"\r", b"").strip(b" \t"):
            line = b"?" + line
        lines.append(line)
    return lines


def check_fuzz(opts):
    """200 malformed lines at once: one error each, then ping works, and a new connection."""
    seed = random.randrange(1 << 30)
    lines = fuzz_lines(random.Random(seed), 200)
    with authed(opts) as conn:
        conn.send_raw(b"".join(line + b"\n" for line in lines))
        ping_works(conn, "after-fuzz")
        replies = conn.inbox
        bad = [m for m in replies if m["type"] != "error" or m.get("code") not in ERROR_CODES]
        if bad or len(replies) != len(lines):
            raise ProtocolError(f"seed {seed}: {len(lines)} lines, {len(replies)} replies, "
                                f"not errors: {bad[:3]}")
    with authed(opts) as conn:
        ping_works(conn)
    return f"seed {seed}, codes {sorted({m['code'] for m in replies})}"


def check_controller_only(opts):
    """Well-formed hello, welcome, event, result, error and a second auth: out_of_order."""
    nonce = b64(os.urandom(32))
    messages = [{"type": "hello", "protocols": [1], "role": "files", "agentVersion": "x",
                 "installationId": "x", "capabilities": ["ping"], "nonce": nonce},
                {"type": "welcome", "proof": nonce},
                {"type": "event", "id": "o1", "stage": "x", "bytes": 0, "items": 0},
                {"type": "result", "id": "o2", "state": "pong"},
                {"type": "error", "id": "o3", "code": "internal", "message": "x"},
                {"type": "auth", "protocol": 1, "nonce": nonce, "proof": nonce}]
    with authed(opts) as conn:
        for message in messages:
            conn.send(message)
            expect_error(conn.next_error(), "out_of_order")
        ping_works(conn)


def check_cancel_unknown(opts):
    """cancel naming no running request gets unknown_request."""
    with authed(opts) as conn:
        final, _ = conn.request({"type": "cancel", "id": "c1", "target": "nothing-runs"})
        expect_error(final, "unknown_request", "c1")


def check_bad_secrets(opts):
    """Secrets sealed for another id, under another key, or not a box: invalid_request."""
    url = opts.files_repo or "local:/nonexistent/repository"
    with authed(opts) as conn:
        boxes = {"bx1": seal_secrets(conn.session_key, "other-id", {"repositoryPassword": "x"}),
                 "bx2": seal_secrets(os.urandom(32), "bx2", {"repositoryPassword": "x"}),
                 "bx3": b64(b"not a box")}
        for request_id, box in boxes.items():
            final, _ = conn.request(backup_message(request_id, url, box))
            expect_error(final, "invalid_request", request_id)


def sealed_backup(conn, opts, request_id):
    """A correctly sealed backup request for the files repository."""
    box = seal_secrets(conn.session_key, request_id, {"repositoryPassword": opts.repo_password})
    return backup_message(request_id, opts.files_repo, box)


def check_events(events, request_id):
    """Raise ProtocolError unless every event has the fields of the spec."""
    for event in events:
        if not (event.get("id") == request_id and isinstance(event.get("stage"), str)
                and isinstance(event.get("bytes"), int) and isinstance(event.get("items"), int)
                and isinstance(event.get("totalBytes", 0), int)):
            raise ProtocolError(f"malformed event: {event}")


def no_leak(conn, opts):
    """Raise ProtocolError if the repository password is in anything the agent sent."""
    if opts.repo_password.encode() in conn.received:
        raise ProtocolError("the repository password appears in what the agent sent")


def wait_idle(opts, seconds=30):
    """Poll status on a new connection until idle; return the number of polls."""
    deadline = time.monotonic() + seconds
    with authed(opts) as conn:
        for polls in itertools.count(1):
            state = status(conn, f"sd{polls}")
            if state[0] == "idle":
                return polls
            if time.monotonic() > deadline:
                raise ProtocolError(f"still {state} {seconds} s later")
            time.sleep(0.2)


def check_backup_busy(opts):
    """While b1 runs, b2 gets busy (and nothing after that); status says busy with b1."""
    with authed(opts) as conn:
        conn.send(sealed_backup(conn, opts, "b1"))
        final, _ = conn.request(sealed_backup(conn, opts, "b2"))
        expect_error(final, "busy", "b2")
        state = status(conn, "s1")
        if state != ("busy", "b1"):
            raise ProtocolError(f"status while b1 runs: {state}")
        time.sleep(2)   # let messages about b2 that should not exist show up
        ping_works(conn)
        no_leak(conn, opts)
        if conn.stray:
            raise ProtocolError(f"messages after the final error of b2: {conn.stray[:2]}")
    return f"idle {wait_idle(opts)} status polls after disconnecting from b1"


def check_backup_cancel(opts):
    """cancel of a running b1 says cancelling; b1 ends cancelled (or had finished); idle."""
    with authed(opts) as conn:
        conn.send(sealed_backup(conn, opts, "b1"))
        conn.inbox.insert(0, conn.take(lambda m: m.get("id") == "b1"))   # b1 is running
        cancel, _ = conn.request({"type": "cancel", "id": "c1", "target": "b1"})
        final, events = conn.final("b1")
        check_events(events, "b1")
        if final["type"] == "error":
            expect_error(final, "cancelled", "b1")
        if cancel.get("type") == "error" and final["type"] == "result":
            expect_error(cancel, "unknown_request", "c1")   # b1 finished before the cancel
        elif (cancel.get("type"), cancel.get("state"), cancel.get("running")) != \
                ("result", "cancelling", "b1"):
            raise ProtocolError(f"cancel of running b1 answered {cancel}")
        state = status(conn, "s2")
        if state[0] != "idle":
            raise ProtocolError(f"status right after b1 ended: {state}")
        no_leak(conn, opts)
    return (f"b1 cancelled after {len(events)} events" if final["type"] == "error"
            else "b1 had already finished: result")


def check_backup_full(opts):
    """b3 runs to completion: events with stages, a result with well-formed parts."""
    with authed(opts) as conn:
        final, events = conn.request(sealed_backup(conn, opts, "b3"))
        if final["type"] != "result":
            raise ProtocolError(f"b3: {final}")
        check_events(events, "b3")
        parts = final.get("parts")
        if not isinstance(parts, list) or not parts or not all(
                isinstance(p, dict) and isinstance(p.get("name"), str)
                and p.get("kind") in ("tree", "stream") and "root" in p for p in parts):
            raise ProtocolError(f"b3 parts malformed: {str(parts)[:300]}")
        if not events:
            raise ProtocolError("b3 sent no events")
        no_leak(conn, opts)
    short = "; password too short for the leak check" if len(opts.repo_password) < 8 else ""
    return (f"parts {[p['name'] for p in parts]}, {len(events)} events, "
            f"stages {sorted({e['stage'] for e in events})[:4]}{short}")


def check_disconnect_mid_backup(opts):
    """Closing the socket mid-backup cancels it: a new connection sees idle within 30 s."""
    with authed(opts) as conn:
        conn.send(sealed_backup(conn, opts, "bd1"))
    return f"idle after {wait_idle(opts)} status polls"


# Driving one backup or restore (benchmarks) ---------------------------------------------------

def run_request(conn, message):
    """Send a backup or restore, wait for its final message: (final, events, seconds)."""
    start = time.monotonic()
    conn.send(message)
    final, events = conn.final(message["id"])
    return final, events, time.monotonic() - start


def drive(opts):
    """backup or restore once through the agent; print a JSON summary; return the exit code."""
    password = opts.repo_password or os.environ.get("BACKUP_REPOSITORY_PASSWORD")
    if not opts.repo or not password:
        print("agent_client: backup and restore need --repo and a repository password "
              "(--repo-password or $BACKUP_REPOSITORY_PASSWORD)", file=sys.stderr)
        return 2
    if opts.mode == "restore" and not opts.snapshot:
        print("agent_client: restore needs --snapshot ID", file=sys.stderr)
        return 2
    parts = opts.parts.split(",") if opts.parts else None
    start = time.monotonic()
    with AgentConnection(opts.address, timeout=opts.timeout) as conn:
        handshake(conn, opts.token)
        request_id = f"{opts.mode[0]}{os.getpid()}"
        box = seal_secrets(conn.session_key, request_id, {"repositoryPassword": password})
        if opts.mode == "backup":
            message = backup_message(request_id, opts.repo, box, parts)
        else:
            message = restore_message(request_id, opts.repo, box, opts.snapshot, parts)
        final, events, seconds = run_request(conn, message)
    summary = {"mode": opts.mode, "seconds": round(seconds, 3),
               "sessionSeconds": round(time.monotonic() - start, 3), "events": len(events),
               "stages": sorted({e.get("stage", "") for e in events})}
    if final["type"] != "result":
        summary["error"] = {"code": final.get("code"), "message": final.get("message")}
        print(json.dumps(summary))
        return 1
    if opts.mode == "backup":
        summary["parts"] = [{"name": p.get("name"), "kind": p.get("kind"), "stats": p.get("stats")}
                            for p in final.get("parts") or []]
        summary["bytes"] = sum((p.get("stats") or {}).get("bytes", 0) for p in final.get("parts") or [])
    else:
        summary["restored"] = final.get("restored")
    print(json.dumps(summary))
    return 0


CHECKS = [("hello", check_hello, False),
          ("auth-ping-status", check_auth_ping_status, False),
          ("wrong-token", check_wrong_token, False),
          ("request-before-auth", check_request_before_auth, False),
          ("garbage-before-auth", check_garbage_before_auth, False),
          ("unsupported-version", check_unsupported_version, False),
          ("bad-json-after-auth", check_bad_json_after_auth, False),
          ("malformed-messages", check_malformed_messages, False),
          ("oversize-line", check_oversize_line, False),
          ("fuzz", check_fuzz, False),
          ("controller-only-types", check_controller_only, False),
          ("cancel-unknown", check_cancel_unknown, False),
          ("bad-secrets", check_bad_secrets, False),
          ("backup-busy", check_backup_busy, True),
          ("backup-cancel", check_backup_cancel, True),
          ("backup-full", check_backup_full, True),
          ("disconnect-mid-backup", check_disconnect_mid_backup, True)]


def conformance(opts):
    """Run every check, print PASS/FAIL (or SKIP) lines and the tally; return the exit code."""
    passed = failed = 0
    for name, check, needs_repo in CHECKS:
        if needs_repo and not (opts.files_repo and opts.repo_password):
            print(f"SKIP {name}: needs --files-repo and --repo-password", flush=True)
            continue
        try:
            if needs_repo:
                wait_idle(opts)   # a backup check starts from an idle agent
            note = check(opts)
        except Exception as error:   # pylint: disable=broad-except  (report, go on)
            print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
            failed += 1
        else:
            print(f"PASS {name}" + (f" ({note})" if note else ""), flush=True)
            passed += 1
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def main(argv=None):
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="HOST:PORT or unix:/path")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--files-repo", help="repository URL a files agent can reach")
    parser.add_argument("--repo-password")
    parser.add_argument("--max-line-length", type=int, default=MAX_LINE,
                        help="the agent's --max-line-length")
    parser.add_argument("--repo", help="backup, restore: repository URL the agent can reach")
    parser.add_argument("--parts", help="backup, restore: comma-separated part names (default: all)")
    parser.add_argument("--snapshot", help="restore: snapshot id (64 hex digits)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="backup, restore: seconds to wait for any message from the agent")
    parser.add_argument("mode", choices=["conformance", "backup", "restore"])
    opts = parser.parse_args(argv)
    with open(opts.token_file, "rb") as handle:
        opts.token = handle.read().strip()
    if opts.mode in ("backup", "restore"):
        return drive(opts)
    return conformance(opts)


if __name__ == "__main__":
    sys.exit(main())
