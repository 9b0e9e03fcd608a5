#!/usr/bin/env python3
"""Independent client of the che-backup agent control protocol, version 2.

Written from protocol.md only, to check that the specification and the agent agree.
Library: AgentConnection (line framing; once `welcome` is verified every line it sends is
wrapped in an envelope and every line it receives is verified: MAC and sequence number),
handshake(), proof(), line_mac(), envelope_line(), open_envelope(), seal_secrets(),
backup_message(), restore_message(), run_request().
Command line: ``agent_client.py --address ADDR --token-file FILE conformance
[--files-repo URL --repo-password PW] [--handshake-timeout-expected S]
[--max-pending-expected N] [--max-line-length N]`` runs a battery of checks against a running
agent (the last line is ``N passed, M failed``). The agent's --handshake-timeout,
--max-pending-connections and --max-line-length must match the three expectations (defaults
10 s, 64, 1 MiB); a short handshake time-out (e.g. 2) keeps the run short.
``... backup --repo URL [--parts A,B]`` and ``... restore --repo URL --snapshot ID [--parts A,B]``
drive one backup or restore (benchmarks) and print a JSON summary line; the repository password
comes from --repo-password or $BACKUP_REPOSITORY_PASSWORD. A backup writes no snapshot (only the
controller does): restore a snapshot that `chebackup server:backup` wrote.
A man in the middle for tests is in tamper_proxy.py, next to this file.
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
import threading
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PROTOCOLS = [2]
TIMEOUT = 60.0                  # only a bound on a hang: a loaded machine makes a debug agent slow
MAX_LINE = 1 << 20             # after auth, from the controller (agent option --max-line-length)
PRE_AUTH_MAX_LINE = 4 << 10    # before auth
MAX_AGENT_LINE = 64 << 20      # from an agent
HANDSHAKE_TIMEOUT = 30.0       # agent option --handshake-timeout
MAX_PENDING = 64               # agent option --max-pending-connections
CONTROLLER_LABEL = b"chebackup-controller-v2"
AGENT_LABEL = b"chebackup-agent-v2"
SESSION_LABEL = b"chebackup-session-v2"
CONTROLLER_MAC_LABEL = b"chebackup-mac-controller-v2"
AGENT_MAC_LABEL = b"chebackup-mac-agent-v2"
ERROR_CODES = {"bad_json", "line_too_long", "unknown_type", "invalid_request",
               "unsupported_version", "unauthorized", "tampered", "out_of_order", "busy",
               "unknown_request", "cancelled", "repository", "source_failed", "restore_failed",
               "internal"}


class ProtocolError(Exception):
    """The agent broke the protocol, or the conversation did not go as a check expects."""


class TamperedLine(ProtocolError):
    """A line from the agent after `welcome` is not an authentic envelope with the next seq."""


def b64(data):
    """Standard base64 of bytes, as text."""
    return base64.b64encode(data).decode("ascii")


def unb64(text):
    """Strictly decode standard base64; raise ProtocolError if it is not."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError, AttributeError) as error:
        raise ProtocolError(f"not base64: {text!r}") from error


def version_bytes(version):
    """V: the chosen version as 4 bytes, big-endian."""
    return version.to_bytes(4, "big")


def proof(token, label, agent_nonce, controller_nonce, hello_hash=b"", version=b""):
    """HMAC-SHA256(token, label ‖ Na ‖ Nc ‖ H ‖ V): the proofs (with H and V) and the keys."""
    return hmac.new(token, label + agent_nonce + controller_nonce + hello_hash + version,
                    hashlib.sha256).digest()


def line_mac(key, seq, msg):
    """HMAC-SHA256(K, seq as 8 bytes big-endian ‖ UTF-8 bytes of msg)."""
    return hmac.new(key, seq.to_bytes(8, "big", signed=seq < 0) + msg.encode("utf-8"),
                    hashlib.sha256).digest()


def compact(message):
    """A message's JSON text, as sent."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def envelope_line(key, seq, msg):
    """The envelope (bytes, no newline) carrying message text `msg` as line number `seq`."""
    return compact({"mac": b64(line_mac(key, seq, msg)), "msg": msg, "seq": seq}).encode("utf-8")


def open_envelope(key, seq, line):
    """The message text of envelope `line` if its MAC (under `key`) and its seq (`seq`) verify.

    Raise TamperedLine otherwise: a line that is not such an envelope ends the connection.
    """
    try:
        envelope = json.loads(line)
    except ValueError as error:
        raise TamperedLine(f"line {seq} is not JSON: {line[:200]!r}") from error
    if not isinstance(envelope, dict) or not isinstance(envelope.get("msg"), str) \
            or not isinstance(envelope.get("mac"), str) or type(envelope.get("seq")) is not int:
        raise TamperedLine(f"line {seq} is not an envelope: {line[:200]!r}")
    if envelope["seq"] != seq:
        raise TamperedLine(f"line {seq} carries seq {envelope['seq']}")
    try:
        expected = line_mac(key, seq, envelope["msg"])
    except UnicodeEncodeError as error:   # a lone surrogate: no UTF-8 bytes to authenticate
        raise TamperedLine(f"line {seq}: msg is not Unicode text") from error
    try:
        mac = unb64(envelope["mac"])
    except ProtocolError as error:
        raise TamperedLine(f"line {seq}: mac is not base64") from error
    if not hmac.compare_digest(mac, expected):
        raise TamperedLine(f"line {seq}: wrong MAC")
    return envelope["msg"]


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


def restore_message(request_id, url, box, snapshot, parts=None, rewrite=None,
                    keep_extraneous=None):
    """A restore request of `snapshot` (64 hex digits) with an already sealed secrets box.

    `rewrite` is a list of (from, to) pairs (postgres role), `keep_extraneous` a bool (files).
    """
    message = {"type": "restore", "id": request_id, "snapshot": snapshot,
               "repository": {"url": url, "secrets": {"box": box}}}
    if parts is not None:
        message["parts"] = parts
    if rewrite is not None:
        message["rewrite"] = [{"from": old, "to": new} for old, new in rewrite]
    if keep_extraneous is not None:
        message["keepExtraneous"] = keep_extraneous
    return message


def connect(address, timeout):
    """A socket connected to `HOST:PORT` or `unix:/path`."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = address[len("unix:"):]
    else:
        host, _, port = address.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        target = (host.strip("[]"), int(port))
    sock.settimeout(timeout)
    sock.connect(target)
    return sock


