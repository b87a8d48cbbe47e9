"""A TCP proxy on 127.0.0.1 in front of a real server, which drills take down and drop connections of.

The one home of the forwarding mechanics for the drills that cut a real server off without
stopping it: `test_consumer_faults.py` puts it before PostgreSQL (a restart: refused, then back),
`kafka_proxy.py` builds on it to rewrite Kafka's answers. Each direction of a connection runs on
a thread of its own; a subclass may forward by frames rather than bytes (`_forwarders`).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from contextlib import suppress

Forwarder = Callable[[socket.socket, socket.socket], None]  # copies from its first socket to its second


class TcpProxy:
    """127.0.0.1:port -> `target`. `up()` listens; `down()` refuses new connections and drops open ones;
    `drop_connections()` drops the open ones only."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="tcp-proxy").start()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                with suppress(OSError):  # wakes the thread blocked in accept(); close() alone would not
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
        self.drop_connections()

    def drop_connections(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
            to_server, to_client = self._forwarders()
            for forward, source, sink in ((to_server, client, server), (to_client, server, client)):
                threading.Thread(target=self._pump, args=(forward, source, sink), daemon=True).start()

    def _forwarders(self) -> tuple[Forwarder, Forwarder]:
        """How one connection's bytes go client -> server and server -> client (both: as they come)."""
        return _copy, _copy

    @staticmethod
    def _pump(forward: Forwarder, source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError, ValueError):  # ValueError: a frame a subclass could not read
            forward(source, sink)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)


def _copy(source: socket.socket, sink: socket.socket) -> None:
    while data := source.recv(65536):
        sink.sendall(data)


__all__ = ["Forwarder", "TcpProxy"]
