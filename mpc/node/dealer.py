"""The dealer service: one OS process that hands out correlated randomness and never sees data.

Each node asks once for its 32-byte seed (``seed``); the last node, ``N-1``, also asks for its
triple corrections (``correction``), which the :class:`mpc.engine.beaver.Dealer` computes from
the seeds (the math lives in the engine, next to the :class:`DealerTripleProvider` that consumes
it). The seeds are kept in ``dealer/seeds.bin`` of the state directory (mode 0600), so a
restarted dealer serves the same correlation.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import numpy as np

from mpc.engine.beaver import Dealer
from mpc.engine.channel import Channel, Listener, load_identity
from mpc.engine.transport import decode_frame
from splitseal.errors import InvalidInputError, ProtocolError, SplitsealError

from .node import ClusterInfo, reply

log = logging.getLogger(__name__)


class DealerService:
    """The dealer process: hands each node its seed and the last node its corrections."""

    def __init__(self, cluster: ClusterInfo) -> None:
        self.cluster = cluster
        seeds_path = cluster.state_dir / "dealer" / "seeds.bin"
        seeds_path.parent.mkdir(parents=True, exist_ok=True)
        if not seeds_path.exists():
            fd = os.open(seeds_path, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(32 * cluster.parties))
        raw = seeds_path.read_bytes()
        self.dealer = Dealer(cluster.parties, [raw[32 * i:32 * (i + 1)] for i in range(cluster.parties)])
        self._stop = threading.Event()
        self.listener: Listener | None = None

    def setup(self) -> None:
        c = self.cluster
        identity = load_identity(c.state_dir / "keys" / "dealer.key")
        nodes = {f"node-{p}" for p in range(c.parties)}
        self.listener = Listener(c.host, c.dealer_port, "dealer", identity, c.roster(),
                                 allowed=lambda nm: nm in nodes, on_channel=self._serve_async)
        log.info("mpc.dealer ready parties=%d port=%d", c.parties, self.listener.port)

    def _serve_async(self, ch: Channel) -> None:
        threading.Thread(target=self._serve, args=(ch,), daemon=True).start()

    def _serve(self, ch: Channel) -> None:
        party = int(ch.peer.split("-")[1])
        while True:
            try:
                data, _ = ch.recv()
                frame = decode_frame(data)
                if frame.tag == "seed":
                    out = np.frombuffer(self.dealer.seed_for(party), dtype=np.uint8)
                elif frame.tag == "correction" and party == self.cluster.parties - 1:
                    out = self.dealer.correction(frame.meta)
                else:
                    raise InvalidInputError(f"node {party} may not ask for {frame.tag!r}")
                reply(ch, {}, [out])
            except (ConnectionError, OSError):
                return
            except SplitsealError as exc:
                try:
                    reply(ch, {"error": str(exc)})
                except ProtocolError:
                    return

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())

    def run(self) -> None:
        while not self._stop.wait(0.2):
            pass

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