class AgentConnection:
    """One connection to an agent: framing, envelopes after `welcome`, an inbox, a raw log.

    Before `welcome`, send() writes plain lines and read_message() reads plain lines. Once
    handshake() has verified the agent's proof it calls start_envelopes(): from then on send()
    wraps each message in an envelope numbered from 0 (MAC under Kc) and read_message() accepts
    only envelopes from the agent with the next seq and a MAC under Ka (TamperedLine otherwise).
    read_message() also enforces ordering invariant 7: a message about a request whose final
    message arrived, or an event for a request never sent, is a ProtocolError.
    """

    def __init__(self, address, timeout=TIMEOUT):
        """Connect to `HOST:PORT` or `unix:/path`; every receive times out after `timeout`."""
        self.sock = connect(address, timeout)
        self.buffer = b""
        self.received = bytearray()   # everything the agent sent, to look for leaked secrets
        self.inbox = []               # messages read but not yet claimed
        self.finished = set()         # ids whose final message arrived
        self.sent_ids = set()         # ids of the messages sent (an event needs its request)
        self.hello = self.hello_line = self.session_key = None
        self.send_key = self.receive_key = None   # Kc, Ka once welcome is verified
        self.send_seq = self.receive_seq = 0
        self.last_line = None         # the last line received, as it came (without "\r\n")

    def close(self):
        """Close the socket."""
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def enveloped(self):
        """True once lines are envelopes (after a verified welcome)."""
        return self.send_key is not None

    def start_envelopes(self, controller_key, agent_key):
        """From now on, lines are envelopes: ours MACed with Kc, the agent's checked with Ka."""
        self.send_key, self.receive_key = controller_key, agent_key
        self.send_seq = self.receive_seq = 0

    def send(self, message):
        """Send one message: a plain line before welcome, the next envelope after it."""
        self.send_text(compact(message))

    def send_text(self, text):
        """Send message text `text` (any string, malformed ones too) the way send() does."""
        self._note_id(text)
        if self.enveloped:
            self.send_raw(self.next_envelope(text) + b"\n")
        else:
            self.send_raw(text.encode("utf-8") + b"\n")

    def next_envelope(self, text):
        """The envelope (bytes, no newline) for `text` with the next seq; uses up that seq."""
        line = envelope_line(self.send_key, self.send_seq, text)
        self.send_seq += 1
        return line

    def _note_id(self, text):
        try:
            message = json.loads(text, strict=False)
        except ValueError:
            return
        if isinstance(message, dict) and isinstance(message.get("id"), str):
            self.sent_ids.add(message["id"])

    def send_raw(self, data):
        """Send raw bytes (the caller supplies the newlines and any envelope)."""
        self.sock.sendall(data)

    def read_line(self):
        """The next non-empty line without its "\\r\\n"; ProtocolError if the agent closes."""
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                line = line.removesuffix(b"\r")
                if line:
                    self.last_line = line
                    return line
            if len(self.buffer) > MAX_AGENT_LINE:
                raise ProtocolError(f"agent line longer than {MAX_AGENT_LINE} bytes")
            try:
                chunk = self.sock.recv(65536)   # raises socket.timeout: a check never hangs
            except (ConnectionResetError, BrokenPipeError) as error:
                raise ProtocolError(f"connection reset by the agent: {error}") from error
            if not chunk:
                raise ProtocolError("connection closed by the agent")
            self.received += chunk
            self.buffer += chunk

    def read_message(self):
        """The next message from the socket (verified and opened after welcome)."""
        line = self.read_line()
        if self.enveloped:
            text = open_envelope(self.receive_key, self.receive_seq, line)
            self.receive_seq += 1
        else:
            text = line
        try:
            message = json.loads(text)
        except ValueError as error:
            raise ProtocolError(f"agent sent a message that is not JSON: {text[:200]!r}") \
                from error
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ProtocolError(f"agent sent a message that is not a typed object: {text[:200]!r}")
        request_id = message.get("id")
        if request_id in self.finished:
            raise ProtocolError(f"message about {request_id} after its final message: {message}")
        if message["type"] == "event" and request_id not in self.sent_ids:
            raise ProtocolError(f"event for a request never sent: {message}")
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
                raise ProtocolError(f"no final message for {request_id} within "
                                    f"{self.sock.gettimeout():g} s (after {len(events)} events)") \
                    from error
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
            raise ProtocolError(f"unexpected data before close: {self.buffer[:200]!r} "
                                f"{self.inbox[:2]}")
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
    conn.hello, conn.hello_line = hello, conn.last_line
    return hello


def padded(message, length, measure):
    """`message` with a field `pad` of "x"s so that len(measure(text)) == `length`."""
    base = len(measure(compact(dict(message, pad=""))))
    if base > length:
        raise ValueError(f"cannot pad to {length}: already {base}")
    return compact(dict(message, pad="x" * (length - base)))


