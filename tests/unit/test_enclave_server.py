"""The socket server in-process: calls, malformed frames, connection limit, clean stop."""

from __future__ import annotations

import socket
import struct

from enclave.core import EnclaveCore
from enclave.identity import load_identity
from enclave.platform import SimulatedPlatform
from enclave.server import EnclaveServer
from splitseal.protocol import wire


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


def _drained(server, timeout: float = 5.0) -> None:
    """Wait until the server has closed its side of the connections already answered (under
    load its threads may lag, and the next exchange would find the limit reached)."""
    import time

    deadline = time.monotonic() + timeout
    while server._conns and time.monotonic() < deadline:
        time.sleep(0.01)


def test_server_answers_refuses_and_stops_cleanly(tmp_path):
    core = EnclaveCore(SimulatedPlatform(tmp_path / "p"), load_identity(), tmp_path / "state")
    server = EnclaveServer(core, tmp_path / "e.sock", max_frame_bytes=4096, max_connections=2)
    server.start()
    try:
        assert (tmp_path / "e.sock").stat().st_mode & 0o077 == 0
        ok = _exchange(tmp_path / "e.sock", _frame({"call": "status", "id": 9, "args": {}}))
        assert ok["ok"] and ok["id"] == 9 and ok["result"]["enclave"] == core.address
        _drained(server)
        big = _exchange(tmp_path / "e.sock", struct.pack(">I", 4097))
        assert big["error"]["type"] == "FrameTooLarge"
        _drained(server)
        bad = _exchange(tmp_path / "e.sock", struct.pack(">I", 3) + b"\x09\x00\x00")
        assert bad["error"]["type"] == "FrameError"
        _drained(server)
        refused = _exchange(tmp_path / "e.sock", _frame({"call": "dump", "id": 1, "args": {}}))
        assert refused["error"]["type"] == "InvalidInputError" and refused["id"] == 1
        _drained(server)
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


def test_idle_connections_time_out_so_strangers_cannot_lock_others_out(tmp_path):
    """Connections opened and left idle (as many as the limit) are closed after the idle
    timeout; then others are served again, and a client whose connection was closed reconnects."""
    import time

    from splitseal.enclave_client import EnclaveClient

    core = EnclaveCore(SimulatedPlatform(tmp_path / "p"), load_identity(), tmp_path / "state")
    server = EnclaveServer(core, tmp_path / "e.sock", max_frame_bytes=4096, max_connections=3, idle_timeout=0.5)
    server.start()
    try:
        client = EnclaveClient(tmp_path / "e.sock")
        assert client.status().enclave == core.address  # a long-lived client, then idle
        idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(1)]
        for s in idle:
            s.connect(str(tmp_path / "e.sock"))
        half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a frame started and never finished
        half.connect(str(tmp_path / "e.sock"))
        half.sendall(struct.pack(">I", 100) + b"x")
        time.sleep(0.2)
        busy = _exchange(tmp_path / "e.sock", _frame({"call": "status", "id": 2, "args": {}}))
        assert busy["error"]["type"] == "Busy"  # the limit is reached
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            reply = _exchange(tmp_path / "e.sock", _frame({"call": "status", "id": 3, "args": {}}))
            if reply.get("ok"):
                break
            time.sleep(0.1)
        assert reply["ok"], reply  # the idle ones were closed: served again
        for s in idle + [half]:
            assert s.recv(1) == b""  # closed by the enclave
            s.close()
        assert client.status().enclave == core.address  # its connection was closed too: reconnected
        client.close()
    finally:
        server.stop()


def test_a_provisioned_head_is_moved_out_of_the_cyclic_collectors_reach(tmp_path):
    """After a provisioning call the server collects and freezes the heap (``gc.freeze``): the
    head the enclave now holds for its lifetime is no longer walked by full collections in the
    middle of answers; a refused call changes nothing, and the head still answers."""
    import gc

    from tests.unit.test_enclave_core import MODEL, _answer, _provision, _split
    from splitseal.protocol import crypto

    class ProvisionOverTheSocket:
        """The core's ``call`` as the server runs it (the test helpers call the core directly)."""

        def __init__(self, path):
            self.path, self.encryption_key, self.address = path, core.encryption_key, core.address

        def call(self, name, args):
            reply = _exchange(self.path, _frame({"call": name, "id": 1, "args": args}))
            assert reply["ok"], reply
            return reply["result"]

    es, res = _split("label")
    core = EnclaveCore(SimulatedPlatform(tmp_path / "p"), load_identity(), tmp_path / "state")
    server = EnclaveServer(core, tmp_path / "e.sock", max_frame_bytes=1 << 24)
    server.start()
    gc.unfreeze()
    try:
        _exchange(tmp_path / "e.sock", _frame({"call": "dump", "id": 1, "args": {}}))
        assert gc.get_freeze_count() == 0  # refused: nothing new to keep
        _provision(ProvisionOverTheSocket(tmp_path / "e.sock"), res)
        head = core._models[(MODEL, 1)].head
        assert gc.get_freeze_count() > 0 and head is not None
        assert not any(obj is head for obj in gc.get_objects())  # frozen, out of every generation
        feats = __import__("onnxruntime").InferenceSession(res.backbone_bytes, providers=["CPUExecutionProvider"]).run(
            None, {"x": es.sample_inputs(1, seed=2)})[0]
        assert _answer(core, feats, 1, crypto.X25519KeyPair.generate())["sequence"] == 1
    finally:
        gc.unfreeze()  # this test process's heap is the collector's again
        server.stop()
