"""The outbox row payload: many (key, value) messages of one topic, length-prefixed.

The format of every row the outbox ever wrote (salvage reads damaged files with
it too), and a CRC-32 per row so salvage keeps only rows that still say what
was written.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

_LENGTH = struct.Struct(">I")

Message = tuple[bytes, bytes]  # (key, value)


_SMALL_LENGTHS = [_LENGTH.pack(n) for n in range(4096)]  # prefixes of most keys and events, made once


def pack_messages(messages: Sequence[Message]) -> bytes:
    """(key, value) pairs as length-prefixed bytes: the row payload."""
    parts: list[bytes] = []
    add = parts.extend
    pack, small = _LENGTH.pack, _SMALL_LENGTHS
    for key, value in messages:
        k, v = len(key), len(value)
        add((small[k] if k < 4096 else pack(k), key, small[v] if v < 4096 else pack(v), value))
    return b"".join(parts)


def checksum(payload: bytes) -> int:
    """CRC-32 of a row's payload: salvage keeps a row of a damaged file only if it still matches
    (damage can leave a payload that parses but says something else)."""
    return zlib.crc32(payload)


def unpack_messages(payload: bytes) -> list[Message]:
    messages: list[Message] = []
    view = memoryview(payload)
    offset, end = 0, len(payload)
    unpack = _LENGTH.unpack_from
    try:
        while offset < end:
            (key_length,) = unpack(view, offset)
            offset += 4
            key = bytes(view[offset:offset + key_length])
            offset += key_length
            (value_length,) = unpack(view, offset)
            offset += 4
            value = bytes(view[offset:offset + value_length])
            offset += value_length
            messages.append((key, value))
    except struct.error as exc:
        raise ValueError(f"corrupt outbox payload: {exc}") from exc
    if offset != end:
        raise ValueError("corrupt outbox payload: a message runs past the end of the row")
    return messages
