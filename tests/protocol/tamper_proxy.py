#!/usr/bin/env python3
"""A man in the middle for tests of the che-backup control protocol, version 2 (protocol.md).

    tamper_proxy.py --listen HOST:PORT --upstream HOST:PORT --direction c2a|a2c --line N
                    --action modify|drop|replay|swap|flood [--type TYPE]
                    [--field NAME (--value TEXT | --json-value JSON)] [--swap-wait SECONDS]
                    [--flood-bytes N]

Accepts one connection on --listen, connects it to --upstream (the agent), forwards the lines
both ways unchanged except one: the N-th line after `welcome` (counted from 0, like the
envelopes' seq; empty lines are not counted) in --direction (c2a: controller to agent, a2c:
agent to controller) gets --action. With --type, the chosen line is instead the first one,
from the N-th on, whose message has that type (say the `result` after a backup's events):

  modify  change the message inside the envelope, keep its mac and seq: with --field, set that
          top-level field of the message (msg's JSON) to --value (a string) or --json-value
          (any JSON: 5, true, {"a":1}) and re-serialise msg; without --field, add the field
          "tampered": true (a field the receiver would ignore: only the MAC can tell)
  drop    do not forward it
  replay  forward it twice
  swap    forward the line after it first, then it; if no line follows within --swap-wait
          seconds (default 5) it is forwarded in place and the swap counts as not done
  flood   send a line of --flood-bytes bytes (default 64 MiB + 1, one more than the
          controller accepts) in its place

Prints "listening on HOST:PORT" on stdout (flushed) once it accepts (PORT 0: the port chosen),
one line on stderr for what it did, and exits when the connection has ended in both directions:
status 0 if the action was done, 3 if not (the line never came, no line followed for swap),
1 if upstream could not be reached, 2 for usage errors. Lines are forwarded whole until the
action is done, then bytes as they come (an unended line before it is held back).

Library: TamperProxy(listen, upstream, direction, line, action, field=None, value=None,
swap_wait=5.0); .address is the (host, port) listened on, .serve() handles one connection and
returns True if the action was done; tamper_envelope(line, field, value) is the modify step.
"""

import argparse
import json
import select
import socket
import sys
import threading

DIRECTIONS = ("c2a", "a2c")
ACTIONS = ("modify", "drop", "replay", "swap", "flood")
FLOOD_BYTES = (64 << 20) + 1
_UNSET = object()


