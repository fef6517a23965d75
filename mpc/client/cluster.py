"""`splitseal mpc up/down` and the orchestrator's client of a running MPC cluster.

``up`` writes the cluster's keys (an Ed25519 identity per process, the roster, a secp256k1 key
per node for its on-chain signatures), picks free loopback ports, starts the dealer and N nodes
as separate OS processes (each in its own process group), waits until they answer, and has the
model owner install each node's model (shares or plaintext kernels). ``cluster.json`` records
ports and pids; ``down`` stops those process groups (SIGTERM, then SIGKILL after a grace period).

:class:`MpcClient` plays the terminal and the relying party: it sends each node its input share,
collects the nodes' answers, and — when bound to a chain — registers enrolments and decisions in
``FeatureShareRegistry`` before telling the nodes to commit.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mpc.engine.channel import Channel, Roster, connect, generate_identity, load_identity
from mpc.node.node import ClusterInfo
from mpc.node.signing import KIND, subject_id
from mpc.node.signing import session_id as session_bytes
from mpc.node.store import model_to_blobs
from splitseal.errors import ChainError, InvalidInputError, ProtocolError, SplitsealError

from .owner import FloatModel, node_models
from .terminal import CAPTURES, Terminal

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.8


def _free_ports(host: str, count: int) -> list[int]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind((host, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def write_cluster(state: Path, input_shape: Sequence[int], parties: int, *, shared: bool = True,
                  host: str = "127.0.0.1", threshold: float = DEFAULT_THRESHOLD, frac_bits: int = 16,
                  timeout: float = 30.0, bench: bool = False, base_port: int = 0,
                  capture: str = "unit") -> dict[str, Any]:
    """Write a fresh cluster's keys, roster and cluster.json (no process started).

    ``capture`` is how the cluster's terminal turns a capture into the model's input
    (:class:`~mpc.client.terminal.Terminal`: ``unit`` 0..1, ``face`` YuNet + alignment, 0..255).

    Ports: ``base_port + i`` for node i and ``base_port + parties`` for the dealer, or free
    ports picked by the OS when ``base_port`` is 0."""
    state.mkdir(parents=True, exist_ok=True)
    for stale in state.glob("node-*/store.sqlite3*"):
        stale.unlink()
    names = [f"node-{p}" for p in range(parties)] + ["dealer", "client"]
    roster = Roster({n: bytes.fromhex(generate_identity(state / "keys" / f"{n}.key")) for n in names})
    roster.save(state / "roster.json")
    from eth_account import Account

    addresses = []
    for p in range(parties):
        acct = Account.create()
        d = state / f"node-{p}"
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / "eth.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(acct.key.hex())
        addresses.append(acct.address)
    (state / "dealer" / "seeds.bin").unlink(missing_ok=True)
    ports = [base_port + i for i in range(parties + 1)] if base_port else _free_ports(host, parties + 1)
    info: dict[str, Any] = {"parties": parties, "host": host, "timeout": timeout, "threshold": threshold,
                            "shared": shared, "frac_bits": frac_bits, "bench": bool(bench), "input_shape": [int(v) for v in input_shape], "capture": capture,
                            "nodes": [{"party": p, "port": ports[p], "address": addresses[p]} for p in range(parties)],
                            "dealer": {"port": ports[-1]}}
    (state / "cluster.json").write_text(json.dumps(info, indent=1))
    return info


def up(state_dir: str | Path, model: FloatModel, parties: int = 2, shared: bool = True,
       host: str = "127.0.0.1", threshold: float = DEFAULT_THRESHOLD, frac_bits: int = 16,
       timeout: float = 30.0, ready_timeout: float = 60.0, bench: bool = False, base_port: int = 0,
       capture: str = "unit") -> ClusterInfo:
    """Start dealer + ``parties`` nodes on loopback and install the model. Returns the cluster.

    ``bench`` lets the client fetch feature shares (``infer``) for benchmarks; never in production.
    """
    if not 2 <= parties <= 4:
        raise InvalidInputError(f"an MPC cluster has 2 to 4 nodes, not {parties}")
    if capture not in CAPTURES:
        raise InvalidInputError(f"unknown capture kind {capture!r}; known: {', '.join(CAPTURES)}")
    state = Path(state_dir)
    if (state / "cluster.json").exists():
        info = json.loads((state / "cluster.json").read_text())
        live = [p for p in _pids(info) if _alive(p)]
        if live:
            raise InvalidInputError(f"an MPC cluster is already running from {state} (pids {live}); "
                                    "run `splitseal mpc down` first")
    info = write_cluster(state, model.input_shape, parties, shared=shared, host=host, threshold=threshold,
                         frac_bits=frac_bits, timeout=timeout, bench=bench, base_port=base_port,
                         capture=capture)
    env = dict(os.environ)
    # N nodes + dealer share the machine's cores: a multi-threaded BLAS in each process spins
    # against the others (measured 2-3x slower on 2 cores). One BLAS thread per process.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    logs = state / "logs"
    logs.mkdir(exist_ok=True)

    procs: dict[str, subprocess.Popen] = {}

    def spawn(args: list[str], name: str) -> int:
        out = open(logs / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "mpc.node", "--state-dir", str(state), "-v", *args],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
        out.close()
        procs[name] = proc
        return proc.pid

    info["dealer"]["pid"] = spawn(["--dealer"], "dealer")
    for p in range(parties):
        info["nodes"][p]["pid"] = spawn(["--party", str(p)], f"node-{p}")
    (state / "cluster.json").write_text(json.dumps(info, indent=1))
    cluster = ClusterInfo.load(state)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                client = MpcClient(cluster, connect_timeout=0.5)
                break
            except ProtocolError:
                dead = [name for name, proc in procs.items() if proc.poll() is not None]
                if dead:
                    raise ProtocolError(f"{', '.join(dead)} exited during start-up; see "
                                        f"{logs / (dead[0] + '.log')}") from None
                if time.monotonic() > deadline:
                    raise
        try:
            client.status()
            client.install(node_models(model, parties, shared, frac_bits))
        finally:
            client.close()
    except SplitsealError:
        down(state)
        raise
    log.info("mpc.cluster up parties=%d state=%s", parties, state)
    return cluster


def _pids(info: dict[str, Any]) -> list[int]:
    pids = [n.get("pid") for n in info.get("nodes", [])] + [info.get("dealer", {}).get("pid")]
    return [int(p) for p in pids if p]


def down(state_dir: str | Path, grace: float = 5.0) -> list[int]:
    """Stop the cluster's processes (their process groups); returns the pids that were running."""
    path = Path(state_dir) / "cluster.json"
    if not path.exists():
        return []
    info = json.loads(path.read_text())
    running = [p for p in _pids(info) if _alive(p)]
    for pid in running:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + grace
    for pid in running:
        while _alive(pid) and time.monotonic() < end:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.02)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for node in info.get("nodes", []):
        node.pop("pid", None)
    info.get("dealer", {}).pop("pid", None)
    path.write_text(json.dumps(info, indent=1))
    return running