def handshake(conn, token, protocol=None, proof_token=None, make_proof=None, auth_length=None):
    """Authenticate: send auth, verify the agent's proof in welcome, derive the keys.

    `protocol` (the version sent and put in V), `proof_token` (the token of our proof) and
    `make_proof(agent_nonce, controller_nonce, hello_hash, version)` (our whole proof) are
    overrides for negative checks; with one the agent's reply is returned unverified.
    `auth_length` pads the auth line to that many bytes (an ignored field `pad`).
    """
    hello = read_hello(conn)
    common = sorted(set(hello["protocols"]) & set(PROTOCOLS))
    if protocol is None and not common:
        conn.close()
        raise ProtocolError(f"no common version: agent {hello['protocols']}, us {PROTOCOLS}")
    chosen = common[-1] if protocol is None else protocol
    agent_nonce, controller_nonce = unb64(hello["nonce"]), os.urandom(32)
    hello_hash, version = hashlib.sha256(conn.hello_line).digest(), version_bytes(chosen)
    if make_proof is not None:
        mine = make_proof(agent_nonce, controller_nonce, hello_hash, version)
    else:
        mine = proof(proof_token or token, CONTROLLER_LABEL, agent_nonce, controller_nonce,
                     hello_hash, version)
    auth = {"type": "auth", "protocol": chosen, "nonce": b64(controller_nonce),
            "proof": b64(mine)}
    if auth_length is None:
        conn.send(auth)
    else:
        conn.send_text(padded(auth, auth_length, lambda text: text.encode("utf-8")))
    reply = conn.read_message()
    if protocol is not None or proof_token is not None or make_proof is not None:
        return reply
    expected = proof(token, AGENT_LABEL, agent_nonce, controller_nonce, hello_hash, version)
    if reply["type"] != "welcome" or not isinstance(reply.get("proof"), str) \
            or not hmac.compare_digest(unb64(reply["proof"]), expected):
        conn.close()   # an impostor learns nothing and gets no secrets
        raise ProtocolError(f"expected a welcome with the agent's correct proof, got {reply}")
    conn.session_key = proof(token, SESSION_LABEL, agent_nonce, controller_nonce)
    conn.start_envelopes(proof(token, CONTROLLER_MAC_LABEL, agent_nonce, controller_nonce),
                         proof(token, AGENT_MAC_LABEL, agent_nonce, controller_nonce))
    return reply


# Conformance checks: each takes the options, returns an optional note, raises on failure. --

def expect_error(message, code, request_id=None, without_id=False):
    """Raise ProtocolError unless `message` is an error with `code` (and `request_id`, or no
    id) whose message is one line."""
    if message.get("type") != "error" or message.get("code") != code:
        raise ProtocolError(f"expected error {code}, got {message}")
    text = message.get("message")
    if not isinstance(text, str) or not text or "\n" in text or "\r" in text:
        raise ProtocolError(f"error message is not one line of text: {message}")
    if request_id is not None and message.get("id") != request_id:
        raise ProtocolError(f"error should carry id {request_id!r}: {message}")
    if without_id and "id" in message:
        raise ProtocolError(f"error should carry no id: {message}")


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


def fresh_ping(opts):
    """Raise ProtocolError unless a new connection authenticates and gets a pong."""
    with authed(opts) as conn:
        ping_works(conn, "p-fresh")


def status(conn, request_id):
    """(state, running) from a status request."""
    final, _ = conn.request({"type": "status", "id": request_id})
    if final.get("type") != "result":
        raise ProtocolError(f"status: {final}")
    return final.get("state"), final.get("running")


def check_hello(opts):
    """hello is well-formed, offers protocol 2 and no longer 1."""
    with AgentConnection(opts.address) as conn:
        hello = read_hello(conn)
        if 2 not in hello["protocols"] or 1 in hello["protocols"]:
            raise ProtocolError(f"protocols should hold 2 and not 1: {hello['protocols']}")
        return f"role {hello['role']}, {hello['agentVersion']}, {hello['capabilities']}"


def check_auth_ping_status(opts):
    """Good auth gets a welcome with the right proof; ping says pong, status idle (enveloped)."""
    with authed(opts) as conn:
        ping_works(conn, "p1")
        if status(conn, "s1")[0] != "idle":
            raise ProtocolError("status is not idle")
        return f"agent lines 0..{conn.receive_seq - 1} verified"


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
        mine = proof(opts.token, CONTROLLER_LABEL, unb64(hello["nonce"]), nonce,
                     hashlib.sha256(conn.hello_line).digest(), version_bytes(2))
        conn.send({"type": "auth", "protocol": 2, "nonce": b64(nonce), "proof": b64(mine)})
    return "16-byte nonce: " + refused(opts, None, short_nonce)


def check_hello_binding(opts):
    """Proofs over another hello line or another version (or the v1 shape) get unauthorized."""
    token = opts.token

    def other_hello(conn):
        """H of the hello with its role changed (a hello changed in transit)."""
        changed = dict(conn.hello, role="postgres" if conn.hello["role"] == "files" else "files")
        return hashlib.sha256(compact(changed).encode()).digest()

    def reserialised(conn):
        """H of the same hello, serialised otherwise (the bytes, not the meaning, count)."""
        text = json.dumps(conn.hello, indent=None, separators=(", ", ": ")).encode()
        if text == conn.hello_line:
            text += b" "
        return hashlib.sha256(text).digest()

    variants = {
        "role changed in H": lambda c, na, nc, h, v: proof(token, CONTROLLER_LABEL, na, nc,
                                                           other_hello(c), v),
        "hello re-serialised in H": lambda c, na, nc, h, v: proof(token, CONTROLLER_LABEL, na, nc,
                                                                  reserialised(c), v),
        "H over the line with its newline": lambda c, na, nc, h, v: proof(
            token, CONTROLLER_LABEL, na, nc, hashlib.sha256(c.hello_line + b"\n").digest(), v),
        "V = 1 while protocol 2": lambda c, na, nc, h, v: proof(token, CONTROLLER_LABEL, na, nc,
                                                                h, version_bytes(1)),
        "V little-endian": lambda c, na, nc, h, v: proof(token, CONTROLLER_LABEL, na, nc, h,
                                                         v[::-1]),
        "without H and V": lambda c, na, nc, h, v: proof(token, CONTROLLER_LABEL, na, nc),
        "v1 label with H and V": lambda c, na, nc, h, v: proof(token, b"chebackup-controller-v1",
                                                               na, nc, h, v),
        "agent's label": lambda c, na, nc, h, v: proof(token, AGENT_LABEL, na, nc, h, v),
    }
    for name, make in variants.items():
        with AgentConnection(opts.address) as conn:
            reply = handshake(conn, token, protocol=2,
                              make_proof=lambda na, nc, h, v, c=conn, m=make: m(c, na, nc, h, v))
            try:
                expect_error(reply, "unauthorized")
                conn.expect_closed()
            except ProtocolError as error:
                raise ProtocolError(f"{name}: {error}") from error
    return f"{len(variants)} variants refused"