def split_address(text):
    """("HOST", PORT) from "HOST:PORT" (or "[v6]:PORT")."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host.strip("[]"), int(port)


def tamper_envelope(line, field=None, value=_UNSET):
    """The envelope `line` (bytes, without its terminator) with its message changed and its mac
    and seq kept: field `field` set to `value`, or "tampered": true without a field."""
    envelope = json.loads(line)
    message = json.loads(envelope["msg"])
    if not isinstance(message, dict):
        raise ValueError("msg is not a JSON object")
    if field is None:
        message["tampered"] = True
    else:
        message[field] = value
    envelope["msg"] = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class TamperProxy:
    """One proxied connection; see the module docstring."""

    def __init__(self, listen, upstream, direction, line, action, field=None, value=_UNSET,
                 swap_wait=5.0, log=sys.stderr, message_type=None, flood_bytes=FLOOD_BYTES):
        if direction not in DIRECTIONS or action not in ACTIONS or line < 0:
            raise ValueError(f"direction {direction!r}, action {action!r}, line {line}")
        if field is not None and (action != "modify" or value is _UNSET):
            raise ValueError("--field goes with --action modify and a --value or --json-value")
        self.upstream = split_address(upstream)
        self.direction, self.line, self.action = direction, line, action
        self.field, self.value, self.swap_wait, self.log = field, value, swap_wait, log
        self.message_type = message_type
        self.flood_bytes = flood_bytes
        host, port = split_address(listen)
        self.server = socket.create_server((host, port),
                                           family=socket.AF_INET6 if ":" in host
                                           else socket.AF_INET)
        self.address = (host, self.server.getsockname()[1])
        self.welcomed = threading.Event()
        self.done = False
        self.sockets = []

    def note(self, text):
        """One line about what happened, on the log."""
        print(f"tamper_proxy: {text}", file=self.log, flush=True)

    def serve(self):
        """Accept one connection, proxy it until it ends; True if the action was done."""
        client, _ = self.server.accept()
        self.server.close()
        try:
            agent = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            raise
        self.sockets = [client, agent]
        pumps = [threading.Thread(target=self.pump, args=(client, agent, "c2a"), daemon=True),
                 threading.Thread(target=self.pump, args=(agent, client, "a2c"), daemon=True)]
        for pump in pumps:
            pump.start()
        for pump in pumps:
            pump.join()
        for sock in self.sockets:
            sock.close()
        if not self.done:
            self.note(f"{self.action} not done: {self.direction} line {self.line} "
                      f"{'had no line after it' if self.action == 'swap' else 'never came'}")
        return self.done

    def pump(self, src, dst, name):
        """Forward src to dst; in the chosen direction do the action to the chosen line."""
        chosen = name == self.direction
        buffer, index, held = b"", 0, None
        raw = not chosen and name == "c2a"   # nothing to watch for in it
        try:
            while True:
                if held is not None and not select.select([src], [], [], self.swap_wait)[0]:
                    self.note(f"swap: no {name} line after line {self.line} within "
                              f"{self.swap_wait:g} s; forwarded it in place")
                    dst.sendall(held + buffer)
                    held, buffer, raw = None, b"", True
                    continue
                data = src.recv(65536)
                if not data:
                    break
                if raw:
                    dst.sendall(data)
                    continue
                buffer += data
                out = []
                while b"\n" in buffer and not raw:
                    line, buffer = buffer.split(b"\n", 1)
                    line += b"\n"
                    content = line.rstrip(b"\r\n")
                    if not self.welcomed.is_set() or not content:
                        if name == "a2c" and content and self.is_welcome(content):
                            self.welcomed.set()   # before forwarding it: what follows counts
                            raw = not chosen
                        out.append(line)
                    elif held is not None:   # the line after the held one: swap them
                        out += [line, held]
                        held, raw, self.done = None, True, True
                        self.note(f"swapped {name} lines {self.line} and {self.line + 1}")
                    elif self.chosen(index, content):
                        self.line = index
                        held = self.act(content, line, out, name)
                        raw = held is None
                        index += 1
                    else:
                        out.append(line)
                        index += 1
                if raw:
                    out.append(buffer)
                    buffer = b""
                dst.sendall(b"".join(out))
        except OSError as error:
            self.note(f"{name}: {error}")
            for sock in self.sockets:   # a reset: end both directions
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return
        try:
            if held is not None:
                dst.sendall(held)   # the connection ended with the line held: forward it anyway
            dst.sendall(buffer)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def chosen(self, index, content):
        """Line `index` (with bytes `content`) is the one to act on: the --line-th, or with
        --type the first from the --line-th on whose message has that type."""
        if self.message_type is None:
            return index == self.line
        if index < self.line:
            return False
        try:
            return json.loads(json.loads(content)["msg"]).get("type") == self.message_type
        except (ValueError, KeyError, TypeError, AttributeError):
            return False

    @staticmethod
    def is_welcome(content):
        """True if the plain line `content` is the agent's welcome."""
        try:
            message = json.loads(content)
        except ValueError:
            return False
        return isinstance(message, dict) and message.get("type") == "welcome"

    def act(self, content, line, out, name):
        """Do the action to the chosen line (appending to `out`); the line to hold, if any."""
        ending = line[len(content):]
        if self.action == "modify":
            try:
                changed = tamper_envelope(content, self.field,
                                          True if self.field is None else self.value)
                what = (f"field {self.field} set to {json.dumps(self.value)}" if self.field
                        else 'field "tampered" added')
            except (ValueError, KeyError, TypeError) as error:
                changed = content + b" " if not content.endswith(b"}") else content[:-1] + b" }"
                what = f"not an envelope with a JSON object ({error}): bytes changed instead"
            out.append(changed + ending)
            self.done = True
            self.note(f"modified {name} line {self.line}: {what}, mac and seq kept")
        elif self.action == "drop":
            self.done = True
            self.note(f"dropped {name} line {self.line}")
        elif self.action == "flood":
            out.append(b"x" * self.flood_bytes + b"\n")
            self.done = True
            self.note(f"replaced {name} line {self.line} with a line of {self.flood_bytes} bytes")
        elif self.action == "replay":
            out += [line, line]
            self.done = True
            self.note(f"replayed {name} line {self.line}")
        else:
            self.note(f"holding {name} line {self.line} to swap it with the next")
            return line
        return None


def main(argv=None):
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept one connection on")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the agent")
    parser.add_argument("--direction", required=True, choices=DIRECTIONS)
    parser.add_argument("--line", required=True, type=int,
                        help="which line after welcome, from 0 (the envelope's seq)")
    parser.add_argument("--action", required=True, choices=ACTIONS)
    parser.add_argument("--type", help="act on the first line from --line on whose message has this type")
    parser.add_argument("--field", help="modify: the top-level message field to set")
    values = parser.add_mutually_exclusive_group()
    values.add_argument("--value", help="modify --field: the new value, a string")
    values.add_argument("--json-value", help="modify --field: the new value, as JSON")
    parser.add_argument("--swap-wait", type=float, default=5.0,
                        help="swap: seconds to wait for the line after the chosen one")
    parser.add_argument("--flood-bytes", type=int, default=FLOOD_BYTES,
                        help="flood: length of the line sent instead (without its newline)")
    opts = parser.parse_args(argv)
    value = _UNSET
    if opts.value is not None:
        value = opts.value
    elif opts.json_value is not None:
        try:
            value = json.loads(opts.json_value)
        except ValueError:
            parser.error(f"--json-value is not JSON: {opts.json_value!r}")
    if opts.line < 0:
        parser.error("--line must be 0 or more")
    if (opts.field is None) != (value is _UNSET) or (opts.field and opts.action != "modify"):
        parser.error("--field and --value/--json-value go together, with --action modify")
    try:
        proxy = TamperProxy(opts.listen, opts.upstream, opts.direction, opts.line, opts.action,
                            opts.field, value, opts.swap_wait, message_type=opts.type,
                            flood_bytes=opts.flood_bytes)
    except ValueError as error:
        parser.error(str(error))
    host, port = proxy.address
    print(f"listening on {'[' + host + ']' if ':' in host else host}:{port}", flush=True)
    try:
        return 0 if proxy.serve() else 3
    except OSError as error:
        print(f"tamper_proxy: upstream {opts.upstream}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