# --- the client ---------------------------------------------------------------------------

@dataclass
class ChainBinding:
    """Where the client records results: the chain, the registry contract, the node set."""

    chain: Any
    registry: Any
    set_id: int
    sender: Any

    def as_meta(self) -> dict[str, Any]:
        return {"chain_id": int(self.chain.chain_id), "registry": self.registry.address, "set_id": int(self.set_id)}


def register_node_set(chain: Any, registry: Any, addresses: Sequence[str], admin: Any) -> int:
    """``createNodeSet`` for the cluster's node addresses (every node signs: additive shares)."""
    receipt = chain.transact(registry.functions.createNodeSet(list(addresses)), sender=admin)
    events = chain.events(receipt, registry, "NodeSetCreated")
    return int(events[0]["setId"])


@dataclass
class RecognitionResult:
    kind: str
    accepted: bool
    subject: str | None
    score: float
    session: str
    probe_commitment: bytes
    tx: str | None = None


@dataclass
class EnrolmentResult:
    subject: str
    session: str
    commitments: list[bytes]
    tx: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


class MpcClient:
    """The orchestrator's authenticated connections to every node of a running cluster."""

    def __init__(self, cluster: ClusterInfo, chain: ChainBinding | None = None,
                 connect_timeout: float = 10.0) -> None:
        self.cluster = cluster
        self.chain = chain
        info = json.loads((cluster.state_dir / "cluster.json").read_text())
        self.info = info
        self.threshold = float(info.get("threshold", DEFAULT_THRESHOLD))
        self.terminal = Terminal(tuple(info["input_shape"]), cluster.parties, int(info.get("frac_bits", 16)),
                                 capture=info.get("capture", "unit"))
        roster = cluster.roster()
        identity = load_identity(cluster.state_dir / "keys" / "client.key")
        self.channels: list[Channel] = []
        deadline = time.monotonic() + connect_timeout
        for p in range(cluster.parties):
            while True:
                try:
                    self.channels.append(connect(cluster.host, cluster.node_ports[p], "client", identity, roster,
                                                 f"node-{p}"))
                    break
                except ProtocolError:
                    if time.monotonic() > deadline:
                        raise ProtocolError(f"node {p} of the MPC cluster is not answering at "
                                            f"{cluster.host}:{cluster.node_ports[p]}; is `splitseal mpc up` running?") from None
                    time.sleep(0.05)

    def close(self) -> None:
        for ch in self.channels:
            ch.close()

    def addresses(self) -> list[str]:
        return [n["address"] for n in self.info["nodes"]]

    # --- plumbing ---------------------------------------------------------------------------

    def _all(self, op: str, metas: Sequence[dict[str, Any]], arrays: Sequence[list[np.ndarray]] | None = None
             ) -> list[dict[str, Any]]:
        """Send one request to every node, then collect every answer; first error wins.

        Sessions of two clients must not interleave (each node serves requests in arrival
        order; different orders on different nodes would stall both sessions until the peer
        timeout): clients on this machine take an exclusive lock on the cluster directory.
        """
        import fcntl

        with open(self.cluster.state_dir / "session.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return self._all_locked(op, metas, arrays)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _all_locked(self, op: str, metas: Sequence[dict[str, Any]],
                    arrays: Sequence[list[np.ndarray]] | None) -> list[dict[str, Any]]:
        from mpc.engine.transport import Frame, decode_frame, encode_frame

        errors: list[str] = []
        sent = []
        for p, ch in enumerate(self.channels):
            try:
                ch.send(encode_frame(Frame("", op, "data", list(arrays[p]) if arrays else [], dict(metas[p]))))
                sent.append(p)
            except ProtocolError as exc:
                errors.append(f"node {p}: {exc}")
        answers: list[dict[str, Any]] = [{} for _ in self.channels]
        for p in sent:
            try:
                data, _ = self.channels[p].recv()
                frame = decode_frame(data)
            except (ConnectionError, OSError):
                errors.append(f"node {p}: disconnected")
                continue
            if frame.meta.get("error"):
                errors.append(f"node {p}: {frame.meta['error']}")
            answers[p] = frame.meta
        if errors:
            raise ProtocolError(f"{op} failed: " + "; ".join(errors))
        return answers

    def status(self) -> list[dict[str, Any]]:
        return self._all("status", [{}] * len(self.channels))

    def install(self, models: Sequence[Any]) -> None:
        metas, arrays = [], []
        for m in models:
            manifest, arr = model_to_blobs(m)
            names = sorted(arr)
            metas.append({"manifest": manifest, "names": names})
            arrays.append([arr[k] for k in names])
        self._all("install_model", metas, arrays)
        if models and models[0].shared:
            sid, seed = self._session()
            self._all("mask_weights", [{"session": sid, "seed": seed}] * len(self.channels))

    def _session(self) -> tuple[str, str]:
        return os.urandom(32).hex(), os.urandom(32).hex()

    def _image_shares(self, image: Any) -> list[np.ndarray]:
        if isinstance(image, (str, Path)):
            return self.terminal.shares_from_file(image)
        return self.terminal.shares(np.asarray(image))

    # --- enrol / verify / identify -------------------------------------------------------------

    def enroll(self, subject: str, image: Any) -> EnrolmentResult:
        """Enrol: every node computes and stages its feature share; the chain records the
        commitments (when bound); then every node commits — or everyone discards."""
        if not subject or len(subject) > 200:
            raise InvalidInputError("a subject id is 1 to 200 characters")
        shares = self._image_shares(image)
        sid, seed = self._session()
        meta = {"session": sid, "seed": seed, "subject": subject}
        if self.chain:
            # the nodes sign for this very enrolment: the subject's next enrolment number
            record = self.chain.chain.call(self.chain.registry.functions.subject(self.chain.set_id, subject_id(subject)))
            meta["chain"] = {**self.chain.as_meta(), "enrolment": int(record[2]) + 1}
        try:
            answers = self._all("enroll", [meta] * len(self.channels), [[s] for s in shares])
            commitments = [bytes.fromhex(a["commitment"]) for a in answers]
            tx = None
            if self.chain:
                sigs = [bytes.fromhex(a["signature"]) for a in answers]
                receipt = self.chain.chain.transact(
                    self.chain.registry.functions.enrollSubject(self.chain.set_id, subject_id(subject),
                                                                commitments, sigs), sender=self.chain.sender)
                tx = receipt["transactionHash"].hex() if hasattr(receipt["transactionHash"], "hex") else str(receipt["transactionHash"])
        except (SplitsealError, KeyError) as exc:
            self._finish("abort", sid)
            if isinstance(exc, KeyError):
                raise ChainError("a node answered without a signature; is the node's eth key present?") from None
            raise
        self._finish("commit", sid)
        return EnrolmentResult(subject, sid, commitments, tx)

    def _finish(self, op: str, sid: str) -> None:
        try:
            self._all(op, [{"session": sid}] * len(self.channels))
        except ProtocolError as exc:
            log.warning("mpc.client %s incomplete session=%s error=%s", op, sid[:16], exc)

    def verify(self, subject: str, image: Any, threshold: float | None = None) -> RecognitionResult:
        return self._recognise("verify", image, threshold, subject)

    def identify(self, image: Any, threshold: float | None = None) -> RecognitionResult:
        return self._recognise("identify", image, threshold, None)

    def _recognise(self, kind: str, image: Any, threshold: float | None, subject: str | None) -> RecognitionResult:
        shares = self._image_shares(image)
        sid, seed = self._session()
        meta: dict[str, Any] = {"session": sid, "seed": seed,
                                "threshold": self.threshold if threshold is None else float(threshold)}
        if subject is not None:
            meta["subject"] = subject
        if self.chain:
            meta["chain"] = self.chain.as_meta()
        answers = self._all(kind, [meta] * len(self.channels), [[s] for s in shares])
        first = answers[0]
        if any((a["accepted"], a["subject"], a["probe_commitment"]) !=
               (first["accepted"], first["subject"], first["probe_commitment"]) for a in answers):
            raise ProtocolError("nodes disagree on the decision; the session is void")
        probe = bytes.fromhex(first["probe_commitment"])
        result = RecognitionResult(kind, bool(first["accepted"]), first["subject"], float(first["score"]), sid, probe)
        if self.chain:
            sigs = [bytes.fromhex(a["signature"]) for a in answers]
            receipt = self.chain.chain.transact(
                self.chain.registry.functions.recordDecision(
                    self.chain.set_id, session_bytes(sid), KIND[kind], subject_id(result.subject),
                    result.accepted, probe, sigs), sender=self.chain.sender)
            h = receipt["transactionHash"]
            result.tx = h.hex() if hasattr(h, "hex") else str(h)
        return result


def record_chain(state_dir: str | Path, url: str, registry: str, set_id: int) -> None:
    """Remember in cluster.json which chain, registry and node set the cluster reports to."""
    path = Path(state_dir) / "cluster.json"
    info = json.loads(path.read_text())
    info["chain"] = {"url": url, "registry": registry, "set_id": int(set_id)}
    path.write_text(json.dumps(info, indent=1))


def chain_record(state_dir: str | Path) -> dict[str, Any] | None:
    try:
        info = json.loads((Path(state_dir) / "cluster.json").read_text())
    except (OSError, ValueError):
        raise InvalidInputError(f"no MPC cluster in {state_dir}; run `splitseal mpc up` first") from None
    return info.get("chain")