def check_request_before_auth(opts):
    """A ping before auth gets out_of_order and a close."""
    refused(opts, "out_of_order", lambda conn, _: conn.send({"type": "ping", "id": "p0"}))


def check_garbage_before_auth(opts):
    """A non-JSON line before auth gets bad_json and a close."""
    refused(opts, "bad_json", lambda conn, _: conn.send_raw(b"not json\n"))


def check_unsupported_version(opts):
    """auth with protocol 99 (a proof with V = 99) gets unsupported_version and a close."""
    with AgentConnection(opts.address) as conn:
        expect_error(handshake(conn, opts.token, protocol=99), "unsupported_version")
        conn.expect_closed()


def check_protocol_1(opts):
    """A v1 auth (protocol 1, v1 proof) gets unsupported_version and a close; so does protocol 1
    with a v2-style proof over V = 1."""
    def v1(agent_nonce, controller_nonce, _hello_hash, _version):
        return proof(opts.token, b"chebackup-controller-v1", agent_nonce, controller_nonce)
    for name, make in (("v1 proof", v1), ("v2 proof, V = 1", None)):
        with AgentConnection(opts.address) as conn:
            reply = handshake(conn, opts.token, protocol=1, make_proof=make)
            try:
                expect_error(reply, "unsupported_version")
                conn.expect_closed()
            except ProtocolError as error:
                raise ProtocolError(f"{name}: {error}") from error


def check_auth_at_limit(opts):
    """An auth line of exactly 4 KiB (padded with an ignored field) is accepted."""
    with AgentConnection(opts.address) as conn:
        handshake(conn, opts.token, auth_length=PRE_AUTH_MAX_LINE)
        ping_works(conn)


def check_long_line_before_auth(opts):
    """4 KiB + 1 bytes before auth, never ended by a newline: line_too_long (no id), closed."""
    with AgentConnection(opts.address) as conn:
        read_hello(conn)
        prefix = b'{"type":"auth","protocol":2,"pad":"'
        conn.send_raw(prefix + b"x" * (PRE_AUTH_MAX_LINE + 1 - len(prefix)))
        expect_error(conn.read_message(), "line_too_long", without_id=True)
        conn.expect_closed()


def check_bad_json_after_auth(opts):
    """An authentic envelope whose msg is not JSON (or whitespace) gets bad_json; goes on."""
    with authed(opts) as conn:
        for text in ("this is not json", " \t "):
            conn.send_text(text)
            expect_error(conn.next_error(without_id=True), "bad_json")
        ping_works(conn)


def check_empty_lines_after_auth(opts):
    """Empty lines between envelopes are ignored and use up no seq."""
    with authed(opts) as conn:
        ping_works(conn, "p1")
        conn.send_raw(b"\n\r\n\n")
        ping_works(conn, "p2")


def check_malformed_messages(opts):
    """In authentic envelopes: array, no type, unknown type, bad id, missing fields: codes."""
    with authed(opts) as conn:
        conn.send_text("[1, 2, 3]")
        expect_error(conn.next_error(without_id=True), "bad_json")
        conn.send({"id": "nt1", "hello": "no type"})
        expect_error(conn.next_error(), "invalid_request", "nt1")
        conn.send({"type": "frobnicate", "id": "u1"})
        expect_error(conn.next_error(), "unknown_type", "u1")
        for message, request_id in (({"type": "ping", "id": 42}, None), ({"type": "ping"}, None),
                                    ({"type": "cancel", "id": "c-no-target"}, "c-no-target")):
            conn.send(message)
            expect_error(conn.next_error(), "invalid_request", request_id)
        reply, _ = conn.request({"type": "status", "id": "s-extra", "later": {"field": [1]}})
        if reply.get("type") != "result":
            raise ProtocolError(f"a field not described should be ignored: {reply}")
        ping_works(conn)


def check_line_at_limit(opts):
    """An envelope of exactly the line limit (a ping padded with an ignored field) works."""
    with authed(opts) as conn:
        seq = conn.send_seq
        text = padded({"type": "ping", "id": "big"}, opts.max_line_length,
                      lambda t: envelope_line(conn.send_key, seq, t))
        line = conn.next_envelope(text)
        if len(line) != opts.max_line_length:
            raise ValueError(f"padded envelope is {len(line)} bytes")
        conn.sent_ids.add("big")
        conn.send_raw(line + b"\n")
        final, _ = conn.final("big")
        if final.get("type") != "result" or final.get("state") != "pong":
            raise ProtocolError(f"ping of {len(line)} bytes: {final}")
        ping_works(conn)
    return f"{opts.max_line_length} bytes"


