"""Run N parties of a protocol in threads of one process (tests, benchmarks, demos).

Each thread gets its own :class:`Transport` and :class:`TripleProvider`, exactly as separate
node processes would; only the wiring differs.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from mpc.engine.beaver import Dealer, DealerTripleProvider
from mpc.engine.protocol import Session
from mpc.engine.transport import InProcessHub, Transport
from splitseal.errors import ProtocolError

if TYPE_CHECKING:
    from mpc.engine.transport import TcpTransport


def run_parties(transports: Sequence[Transport], fn: Callable[[int, Transport], Any],
                timeout: float = 60.0) -> list[Any]:
    """Call ``fn(party, transport)`` in one thread per party; results by party.

    If any party raises, every party's exception is collected and the first is re-raised
    (so a test sees the failure, not a hang).
    """
    n = len(transports)
    results: list[Any] = [None] * n
    errors: list[BaseException | None] = [None] * n

    def body(p: int) -> None:
        try:
            results[p] = fn(p, transports[p])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors[p] = exc

    threads = [threading.Thread(target=body, args=(p,), daemon=True) for p in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    if any(t.is_alive() for t in threads):
        raise ProtocolError(f"parties still running after {timeout} s")
    for e in errors:
        if e is not None:
            raise e
    return results


class LocalCluster:
    """N in-process parties with a dealer: ``cluster.run(lambda session, party: ...)``."""

    def __init__(self, n_parties: int, transports: Sequence[Transport] | None = None,
                 frac_bits: int = 16, truncation: str = "auto", timeout: float = 10.0,
                 run_timeout: float = 60.0) -> None:
        self.n = n_parties
        self.transports = list(transports) if transports is not None else InProcessHub(n_parties, timeout).transports
        self.dealer = Dealer(n_parties)
        self.providers = [DealerTripleProvider(p, n_parties, self.dealer.seed_for(p), self.dealer.correction)
                          for p in range(n_parties)]
        self.frac_bits = frac_bits
        self.truncation = truncation
        self._count = 0
        self.run_timeout = run_timeout  # a whole run (a large model's batch takes minutes)

    def run(self, fn: Callable[[Session, int], Any], session_id: str | None = None) -> list[Any]:
        self._count += 1
        sid = session_id or f"s{self._count}-{os.urandom(4).hex()}"
        seed = os.urandom(32)

        def body(p: int, t: Transport) -> Any:
            t.begin(sid)
            try:
                return fn(Session(t, self.providers[p], sid, seed, self.frac_bits, self.truncation), p)
            finally:
                t.end(sid)

        return run_parties(self.transports, body, self.run_timeout)

    def close(self) -> None:
        for t in self.transports:
            t.close()


def tcp_mesh(n_parties: int, key_dir: "Path", timeout: float = 30.0, host: str = "127.0.0.1"
             ) -> list["TcpTransport"]:
    """N TCP transports on loopback in this process, fully authenticated (tests and benchmarks)."""
    import time
    from pathlib import Path

    from mpc.engine.channel import Listener, Roster, connect, generate_identity, load_identity
    from mpc.engine.transport import TcpTransport

    key_dir = Path(key_dir)
    names = [f"node-{p}" for p in range(n_parties)]
    roster = Roster({nm: bytes.fromhex(generate_identity(key_dir / f"{nm}.key")) for nm in names})
    ids = [load_identity(key_dir / f"{nm}.key") for nm in names]
    transports = [TcpTransport(p, n_parties, timeout) for p in range(n_parties)]
    listeners = []
    for p in range(n_parties):
        t = transports[p]

        def on_channel(ch, t=t):
            t.attach(int(ch.peer.split("-")[1]), ch)

        lst = Listener(host, 0, names[p], ids[p], roster,
                       allowed=lambda nm, p=p: nm in names[p + 1:], on_channel=on_channel)
        listeners.append(lst)
        t.on_close.append(lst.close)
    for p in range(n_parties):
        for q in range(p):
            transports[p].attach(q, connect(host, listeners[q].port, names[p], ids[p], roster, names[q]))
    for t in transports:
        t.wait_connected(time.monotonic() + 10)
    return transports
