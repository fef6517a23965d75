"""Message transport between MPC nodes: the Transport interface, an in-process and a TCP version.

A *round* is one :meth:`Transport.exchange`: a node sends its messages for the step to the
peers that need them, then waits for the messages it expects. Rounds and bytes are counted here
so that benchmarks read them rather than estimate them.

Frames carry a session id and a step tag. A frame of an older (finished) session is dropped, a
frame of a session not started yet is kept until it starts, and a frame with the wrong tag in
the current session is a protocol violation. A peer that closes, dies or aborts makes every
waiting node raise :class:`~splitseal.errors.ProtocolError`; a node that fails a session tells
its peers with an abort frame so that they fail at once instead of waiting for a timeout.

Wire format of a frame (no pickle): ``u32 header length || header (JSON) || array bytes``; the
header names the session, the tag, the frame kind (data / abort) and each array's dtype and shape.
"""

from __future__ import annotations

import abc
import collections
import json
import logging
import queue
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from splitseal.errors import ProtocolError

if TYPE_CHECKING:
    from .channel import Channel

log = logging.getLogger(__name__)

_DTYPES = {"uint64": np.uint64, "int64": np.int64, "float64": np.float64, "uint8": np.uint8}
MAX_FRAME = 1 << 31


@dataclass
class Frame:
    session: str
    tag: str
    kind: str = "data"  # data | abort | close
    arrays: list[np.ndarray] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def encode_frame(frame: Frame) -> bytes:
    """Serialise a frame (header JSON + raw little-endian array bytes)."""
    specs = []
    blobs = []
    for a in frame.arrays:
        a = np.ascontiguousarray(a)
        name = a.dtype.name
        if name not in _DTYPES:
            raise ProtocolError(f"cannot send arrays of dtype {name}")
        specs.append([name, list(a.shape)])
        blobs.append(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    header = json.dumps({"s": frame.session, "t": frame.tag, "k": frame.kind, "a": specs,
                         "m": frame.meta}, separators=(",", ":")).encode()
    return struct.pack("<I", len(header)) + header + b"".join(blobs)


def decode_frame(data: bytes) -> Frame:
    """Parse a frame; malformed input raises ProtocolError (never trusts sizes blindly)."""
    try:
        (hlen,) = struct.unpack_from("<I", data, 0)
        header = json.loads(data[4:4 + hlen])
        pos = 4 + hlen
        arrays = []
        for name, shape in header["a"]:
            dtype = np.dtype(_DTYPES[name]).newbyteorder("<")
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            nbytes = count * dtype.itemsize
            if pos + nbytes > len(data):
                raise ValueError("truncated array")
            arrays.append(np.frombuffer(data, dtype=dtype, count=count, offset=pos)
                          .reshape(shape).astype(_DTYPES[name]))
            pos += nbytes
        if pos != len(data):
            raise ValueError("trailing bytes")
        return Frame(str(header["s"]), str(header["t"]), str(header["k"]), arrays, dict(header["m"]))
    except (KeyError, ValueError, TypeError, struct.error, json.JSONDecodeError) as exc:
        raise ProtocolError(f"malformed frame from peer: {exc}") from None


@dataclass
class TransportStats:
    """Counters of one node's transport (monotonic; take differences around an operation)."""

    rounds: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    #: seconds spent waiting for peers' frames (the rest of a session is local computation)
    wait_seconds: float = 0.0

    def snapshot(self) -> "TransportStats":
        return TransportStats(self.rounds, self.bytes_sent, self.bytes_received, self.messages_sent,
                              self.wait_seconds)

    def since(self, before: "TransportStats") -> "TransportStats":
        return TransportStats(self.rounds - before.rounds, self.bytes_sent - before.bytes_sent,
                              self.bytes_received - before.bytes_received,
                              self.messages_sent - before.messages_sent, self.wait_seconds - before.wait_seconds)


class Transport(abc.ABC):
    """A node's links to its peers (parties ``0..n_parties-1``, itself excluded)."""

    party: int
    n_parties: int
    timeout: float
    stats: TransportStats

    def __init__(self, party: int, n_parties: int, timeout: float) -> None:
        self.party = party
        self.n_parties = n_parties
        self.timeout = timeout
        self.stats = TransportStats()
        self._session = ""
        self._finished: set[str] = set()
        self._pending: dict[int, dict[str, collections.deque[Frame]]] = collections.defaultdict(dict)

    @property
    def peers(self) -> list[int]:
        return [p for p in range(self.n_parties) if p != self.party]

    # --- session bracketing ------------------------------------------------------------

    def begin(self, session: str) -> None:
        """Start a session: frames tagged with it are delivered from now on."""
        self._session = session

    def end(self, session: str) -> None:
        """Finish a session: its late frames are dropped."""
        self._finished.add(session)
        for per in self._pending.values():
            per.pop(session, None)
        if self._session == session:
            self._session = ""

    def abort(self, session: str, reason: str) -> None:
        """Tell every reachable peer that this node gave up on ``session``."""
        for p in self.peers:
            try:
                self._send_bytes(p, encode_frame(Frame(session, "", "abort", meta={"reason": reason[:200]})))
            except Exception:  # noqa: BLE001 - best effort: the peer may be gone already
                pass
        self.end(session)

    # --- one round -----------------------------------------------------------------------

    def exchange(self, tag: str, outgoing: Mapping[int, Sequence[np.ndarray]],
                 expect_from: Iterable[int], meta: Mapping[str, Any] | None = None
                 ) -> dict[int, list[np.ndarray]]:
        """One round: send ``outgoing[peer]`` to each peer, then receive one frame from each
        peer in ``expect_from``. Returns their arrays by sender."""
        if not self._session:
            raise ProtocolError("exchange outside a session; call begin(session) first")
        self.stats.rounds += 1
        for p, arrays in outgoing.items():
            data = encode_frame(Frame(self._session, tag, "data", list(arrays), dict(meta or {})))
            self.stats.bytes_sent += self._send_bytes(p, data)
            self.stats.messages_sent += 1
        t0 = time.perf_counter()
        try:
            return {p: self._recv_tagged(p, tag).arrays for p in expect_from}
        finally:
            self.stats.wait_seconds += time.perf_counter() - t0

    def exchange_meta(self, tag: str, outgoing: Mapping[int, Mapping[str, Any]],
                      expect_from: Iterable[int]) -> dict[int, dict[str, Any]]:
        """A round of small JSON messages (decisions, commitments)."""
        if not self._session:
            raise ProtocolError("exchange outside a session; call begin(session) first")
        self.stats.rounds += 1
        for p, meta in outgoing.items():
            data = encode_frame(Frame(self._session, tag, "data", [], dict(meta)))
            self.stats.bytes_sent += self._send_bytes(p, data)
            self.stats.messages_sent += 1
        return {p: self._recv_tagged(p, tag).meta for p in expect_from}

    def _recv_tagged(self, peer: int, tag: str) -> Frame:
        session = self._session
        while True:
            buffered = self._pending[peer].get(session)
            if buffered:
                frame = buffered.popleft()
            else:
                data, wire = self._recv_bytes(peer)
                self.stats.bytes_received += wire
                frame = decode_frame(data)
            if frame.kind == "close":
                raise ProtocolError(f"peer {peer} disconnected during session {session[:16]}")
            if frame.session != session:
                if frame.session not in self._finished and frame.kind == "data":
                    self._pending[peer].setdefault(frame.session, collections.deque()).append(frame)
                continue
            if frame.kind == "abort":
                raise ProtocolError(f"peer {peer} aborted session {session[:16]}: "
                                    f"{frame.meta.get('reason', 'no reason given')}")
            if frame.tag != tag:
                raise ProtocolError(f"peer {peer} is out of step: sent {frame.tag!r} while "
                                    f"{tag!r} was expected")
            return frame

    # --- what an implementation provides ---------------------------------------------------

    @abc.abstractmethod
    def _send_bytes(self, peer: int, data: bytes) -> int:
        """Deliver one frame to ``peer``; returns bytes on the wire; ProtocolError if the link is gone."""

    @abc.abstractmethod
    def _recv_bytes(self, peer: int) -> tuple[bytes, int]:
        """Next frame from ``peer`` and its size on the wire; ProtocolError on disconnect or
        after ``timeout`` seconds."""

    @abc.abstractmethod
    def pair_key(self, peer: int) -> bytes:
        """A 32-byte secret shared with ``peer`` only (seeds re-sharing without traffic)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Drop every link; peers waiting on this node fail with ProtocolError."""


# --- in-process --------------------------------------------------------------------------

class InProcessHub:
    """Connects ``n`` in-process transports (one per thread) with queues, for unit tests."""

    def __init__(self, n_parties: int, timeout: float = 10.0) -> None:
        import os

        self.n_parties = n_parties
        self.timeout = timeout
        self._queues = {(s, d): queue.Queue() for s in range(n_parties) for d in range(n_parties) if s != d}
        self._keys = {(a, b): os.urandom(32) for a in range(n_parties) for b in range(a + 1, n_parties)}
        self.transports = [InProcessTransport(self, p) for p in range(n_parties)]

    def key(self, a: int, b: int) -> bytes:
        return self._keys[(min(a, b), max(a, b))]


class InProcessTransport(Transport):
    """Queues between threads of one process; same framing and counting as TCP."""

    def __init__(self, hub: InProcessHub, party: int) -> None:
        super().__init__(party, hub.n_parties, hub.timeout)
        self._hub = hub
        self._closed = False

    def _send_bytes(self, peer: int, data: bytes) -> int:
        if self._closed:
            raise ProtocolError(f"node {self.party} transport is closed")
        self._hub._queues[(self.party, peer)].put(bytes(data))
        return len(data)

    def _recv_bytes(self, peer: int) -> tuple[bytes, int]:
        try:
            data = self._hub._queues[(peer, self.party)].get(timeout=self.timeout)
            return data, len(data)
        except queue.Empty:
            raise ProtocolError(f"peer {peer} sent nothing for {self.timeout:.0f} s; "
                                "it is down or stuck — check the node and retry") from None

    def pair_key(self, peer: int) -> bytes:
        return self._hub.key(self.party, peer)

    def close(self) -> None:
        if self._closed:
            return
        for p in self.peers:
            self._hub._queues[(self.party, p)].put(encode_frame(Frame("", "", "close")))
        self._closed = True




# --- TCP ---------------------------------------------------------------------------------------

class TcpTransport(Transport):
    """Authenticated, encrypted TCP links (:mod:`.channel`) to every peer node.

    Node ``i`` dials the nodes below it and is dialled by the nodes above it (whoever accepts,
    e.g. the node service's listener, calls :meth:`attach`). One reader thread per link moves
    frames into a queue, so two nodes sending large frames to each other at once never block.
    A link that closes makes the next receive from that peer raise ProtocolError at once.
    """

    def __init__(self, party: int, n_parties: int, timeout: float = 30.0) -> None:
        super().__init__(party, n_parties, timeout)
        self._channels: dict[int, "Channel"] = {}
        self._inbox: dict[int, queue.Queue] = {p: queue.Queue() for p in self.peers}
        self._lock = threading.Lock()
        #: called by :meth:`close` (e.g. to stop a listener that only serves this transport)
        self.on_close: list[Callable[[], None]] = []

    def attach(self, peer: int, channel: "Channel") -> None:
        """Use ``channel`` for ``peer`` from now on (replacing a dead one)."""
        with self._lock:
            old = self._channels.get(peer)
            self._channels[peer] = channel
        if old is not None and old is not channel:
            old.close()
        threading.Thread(target=self._reader, args=(peer, channel), daemon=True,
                         name=f"mpc-reader-{self.party}-{peer}").start()
        log.info("mpc.transport attached party=%d peer=%d", self.party, peer)

    def _reader(self, peer: int, channel: "Channel") -> None:
        box = self._inbox[peer]
        while True:
            try:
                data, wire = channel.recv()
            except (ConnectionError, OSError, ProtocolError):
                channel.closed = True  # a later session redials or waits for the peer to dial in
                box.put((channel, None, 0))
                return
            box.put((channel, data, wire))

    def connected(self, peer: int) -> bool:
        ch = self._channels.get(peer)
        return ch is not None and not ch.closed

    def wait_connected(self, deadline: float) -> None:
        """Block until every peer is attached or ``deadline`` (time.monotonic) passes."""
        import time

        while True:
            missing = [p for p in self.peers if not self.connected(p)]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise ProtocolError(f"node {self.party}: peers {missing} did not connect; "
                                    "check that every node of the cluster is running")
            time.sleep(0.02)

    #: how long a send waits for a peer that never dialled in yet (this node just restarted)
    link_grace = 3.0

    def _send_bytes(self, peer: int, data: bytes) -> int:
        ch = self._channels.get(peer)
        if ch is None:
            end = time.monotonic() + min(self.link_grace, self.timeout)
            while ch is None and time.monotonic() < end:
                time.sleep(0.01)
                ch = self._channels.get(peer)
            if ch is None or ch.closed:
                raise ProtocolError(f"node {self.party}: no link to peer {peer}; it is down")
        return ch.send(data)

    def _recv_bytes(self, peer: int) -> tuple[bytes, int]:
        import time

        end = time.monotonic() + self.timeout
        box = self._inbox[peer]
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise ProtocolError(f"peer {peer} sent nothing for {self.timeout:.0f} s; "
                                    "it is down or stuck — check the node and retry")
            try:
                ch, data, wire = box.get(timeout=left)
            except queue.Empty:
                continue
            if ch is not self._channels.get(peer):
                continue  # leftovers of a replaced link
            if data is None:
                ch.closed = True
                raise ProtocolError(f"peer {peer} disconnected")
            return data, wire

    def pair_key(self, peer: int) -> bytes:
        ch = self._channels.get(peer)
        if ch is None:
            raise ProtocolError(f"node {self.party}: no link to peer {peer}")
        return ch.pair_key

    def close(self) -> None:
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
        for ch in channels:
            ch.close()
        for fn in self.on_close:
            fn()