def fuzz_lines(rng, count):
    """`count` malformed message texts (no newline, never blank), each worth one error."""
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
        try:   # msg is text: bytes that are not UTF-8 become the characters U+0000..U+00FF
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("latin-1"))
    return lines


def check_fuzz(opts):
    """200 malformed messages in authentic envelopes at once: one error each, then ping works,
    and a new connection."""
    seed = random.randrange(1 << 30)
    texts = fuzz_lines(random.Random(seed), 200)
    with authed(opts) as conn:
        conn.send_raw(b"".join(conn.next_envelope(text) + b"\n" for text in texts))
        ping_works(conn, "after-fuzz")
        replies = conn.inbox
        bad = []
        for reply in replies:
            try:
                expect_error(reply, reply.get("code"))
            except ProtocolError:
                bad.append(reply)
            else:
                if reply["code"] not in ERROR_CODES or reply["code"] == "tampered":
                    bad.append(reply)
        if bad or len(replies) != len(texts):
            raise ProtocolError(f"seed {seed}: {len(texts)} lines, {len(replies)} replies, "
                                f"not errors: {bad[:3]}")
    fresh_ping(opts)
    return f"seed {seed}, codes {sorted({m['code'] for m in replies})}"


def check_controller_only(opts):
    """Well-formed hello, welcome, event, result, error and a second auth: out_of_order."""
    nonce = b64(os.urandom(32))
    messages = [{"type": "hello", "protocols": [2], "role": "files", "agentVersion": "x",
                 "installationId": "x", "capabilities": ["ping"], "nonce": nonce},
                {"type": "welcome", "proof": nonce},
                {"type": "event", "id": "o1", "stage": "x", "bytes": 0, "items": 0},
                {"type": "result", "id": "o2", "state": "pong"},
                {"type": "error", "id": "o3", "code": "internal", "message": "x"},
                {"type": "auth", "protocol": 2, "nonce": nonce, "proof": nonce}]
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
                 "bx3": seal_secrets(conn.send_key, "bx3", {"repositoryPassword": "x"}),
                 "bx4": b64(b"not a box")}
        for request_id, box in boxes.items():
            final, _ = conn.request(backup_message(request_id, url, box))
            expect_error(final, "invalid_request", request_id)
    return "other id, random key, Kc instead of Ks, not a box"


# v2 line integrity: each ends the connection with a `tampered` error -------------------------

def tampered_ends(conn, opts, allowed=()):
    """The agent answers `tampered` (an envelope, no id, one line) and closes; a new connection
    works. Messages about the requests `allowed` (still running) may come before it."""
    while True:
        reply = conn.read_message()
        if reply.get("id") in allowed and reply["type"] == "event":
            continue
        break
    expect_error(reply, "tampered", without_id=True)
    conn.inbox = [m for m in conn.inbox if m.get("id") not in allowed]
    conn.expect_closed()
    fresh_ping(opts)
    return reply["message"]


def variants_end_tampered(opts, variants):
    """Run each `variant(conn)` on a new authenticated connection; each must end tampered."""
    messages = []
    for name, variant in variants:
        with authed(opts) as conn:
            try:
                variant(conn)
                messages.append(tampered_ends(conn, opts))
            except ProtocolError as error:
                raise ProtocolError(f"{name}: {error}") from error
    return messages


def changed_msg(conn, new_msg):
    """Send the next envelope of a ping with its msg replaced by `new_msg(original)`."""
    line = json.loads(conn.next_envelope(compact({"type": "ping", "id": "p-orig"})))
    line["msg"] = new_msg(line["msg"])
    conn.send_raw(compact(line).encode() + b"\n")


def check_tampered_modified(opts):
    """An envelope whose msg changed (MAC kept), or whose MAC changed: tampered, closed, and
    the changed request is not served."""
    def msg_changed(conn):
        changed_msg(conn, lambda m: m.replace("p-orig", "p-evil"))

    def same_meaning(conn):
        ping_works(conn, "p1")   # this one at line 1
        changed_msg(conn, lambda m: m.replace(",", ", "))

    def mac_flipped(conn):
        line = json.loads(conn.next_envelope(compact({"type": "ping", "id": "p-orig"})))
        mac = bytearray(unb64(line["mac"]))
        mac[0] ^= 1
        line["mac"] = b64(bytes(mac))
        conn.send_raw(compact(line).encode() + b"\n")

    def seq_changed(conn):
        ping_works(conn, "p1")
        line = json.loads(conn.next_envelope(compact({"type": "ping", "id": "p-orig"})))
        line["seq"] = 0   # a line 1 relabelled as 0 (its MAC is over 1)
        conn.send_raw(compact(line).encode() + b"\n")
    messages = variants_end_tampered(opts, [("msg changed", msg_changed),
                                            ("msg re-spaced", same_meaning),
                                            ("mac bit flipped", mac_flipped),
                                            ("seq changed", seq_changed)])
    return f"message: {messages[0]!r}"


def check_tampered_replayed(opts):
    """The same envelope sent twice: the first is answered, the replay ends the connection."""
    def replay(conn):
        line = conn.next_envelope(compact({"type": "ping", "id": "p1"}))
        conn.sent_ids.add("p1")
        conn.send_raw(line + b"\n")
        final, _ = conn.final("p1")
        if final.get("state") != "pong":
            raise ProtocolError(f"ping: {final}")
        conn.send_raw(line + b"\n")

    def replay_later(conn):
        first = conn.next_envelope(compact({"type": "ping", "id": "p1"}))
        conn.sent_ids.add("p1")
        conn.send_raw(first + b"\n")
        conn.final("p1")
        ping_works(conn, "p2")
        conn.send_raw(first + b"\n")   # line 0 again where line 2 is due
    return variants_end_tampered(opts, [("replay at once", replay),
                                        ("replay later", replay_later)])[0]


