"""The enclave socket codec: round trips, and refusal of malformed or oversized input."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

from splitseal.protocol import wire


def test_round_trip_of_every_type():
    value = {"call": "infer", "id": 7, "args": {"b": b"\x00\xff" * 10, "n": -(2**255), "big": 2**256 - 1,
                                                "t": True, "f": False, "none": None, "s": "héllo",
                                                "l": [1, [2, b""], {"k": "v"}]}}
    assert wire.decode(wire.encode(value)) == value


def test_the_encoding_is_the_documented_one_byte_for_byte():
    # pinned so that a faster codec cannot drift from the format (docs/FORMATS.md, this module's doc)
    value = {"call": "infer", "id": 7, "args": {"b": b"\x00\xff", "n": -129, "t": True, "f": False, "z": None,
                                                "s": "é", "l": [1, []]}}
    expected = bytes.fromhex(
        "07" "00000003"
        "05" "00000004" "63616c6c" "05" "00000005" "696e666572"                 # "call": "infer"
        "05" "00000002" "6964" "03" "01" "07"                                   # "id": 7
        "05" "00000004" "61726773" "07" "00000007"                              # "args": {7 entries}
        "05" "00000001" "62" "04" "00000002" "00ff"                             # "b": bytes
        "05" "00000001" "6e" "03" "02" "ff7f"                                   # "n": -129, two bytes
        "05" "00000001" "74" "02" "05" "00000001" "66" "01"                     # "t": true, "f": false
        "05" "00000001" "7a" "00"                                               # "z": none
        "05" "00000001" "73" "05" "00000002" "c3a9"                             # "s": UTF-8
        "05" "00000001" "6c" "06" "00000002" "03" "01" "01" "06" "00000000")    # "l": [1, []]
    assert wire.encode(value) == expected
    assert wire.decode(expected) == value


def test_nesting_is_limited_to_sixteen_levels_both_ways():
    deepest = 0
    for _ in range(16):
        deepest = [deepest]
    assert wire.decode(wire.encode(deepest)) == deepest
    with pytest.raises(wire.FrameError, match="nests deeper"):
        wire.encode([deepest])
    with pytest.raises(wire.FrameError, match="nests deeper"):
        wire.decode(b"\x06\x00\x00\x00\x01" * 17 + b"\x00")


def test_int_subclasses_and_byte_buffers_encode_as_their_base_types():
    from splitseal.protocol import FailureCode

    assert wire.encode(FailureCode(1)) == wire.encode(1)
    assert wire.encode(bytearray(b"ab")) == wire.encode(memoryview(b"ab")) == wire.encode(b"ab")


def test_bytes_travel_raw():
    assert b"CANARY" in wire.encode({"x": b"CANARY"})


@pytest.mark.parametrize("data", [
    b"", b"\x09", b"\x03\x00", b"\x03\x05\x01", b"\x04\x00\x00\x00\x05ab", b"\x05\x00\x00\x00\x01\xff",
    b"\x06\xff\xff\xff\xff", b"\x07\x00\x00\x00\x01\x03\x01\x01\x00", b"\x00\x00",
    b"\x07\x00\x00\x00\x02\x05\x00\x00\x00\x01a\x00\x05\x00\x00\x00\x01a\x00",
    b"\x06\x00\x00\x00\x01" * 40 + b"\x00",
    # a map's entries, read on its fast path: a key or a bytes value cut short, a key not UTF-8,
    # a map sixteen levels down that holds an entry
    b"\x07\x00\x00\x00\x01\x05\x00\x00\x00\x09ab", b"\x07\x00\x00\x00\x01\x05\x00\x00\x00\x01\xff\x00",
    b"\x07\x00\x00\x00\x01\x05\x00\x00\x00\x01a\x04\x00\x00\x00\x09ab",
    b"\x06\x00\x00\x00\x01" * 16 + b"\x07\x00\x00\x00\x01\x05\x00\x00\x00\x01a\x00",
])
def test_malformed_payloads_raise_frame_error(data):
    with pytest.raises(wire.FrameError):
        wire.decode(data)


def test_maps_read_on_their_fast_path_equal_the_generic_reading():
    """Flat entries (string keys, bytes and int values) are written and read inline; every
    other value goes through the generic path; both give the documented bytes and values."""
    value = {"b": b"\x00\x01", "i": -5, "s": "x", "n": None, "l": [b"y", {"k": b"z"}], "t": True, "e": b""}
    encoded = wire.encode(value)
    assert wire.decode(encoded) == value
    entries = [wire.encode(k) + wire.encode(v) for k, v in value.items()]
    assert encoded == b"\x07" + len(value).to_bytes(4, "big") + b"".join(entries)
    deepest: object = {"k": b"v"}
    for _ in range(15):
        deepest = [deepest]
    assert wire.decode(wire.encode(deepest)) == deepest  # a map at the last level still holds entries


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


def test_frames_larger_than_the_socket_buffer_arrive_whole_and_in_order():
    """A frame goes out as one ``sendmsg`` of header and payload; one beyond the socket's buffer
    (a head package) is sent in pieces, which must still arrive byte for byte, header first,
    and the next frame after it, including when the send is cut inside the header."""
    import threading

    rng = np.random.default_rng(16)
    payloads = [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in (1, 3, 16384, 1 << 20, (8 << 20) + 5, 7)]
    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # small: every large frame is cut
        a.settimeout(30)  # as the client and the server run it (Python polls before each send)
        received: list[bytes | None] = []
        reader = threading.Thread(target=lambda: received.extend(wire.read_frame(b, 16 << 20) for _ in payloads))
        reader.start()
        for payload in payloads:
            wire.write_frame(a, payload)
        reader.join(timeout=60)
        assert received == payloads


class _CutSocket:
    """A socket whose sendmsg sends only ``cut`` bytes (the kernel may stop anywhere)."""

    def __init__(self, sock: socket.socket, cut: int) -> None:
        self.sock, self.cut = sock, cut

    def sendmsg(self, buffers):
        data = b"".join(bytes(x) for x in buffers)[:self.cut]
        return self.sock.send(data)

    def sendall(self, data) -> None:
        self.sock.sendall(data)


@pytest.mark.parametrize("cut", [0, 1, 3, 4, 5, 100])
def test_a_frame_cut_anywhere_by_the_kernel_is_completed(cut):
    a, b = socket.socketpair()
    with a, b:
        payload = bytes(range(256)) * 2
        wire.write_frame(_CutSocket(a, cut), payload)
        wire.write_frame(_CutSocket(a, cut), b"next")
        assert wire.read_frame(b, 1024) == payload and wire.read_frame(b, 1024) == b"next"


def test_an_encoded_value_splices_as_the_bytes_encoding_it_again_would_give():
    answer = {"request_id": 3, "encrypted_result": b"\x01" * 40, "requester": "0xabc", "sequence": 9,
              "public_label": None, "nested": [True, {"k": b""}]}
    spliced = wire.encode({"recent": [[[1, "0x22", 3], wire.Encoded(answer)]], "epoch": 2})
    assert spliced == wire.encode({"recent": [[[1, "0x22", 3], answer]], "epoch": 2})
    assert wire.decode(spliced)["recent"][0][1] == answer


def test_an_encoded_value_counts_its_own_nesting_where_it_is_spliced():
    deep = 0
    for _ in range(15):
        deep = [deep]
    assert wire.encode([wire.Encoded(deep)]) == wire.encode([deep])  # 16 levels: allowed
    with pytest.raises(wire.FrameError, match="nests deeper"):
        wire.encode([[wire.Encoded(deep)]])
