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

def encode(value: Any) -> bytes:
    """Encode a value of the supported types; anything else is a programming error."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FrameError(f"value nests deeper than {MAX_DEPTH} levels")
    if value is None:
        out.append(b"\x00")
    elif value is False:
        out.append(b"\x01")
    elif value is True:
        out.append(b"\x02")
    elif isinstance(value, int):
        n = (value.bit_length() + 8) // 8
        if n > MAX_INT_BYTES:
            raise FrameError("integer too large for the wire format")
        out.append(b"\x03" + bytes([n]) + value.to_bytes(n, "big", signed=True))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out.append(b"\x04" + FRAME_HEADER.pack(len(raw)))
        out.append(raw)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(b"\x05" + FRAME_HEADER.pack(len(raw)))
        out.append(raw)
    elif isinstance(value, (list, tuple)):
        out.append(b"\x06" + FRAME_HEADER.pack(len(value)))
        for item in value:
            _encode(item, out, depth + 1)
    elif isinstance(value, dict):
        out.append(b"\x07" + FRAME_HEADER.pack(len(value)))
        for key, item in value.items():
            if not isinstance(key, str):
                raise FrameError("map keys must be strings")
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
    else:
        raise FrameError(f"type {type(value).__name__} cannot be sent to or from the enclave")


def decode(data: bytes) -> Any:
    """Decode exactly one value; trailing bytes, unknown tags or bad lengths raise FrameError."""
    view = memoryview(bytes(data))
    value, pos = _decode(view, 0, 0)
    if pos != len(view):
        raise FrameError(f"{len(view) - pos} trailing bytes after the value")
    return value


def _need(view: memoryview, pos: int, n: int) -> None:
    if n < 0 or pos + n > len(view):
        raise FrameError("payload is truncated")


def _decode(view: memoryview, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise FrameError(f"value nests deeper than {MAX_DEPTH} levels")
    _need(view, pos, 1)
    tag = view[pos]
    pos += 1
    if tag == 0:
        return None, pos
    if tag == 1:
        return False, pos
    if tag == 2:
        return True, pos
    if tag == 3:
        _need(view, pos, 1)
        n = view[pos]
        if not 1 <= n <= MAX_INT_BYTES:
            raise FrameError(f"integer length {n} out of range")
        _need(view, pos + 1, n)
        return int.from_bytes(view[pos + 1:pos + 1 + n], "big", signed=True), pos + 1 + n
    if tag in (4, 5, 6, 7):
        _need(view, pos, 4)
        (n,) = FRAME_HEADER.unpack_from(view, pos)
        pos += 4
        if tag == 4:
            _need(view, pos, n)
            return bytes(view[pos:pos + n]), pos + n
        if tag == 5:
            _need(view, pos, n)
            try:
                return str(view[pos:pos + n], "utf-8"), pos + n
            except UnicodeDecodeError:
                raise FrameError("string is not valid UTF-8") from None
        # every element takes at least one byte: a count beyond the remaining bytes is a lie
        _need(view, pos, n)
        if tag == 6:
            items = []
            for _ in range(n):
                item, pos = _decode(view, pos, depth + 1)
                items.append(item)
            return items, pos
        mapping: dict[str, Any] = {}
        for _ in range(n):
            key, pos = _decode(view, pos, depth + 1)
            if not isinstance(key, str):
                raise FrameError("map key is not a string")
            if key in mapping:
                raise FrameError(f"duplicate map key {key!r}")
            mapping[key], pos = _decode(view, pos, depth + 1)
        return mapping, pos
    raise FrameError(f"unknown value tag 0x{tag:02x}")


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
    sock.sendall(FRAME_HEADER.pack(len(payload)) + payload)
