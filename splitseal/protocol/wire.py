"""The enclave socket protocol: length-prefixed frames carrying a small binary value encoding.

Frame: ``uint32 big-endian length || payload``; a length above the configured maximum (or
zero) is refused before any payload is read.

Payload: one value in a tag-length-value encoding, deliberately tiny (no pickle, no floats,
nothing that executes): ``0x00`` None, ``0x01`` false, ``0x02`` true, ``0x03`` int (u8 length,
two's-complement big-endian, at most 64 bytes), ``0x04`` bytes (u32 length), ``0x05`` UTF-8 str
(u32 length), ``0x06`` list (u32 count), ``0x07`` map with str keys (u32 count). Nesting is
limited to 16 levels; every length is checked against the bytes that remain.

Binary data crosses as raw bytes, so a test that searches the socket traffic for a secret's
bytes sees exactly what went over the wire.

Request ``{"call": str, "id": int, "args": map}``; response ``{"id": int, "ok": true,
"result": map}`` or ``{"id": int, "ok": false, "error": {"type": str, "message": str,
"reason": int}}``.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from splitseal.errors import ProtocolError

FRAME_HEADER = struct.Struct(">I")
MAX_DEPTH = 16
MAX_INT_BYTES = 64


class FrameError(ProtocolError):
    """A frame or payload is malformed, oversized or truncated."""


class FrameTooLarge(FrameError):
    """A frame's declared length exceeds the limit; the connection cannot be resynchronised."""


# --- value encoding ---------------------------------------------------------------------------
# Written for the per-call cost (every entry call encodes and decodes its request and reply, and
# the enclave its journal record): one dispatch on the exact type, chunks appended to one list,
# bytes sliced straight from the payload; each check of the format above is still made.

_U32 = FRAME_HEADER.pack
_TAG_NONE, _TAG_FALSE, _TAG_TRUE = b"\x00", b"\x01", b"\x02"


class Encoded:
    """A value encoded once and spliced as those bytes into every larger value that holds it
    (exactly the bytes encoding it again would give): the enclave encodes each answer for its
    journal record and reuses the bytes in every manifest that lists the answer."""

    __slots__ = ("data", "depth")

    def __init__(self, value: Any) -> None:
        self.data = encode(value)
        self.depth = _nesting(value)  # checked against the depth it is spliced at

    def __repr__(self) -> str:
        return f"Encoded({len(self.data)} bytes)"


_FLAT = (bytes, str, int, bool, type(None))


def _nesting(value: Any) -> int:
    """How many levels below ``value`` its deepest element sits (map keys are strings: flat)."""
    kind = type(value)
    if kind is Encoded:
        return value.depth
    if kind is dict or isinstance(value, dict):
        children = value.values()
    elif kind is list or kind is tuple or isinstance(value, (list, tuple)):
        children = value
    else:
        return 0
    if not children:
        return 0
    return 1 + max([0 if type(child) in _FLAT else _nesting(child) for child in children])


