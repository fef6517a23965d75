"""Client of the enclave process: typed methods per entry call, and process control.

The chain node, the provisioning tool and tests talk to the enclave only through this class.
Every method sends one frame (``splitseal/protocol/wire.py``) and returns the decoded result as a frozen
dataclass; a refusal raises :class:`EnclaveRefusedError` carrying the enclave's error type and
the on-chain failure reason code (docs/PROTOCOL.md) so the node can report it.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from splitseal.errors import EnclaveError, SealingError
from splitseal.protocol.result import ResultClaim

from .protocol import wire

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME = 64 * 1024 * 1024


class EnclaveRefusedError(EnclaveError):
    """The enclave refused an entry call; ``kind`` is its error type, ``reason`` the failure code."""

    def __init__(self, call: str, kind: str, message: str, reason: int) -> None:
        super().__init__(f"enclave refused {call}: {message}")
        self.call, self.kind, self.reason = call, kind, reason


class EnclaveSealingError(EnclaveRefusedError, SealingError):
    """The enclave refused to open sealed state (other measurement, tampered, rolled back)."""


class EnclaveUnavailableError(EnclaveError):
    """The enclave socket cannot be reached or the connection broke."""


@dataclass(frozen=True)
class EnclaveStatus:
    measurement: bytes
    signer: bytes
    product_id: int
    security_version: int
    debug: bool
    enclave: str
    encryption_key: bytes
    quoting_key: str
    state_version: int
    restored: bool
    answered: int
    models: tuple[dict[str, Any], ...]
    #: answers issued so far (the last answer's sequence number)
    sequence: int = 0
    #: process protections in effect (enclave.hardening): dumpable, core_files, memory_locked, user
    process: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Attestation:
    quote: bytes
    enclave: str
    encryption_key: bytes
    measurement: bytes
    nonce: bytes
    registration_signature: bytes


@dataclass(frozen=True)
class HeadConfirmation:
    enclave: str
    state_version: int
    head_graph_hash: bytes
    head_params_hash: bytes
    package_hash: bytes
    serving: bool
    signature: bytes


@dataclass(frozen=True)
class IndexConfirmation:
    enclave: str
    encrypted_index_hash: bytes
    merkle_root: bytes
    entry_count: int
    state_version: int
    serving: bool
    signature: bytes


@dataclass(frozen=True)
class InferenceReply:
    request_id: int
    enclave: str
    encrypted_result: bytes
    result_commitment: bytes
    transfer_hash: bytes
    input_commitment: bytes
    requester: str
    requester_key: bytes
    #: the enclave's answer number (its sealed counter), signed and recorded on delivery
    sequence: int
    signature: bytes
    #: the enclave had answered this request before and handed out that same answer again
    repeated: bool = False
    #: hybrid requests: the contributions record (keccak256 = transfer hash) and the output commitment
    record: bytes = b""
    output_commitment: bytes = b""
    #: the label the enclave signed in plaintext (``public_label`` output policy only; 32 bytes)
    public_label: bytes | None = None

    def claim(self, model_id: bytes) -> ResultClaim:
        """The claim the signature covers, as a delivery passes it to the contracts."""
        return ResultClaim(request_id=self.request_id, model_id=model_id, input_commitment=self.input_commitment,
                           requester=self.requester, requester_key=self.requester_key, enclave=self.enclave,
                           transfer_hash=self.transfer_hash, sequence=self.sequence, label=self.public_label)


class EnclaveClient:
    """One connection to the enclave socket (thread-safe: calls are serialised)."""

    def __init__(self, socket_path: str | os.PathLike[str], *, timeout: float = 60.0,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME, trace: bool = False) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self.max_frame_bytes = max_frame_bytes
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        #: When tracing, every frame sent and received (for tests that inspect the traffic).
        self.traffic: list[bytes] | None = [] if trace else None

    def __enter__(self) -> "EnclaveClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is not None and _closed_by_peer(self._sock):
            self.close()  # the enclave closed it (idle, or it restarted): a fresh connection
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
            except OSError as exc:
                sock.close()
                raise EnclaveUnavailableError(
                    f"cannot connect to the enclave at {self.socket_path} ({exc.strerror or exc}); "
                    "start it with `splitseal enclave serve`") from None
            self._sock = sock
        return self._sock

    def call(self, name: str, **args: Any) -> dict[str, Any]:
        """Send one entry call and return its result map (raw; prefer the typed methods)."""
        with self._lock:
            request_id = next(self._ids)
            payload = wire.encode({"call": name, "id": request_id, "args": args})
            sock = self._connect()
            try:
                wire.write_frame(sock, payload, self.max_frame_bytes)
                reply = wire.read_frame(sock, self.max_frame_bytes)
            except (OSError, wire.FrameError) as exc:
                self.close()
                raise EnclaveUnavailableError(f"enclave connection broke during {name}: {exc}") from None
            if reply is None:
                self.close()
                raise EnclaveUnavailableError(f"enclave closed the connection during {name}")
            if self.traffic is not None:
                self.traffic.extend([payload, reply])
        response = wire.decode(reply)
        if not response.get("ok"):
            err = response.get("error") or {}
            cls = EnclaveSealingError if err.get("type") == "SealingError" else EnclaveRefusedError
            raise cls(name, str(err.get("type")), str(err.get("message")), int(err.get("reason") or 5))
        return response["result"]

    # -- typed entry calls ----------------------------------------------------------------------

    def status(self) -> EnclaveStatus:
        r = self.call("status")
        r["models"] = tuple(r["models"])
        return EnclaveStatus(**r)

    def attest(self, nonce: bytes, chain_id: int, registry: str) -> Attestation:
        return Attestation(**self.call("attest", nonce=nonce, chain_id=chain_id, registry=registry))

    def provision_head(self, *, model_id: bytes, version: int, chain_id: int, registry: str,
                       transfer: str, package_ciphertext: bytes, package_plain_hash: bytes,
                       head_graph_hash: bytes, head_params_hash: bytes, package_hash: bytes,
                       anchored_state_version: int = 0) -> HeadConfirmation:
        return HeadConfirmation(**self.call(
            "provision_head", model_id=model_id, version=version, chain_id=chain_id, registry=registry,
            transfer=transfer, package_ciphertext=package_ciphertext,
            package_plain_hash=package_plain_hash, head_graph_hash=head_graph_hash,
            head_params_hash=head_params_hash, package_hash=package_hash,
            anchored_state_version=anchored_state_version))

    def provision_index(self, *, model_id: bytes, version: int, chain_id: int, parameter_index: str,
                        index_ciphertext: bytes, index_plain_hash: bytes, encrypted_index_hash: bytes,
                        merkle_root: bytes, entry_count: int) -> IndexConfirmation:
        return IndexConfirmation(**self.call(
            "provision_index", model_id=model_id, version=version, chain_id=chain_id,
            parameter_index=parameter_index, index_ciphertext=index_ciphertext,
            index_plain_hash=index_plain_hash, encrypted_index_hash=encrypted_index_hash,
            merkle_root=merkle_root, entry_count=entry_count))

    def infer(self, *, request_id: int, model_id: bytes, version: int, input_commitment: bytes,
              transfer_ciphertext: bytes, shape: Sequence[int], dtype: str,
              requester_key: bytes, requester: str) -> InferenceReply:
        return InferenceReply(**self.call(
            "infer", request_id=request_id, model_id=model_id, version=version,
            input_commitment=input_commitment, transfer_ciphertext=transfer_ciphertext,
            shape=[int(d) for d in shape], dtype=dtype, requester_key=requester_key, requester=requester))

    def infer_hybrid(self, *, request_id: int, model_id: bytes, version: int, input_commitment: bytes,
                     manifest: bytes, shares: Sequence[dict[str, Any]], shape: Sequence[int],
                     requester_key: bytes, requester: str) -> InferenceReply:
        """A hybrid request: ``shares`` = [{party, sealed, signature}] from the MPC nodes."""
        return InferenceReply(**self.call(
            "infer_hybrid", request_id=request_id, model_id=model_id, version=version,
            input_commitment=input_commitment, manifest=manifest,
            shares=[{"party": int(s["party"]), "sealed": bytes(s["sealed"]), "signature": bytes(s["signature"])}
                    for s in shares],
            shape=[int(d) for d in shape], requester_key=requester_key, requester=requester))

    def seal_state(self) -> dict[str, Any]:
        return self.call("seal_state", action="seal")

    def restore_state(self, anchored_state_version: int, anchored_sequence: int = 0) -> dict[str, Any]:
        return self.call("seal_state", action="restore", anchored_state_version=anchored_state_version,
                         anchored_sequence=anchored_sequence)


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the peer closed (or reset) the connection: readable with nothing to read."""
    import select

    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (OSError, ValueError):
        return True