def check_tampered_skipped(opts):
    """A skipped seq (a dropped line): tampered, closed, the later line not served."""
    def first_dropped(conn):
        conn.next_envelope(compact({"type": "ping", "id": "p-dropped"}))   # never sent
        conn.send(({"type": "ping", "id": "p-next"}))

    def later_dropped(conn):
        ping_works(conn, "p1")
        conn.next_envelope(compact({"type": "ping", "id": "p-dropped"}))
        conn.send({"type": "ping", "id": "p-next"})

    def far_ahead(conn):
        conn.send_seq = 1 << 40
        conn.send({"type": "ping", "id": "p-next"})
    return variants_end_tampered(opts, [("line 0 dropped", first_dropped),
                                        ("line 1 dropped", later_dropped),
                                        ("seq 2^40", far_ahead)])[0]


def check_tampered_not_envelope(opts):
    """Lines after welcome that are not authentic envelopes: a plain message (first or later),
    not JSON, whitespace, an array, msg not a string, no mac, seq a string, mac not base64 or
    short, MACed with Ks or with the agent's key: each ends the connection."""
    def raw(data):
        return lambda conn: conn.send_raw(data + b"\n")

    def plain_later(conn):
        ping_works(conn, "p1")
        conn.send_raw(compact({"type": "ping", "id": "p2"}).encode() + b"\n")

    def edited(edit):
        def variant(conn):
            line = json.loads(conn.next_envelope(compact({"type": "ping", "id": "p1"})))
            edit(conn, line)
            conn.send_raw(compact(line).encode() + b"\n")
        return variant

    def keyed(pick):
        def variant(conn):
            text = compact({"type": "ping", "id": "p1"})
            conn.send_raw(envelope_line(pick(conn), 0, text) + b"\n")
        return variant
    plain = compact({"type": "ping", "id": "p1"}).encode()
    variants = [("plain message first", raw(plain)), ("plain message later", plain_later),
                ("not JSON", raw(b"this is not json")), ("whitespace only", raw(b" \t ")),
                ("JSON array", raw(b"[1,2]")),
                ("msg an object", edited(lambda c, e: e.update(msg={"type": "ping", "id": "p"}))),
                ("no mac", edited(lambda c, e: e.pop("mac"))),
                ("seq a string", edited(lambda c, e: e.update(seq="0"))),
                ("mac not base64", edited(lambda c, e: e.update(mac="%%%%"))),
                ("mac 16 bytes", edited(lambda c, e: e.update(mac=b64(unb64(e["mac"])[:16])))),
                ("MAC under Ks", keyed(lambda c: c.session_key)),
                ("MAC under Ka", keyed(lambda c: c.receive_key))]
    variants_end_tampered(opts, variants)
    return f"{len(variants)} variants"


def check_tampered_reflected(opts):
    """The agent's own line sent back to it ends the connection: one whose seq differs from
    ours and, with a files repository, one whose seq is the one we are due (only Ka ≠ Kc
    tells it apart; a backup runs briefly for it)."""
    def reflect(conn):
        ping_works(conn, "p1")
        conn.send_raw(conn.last_line + b"\n")
    variants_end_tampered(opts, [("agent's line 0 at line 1", reflect)])
    if not (opts.files_repo and opts.repo_password):
        return "same-seq variant skipped: needs --files-repo and --repo-password"
    with authed(opts) as conn:
        conn.send(sealed_backup(conn, opts, "br1"))   # our line 0; the agent's events follow
        conn.take(lambda m: m.get("id") == "br1")     # the agent's line 0
        conn.take(lambda m: m.get("id") == "br1")     # the agent's line 1: seq 1, as ours
        if conn.last_line is None or json.loads(conn.last_line).get("seq") != conn.send_seq:
            raise ProtocolError("could not line up the agent's seq with ours")
        conn.inbox.clear()
        conn.send_raw(conn.last_line + b"\n")
        message = tampered_ends(conn, opts, allowed={"br1"})
    wait_idle(opts)
    return f"same seq too: {message!r}"


def check_tampered_oversize(opts):
    """After auth, a line passing the limit, never ended: tampered (no id), closed."""
    with authed(opts) as conn:
        ping_works(conn, "p1")
        prefix = b'{"mac":"' + b"A" * 44 + b'","msg":"'
        conn.send_raw(prefix + b"x" * (opts.max_line_length + 1 - len(prefix)))
        return tampered_ends(conn, opts)


def check_rewrite_not_dns(opts):
    """A restore whose rewrite from/to is not a DNS name gets invalid_request (before anything
    is restored: the snapshot does not even exist); DNS names (up to 253 characters) do not."""
    url = opts.files_repo or "local:/nonexistent/repository"
    password = opts.repo_password or "x"
    snapshot = os.urandom(32).hex()
    longest = ".".join(["a" * 63] * 3 + ["b" * 61])   # 253 characters
    bad = ["x$rewrite$; DROP TABLE t; --", "che.example.com'", "che example.com",
           "che.example.com/x", longest + "c", "$(id).example.com"]   # newline: one-line check
    with authed(opts) as conn:
        def restore(request_id, rewrite):
            box = seal_secrets(conn.session_key, request_id, {"repositoryPassword": password})
            return conn.request(restore_message(request_id, url, box, snapshot,
                                                rewrite=rewrite))[0]
        failures = []
        for index, value in enumerate(bad):
            for side in (0, 1):
                pair = ["che.example.com", "che.other.org"]
                pair[side] = value
                request_id = f"rw{index}{'ft'[side]}"
                final = restore(request_id, [tuple(pair)])
                try:
                    expect_error(final, "invalid_request", request_id)
                except ProtocolError as error:
                    failures.append(f"rewrite {pair}: {error}")
        final = restore("rw-ok", [("che.example.com", "eclipse-che.svc"), (longest, "a-b.c9")])
        if final.get("type") == "error" and final.get("code") == "invalid_request":
            failures.append(f"DNS names refused: {final}")
        if failures:
            raise ProtocolError(f"{len(failures)} of {2 * len(bad) + 1} wrong: "
                                + " | ".join(failures))
    return (f"{2 * len(bad)} refused; DNS names passed the check "
            f"(then {final.get('code') or final.get('type')}: no such snapshot)")