def encode(value: Any) -> bytes:
    """Encode a value of the supported types; anything else is a programming error."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    kind = type(value)
    if kind is bytes:
        out.append(b"\x04" + _U32(len(value)))
        out.append(value)
    elif kind is str:
        raw = value.encode("utf-8")
        out.append(b"\x05" + _U32(len(raw)))
        out.append(raw)
    elif kind is int:
        out.append(_int(value))
    elif value is None:
        out.append(_TAG_NONE)
    elif value is False:
        out.append(_TAG_FALSE)
    elif value is True:
        out.append(_TAG_TRUE)
    elif kind is dict or kind is list or kind is tuple or isinstance(value, (dict, list, tuple)):
        # the elements sit one level deeper than their container
        if depth >= MAX_DEPTH and value:
            raise FrameError(f"value nests deeper than {MAX_DEPTH} levels")
        depth += 1
        if isinstance(value, dict):
            out.append(b"\x07" + _U32(len(value)))
            for key, item in value.items():
                if type(key) is not str and not isinstance(key, str):
                    raise FrameError("map keys must be strings")
                # the key, and a bytes or int value, written here: most entries are flat, and
                # two calls per entry were most of an answer's encoding
                raw = key.encode("utf-8")
                out.append(b"\x05" + _U32(len(raw)))
                out.append(raw)
                kind = type(item)
                if kind is bytes:
                    out.append(b"\x04" + _U32(len(item)))
                    out.append(item)
                elif kind is int:
                    out.append(_int(item))
                else:
                    _encode(item, out, depth)
        else:
            out.append(b"\x06" + _U32(len(value)))
            for item in value:
                _encode(item, out, depth)
    elif kind is Encoded:
        if depth + value.depth > MAX_DEPTH:
            raise FrameError(f"value nests deeper than {MAX_DEPTH} levels")
        out.append(value.data)
    elif isinstance(value, int):  # int subclasses (IntEnum failure codes)
        out.append(_int(int(value)))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out.append(b"\x04" + _U32(len(raw)))
        out.append(raw)
    elif isinstance(value, str):
        _encode(str(value), out, depth)
    else:
        raise FrameError(f"type {type(value).__name__} cannot be sent to or from the enclave")


def _int(value: int) -> bytes:
    n = (value.bit_length() + 8) // 8
    if n > MAX_INT_BYTES:
        raise FrameError("integer too large for the wire format")
    return b"\x03" + bytes((n,)) + value.to_bytes(n, "big", signed=True)


def decode(data: bytes) -> Any:
    """Decode exactly one value; trailing bytes, unknown tags or bad lengths raise FrameError."""
    data = bytes(data)
    value, pos = _decode(data, 0, 0)
    if pos != len(data):
        raise FrameError(f"{len(data) - pos} trailing bytes after the value")
    return value


_unpack_u32 = FRAME_HEADER.unpack_from


def _decode(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise FrameError(f"value nests deeper than {MAX_DEPTH} levels")
    size = len(data)
    if pos >= size:
        raise FrameError("payload is truncated")
    tag = data[pos]
    pos += 1
    if tag >= 4:
        if tag > 7:
            raise FrameError(f"unknown value tag 0x{tag:02x}")
        if pos + 4 > size:
            raise FrameError("payload is truncated")
        (n,) = _unpack_u32(data, pos)
        pos += 4
        # a string's bytes, or every element of a list or map (one byte at least), must remain:
        # a count beyond the remaining bytes is a lie
        if pos + n > size:
            raise FrameError("payload is truncated")
        if tag == 4:
            return data[pos:pos + n], pos + n
        if tag == 5:
            try:
                return data[pos:pos + n].decode("utf-8"), pos + n
            except UnicodeDecodeError:
                raise FrameError("string is not valid UTF-8") from None
        depth += 1
        if tag == 6:
            items = []
            for _ in range(n):
                item, pos = _decode(data, pos, depth)
                items.append(item)
            return items, pos
        mapping: dict[str, Any] = {}
        if n and depth > MAX_DEPTH:
            raise FrameError(f"value nests deeper than {MAX_DEPTH} levels")
        for _ in range(n):
            # a string key, and a bytes value, read here (as the generic path below reads them,
            # with the same checks): most entries are flat
            if pos + 5 <= size and data[pos] == 5:
                (k,) = _unpack_u32(data, pos + 1)
                pos += 5
                if pos + k > size:
                    raise FrameError("payload is truncated")
                try:
                    key = data[pos:pos + k].decode("utf-8")
                except UnicodeDecodeError:
                    raise FrameError("string is not valid UTF-8") from None
                pos += k
            else:
                key, pos = _decode(data, pos, depth)
                if type(key) is not str:
                    raise FrameError("map key is not a string")
            if key in mapping:
                raise FrameError(f"duplicate map key {key!r}")
            if pos + 5 <= size and data[pos] == 4:
                (k,) = _unpack_u32(data, pos + 1)
                pos += 5
                if pos + k > size:
                    raise FrameError("payload is truncated")
                mapping[key] = data[pos:pos + k]
                pos += k
            else:
                mapping[key], pos = _decode(data, pos, depth)
        return mapping, pos
    if tag == 3:
        if pos >= size:
            raise FrameError("payload is truncated")
        n = data[pos]
        if not 1 <= n <= MAX_INT_BYTES:
            raise FrameError(f"integer length {n} out of range")
        if pos + 1 + n > size:
            raise FrameError("payload is truncated")
        return int.from_bytes(data[pos + 1:pos + 1 + n], "big", signed=True), pos + 1 + n
    if tag == 0:
        return None, pos
    return tag == 2, pos  # 1 false, 2 true


# --- frames on a stream socket ----------------------------------------------------------------

def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """Read exactly n bytes; None on a clean EOF before the first byte."""
    chunks = []
    remaining = n
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            if remaining == n:
                return None
            raise FrameError(f"connection closed mid-frame ({n - remaining} of {n} bytes)")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, max_bytes: int) -> bytes | None:
    """Read one frame's payload; None when the peer closed the connection between frames."""
    header = _recv_exact(sock, FRAME_HEADER.size)
    if header is None:
        return None
    (length,) = FRAME_HEADER.unpack(header)
    if length == 0:
        raise FrameError("empty frame")
    if length > max_bytes:
        raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {max_bytes} bytes")
    payload = _recv_exact(sock, length)
    if payload is None:
        raise FrameError("connection closed before the frame payload")
    return payload


def write_frame(sock: socket.socket, payload: bytes, max_bytes: int | None = None) -> None:
    """Send one frame."""
    if max_bytes is not None and len(payload) > max_bytes:
        raise FrameTooLarge(f"frame of {len(payload)} bytes exceeds the limit of {max_bytes} bytes")
    # header and payload in one system call without first copying them into one buffer (a 16 KB
    # transfer, a 64 MB head package); a frame beyond the socket's buffer goes out in pieces
    header = FRAME_HEADER.pack(len(payload))
    sent = sock.sendmsg((header, payload))
    if sent < FRAME_HEADER.size:
        sock.sendall(header[sent:])
        sent = FRAME_HEADER.size
    if sent < FRAME_HEADER.size + len(payload):
        sock.sendall(memoryview(payload)[sent - FRAME_HEADER.size:])