# --- the enclave as a child process -----------------------------------------------------------

class EnclaveProcess:
    """Start ``python -m enclave`` as its own OS process group; stop it with SIGTERM."""

    def __init__(self, proc: subprocess.Popen[bytes], socket_path: Path, log_path: Path | None) -> None:
        self.proc, self.socket_path, self.log_path = proc, socket_path, log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(cls, state_dir: str | os.PathLike[str], socket_path: str | os.PathLike[str], *,
              extra_args: Sequence[str] = (), log_path: str | os.PathLike[str] | None = None,
              timeout: float = 30.0, debug_enclave: bool = False, product_id: int = 1,
              security_version: int = 1) -> "EnclaveProcess":
        socket_path = Path(socket_path)
        cmd = [sys.executable, "-m", "enclave", "--state-dir", str(state_dir), "--socket", str(socket_path),
               "--product-id", str(product_id), "--security-version", str(security_version), *extra_args]
        if debug_enclave:
            cmd.append("--debug-enclave")
        if log_path:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if log_path else subprocess.DEVNULL,
                                    start_new_session=True, cwd=str(Path(__file__).resolve().parent.parent))
        finally:
            if log_path:
                out.close()
        self = cls(proc, socket_path, Path(log_path) if log_path else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-500:] if self.log_path else ""
                raise EnclaveUnavailableError(f"enclave process exited with status {proc.returncode} "
                                              f"at start: {tail.strip().splitlines()[-1] if tail.strip() else ''}")
            if socket_path.exists():
                try:
                    with EnclaveClient(socket_path, timeout=5) as c:
                        c.status()
                    return self
                except EnclaveUnavailableError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise EnclaveUnavailableError(f"enclave did not open {socket_path} within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait; SIGKILL only if it does not exit. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