def check_error_messages_one_line(opts):
    """An error message stays one line when it names a value the controller sent holding a
    newline or carriage return: a type, a cancel target, a rewrite value, a type before auth."""
    failures = []

    def expect(final, code, request_id, what):
        try:
            expect_error(final, code, request_id)
        except ProtocolError as error:
            failures.append(f"{what}: {error}")
    with authed(opts) as conn:
        expect(conn.request({"type": "fro\nb", "id": "e1"})[0], "unknown_type", "e1",
               "type with a newline")
        expect(conn.request({"type": "cancel", "id": "e2", "target": "no\r\nthing"})[0],
               "unknown_request", "e2", "cancel target with CR LF")
        box = seal_secrets(conn.session_key, "e3", {"repositoryPassword": "x"})
        expect(conn.request(restore_message("e3", opts.files_repo or "local:/nonexistent", box,
                                            os.urandom(32).hex(),
                                            rewrite=[("che.example.com\n", "a.b")]))[0],
               "invalid_request", "e3", "rewrite value with a newline")
    with AgentConnection(opts.address) as conn:
        read_hello(conn)
        conn.send({"type": "ba\nckup", "id": "e4"})
        expect(conn.read_message(), "unknown_type", "e4", "type with a newline before auth")
    if failures:
        raise ProtocolError(f"{len(failures)} of 4: " + " | ".join(failures))


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


def quiet_after(conn, seconds, request_id):
    """Wait `seconds` (events come once a second), then ping: read_message() raises on any
    message about a request after its final message."""
    time.sleep(seconds)
    ping_works(conn, request_id)


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
        quiet_after(conn, 2, "p-quiet")   # messages about b2 or s1 would raise
        no_leak(conn, opts)
    return f"idle {wait_idle(opts)} status polls after disconnecting from b1"


def check_backup_cancel(opts):
    """cancel of a running b1 says cancelling; b1 ends cancelled (or had finished); idle; no
    event for b1 after its final message."""
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
        quiet_after(conn, 1.5, "p-quiet")
        no_leak(conn, opts)
    return (f"b1 cancelled after {len(events)} events" if final["type"] == "error"
            else "b1 had already finished: result")


def check_backup_full(opts):
    """b3 runs to completion: events with stages, a result with well-formed parts, and no
    event for b3 after the result (1.5 s)."""
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
        quiet_after(conn, 1.5, "p-quiet")
        no_leak(conn, opts)
    short = "; password too short for the leak check" if len(opts.repo_password) < 8 else ""
    return (f"parts {[p['name'] for p in parts]}, {len(events)} events, "
            f"stages {sorted({e['stage'] for e in events})[:4]}{short}")


def check_disconnect_mid_backup(opts):
    """Closing the socket mid-backup cancels it: a new connection sees idle within 30 s."""
    with authed(opts) as conn:
        conn.send(sealed_backup(conn, opts, "bd1"))
    return f"idle after {wait_idle(opts)} status polls"


class HandshakeWatch(threading.Thread):
    """A connection that never authenticates (silent, or trickling an unended line a byte
    every 0.25 s); records when the agent closes it. Started when the conformance run starts,
    so that waiting for the agent's time-out overlaps the other checks."""

    def __init__(self, address, trickle, give_up):
        super().__init__(daemon=True)
        self.sock = connect(address, 0.25)
        self.opened = time.monotonic()
        self.trickle, self.give_up = trickle, give_up
        self.closed, self.data, self.sent = None, bytearray(), 0

    def run(self):
        while time.monotonic() < self.opened + self.give_up:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                if self.trickle and self.sent < 1000:
                    try:
                        self.sock.sendall(b"{" if not self.sent else b" ")
                        self.sent += 1
                    except OSError:
                        self.closed = time.monotonic()
                        break
                continue
            except OSError:
                self.closed = time.monotonic()
                break
            if not chunk:
                self.closed = time.monotonic()
                break
            self.data += chunk
        self.sock.close()


def start_watches(opts):
    """The connections check_handshake_timeout looks at."""
    give_up = opts.handshake_timeout_expected + handshake_margin(opts) + 5
    return [HandshakeWatch(opts.address, trickle, give_up) for trickle in (False, True)]


def handshake_margin(opts):
    """How late after the expected time-out the close may come."""
    return 2 + 0.25 * opts.handshake_timeout_expected


def check_handshake_timeout(opts):
    """A connection that sends nothing, and one that trickles an unended line, are closed by
    the agent after the handshake time-out (not before), with at most an error after hello."""
    watches = opts.watches or []
    if not watches:
        raise ProtocolError("the watched connections could not be opened")
    notes = []
    for watch in watches:
        name = "trickling" if watch.trickle else "silent"
        watch.join(max(0.0, watch.opened + opts.handshake_timeout_expected
                       + handshake_margin(opts) - time.monotonic()))
        if watch.closed is None:
            raise ProtocolError(f"{name} connection still open "
                                f"{time.monotonic() - watch.opened:.1f} s after connecting")
        after = watch.closed - watch.opened
        if after < opts.handshake_timeout_expected - 0.5:
            raise ProtocolError(f"{name} connection closed after {after:.1f} s, before the "
                                f"{opts.handshake_timeout_expected:g} s time-out")
        lines = [json.loads(line) for line in bytes(watch.data).split(b"\n") if line.strip()]
        if not lines or lines[0].get("type") != "hello":
            raise ProtocolError(f"{name} connection: no hello: {bytes(watch.data[:200])!r}")
        extra = lines[1:]
        if len(extra) > 1 or any(m.get("type") != "error" or "id" in m for m in extra):
            raise ProtocolError(f"{name} connection: after hello {extra}")
        if extra:
            expect_error(extra[0], extra[0].get("code"))
        said = f"error {extra[0]['code']}" if extra else "no error"
        notes.append(f"{name}: closed after {after:.1f} s, {said}")
    return "; ".join(notes)


