"""The keeper: ends requests whose deadline passed (``BackboneExecution.timeout``).

Nothing stays open: a request that no node served (no node holds its backbone, a node was
killed and never came back, the enclave refused it to the node that asked) stays Requested or
Transferred on-chain until someone calls ``timeout()``, which anyone may do once the deadline
passed. Every inference node runs a :class:`Keeper` every ``[node].keeper_interval`` seconds, and
``splitseal node keeper`` runs one alone.

A sweep reads, from the block after the previous sweep, the new requests (``InferenceRequested``
with their deadlines) and the endings (``ResultSubmitted``, ``RequestFailed``,
``RequestTimedOut``), and sends ``timeout`` for each open request whose deadline is behind the
chain's clock (the latest block's time, or the wall clock when the chain sat idle: the
transaction's own block then carries the later time). Several keepers: the one whose index is
``request_id % count`` ends a request at once, the others ``grace`` seconds later, so that they
rarely send the same ``timeout`` twice (the second reverts, harmlessly).

The open set lives in memory: a restarted keeper reads the history again from ``start_block``
(one chunked log query per event kind).

Following a node (:meth:`Keeper.follow`; an inference node of several, which reads every request
and subscribes to every ending anyway): after that first read the keeper reads no logs of its own.
The node notes each request it reads (:meth:`Keeper.note_request`) and the ending subscription
tells which ended; a request past its deadline whose ending was not pushed (a push lost) is asked
about (``status``) before ``timeout`` is sent. Each of n keepers read every request's log and
ending every sweep; now each of them is read once per node, by the node. Every node still keeps
every open request, so a dead node's requests are ended by another after the grace, as before.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from eth_account.signers.local import LocalAccount

from splitseal.chain import Chain, Deployment, LogDecoder, event_decoder, event_topic, hex_topic
from splitseal.errors import ContractRevertError
from splitseal.protocol import RequestStatus

log = logging.getLogger(__name__)

_ENDINGS = ("ResultSubmitted", "RequestFailed", "RequestTimedOut")


class Keeper:
    """Sweeps expired requests of one deployment (see module doc)."""

    def __init__(self, chain: Chain, deployment: Deployment, account: LocalAccount, *, start_block: int,
                 index: int = 0, count: int = 1, grace: float = 2.0) -> None:
        self.chain = chain
        self.deployment = deployment
        self.account = account
        self.index, self.count, self.grace = index, max(1, count), grace
        self._next_block = start_block
        self._open: dict[int, int] = {}  # request id -> deadline (unix seconds)
        self._decoder = LogDecoder([("BackboneExecution", deployment.backbone_execution),
                                    ("EnclaveTransfer", deployment.enclave_transfer)])
        self._topics = self._decoder.topics(("InferenceRequested", *_ENDINGS))
        self._requested = event_topic(deployment.backbone_execution, "InferenceRequested")
        self._decode_request = event_decoder(deployment.backbone_execution, "InferenceRequested")
        self._ended: Callable[[int], bool] | None = None  # see follow
        self._read_once = False
        self.timed_out = 0
        self.log_reads = 0  # log queries made (a following keeper makes one)

    def follow(self, ended: Callable[[int], bool]) -> None:
        """After its first read, take requests from :meth:`note_request` and endings from
        ``ended(request_id)`` (a push subscription to the endings) instead of reading logs."""
        self._ended = ended

    def note_request(self, request_id: int, deadline: int) -> None:
        """A request the followed node read (pushed or polled), with its deadline."""
        if self._ended is not None and not self._ended(request_id):
            self._open[request_id] = deadline

    @property
    def open_requests(self) -> dict[int, int]:
        return dict(self._open)

    def _read(self) -> None:
        head = self.chain.block_number()
        if head < self._next_block:
            return
        # an ending names its request in topic 1: only requests are decoded (for their deadline)
        raw = self.chain.logs(self._decoder.addresses, [self._topics], self._next_block, head)
        self.log_reads += 1
        for entry in sorted(raw, key=lambda e: (e["blockNumber"], e["logIndex"])):
            topic0 = hex_topic(entry["topics"][0])
            if topic0 == self._requested:
                args = self._decode_request(entry)["args"]
                self._open[int(args["requestId"])] = int(args["deadline"])
            elif len(entry["topics"]) > 1:
                self._open.pop(int(hex_topic(entry["topics"][1]), 16), None)
        self._next_block = head + 1

    def sweep(self) -> int:
        """Send ``timeout`` for every open request past its deadline; returns how many ended."""
        if self._ended is None or not self._read_once:
            self._read()
            self._read_once = True
        else:
            for rid in [rid for rid in self._open if self._ended(rid)]:
                del self._open[rid]
        if not self._open:
            return 0
        latest = int(self.chain.get_block("latest")["timestamp"])
        now = max(latest, int(time.time()))
        ended = 0
        for rid, deadline in sorted(self._open.items()):
            if deadline >= now:
                continue
            if self.count > 1 and rid % self.count != self.index and now - deadline < self.grace:
                continue  # the preferred keeper's turn first
            if self._ended is not None and self._ended_on_chain(rid):
                continue  # its ending was not pushed to us (a push lost)
            if self.end(rid):
                ended += 1
        return ended

    def _ended_on_chain(self, request_id: int) -> bool:
        status = RequestStatus(self.chain.call(self.deployment.backbone_execution.functions.status(request_id)))
        if status.ended:
            self._open.pop(request_id, None)
        return status.ended

    def end(self, request_id: int) -> bool:
        """``timeout(request_id)``; True when this call ended it."""
        be = self.deployment.backbone_execution
        try:
            self.chain.transact(be.functions.timeout(request_id), sender=self.account, gas=150_000)
        except ContractRevertError as exc:
            if exc.error_name == "BackboneExecutionDeadlineNotReached":
                return False  # the chain's clock is behind ours: the next sweep
            # ended meanwhile (another keeper, a late delivery): nothing left to do
            log.info("request_id=%d not timed out: %s", request_id, exc.error_name)
            self._open.pop(request_id, None)
            return False
        self._open.pop(request_id, None)
        self.timed_out += 1
        log.info("request_id=%d timed out on-chain (deadline passed)", request_id)
        return True

