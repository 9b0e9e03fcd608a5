#!/usr/bin/env python3
"""Prints a free TCP port on 127.0.0.1 for a server that a script starts next.

The port is drawn at random from 20000-32767, below Linux's ephemeral range (32768-60999 by
default), and checked by binding it: a port from the ephemeral range (what binding port 0 gives)
can be taken by any outgoing connection, or by a process that binds port 0, before the server
binds it. A server started on the port should still check that it got it.
"""
import random
import socket
import sys


def free_port(low=20000, high=32767):
    for _ in range(1000):
        port = random.randint(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    sys.exit("free-port: no free port in %d-%d" % (low, high))


if __name__ == "__main__":
    print(free_port())
