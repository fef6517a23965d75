"""The MPC feature-share node (one OS process per node), the cluster layout, request helpers.

Lifecycle, visible and testable:

* :meth:`MpcNode.setup` — open the node's SQLite store, load its identity, start the
  authenticated listener (peers above it and the orchestrator's client dial in), fetch its dealer
  seed, dial the peers below it;
* :meth:`MpcNode.poll_once` — serve at most one request from the orchestrator (one MPC session:
  enrol, verify, identify) or one commit/abort; tests drive it without sleeps;
* :meth:`MpcNode.run` — loop on ``poll_once`` until :meth:`MpcNode.stop` (SIGTERM/SIGINT);
* :meth:`MpcNode.close` — drop links, stop the listener, close the store.

A failed session (a peer vanished, a peer aborted, bad input) is aborted on every node: this node
tells its peers, discards anything it staged and answers the orchestrator with the error.

Cluster layout in the state directory (written by ``splitseal mpc up``): ``cluster.json``
(parties, host, ports, pids), ``roster.json`` (Ed25519 public keys), ``keys/<name>.key``,
``node-<i>/store.sqlite3`` and ``node-<i>/eth.key`` (the node's secp256k1 key).

The dealer process is :mod:`mpc.node.dealer`; ``python -m mpc.node`` runs either (:mod:`mpc.node`).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from mpc.engine.beaver import DEALER_WAIT, DealerTripleProvider
from mpc.engine.channel import Channel, Listener, Roster, connect, load_identity
from mpc.engine.protocol import Session
from mpc.engine.recognition import AGGREGATOR, Decision, cosine_scores, decide_identify, decide_verify
from mpc.engine.ring import to_bytes_u64
from mpc.engine.transport import Frame, TcpTransport, decode_frame, encode_frame
from splitseal.errors import InvalidInputError, ProtocolError, SplitsealError
from splitseal.protocol.crypto import keccak256

from .signing import sign_decision, sign_share_commitment
from .store import NodeStore, model_from_blobs

log = logging.getLogger(__name__)


def share_commitment(salt: bytes, share: np.ndarray) -> bytes:
    """Salted commitment of a share: keccak256(salt || little-endian uint64 bytes)."""
    return keccak256(salt + to_bytes_u64(share))


@dataclass(frozen=True)
class ClusterInfo:
    """What ``cluster.json`` says: where every process of the cluster listens."""

    state_dir: Path
    parties: int
    host: str
    node_ports: list[int]
    dealer_port: int
    timeout: float = 30.0

    @classmethod
    def load(cls, state_dir: str | Path) -> "ClusterInfo":
        state_dir = Path(state_dir)
        try:
            d = json.loads((state_dir / "cluster.json").read_text())
        except (OSError, ValueError):
            raise InvalidInputError(f"no MPC cluster in {state_dir}; run `splitseal mpc up` first") from None
        return cls(state_dir, int(d["parties"]), d["host"], [int(n["port"]) for n in d["nodes"]],
                   int(d["dealer"]["port"]), float(d.get("timeout", 30.0)))

    def roster(self) -> Roster:
        return Roster.load(self.state_dir / "roster.json")


def reply(ch: Channel, meta: Mapping[str, Any], arrays: list[np.ndarray] | None = None) -> None:
    """Server side of a request/response: answer on the channel the request came in on."""
    ch.send(encode_frame(Frame("", "reply", "data", list(arrays or []), dict(meta))))


def request(ch: Channel, op: str, meta: Mapping[str, Any] | None = None,
            arrays: list[np.ndarray] | None = None) -> Frame:
    """Client side of a request/response over a channel (orchestrator -> node, node -> dealer)."""
    ch.send(encode_frame(Frame("", op, "data", list(arrays or []), dict(meta or {}))))
    try:
        data, _ = ch.recv()
    except (ConnectionError, OSError):
        raise ProtocolError(f"{ch.peer} closed the connection before answering {op}") from None
    frame = decode_frame(data)
    if frame.meta.get("error"):
        raise ProtocolError(f"{ch.peer}: {frame.meta['error']}")
    return frame


class MpcNode:
    """One feature-share node."""

    def __init__(self, cluster: ClusterInfo, party: int) -> None:
        if not 0 <= party < cluster.parties:
            raise InvalidInputError(f"party {party} outside 0..{cluster.parties - 1}")
        self.cluster = cluster
        self.party = party
        self.name = f"node-{party}"
        self.dir = cluster.state_dir / self.name
        self._requests: queue.Queue[tuple[Channel, Frame | None]] = queue.Queue()
        self._stop = threading.Event()
        self.store: NodeStore | None = None
        self.transport: TcpTransport | None = None
        self.listener: Listener | None = None
        self.dealer_channel: Channel | None = None
        self.triples: DealerTripleProvider | None = None
        self._dealer_lock = threading.Lock()
        self._eth_key: bytes | None = None
        #: bytes of triple corrections received from the dealer (only the last node gets any)
        self.dealer_bytes = 0
        self._model = None  # parsed model, cached (parsing the stored npz costs milliseconds)
        self._masked: dict[int, np.ndarray] | None = None
        #: ``on_served(op, error_type_or_None, seconds)`` after every request (``mpc node run --json``).
        self.on_served: Callable[[str, str | None, float], None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def setup(self, connect_timeout: float = 20.0) -> None:
        c = self.cluster
        self.store = NodeStore(self.dir / "store.sqlite3")
        roster = c.roster()
        identity = load_identity(c.state_dir / "keys" / f"{self.name}.key")
        eth_path = self.dir / "eth.key"
        if eth_path.exists():
            self._eth_key = bytes.fromhex(eth_path.read_text().strip())
        self.transport = TcpTransport(self.party, c.parties, c.timeout)
        higher = {f"node-{p}" for p in range(self.party + 1, c.parties)}
        self.listener = Listener(c.host, c.node_ports[self.party], self.name, identity, roster,
                                 allowed=lambda nm: nm in higher or nm == "client", on_channel=self._on_channel)
        deadline = time.monotonic() + connect_timeout
        self.dealer_channel = self._dial(c.host, c.dealer_port, identity, roster, "dealer", deadline)
        seed = request(self.dealer_channel, "seed", {"party": self.party}).arrays[0].tobytes()
        fetch = self._fetch if self.party == c.parties - 1 else None
        self.triples = DealerTripleProvider(self.party, c.parties, seed, fetch)
        for p in range(self.party):
            self.transport.attach(p, self._dial(c.host, c.node_ports[p], identity, roster, f"node-{p}", deadline))
        self._identity, self._roster = identity, roster
        log.info("mpc.node ready party=%d parties=%d port=%d", self.party, c.parties, self.listener.port)

    def _dial(self, host: str, port: int, identity, roster: Roster, name: str, deadline: float) -> Channel:
        while True:
            try:
                return connect(host, port, self.name, identity, roster, name)
            except ProtocolError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _on_channel(self, ch: Channel) -> None:
        if ch.peer.startswith("node-"):
            assert self.transport is not None
            self.transport.attach(int(ch.peer.split("-")[1]), ch)
            return
        threading.Thread(target=self._client_reader, args=(ch,), daemon=True).start()

    def _client_reader(self, ch: Channel) -> None:
        while True:
            try:
                data, _ = ch.recv()
                frame = decode_frame(data)
            except (ConnectionError, OSError, ProtocolError):
                return
            self._requests.put((ch, frame))

    def _fetch(self, req: Mapping[str, Any]) -> np.ndarray:
        assert self.dealer_channel is not None
        with self._dealer_lock:
            out = request(self.dealer_channel, "correction", dict(req)).arrays[0]
            self.dealer_bytes += out.nbytes
            return out

    def install_signals(self) -> None:
        """SIGTERM / SIGINT stop the loop after the current request."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self.poll_once(timeout=0.2)

    def close(self) -> None:
        for closable in (self.listener, self.transport, self.dealer_channel):
            if closable is not None:
                closable.close()
        if self.store is not None:
            self.store.close()
        log.info("mpc.node stopped party=%d", self.party)

    # --- one request -----------------------------------------------------------------------

    def poll_once(self, timeout: float = 0.0) -> bool:
        """Serve one pending request; False if none arrived within ``timeout`` seconds."""
        try:
            ch, frame = self._requests.get(timeout=timeout) if timeout > 0 else self._requests.get_nowait()
        except queue.Empty:
            return False
        op = frame.tag
        started, error = time.perf_counter(), None
        try:
            handler = getattr(self, f"_op_{op}", None)
            if handler is None:
                raise InvalidInputError(f"unknown request {op!r}")
            meta, arrays = handler(frame)
            reply(ch, meta, arrays)
        except SplitsealError as exc:
            error = type(exc).__name__
            log.warning("mpc.node request failed party=%d op=%s error=%s", self.party, op, exc)
            try:
                reply(ch, {"error": str(exc)})
            except ProtocolError:
                pass
        if self.on_served is not None:
            self.on_served(str(op), error, time.perf_counter() - started)
        return True

    def _session(self, frame: Frame) -> Session:
        sid = str(frame.meta["session"])
        seed = bytes.fromhex(frame.meta["seed"])
        return Session(self.transport, self.triples, sid, seed,
                       self._current_model().frac_bits if self.store.has_model() else 16)

    def _current_model(self):
        if self._model is None:
            self._model = self.store.model()
        return self._model

    def _ensure_links(self) -> None:
        """Redial lower peers whose link dropped (a restarted peer); higher peers dial us."""
        c = self.cluster
        for p in range(self.party):
            if not self.transport.connected(p):
                try:
                    self.transport.attach(p, connect(c.host, c.node_ports[p], self.name, self._identity,
                                                     self._roster, f"node-{p}", timeout=2.0))
                except ProtocolError as exc:
                    log.warning("mpc.node redial failed party=%d peer=%d error=%s", self.party, p, exc)

    def _run_session(self, frame: Frame, body):
        sid = str(frame.meta["session"])
        assert self.transport is not None
        self._ensure_links()
        self.transport.begin(sid)
        try:
            result = body(self._session(frame))
        except SplitsealError as exc:
            self.transport.abort(sid, f"node {self.party}: {exc}")
            self.store.discard(sid)
            raise
        self.transport.end(sid)
        return result

    def _op_status(self, frame: Frame):
        states = self.store.subject_states()
        return {"party": self.party, "parties": self.cluster.parties, "model": self.store.has_model(),
                "enrolled": sum(1 for s in states.values() if s == "enrolled"),
                "pending": sum(1 for s in states.values() if s == "pending"),
                "address": self.address()}, []

    def _op_install_model(self, frame: Frame):
        names = frame.meta["names"]
        model = model_from_blobs(frame.meta["manifest"], dict(zip(names, frame.arrays)))
        self.store.install_model(model)
        self._model = model
        self._masked = None
        return {"installed": True}, []

    def _op_mask_weights(self, frame: Frame):
        """One session after install: open W - B for every shared weight (Session.mask_weights)."""
        model = self._current_model()
        masked = self._run_session(frame, lambda s: s.mask_weights(model))
        self.store.save_masked_weights(model.model_id, masked)
        self._masked = masked
        return {"layers": len(masked)}, []

    def _features(self, s: Session, frame: Frame) -> np.ndarray:
        model = self._current_model()
        if len(frame.arrays) != 1:
            raise InvalidInputError("expected one input share")
        if self._masked is None and model.shared:
            self._masked = self.store.masked_weights(model.model_id)
        return s.infer(model, np.asarray(frame.arrays[0], dtype=np.uint64), self._masked)

    def _op_infer(self, frame: Frame):
        """Benchmark only: run feature extraction and return this node's feature *share* with
        timings and traffic. Refused unless the cluster was started with ``bench`` enabled,
        because the caller could otherwise collect every share and rebuild feature vectors."""
        info = json.loads((self.cluster.state_dir / "cluster.json").read_text())
        if not info.get("bench"):
            raise InvalidInputError("feature export is disabled on this cluster (benchmark clusters only)")
        before = self.transport.stats.snapshot()
        fetches = self.triples.fetches
        dealer_bytes = self.dealer_bytes
        dealer_wait = DEALER_WAIT["seconds"]
        t0 = time.perf_counter()
        out = self._run_session(frame, lambda s: self._features(s, frame))
        elapsed = time.perf_counter() - t0
        d = self.transport.stats.since(before)
        return {"seconds": elapsed, "wait_seconds": d.wait_seconds,
                "dealer_wait_seconds": DEALER_WAIT["seconds"] - dealer_wait, "rounds": d.rounds, "bytes_sent": d.bytes_sent,
                "bytes_received": d.bytes_received, "dealer_fetches": self.triples.fetches - fetches,
                "dealer_bytes": self.dealer_bytes - dealer_bytes}, [out]

    def _op_enroll(self, frame: Frame):
        subject = str(frame.meta["subject"])
        sid = str(frame.meta["session"])

        def body(s: Session):
            if self.store.share(subject) is not None or subject in self.store.subject_states():
                raise InvalidInputError(f"subject {subject!r} is already enrolled")
            feat = self._features(s, frame)[0]
            salt = os.urandom(32)
            commitment = share_commitment(salt, feat)
            # every node must have computed its share before anyone stages: one round
            s.t.exchange_meta(s._tag("staged"), {p: {"ok": True} for p in s.t.peers}, s.t.peers)
            self.store.stage(subject, feat, salt, commitment, sid)
            return commitment

        commitment = self._run_session(frame, body)
        meta = {"commitment": commitment.hex(), "address": self.address()}
        meta.update(self._sign("ShareCommitment", frame.meta, commitment=commitment))
        return meta, []

    def _op_hybrid(self, frame: Frame):
        """Hybrid request (mpc.node.hybrid): the backbone on shares, this node's output share
        sealed to the enclave and signed. Checked inside the session so a refusal aborts every node."""
        from .hybrid import serve

        model = self._current_model()
        meta = self._run_session(frame, lambda s: serve(
            frame.meta, frame.arrays, party=self.party, parties=self.cluster.parties, frac_bits=model.frac_bits,
            address=self.address(), eth_key=self._eth_key, run_backbone=lambda _share: self._features(s, frame)))
        return meta, []

    def _op_commit(self, frame: Frame):
        return {"committed": self.store.commit(str(frame.meta["session"]))}, []

    def _op_abort(self, frame: Frame):
        return {"discarded": self.store.discard(str(frame.meta["session"]))}, []

    def _recognise(self, frame: Frame, kind: str):
        threshold = float(frame.meta["threshold"])
        sid = str(frame.meta["session"])

        def body(s: Session):
            if kind == "verify":
                subject = str(frame.meta["subject"])
                share = self.store.share(subject)
                if share is None:
                    raise InvalidInputError(f"subject {subject!r} is not enrolled")
                subjects, gallery = [subject], share[None, :]
            else:
                subjects, gallery = self.store.gallery()
                if not subjects:
                    raise InvalidInputError("no subject is enrolled; enrol before identifying")
            import hashlib

            listing = hashlib.sha256("\n".join(subjects).encode()).hexdigest()
            probe = self._features(s, frame)[0]
            salt = os.urandom(32)
            probe_c = share_commitment(salt, probe)
            scores = cosine_scores(s, probe, gallery)
            decision = None
            if self.party == AGGREGATOR:
                d = (decide_verify(scores, subjects[0], threshold) if kind == "verify"
                     else decide_identify(scores, subjects, threshold))
                decision = {"subject": d.subject, "accepted": d.accepted}
            msgs = {p: {"listing": listing, "probe": probe_c.hex(), "decision": decision} for p in s.t.peers}
            got = s.t.exchange_meta(s._tag("decision"), msgs, s.t.peers)
            if any(m["listing"] != listing for m in got.values()):
                raise ProtocolError("nodes hold different enrolled subjects; re-sync the cluster")
            if self.party != AGGREGATOR:
                decision = got[AGGREGATOR]["decision"]
            commits = [probe_c if p == self.party else bytes.fromhex(got[p]["probe"])
                       for p in range(s.n)]
            probe_commitment = keccak256(b"".join(commits))
            d = Decision(kind, decision["subject"], bool(decision["accepted"]),
                         float(scores[np.argmax(scores)]) if scores is not None else None)
            self.store.record_decision(sid, kind, d.subject, d.accepted, probe_commitment)
            return d, probe_commitment

        d, probe_commitment = self._run_session(frame, body)
        meta = {"accepted": d.accepted, "subject": d.subject, "probe_commitment": probe_commitment.hex(),
                "address": self.address()}
        if d.score is not None:
            meta["score"] = d.score
        meta.update(self._sign("Decision", frame.meta, kind=kind, subject=d.subject, accepted=d.accepted,
                               probe_commitment=probe_commitment))
        return meta, []

    def _op_verify(self, frame: Frame):
        return self._recognise(frame, "verify")

    def _op_identify(self, frame: Frame):
        return self._recognise(frame, "identify")

    # --- chain signatures ----------------------------------------------------------------------

    def address(self) -> str | None:
        if self._eth_key is None:
            return None
        from eth_account import Account

        return Account.from_key(self._eth_key).address

    def _sign(self, struct_name: str, req: Mapping[str, Any], **fields: Any) -> dict[str, str]:
        """EIP-712 signature for the chain, when the request names the registry (else nothing)."""
        chain = req.get("chain")
        if not chain or self._eth_key is None:
            return {}
        if struct_name == "ShareCommitment":
            sig = sign_share_commitment(self._eth_key, chain, req["subject"], int(chain["enrolment"]),
                                        fields["commitment"])
        else:
            sig = sign_decision(self._eth_key, chain, req["session"], fields["kind"], fields["subject"],
                                fields["accepted"], fields["probe_commitment"])
        return {"signature": sig.hex()}
