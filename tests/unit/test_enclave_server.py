"""The socket server in-process: calls, malformed frames, connection limit, clean stop."""

from __future__ import annotations

import socket
import struct

from splitseal.protocol import wire
from enclave.core import EnclaveCore
from enclave.identity import load_identity
from enclave.platform import SimulatedPlatform
from enclave.server import EnclaveServer


def _exchange(sock_path, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a server that refuses at once (busy) may close before we finish sending
        return wire.decode(wire.read_frame(s, 1 << 20))


def _frame(value) -> bytes:
    payload = wire.encode(value)
    return struct.pack(">I", len(payload)) + payload


def test_server_answers_refuses_and_stops_cleanly(tmp_path):
    core = EnclaveCore(SimulatedPlatform(tmp_path / "p"), load_identity(), tmp_path / "state")
    server = EnclaveServer(core, tmp_path / "e.sock", max_frame_bytes=4096, max_connections=2)
    server.start()
    try:
        assert (tmp_path / "e.sock").stat().st_mode & 0o077 == 0
        ok = _exchange(tmp_path / "e.sock", _frame({"call": "status", "id": 9, "args": {}}))
        assert ok["ok"] and ok["id"] == 9 and ok["result"]["enclave"] == core.address
        big = _exchange(tmp_path / "e.sock", struct.pack(">I", 4097))
        assert big["error"]["type"] == "FrameTooLarge"
        bad = _exchange(tmp_path / "e.sock", struct.pack(">I", 3) + b"\x09\x00\x00")
        assert bad["error"]["type"] == "FrameError"
        refused = _exchange(tmp_path / "e.sock", _frame({"call": "dump", "id": 1, "args": {}}))
        assert refused["error"]["type"] == "InvalidInputError" and refused["id"] == 1
        held = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        for s in held:
            s.connect(str(tmp_path / "e.sock"))
            s.sendall(_frame({"call": "status", "id": 1, "args": {}}))
            assert wire.decode(wire.read_frame(s, 1 << 20))["ok"]
        busy = _exchange(tmp_path / "e.sock", _frame({"call": "status", "id": 2, "args": {}}))
        assert busy["error"]["type"] == "Busy"
        for s in held:
            s.close()
        assert server.rejected_frames >= 3
    finally:
        server.stop()
    assert not (tmp_path / "e.sock").exists()
