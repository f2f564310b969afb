#!/usr/bin/env python3
"""Delaying UDP relay for TFTP benchmarks (this kernel has no netem).

Clients send to --listen; the relay forwards to --upstream after --delay-ms,
and forwards replies back after the same delay. TFTP answers from a new
server port per transfer (the transfer ID), so the relay mirrors that: each
server port gets its own client-facing socket, and the client's ACKs sent
there go back to that server port. Stdlib only.
"""

import argparse
import heapq
import itertools
import selectors
import socket
import threading
import time


def addr(s):
    host, port = s.rsplit(":", 1)
    return host.strip("[]"), int(port)


class Relay:
    def __init__(self, listen, upstream, delay):
        self.listen = listen
        self.upstream = upstream
        self.delay = delay
        self.sel = selectors.DefaultSelector()
        self.front = self._sock(listen)
        self.sel.register(self.front, selectors.EVENT_READ, ("front", None))
        self.back_for_client = {}  # client addr -> upstream-facing socket
        self.front_for_tid = {}  # (client, server addr) -> client-facing socket
        self.heap = []
        self.seq = itertools.count()
        self.cond = threading.Condition()

    def _sock(self, bind):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(bind)
        return s

    def schedule(self, sock, data, dest):
        due = time.monotonic() + self.delay
        with self.cond:
            heapq.heappush(self.heap, (due, next(self.seq), sock, data, dest))
            self.cond.notify()

    def sender(self):
        while True:
            with self.cond:
                while not self.heap:
                    self.cond.wait()
                due, _, sock, data, dest = self.heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self.cond.wait(wait)
                    continue
                heapq.heappop(self.heap)
            try:
                sock.sendto(data, dest)
            except OSError:
                pass

    def run(self):
        threading.Thread(target=self.sender, daemon=True).start()
        while True:
            for key, _ in self.sel.select():
                kind, ctx = key.data
                sock = key.fileobj
                try:
                    data, src = sock.recvfrom(70000)
                except OSError:
                    continue
                if kind == "front":
                    # A request from a client: to the server's listen port.
                    back = self.back_for_client.get(src)
                    if back is None:
                        back = self._sock(("0.0.0.0", 0))
                        self.back_for_client[src] = back
                        self.sel.register(back, selectors.EVENT_READ, ("back", src))
                    self.schedule(back, data, self.upstream)
                elif kind == "back":
                    # From the server (a transfer port) to the client.
                    client = ctx
                    front = self.front_for_tid.get((client, src))
                    if front is None:
                        front = self._sock((self.listen[0], 0))
                        self.front_for_tid[(client, src)] = front
                        self.sel.register(front, selectors.EVENT_READ, ("tid", (client, src)))
                    self.schedule(front, data, client)
                else:
                    # The client's ACK to a mirrored transfer port.
                    client, server = ctx
                    self.schedule(self.back_for_client[client], data, server)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", type=addr, required=True)
    p.add_argument("--upstream", type=addr, required=True)
    p.add_argument("--delay-ms", type=float, default=1.0)
    a = p.parse_args()
    Relay(a.listen, a.upstream, a.delay_ms / 1000.0).run()


if __name__ == "__main__":
    main()
