"""The embedded chain: eth-tester on py-evm inside this process.

- eth-tester is not thread-safe: every request goes through one lock (private to this backend;
  a real node takes concurrent requests).
- Transactions are mined as they are sent (auto-mine), so the receipt is read right after the
  send, and the receipt's logs are pushed to in-process subscriptions at once: node and
  requester wait on pushed logs instead of polling the EVM. Every send also signals a condition
  that :meth:`EmbeddedChain.wait_for_block` sleeps on.
- Revert data: web3's EthereumTesterProvider re-raises eth-tester's ``TransactionFailed`` with
  the data rendered into its message, and py-evm's backend ``call`` renders it already. The raw
  bytes are therefore asked of eth-tester's ``estimate_gas``, which runs the transaction at the
  block gas limit and raises ``TransactionFailed`` *from* py-evm's ``Revert``, whose first
  argument is the revert data as bytes (only on the failure path: a revert costs two EVM runs).
- Logs are answered from an index of what this chain mined (hand-written for performance):
  eth-tester finds a transaction by hash by scanning back from the head, and its ``getLogs``
  does that for every transaction in the range, so a log query cost range x depth (a keeper's
  read after a few hundred blocks held the chain's lock for a second, collapsing a busy node's
  throughput). Every transaction reaches eth-tester through :meth:`EmbeddedChain._send_raw`,
  which indexes its receipt's logs (in web3's form, as ``getLogs`` returns them); the cheats
  mine only empty blocks, and a revert drops what was mined after the snapshot.
- Test cheats call eth-tester directly (snapshots, time travel, mining).
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from typing import Any, Callable, ContextManager, Sequence

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import TxReceipt

from splitseal.config import ChainConfig
from splitseal.errors import ChainError

from .client import DEV_MNEMONIC, Chain, Subscription
from .logs import hex_topic

log = logging.getLogger(__name__)


class LocalSubscription(Subscription):
    """An in-process log subscription on the embedded chain (the twin of a WebSocket one)."""

    def __init__(self, chain: "EmbeddedChain", addresses: set[str], topic0: set[str] | None,
                 on_log: Callable[[Any], None] | None) -> None:
        self.chain, self.addresses, self.topic0, self.on_log = chain, addresses, topic0, on_log
        self.event = threading.Event()
        self.connected = threading.Event()
        self.connected.set()

    def matches(self, log_: Any) -> bool:
        if str(log_["address"]).lower() not in self.addresses:
            return False
        return self.topic0 is None or ("0x" + bytes(log_["topics"][0]).hex()).lower() in self.topic0

    def stop(self) -> None:
        self.chain._unsubscribe(self)


class EmbeddedChain(Chain):
    """eth-tester and py-evm in this process, funded with the development accounts."""

    def __init__(self, w3: Web3, *, accounts: Sequence[LocalAccount], config: ChainConfig | None = None) -> None:
        self._lock = threading.RLock()
        # Signalled after every transaction this process mines, so that in-process listeners
        # wait for blocks instead of polling the EVM.
        self._new_block = threading.Condition(self._lock)
        self._subscriptions: list[LocalSubscription] = []
        self._tester = w3.provider.ethereum_tester
        # every log this chain mined, in block order (see the module doc)
        self._mined_logs: list[Any] = []
        self._mined_log_blocks: list[int] = []
        super().__init__(w3, name="embedded", accounts=accounts, config=config)

    @classmethod
    def start(cls, config: ChainConfig, accounts: Sequence[LocalAccount]) -> "EmbeddedChain":
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider

        backend = PyEVMBackend(mnemonic=DEV_MNEMONIC, hd_path="m/44'/60'/0'/0")
        return cls(Web3(EthereumTesterProvider(EthereumTester(backend))), accounts=accounts, config=config)

    @property
    def url(self) -> None:
        return None

    def _guard(self) -> ContextManager[Any]:
        return self._lock

    # --- sending -------------------------------------------------------------------------------

    def _send_raw(self, raw: bytes) -> tuple[bytes, Any]:
        with self._lock:
            tx_hash = self._w3.eth.send_raw_transaction(raw)
            receipt = self._w3.eth.get_transaction_receipt(tx_hash)  # auto-mined: it is there
            self._index(receipt)
            self._push(receipt)
            self._new_block.notify_all()
        return tx_hash, receipt

    def _wait_receipt(self, tx_hash: bytes, label: str) -> TxReceipt:
        return self.receipt(tx_hash)

    # --- the index of what was mined -----------------------------------------------------------

    def _index(self, receipt: Any) -> None:
        block = int(receipt["blockNumber"])
        for entry in receipt["logs"]:
            self._mined_logs.append(entry)
            self._mined_log_blocks.append(block)

    def _drop_index_after(self, head: int) -> None:
        """Forget what was mined after ``head`` (the chain went back to a snapshot)."""
        cut = bisect.bisect_right(self._mined_log_blocks, head)
        del self._mined_logs[cut:], self._mined_log_blocks[cut:]

    def logs(self, addresses: str | Sequence[str] | None, topics: Sequence[Any], from_block: int,
             to_block: int | None = None) -> list[Any]:
        """As :meth:`Chain.logs`, from the index (eth_getLogs semantics: ``topics[i]`` None
        matches anything, a list any of its values)."""
        wanted = None if addresses is None else \
            {a.lower() for a in ([addresses] if isinstance(addresses, str) else addresses)}
        match = [None if t is None else {hex_topic(x) for x in (t if isinstance(t, (list, tuple)) else [t])}
                 for t in topics]
        with self._lock:
            head = self._w3.eth.block_number
            to_block = head if to_block is None else min(to_block, head)
            lo = bisect.bisect_left(self._mined_log_blocks, max(0, from_block))
            hi = bisect.bisect_right(self._mined_log_blocks, to_block)
            candidates = self._mined_logs[lo:hi]
        out = []
        for entry in candidates:
            if wanted is not None and str(entry["address"]).lower() not in wanted:
                continue
            entry_topics = entry["topics"]
            if len(entry_topics) < len(match):
                continue
            if all(m is None or hex_topic(t) in m for m, t in zip(match, entry_topics)):
                out.append(entry)
        return out

    def _revert_data(self, exc: BaseException) -> bytes | None:
        return _tester_revert_data(exc)

    def _reverted(self, exc: BaseException) -> bool:
        from eth_tester.exceptions import TransactionFailed

        return isinstance(exc, TransactionFailed)

    def _replay(self, tx: dict[str, Any], block: int | str) -> bytes | None:
        from eth_tester.exceptions import TransactionFailed

        try:
            with self._lock:
                # gas_price 0: the estimate runs at the block gas limit, which the sender (or the
                # zero address of a view call) need not afford
                # and a contract creation has no "to" at all for eth-tester (web3 gives b"")
                tx = {k: v for k, v in tx.items() if k != "to" or v}
                self._tester.estimate_gas({**tx, "gas_price": 0}, block)
        except TransactionFailed as exc:
            data = _tester_revert_data(exc)
            if data is None:
                raise ChainError(f"the EVM failed without revert data: {exc.__cause__ or exc!r}") from exc
            return data
        return None

    # --- waiting and pushing -------------------------------------------------------------------

    def wait_for_block(self, after: int, timeout: float) -> int:
        """Sleeps on a condition that every transaction of this process signals."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                head = self._w3.eth.block_number
                remaining = deadline - time.monotonic()
                if head > after or remaining <= 0:
                    return head
                self._new_block.wait(remaining)

    def wake_waiters(self) -> None:
        with self._lock:
            self._new_block.notify_all()

    def subscribe(self, addresses: str | Sequence[str], *, on_log: Callable[[Any], None] | None = None,
                  topic0: str | Sequence[str] | None = None) -> LocalSubscription:
        """Push the logs of ``addresses`` (and ``topic0``, or any of several) of every transaction this process
        sends, as a node pushes them over WebSocket; always available."""
        addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        topics = None if not topic0 else {t.lower() for t in ([topic0] if isinstance(topic0, str) else topic0)}
        sub = LocalSubscription(self, {a.lower() for a in addresses}, topics, on_log)
        with self._lock:
            self._subscriptions.append(sub)
        return sub

    def _unsubscribe(self, sub: LocalSubscription) -> None:
        with self._lock:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)

    def _push(self, receipt: Any) -> None:
        for log_ in receipt["logs"]:
            for sub in list(self._subscriptions):
                if sub.matches(log_):
                    wake = True
                    if sub.on_log is not None:
                        try:
                            wake = sub.on_log(log_) is not False
                        except Exception as exc:  # noqa: BLE001 - a subscriber must not break a send
                            log.warning("pushed log not handled: %s", exc)
                    if wake:
                        sub.event.set()

    # --- test cheats ---------------------------------------------------------------------------

    def snapshot(self) -> Any:
        with self._lock:
            return self._tester.take_snapshot()

    def revert(self, snapshot_id: Any) -> None:
        try:
            with self._lock:
                self._tester.revert_to_snapshot(snapshot_id)
                self._drop_index_after(self._w3.eth.block_number)
        except Exception as exc:  # noqa: BLE001 - eth-tester's SnapshotNotFound
            raise ChainError(f"revert({snapshot_id}) failed: {exc}") from exc
        self._sender.reset()

    def increase_time(self, seconds: int) -> None:
        with self._lock:
            latest = self._w3.eth.get_block("latest")["timestamp"]
            self._tester.time_travel(int(latest) + int(seconds))  # mines a block at that time

    def mine(self, blocks: int = 1) -> None:
        with self._lock:
            self._tester.mine_blocks(blocks)

    def set_next_block_timestamp(self, timestamp: int) -> None:
        """eth-tester cannot stamp a block before mining it: this mines an empty block at
        ``timestamp`` (when that is later than the pending block's)."""
        with self._lock:
            if int(timestamp) > int(self._tester.get_block_by_number("pending")["timestamp"]):
                self._tester.time_travel(int(timestamp))


def _tester_revert_data(exc: BaseException) -> bytes | None:
    """The raw revert data of eth-tester's ``TransactionFailed`` raised from py-evm's ``Revert``
    (``estimate_gas``, send): the cause's first argument, as bytes. None otherwise."""
    from eth.exceptions import Revert

    for cause in (exc, exc.__cause__, *(exc.args[:1] if exc.args else ())):
        if isinstance(cause, Revert):
            data = cause.args[0] if cause.args else b""
            return bytes(data) if isinstance(data, (bytes, bytearray)) else b""
    return None
