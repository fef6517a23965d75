"""New-event discovery: clamped ``eth_getLogs`` polling, woken early by a push subscription.

Logs are always read with ``get_logs`` over ``(last processed block, head - confirmations]``,
so processing is the same whether or not a subscription exists. Where the chain offers
WebSocket ``eth_subscribe`` (anvil, most nodes), a background thread subscribes to the
contract's logs and only *wakes* the poller, which cuts the latency from a poll interval to the
push delay (~2 ms on anvil) without trusting pushed data.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

from web3.contract import Contract

from splitseal.chain.client import Chain

from .checkpoint import Checkpoint

log = logging.getLogger(__name__)


class LogPoller:
    """Yields the decoded logs of one event, in block order, exactly once per checkpoint."""

    def __init__(self, chain: Chain, contract: Contract, event: str, checkpoint: Checkpoint, *,
                 start_block: int, confirmations: int = 0) -> None:
        self.chain = chain
        self.contract = contract
        self.event = event
        self.checkpoint = checkpoint
        self.confirmations = confirmations
        self._start = start_block

    def poll(self) -> tuple[list[Any], int]:
        """New logs since the checkpoint and the block they run up to (commit it after use)."""
        last = self.checkpoint.last_block(self._start - 1)
        safe_head = self.chain.block_number() - self.confirmations
        if safe_head <= last:
            return [], last
        logs = self.chain.get_logs(self.contract, self.event, last + 1, safe_head)
        return sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"])), safe_head


def as_log_entry(log_: Any) -> Any:
    """A pushed log in web3's decoded form: WebSocket pushes raw JSON, the embedded chain's
    in-process subscription hands over receipt logs already formatted."""
    from web3._utils.method_formatters import log_entry_formatter
    from web3.datastructures import AttributeDict

    topics = log_.get("topics") or []
    if topics and isinstance(topics[0], str):
        return AttributeDict.recursive(log_entry_formatter(log_))
    return log_


def subscribe_logs(chain: Any, addresses: str | list[str], *, on_log: Callable[[Any], None] | None = None,
                   topic0: str | None = None) -> Any | None:
    """A push subscription where the chain offers one: anvil's WebSocket, or the embedded chain's
    in-process one. It has ``event`` (set on every pushed log), ``connected`` and ``stop()``;
    None where the chain pushes nothing (poll instead)."""
    if chain.embedded:
        return chain.subscribe(addresses, on_log=on_log, topic0=topic0)
    if chain.ws_url:
        push = PushWakeup(chain.ws_url, addresses, on_log=on_log, topic0=topic0).start()
        if push.connected.is_set():
            return push
        push.stop()
    return None


class PushWakeup:
    """Sets ``event`` whenever the node pushes a log of ``addresses`` (WebSocket eth_subscribe),
    and hands each pushed log (raw JSON-RPC form) to ``on_log`` when given."""

    def __init__(self, ws_url: str, addresses: str | list[str],
                 on_log: Callable[[dict[str, Any]], None] | None = None, topic0: str | None = None) -> None:
        self.ws_url = ws_url
        self.addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        self.topic0 = topic0
        self.on_log = on_log
        self.event = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def start(self) -> "PushWakeup":
        self._thread = threading.Thread(target=self._run, name="push-wakeup", daemon=True)
        self._thread.start()
        self.connected.wait(2.0)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        from websockets.sync.client import connect

        try:
            with connect(self.ws_url, open_timeout=2.0) as ws:
                criteria: dict[str, Any] = {"address": self.addresses}
                if self.topic0:
                    criteria["topics"] = [self.topic0]
                ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                    "params": ["logs", criteria]}))
                reply = json.loads(ws.recv(timeout=2.0))
                if "error" in reply:
                    log.info("push subscription refused (%s); polling only", reply["error"])
                    return
                self.connected.set()
                while not self._stop.is_set():
                    try:
                        message = ws.recv(timeout=0.2)
                    except TimeoutError:
                        continue
                    if self.on_log is not None:
                        try:
                            self.on_log(json.loads(message)["params"]["result"])
                        except Exception as exc:  # noqa: BLE001 - a bad push must not end the thread
                            log.warning("pushed log not handled: %s", exc)
                    self.event.set()
        except Exception as exc:  # noqa: BLE001 - any failure falls back to polling
            log.info("push subscription unavailable at %s (%s); polling only", self.ws_url, exc)
