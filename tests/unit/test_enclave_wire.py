"""The enclave socket codec: round trips, and refusal of malformed or oversized input."""

from __future__ import annotations

import os
import socket

import pytest

from splitseal.protocol import wire


def test_round_trip_of_every_type():
    value = {"call": "infer", "id": 7, "args": {"b": b"\x00\xff" * 10, "n": -(2**255), "big": 2**256 - 1,
                                                "t": True, "f": False, "none": None, "s": "héllo",
                                                "l": [1, [2, b""], {"k": "v"}]}}
    assert wire.decode(wire.encode(value)) == value


def test_bytes_travel_raw():
    assert b"CANARY" in wire.encode({"x": b"CANARY"})


@pytest.mark.parametrize("data", [
    b"", b"\x09", b"\x03\x00", b"\x03\x05\x01", b"\x04\x00\x00\x00\x05ab", b"\x05\x00\x00\x00\x01\xff",
    b"\x06\xff\xff\xff\xff", b"\x07\x00\x00\x00\x01\x03\x01\x01\x00", b"\x00\x00",
    b"\x07\x00\x00\x00\x02\x05\x00\x00\x00\x01a\x00\x05\x00\x00\x00\x01a\x00",
    b"\x06\x00\x00\x00\x01" * 40 + b"\x00",
])
def test_malformed_payloads_raise_frame_error(data):
    with pytest.raises(wire.FrameError):
        wire.decode(data)


def test_random_garbage_never_raises_anything_else():
    for _ in range(3000):
        data = os.urandom(int.from_bytes(os.urandom(1), "big") % 64 + 1)
        try:
            wire.decode(data)
        except wire.FrameError:
            pass


def test_unsupported_types_are_refused():
    with pytest.raises(wire.FrameError):
        wire.encode({"x": 1.5})
    with pytest.raises(wire.FrameError):
        wire.encode({1: "x"})


def test_frames_over_a_socket_pair_and_size_limit():
    a, b = socket.socketpair()
    with a, b:
        wire.write_frame(a, b"hello")
        assert wire.read_frame(b, 16) == b"hello"
        wire.write_frame(a, b"x" * 17)
        with pytest.raises(wire.FrameTooLarge):
            wire.read_frame(b, 16)
        with pytest.raises(wire.FrameTooLarge):
            wire.write_frame(a, b"x" * 17, max_bytes=16)
    a, b = socket.socketpair()
    with b:
        a.sendall(b"\x00\x00\x00\x08abc")
        a.close()
        with pytest.raises(wire.FrameError, match="mid-frame|closed"):
            wire.read_frame(b, 16)
