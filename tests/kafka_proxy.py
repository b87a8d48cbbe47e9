"""A Kafka protocol proxy in front of a real broker, which can answer Metadata as a fenced broker does.

Why it exists: around a broker restart librdkafka can drop every broker it knows and never
reconnect (`assetlog/broker_watch.py`). A real broker leaves a client so only by chance (1
restart in 31): in a controlled shutdown it answers Metadata with its topics and no broker for a
few milliseconds, and the client must ask in that window and then lose a race with its own
re-bootstrap. This proxy gives the broker's answer on demand, so a drill can wedge a real
librdkafka client every time and watch the real replacement path.

It forwards every frame unchanged except two answers, rewritten so that clients keep talking
through it: Metadata (its broker list: each broker's address becomes the proxy's, or, while
`fenced`, the list is empty, as the fenced broker sends it) and FindCoordinator (the
coordinator's address). Requests are read only to remember which API and version each
correlation id belongs to. The layouts are Kafka's own (`MetadataResponse.json`,
`FindCoordinatorResponse.json`), for every version a current librdkafka sends; any other
version is forwarded untouched.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

from tcp_proxy import Forwarder, TcpProxy

METADATA, FIND_COORDINATOR = 3, 10
FLEXIBLE_FROM = {METADATA: 9, FIND_COORDINATOR: 3}  # the first version with compact fields and tag buffers


class _Reader:
    def __init__(self, data: bytes, at: int = 0) -> None:
        self.data, self.at = data, at

    def take(self, n: int) -> bytes:
        chunk = self.data[self.at:self.at + n]
        if len(chunk) != n:
            raise ValueError("truncated Kafka frame")
        self.at += n
        return chunk

    def int16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def string(self, flexible: bool) -> bytes | None:
        size = self.uvarint() - 1 if flexible else self.int16()
        return None if size < 0 else self.take(size)

    def tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(value: bytes, flexible: bool) -> bytes:
    return _uvarint(len(value) + 1) + value if flexible else struct.pack(">h", len(value)) + value


def _count(n: int, flexible: bool) -> bytes:
    return _uvarint(n + 1) if flexible else struct.pack(">i", n)


def rewrite_metadata(body: bytes, version: int, host: bytes, port: int, fenced: bool) -> bytes:
    """A Metadata answer (without its size) with every broker at `host:port`, or none when `fenced`."""
    flexible = version >= FLEXIBLE_FROM[METADATA]
    r = _Reader(body, 4)  # the correlation id
    if flexible:
        r.tags()
    if version >= 3:
        r.int32()  # throttle_time_ms
    head = body[:r.at]
    count = r.uvarint() - 1 if flexible else r.int32()
    brokers = []
    for _ in range(max(count, 0)):
        node = r.take(4)
        r.string(flexible)
        r.int32()
        start = r.at
        if version >= 1:
            r.string(flexible)  # rack
        if flexible:
            r.tags()
        brokers.append(node + _string(host, flexible) + struct.pack(">i", port) + body[start:r.at])
    listed = [] if fenced else brokers
    return head + _count(len(listed), flexible) + b"".join(listed) + body[r.at:]


def rewrite_coordinator(body: bytes, version: int, host: bytes, port: int) -> bytes:
    """A FindCoordinator answer (without its size) with the coordinator(s) at `host:port`."""
    flexible = version >= FLEXIBLE_FROM[FIND_COORDINATOR]
    r = _Reader(body, 4)
    if flexible:
        r.tags()
    if version >= 1:
        r.int32()  # throttle_time_ms
    if version <= 3:
        r.int16()  # error_code
        if version >= 1:
            r.string(flexible)  # error_message
        node_end = r.at + 4
        r.take(4)
        r.string(flexible)
        r.int32()
        return body[:node_end] + _string(host, flexible) + struct.pack(">i", port) + body[r.at:]
    out = bytearray(body[:r.at])
    count = r.uvarint() - 1
    out += _uvarint(count + 1)
    for _ in range(max(count, 0)):
        start = r.at
        r.string(True)  # key
        r.take(4)  # node_id
        out += body[start:r.at]
        r.string(True)
        r.int32()
        out += _string(host, True) + struct.pack(">i", port)
        start = r.at
        r.int16()
        r.string(True)
        r.tags()
        out += body[start:r.at]
    return bytes(out) + body[r.at:]


def _read_frame(sock: socket.socket) -> bytes | None:
    size = _read_exactly(sock, 4)
    if size is None:
        return None
    return _read_exactly(sock, struct.unpack(">i", size)[0])


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _by_frames(change: Callable[[bytes], bytes]) -> Forwarder:
    def forward(source: socket.socket, sink: socket.socket) -> None:
        while (frame := _read_frame(source)) is not None:
            frame = change(frame)
            sink.sendall(struct.pack(">i", len(frame)) + frame)
    return forward


class KafkaProxy(TcpProxy):
    """Listens on a free port of 127.0.0.1 and forwards to `broker` ("host:port"), Kafka frame by frame."""

    def __init__(self, broker: str) -> None:
        host, _, port = broker.rpartition(":")
        super().__init__((host, int(port)))
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.fenced = False  # Metadata answers list no broker, as a broker's in controlled shutdown do
        self.fenced_answers = 0  # Metadata answers sent with no broker
        self.up()

    def _forwarders(self) -> tuple[Forwarder, Forwarder]:
        pending: dict[int, tuple[int, int]] = {}  # correlation id -> (API key, version) of a request to rewrite
        return _by_frames(self._requests(pending)), _by_frames(self._answers(pending))

    def _requests(self, pending: dict[int, tuple[int, int]]) -> Callable[[bytes], bytes]:
        def note(frame: bytes) -> bytes:
            key, version, correlation = struct.unpack(">hhi", frame[:8])
            if key in FLEXIBLE_FROM:
                pending[correlation] = (key, version)
            return frame
        return note

    def _answers(self, pending: dict[int, tuple[int, int]]) -> Callable[[bytes], bytes]:
        host = b"127.0.0.1"

        def rewrite(frame: bytes) -> bytes:
            asked = pending.pop(struct.unpack(">i", frame[:4])[0], None)
            if asked is None:
                return frame
            key, version = asked
            if key == FIND_COORDINATOR:
                return rewrite_coordinator(frame, version, host, self.port)
            fenced = self.fenced
            self.fenced_answers += fenced
            return rewrite_metadata(frame, version, host, self.port, fenced)
        return rewrite

    def close(self) -> None:
        self.down()


__all__ = ["KafkaProxy", "rewrite_coordinator", "rewrite_metadata"]