def admission(opts):
    """None if a new connection gets a hello and no refusal right after; else the refusal."""
    with AgentConnection(opts.address, timeout=2) as conn:
        first = conn.read_message()
        if first.get("type") != "hello":
            return first
        conn.sock.settimeout(0.3)
        try:
            return conn.read_message()
        except socket.timeout:
            return None


def wait_admitted(opts, after, seconds=3):
    """Wait until a new connection is served (the agent notices closes soon, not at once)."""
    deadline = time.monotonic() + seconds
    while (refusal := admission(opts)) is not None:
        if time.monotonic() > deadline:
            raise ProtocolError(f"{after}, but {seconds} s later a new connection got {refusal}")
        time.sleep(0.1)


def check_pending_cap(opts):
    """With max-pending connections waiting to authenticate, one more gets busy without an id
    and is closed; once one of them leaves, a new connection is served again."""
    waiting = []
    try:
        for index in range(opts.max_pending_expected):
            conn = AgentConnection(opts.address)
            waiting.append(conn)
            try:
                read_hello(conn)
            except ProtocolError as error:
                raise ProtocolError(f"connection {index + 1} of {opts.max_pending_expected} "
                                    f"waiting to authenticate: {error}") from error
        with AgentConnection(opts.address) as extra:
            first = extra.read_message()
            hello_first = first.get("type") == "hello"
            reply = extra.read_message() if hello_first else first
            expect_error(reply, "busy", without_id=True)
            extra.expect_closed()
        waiting.pop().close()
        wait_admitted(opts, "a slot was freed")
    finally:
        for conn in waiting:
            conn.close()
    wait_admitted(opts, "all were closed")
    fresh_ping(opts)
    return (f"{opts.max_pending_expected} waiting; the next got "
            f"{'hello, then ' if hello_first else ''}busy: {reply['message']!r}")


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


# (name, check, needs the files repository)
CHECKS = [("hello", check_hello, False),
          ("auth-ping-status", check_auth_ping_status, False),
          ("wrong-token", check_wrong_token, False),
          ("hello-binding", check_hello_binding, False),
          ("request-before-auth", check_request_before_auth, False),
          ("garbage-before-auth", check_garbage_before_auth, False),
          ("unsupported-version", check_unsupported_version, False),
          ("protocol-1-refused", check_protocol_1, False),
          ("auth-line-at-limit", check_auth_at_limit, False),
          ("long-line-before-auth", check_long_line_before_auth, False),
          ("bad-json-after-auth", check_bad_json_after_auth, False),
          ("empty-lines-after-auth", check_empty_lines_after_auth, False),
          ("malformed-messages", check_malformed_messages, False),
          ("line-at-limit", check_line_at_limit, False),
          ("fuzz", check_fuzz, False),
          ("controller-only-types", check_controller_only, False),
          ("cancel-unknown", check_cancel_unknown, False),
          ("bad-secrets", check_bad_secrets, False),
          ("tampered-modified", check_tampered_modified, False),
          ("tampered-replayed", check_tampered_replayed, False),
          ("tampered-skipped", check_tampered_skipped, False),
          ("tampered-not-envelope", check_tampered_not_envelope, False),
          ("tampered-reflected", check_tampered_reflected, False),
          ("tampered-oversize-line", check_tampered_oversize, False),
          ("rewrite-not-dns", check_rewrite_not_dns, False),
          ("error-messages-one-line", check_error_messages_one_line, False),
          ("backup-busy", check_backup_busy, True),
          ("backup-cancel", check_backup_cancel, True),
          ("backup-full", check_backup_full, True),
          ("disconnect-mid-backup", check_disconnect_mid_backup, True),
          ("handshake-timeout", check_handshake_timeout, False),
          ("pending-connection-cap", check_pending_cap, False)]


def conformance(opts):
    """Run every check, print PASS/FAIL (or SKIP) lines and the tally; return the exit code."""
    start = time.monotonic()
    try:
        opts.watches = start_watches(opts)
        for watch in opts.watches:
            watch.start()
    except OSError as error:
        print(f"agent_client: cannot connect to {opts.address}: {error}", file=sys.stderr)
        opts.watches = None
    passed = failed = 0
    for name, check, needs_repo in CHECKS:
        if needs_repo and not (opts.files_repo and opts.repo_password):
            print(f"SKIP {name}: needs --files-repo and --repo-password", flush=True)
            continue
        began = time.monotonic()
        try:
            wait_idle(opts)   # every check starts from an idle agent
            note = check(opts)
        except Exception as error:   # pylint: disable=broad-except  (report, go on)
            print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
            failed += 1
        else:
            print(f"PASS {name} [{time.monotonic() - began:.1f} s]"
                  + (f" ({note})" if note else ""), flush=True)
            passed += 1
    print(f"conformance took {time.monotonic() - start:.1f} s", flush=True)
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
                        help="conformance: the agent's --max-line-length")
    parser.add_argument("--handshake-timeout-expected", type=float, default=HANDSHAKE_TIMEOUT,
                        metavar="SECONDS", help="conformance: the agent's --handshake-timeout")
    parser.add_argument("--max-pending-expected", type=int, default=MAX_PENDING, metavar="N",
                        help="conformance: the agent's --max-pending-connections")
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
