"""The REE inference node: ``InferenceRequested`` → backbone → enclave → signed result.

Lifecycle: :meth:`InferenceNode.setup` (keys, checkpoint, push wake-up), :meth:`run` (loop of
:meth:`poll_once` until :meth:`stop`, SIGTERM or SIGINT), :meth:`close`. Tests drive
:meth:`poll_once` directly, without sleeps.

Per request, in order (each step is checkpointed before the next starts):

1. read the event; skip it if it already ended on-chain or another node claimed it;
2. fetch the input (inline, or the blob whose keccak256 must equal the input commitment),
   decrypt it with the node's input key, check it against the backbone's input shape;
3. run the backbone (public parameters, onnxruntime), encrypt its output to the enclave with
   additional data that binds request, model, version, enclave, shape and dtype;
4. the enclave's ``infer`` entry call returns the result encrypted to the requester and its
   EIP-712 signature over (request, model, version, input commitment, requester and key,
   transfer hash, result commitment, answer sequence). The enclave evaluates a request once
   (asked again, it hands out the same answer), so its answer is the node's claim; it is kept in
   the checkpoint until delivered;
5. ``BackboneExecution.deliverResult`` records the backbone output commitment, the transfer and
   the result (inline up to :data:`INLINE_RESULT_LIMIT` bytes, else by pointer into the blob
   store and commitment) in one transaction, its gas estimated; only ``ResultSubmitted`` is
   emitted, the rest is the call's calldata. A second delivery reverts.
   With ``[node].delivery_batch`` > 1 the results of one round go out together
   (``deliverResults``, up to that many per transaction); an item the contract skips
   (``DeliverySkipped``: delivered by another node, past its deadline, refused) is then ended
   as its reason calls for, exactly as a reverted single delivery would be. A request that names
   a consumer is called back by the contract inside its delivery (the gas estimate covers it).

Several nodes: the node whose index is ``request_id % count`` serves a request at once, the
others after a grace period, so that two nodes rarely compute the same request; when they do,
the chain keeps exactly one delivery. The others hold the request in memory only (no checkpoint
write, no chain read) and, once the grace has passed, ask the chain in one log query which of
the held requests ended; only the rest are checkpointed and taken over. Their log cursor stays
before the oldest held request, so a restarted node reads those again.

A request that cannot be served is reported with ``EnclaveTransfer.reportFailure`` and a reason
code (``splitseal.protocol.FailureCode``), whatever went wrong with it: no input, model or
enclave answer stops the node, which goes on with the next request. Transient failures (chain
unreachable, enclave down, restarting or not yet restored) are retried with backoff until the
request's deadline; a request whose deadline passed is ended with ``timeout`` by the node's
:class:`~chain_node.keeper.Keeper`, which also ends requests that no node served.

Exactly once: the enclave answers a repeated request with the same signed answer (it keeps its
recent answers sealed), so a node killed between the enclave's answer and its checkpoint, or a
second node taking the request over, delivers that answer; the chain keeps one delivery.

The enclave restores its sealed state when it starts only with the chain's anchors, which it
cannot read itself: the node does it (``seal_state`` restore with ``ModelRegistry.stateVersion``
and the highest answer sequence its ``ResultSubmitted`` events carry) whenever it finds the
enclave not restored.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from eth_account.signers.local import LocalAccount

from splitseal.chain import (
    CalldataNotFound,
    Chain,
    ContractCall,
    Deployment,
    PendingTx,
    PrefetchedCall,
    checked_read,
    event_decoder,
    event_topic,
    hex_topic,
    last_delivered_sequence,
    request_inline_input,
)
from splitseal.config import NodeConfig
from splitseal.enclave_client import EnclaveUnavailableError
from splitseal.errors import ChainError, ConfigError, ContractRevertError, EnclaveError, ModelError, SplitsealError
from splitseal.protocol import MAX_DELIVERY_BATCH, FailureCode, RequestStatus
from splitseal.protocol.crypto import SessionKeys, TransferSession, X25519KeyPair, encrypt_transfer, keccak256
from splitseal.protocol.hybrid import is_manifest as is_hybrid_manifest
from splitseal.protocol.result import ResultClaim

from .checkpoint import Checkpoint, Stage
from .inputs import MAX_INPUT_BYTES, BlobStore, InputProblem, open_input
from .inputs import check_input_shape as _check_shape
from .keeper import Keeper
from .listener import LogPoller

log = logging.getLogger(__name__)


_FRESH_BLOCKS = 3
#: Seconds between two checkpointed log polls while pushed requests keep the node busy.
CATCH_UP_INTERVAL = 1.0
#: Results up to this many bytes go inline in the delivery; larger ones by pointer + commitment.
INLINE_RESULT_LIMIT = 8 * 1024
_KEPT_TIMES = 10_000
#: Inline results are put in size classes of this many bytes for the delivery's gas estimate.
RESULT_SIZE_CLASS = 256
#: An upper bound of the gas one more byte of inline result costs a delivery (16 calldata, memory
#: expansion, keccak words; 32 leaves room).
GAS_PER_RESULT_BYTE = 32
#: Seconds the loop waits for the push thread's fetch of an input before fetching it itself.
PREFETCH_WAIT = 5.0
_ASK = object()  # a request to serve now: ask the enclave (or reuse its saved answer), deliver
_HANDLED = object()  # a step that ended in a recorded failure, a skip or a retry


class BackboneUnavailable(SplitsealError):
    """This node holds no backbone for a request's model version (another node may)."""


class HybridRequest(BackboneUnavailable):
    """A hybrid request: its input is in shares at MPC nodes, whose relay serves it (chain_node.hybrid)."""


class EnclaveEndpoint(Protocol):
    """What the node needs of an enclave (``splitseal.enclave_client.EnclaveClient``; ``status``
    and ``restore_state`` are optional: without them the node does not restore the enclave)."""

    def infer(self, *, request_id: int, model_id: bytes, version: int, input_commitment: bytes,
              transfer_ciphertext: bytes, shape: tuple[int, ...], dtype: str,
              requester_key: bytes) -> Any:
        """Returns a reply with ``encrypted_result`` and ``signature``."""
        ...


class BackboneRunner(Protocol):
    input_shape: tuple[int | None, ...]

    def run(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class EnclaveTarget:
    """The enclave this node hands its backbone outputs to."""

    address: str
    encryption_key: bytes
    endpoint: EnclaveEndpoint


@dataclass
class StageTimes:
    """Seconds spent per stage for one request (logged; read by the benchmark)."""

    fetch: float = 0.0
    backbone: float = 0.0
    transfer: float = 0.0
    enclave: float = 0.0
    delivery_tx: float = 0.0
    #: from its pushed log's arrival to its delivery sent: the node's whole share (the stages
    #: above but the delivery, and the wake-ups, checks and checkpoint writes between them)
    handling: float = 0.0


@dataclass
class NodeStats:
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    timed_out: int = 0
    retried: int = 0
    prefetched: int = 0  # inline inputs the push thread had fetched when the loop needed them
    times: dict[int, StageTimes] = field(default_factory=dict)


#: Longest failure reason sent on-chain (calldata the reporter pays for; the code carries the kind).
MAX_REASON_CHARS = 200


def report_failure(chain: Chain, deployment: Deployment, account: LocalAccount, request_id: int, code: FailureCode,
                   reason: str) -> str:
    """Record ``request_id`` failed on-chain with ``code`` and its (shortened) reason; returns the
    reason as sent. A revert (already ended, say) is logged, not raised: the caller moves on."""
    reason = reason[:MAX_REASON_CHARS]
    try:
        chain.transact(deployment.enclave_transfer.functions.reportFailure(request_id, int(code), reason),
                       sender=account, gas=300_000)
    except ContractRevertError as exc:
        log.warning("request_id=%d failure not recorded on-chain: %s", request_id, exc)
    return reason


class InferenceNode:
    """One REE node serving one deployment."""

    def __init__(self, chain: Chain, deployment: Deployment, account: LocalAccount, *,
                 input_key: X25519KeyPair, enclave: EnclaveTarget,
                 backbones: Callable[[bytes, int], BackboneRunner], config: NodeConfig,
                 checkpoint_path: Path, blob_dir: Path, confirmations: int = 0,
                 node_index: int = 0, node_count: int = 1, claim_grace: float = 2.0,
                 poll_interval: float = 0.05, start_block: int | None = None) -> None:
        if not 1 <= config.delivery_batch <= MAX_DELIVERY_BATCH:
            raise ConfigError(f"[node].delivery_batch = {config.delivery_batch}: give 1 (one deliverResult per "
                              f"request) to {MAX_DELIVERY_BATCH} (the contract's largest batch)")
        self.chain = chain
        self.deployment = deployment
        self.account = account
        self.input_key = input_key
        #: the AES keys of requesters' input sessions to that key (rebuilt if the key is replaced)
        self._input_keys = SessionKeys(input_key)
        self.enclave = enclave
        #: one ephemeral key for a run of transfers to the enclave (a new one per enclave key)
        self._transfer_session = TransferSession()
        self.backbones = backbones
        self.config = config
        self.blobs = BlobStore(blob_dir)
        self.node_index = node_index
        self.node_count = max(1, node_count)
        self.claim_grace = claim_grace
        self.poll_interval = poll_interval
        self.stats = NodeStats()
        scope = f"{chain.chain_id}:{deployment.backbone_execution.address}"
        self.checkpoint = Checkpoint(checkpoint_path, scope)
        # A node reads requests from its checkpoint on; a new one from the deployment's first block
        # (or ``start_block``: a node joining a busy deployment need not re-read its history).
        self.poller = LogPoller(chain, deployment.backbone_execution, "InferenceRequested", self.checkpoint,
                                start_block=deployment.block if start_block is None else start_block,
                                confirmations=confirmations)
        self._wakeup: Any = None  # a push subscription, where the chain offers one
        #: requests' calldata pushed with their pending transactions, where the chain pushes them
        self._pending_calls: Any = None
        self._stopping = threading.Event()
        self._first_seen: dict[int, float] = {}
        #: other nodes' requests within their claim grace: request id -> (block, first seen)
        self._foreign: dict[int, tuple[int, float]] = {}
        self._foreign_done: dict[int, None] = {}  # held requests resolved (ended or taken over)
        self._next_takeover = 0.0
        self._gas_by_result_size: dict[tuple[int, int], int] = {}  # see _delivery_gas
        self._next_catch_up = 0.0  # monotonic time of the next log poll while pushes keep coming
        self._woken_by_push = False  # the loop woke for a pushed log (see run)
        self._endings: Any = None  # several nodes: a push subscription to the requests' endings
        self._ended_pushed: dict[int, None] = {}  # request ids it pushed, oldest first
        self._events: dict[int, Any] = {}  # request id -> InferenceRequested args
        self._request_txs: dict[int, Any] = {}  # request id -> hash of the transaction that asked
        self._sent_at: dict[int, float] = {}
        self._pushed_at: dict[int, float] = {}  # request id -> when its log was pushed (perf_counter)
        self._pushed: collections.deque[Any] = collections.deque()  # filled by the push thread
        self._prefetched: dict[int, PrefetchedCall] = {}  # request id -> its transaction, fetched by the push thread
        self._seen_head = 0
        self._not_before: dict[int, float] = {}  # request id -> monotonic time of its next attempt
        self.keeper = Keeper(chain, deployment, account,
                             start_block=deployment.block if start_block is None else start_block,
                             index=node_index, count=self.node_count, grace=max(claim_grace, 1.0))
        self._next_sweep = 0.0
        #: Called as ``on_finished(request_id, stage, detail, times)`` when a request leaves this
        #: node (completed, failed or skipped): ``splitseal node run --json`` prints one line per call.
        self.on_finished: Callable[[int, Stage, str, StageTimes | None], None] | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def setup(self) -> "InferenceNode":
        """Subscribe to pushed requests where the chain pushes them (anvil's WebSocket, the
        embedded chain in-process); elsewhere the loop polls."""
        topic = event_topic(self.deployment.backbone_execution, "InferenceRequested")
        # with confirmations, pushed logs only wake the loop; the poll decides what is buried
        on_log = self._on_pushed_log if self.poller.confirmations == 0 else None
        if on_log is not None:  # first, so that a request's transaction is pushed before its log
            self._pending_calls = self.chain.pending_calls(self.deployment.backbone_execution.address)
        self._wakeup = self.chain.subscribe(self.deployment.backbone_execution.address, on_log=on_log,
                                            topic0=topic)
        if self.node_count > 1:
            # the endings of requests, so that the take-over need not ask the chain which of the
            # held requests ended (each of n nodes queried every ending log twice a second)
            d = self.deployment
            topics = [event_topic(d.enclave_transfer, "ResultSubmitted"), event_topic(d.enclave_transfer, "RequestFailed"),
                      event_topic(d.backbone_execution, "RequestTimedOut")]
            self._endings = self.chain.subscribe([d.backbone_execution.address, d.enclave_transfer.address],
                                                 on_log=self._on_pushed_ending, topic0=topics)
            if self._endings is not None:
                # the keeper then reads no logs of its own after its first sweep: this node notes
                # every request it reads, and the subscription every ending (see chain_node.keeper)
                self.keeper.follow(self._ended_pushed.__contains__)
        try:
            self.restore_enclave()
        except (EnclaveError, OSError) as exc:  # retried when a request needs the enclave
            log.warning("enclave not restored yet: %s", exc)
        log.info("node ready account=%s enclave=%s index=%d/%d cpu_s=%.2f", self.account.address,
                 self.enclave.address, self.node_index, self.node_count, time.process_time())
        return self

    def run(self, *, install_signal_handlers: bool = True) -> None:
        """Serve until :meth:`stop` (or SIGTERM / SIGINT)."""
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        failures = 0
        while not self._stopping.is_set():
            if self._wakeup is not None:
                # pushed requests wake the loop; pending ones (retries, grace periods) are looked
                # at again at least every ten poll intervals
                self._wakeup.event.clear()
            try:
                worked = self.poll_once()
                failures = 0
            except (ChainError, OSError) as exc:  # node unreachable or restarting: back off, go on
                failures += 1
                delay = min(5.0, self.config.retry_backoff * 2 ** min(failures, 5))
                log.warning("poll failed attempt=%d error=%s retry_in=%.2fs", failures, exc, delay)
                self._stopping.wait(delay)
                continue
            if self._wakeup is not None:
                # a wake-up by a push whose log the push thread queued needs no log poll (its
                # thread sets the event once more after queueing: without this, every request
                # cost a second round with an eth_blockNumber and an eth_getLogs)
                self._woken_by_push = self._wakeup.event.wait(self.poll_interval * 10) and \
                    self.poller.confirmations == 0
            elif worked:
                continue
            else:
                self._stopping.wait(self.poll_interval)
        log.info("node stopped counts=%s cpu_s=%.2f", self.checkpoint.counts(), time.process_time())

    def stop(self) -> None:
        self._stopping.set()
        if self._wakeup is not None:
            self._wakeup.event.set()
        self.chain.wake_waiters()
        if self._wakeup is not None:
            self._wakeup.event.set()

    def close(self) -> None:
        self.stop()
        if self._wakeup is not None:
            self._wakeup.stop()
        if self._endings is not None:
            self._endings.stop()
        if self._pending_calls is not None:
            self._pending_calls.stop()
        self.checkpoint.close()

    # --- one step ------------------------------------------------------------------------

    def poll_once(self) -> int:
        """Read new requests and advance every pending one as far as it goes; returns the number
        of requests that moved.

        Work is batched in three phases so that the transactions of many requests are in flight
        together instead of one after another: (1) decide, run the backbones, encrypt the
        transfers; (2) ask the enclave and send each delivery; (3) confirm the deliveries.
        Each request is checkpointed before its next step.
        """
        fresh = set()
        pushed = self._drain_pushed()
        if pushed:
            # requests the node pushed with their data (confirmations 0 only): act at once; the
            # checkpointed log poll catches up on a quiet round, or at least every
            # CATCH_UP_INTERVAL under steady pushes (else its range, and the embedded chain's cost
            # of a log query, grows with everything pushed since)
            for ev in pushed:
                request_id = int(ev["args"]["requestId"])
                self.keeper.note_request(request_id, int(ev["args"]["deadline"]))
                if self._hold_foreign(request_id, ev):
                    continue
                if self.checkpoint.see(request_id, int(ev["blockNumber"])).stage is Stage.SEEN:
                    fresh.add(request_id)
                self._remember(request_id, ev)
        events, upto = [], None
        woken_by_push, self._woken_by_push = self._woken_by_push, False
        if (not pushed and not woken_by_push) or time.monotonic() >= self._next_catch_up:
            self._next_catch_up = time.monotonic() + CATCH_UP_INTERVAL
            events, upto = self.poller.poll()
            self._seen_head = upto + self.poller.confirmations
        seen = []
        for ev in events:
            request_id = int(ev["args"]["requestId"])
            self.keeper.note_request(request_id, int(ev["args"]["deadline"]))
            if not self._hold_foreign(request_id, ev):
                seen.append((request_id, ev, self.checkpoint.see(request_id, int(ev["blockNumber"]))))
        # one log query for the old requests not yet looked at (not those held for another node,
        # nor those this node ended already, which the held-back cursor makes it read again)
        old = [int(ev["blockNumber"]) for _, ev, record in seen
               if record.stage is Stage.SEEN and upto - int(ev["blockNumber"]) >= _FRESH_BLOCKS]
        ended = self._ended_since(min(old), upto) if old else set()
        for request_id, ev, record in seen:
            if request_id in ended and record.stage is Stage.SEEN:
                self._finish(request_id, Stage.SKIPPED, "ended on-chain before this node saw it")
                continue
            # only requests of the last few blocks skip the status read: when catching up on
            # history, a read is cheaper than a claim attempt
            if record.stage is Stage.SEEN and upto - int(ev["blockNumber"]) < _FRESH_BLOCKS:
                fresh.add(request_id)
            if not record.stage.final:  # a pushed request served already is read again here
                self._remember(request_id, ev)
        if upto is not None:
            # a restarted node must read the requests it holds in memory again: the cursor stays
            # before the oldest of them
            held = min((block for block, _ in self._foreign.values()), default=upto + 1)
            self.checkpoint.set_last_block(min(upto, held - 1))
            self.poller.handled_upto = upto  # in memory: the held requests are not read again
        self._take_over_foreign()

        moved = 0
        asks: list[int] = []
        for record in self.checkpoint.pending():
            if self._stopping.is_set():
                break
            rid = record.request_id
            step = self._guard(rid, lambda: self._plan(rid, record.stage, rid in fresh))
            if step is _ASK:
                asks.append(rid)
            elif step is not None:
                moved += 1
        if self.config.delivery_batch > 1:
            moved += self._deliver_batched(asks)
        else:
            deliveries: list[tuple[int, PendingTx]] = []
            for rid in asks:
                step = self._guard(rid, lambda: self._ask_and_send(rid))
                if isinstance(step, PendingTx):
                    deliveries.append((rid, step))
                else:
                    moved += 1
            for rid, pending in deliveries:
                self._guard(rid, lambda: self._confirm_delivery(rid, pending))
                moved += 1
        if time.monotonic() >= self._next_sweep and not self._stopping.is_set():
            self._next_sweep = time.monotonic() + self.config.keeper_interval
            moved += self.keeper.sweep()
        return moved

    def sweep_now(self) -> int:
        """Run the keeper at once (tests; the loop runs it every ``keeper_interval`` s)."""
        self._next_sweep = time.monotonic() + self.config.keeper_interval
        return self.keeper.sweep()

    def restore_enclave(self) -> bool:
        """Restore the enclave's sealed state against the chain's anchors when it is not restored
        (it restarted); True when this call restored it."""
        endpoint = self.enclave.endpoint
        if not hasattr(endpoint, "status") or not hasattr(endpoint, "restore_state"):
            return False
        status = endpoint.status()
        if status.restored or status.models:  # restored, or provisioned since it started
            return False
        address = self.enclave.address
        anchored = int(self.chain.call(self.deployment.model_registry.functions.stateVersion(address)))
        sequence = last_delivered_sequence(self.chain, self.deployment, address)
        result = endpoint.restore_state(anchored, sequence)
        log.info("enclave %s restored: state version %s, %s model(s) (anchors: state %d, answer %d)",
                 address, result.get("state_version"), result.get("models"), anchored, sequence)
        return True

    def _on_pushed_log(self, raw: Any) -> bool:
        """Runs on the subscription's thread: decode and queue for the service loop. Another
        node's request does not wake the loop (False): it is held through its claim grace, and
        the loop takes it from the queue at its next round. On a chain reached over RPC, the
        inline input of a request this node serves at once is fetched here meanwhile (the
        loop's wake-up and checkpoint writes overlap that round trip); the loop checks it
        against the commitment as it checks its own fetch."""
        entry = event_decoder(self.deployment.backbone_execution, "InferenceRequested")(raw)
        args = entry["args"]
        request_id = int(args["requestId"])
        mine = self.node_count == 1 or request_id % self.node_count == self.node_index
        if mine and len(self._pushed_at) < _KEPT_TIMES:
            self._pushed_at[request_id] = time.perf_counter()
        prefetch = None
        if self.chain.url is not None and not args["inputPointer"] and mine and len(self._prefetched) < _KEPT_TIMES:
            prefetch = self._prefetched[request_id] = PrefetchedCall()
            pushed = self._pending_calls.take(entry["transactionHash"]) if self._pending_calls is not None else None
            if pushed is not None:  # its calldata came with its pending transaction
                prefetch.have(pushed)
        self._pushed.append(entry)
        if prefetch is None:
            return mine
        if self._wakeup is not None:
            self._wakeup.event.set()
        if not prefetch.done.is_set():
            prefetch.fetch(self.chain, entry["transactionHash"])
        return True

    def _on_pushed_ending(self, raw: Any) -> None:
        """Runs on the endings subscription's thread: note the request id (topic 1), no decoding."""
        topics = raw["topics"]
        if len(topics) > 1:
            self._ended_pushed[int(hex_topic(topics[1]), 16)] = None
            while len(self._ended_pushed) > _KEPT_TIMES:
                try:
                    self._ended_pushed.pop(next(iter(self._ended_pushed)))
                except (StopIteration, KeyError, RuntimeError):  # the loop thread read it meanwhile
                    break

    def _drain_pushed(self) -> list[Any]:
        out = []
        while self._pushed:
            out.append(self._pushed.popleft())
        return out

    def _ended_since(self, from_block: int, to_block: int) -> set[int]:
        """Ids of requests that ended on-chain in a block range (one log query): catching up on
        a long history then costs no status read per old request."""
        from splitseal.chain import LogDecoder, logs_with_topic0

        d = self.deployment
        decoder = LogDecoder([("BackboneExecution", d.backbone_execution), ("EnclaveTransfer", d.enclave_transfer)])
        entries = logs_with_topic0(self.chain, decoder, ("ResultSubmitted", "RequestFailed", "RequestTimedOut"),
                                   from_block, to_block)
        return {int(entry["args"]["requestId"]) for _, entry in entries}

    # --- the pipeline --------------------------------------------------------------------

    def _remember(self, request_id: int, ev: Any) -> None:
        self._events[request_id] = ev["args"]
        self._request_txs[request_id] = ev["transactionHash"]

    def _request_event(self, request_id: int) -> Any:
        """The request's event args (from the cache, or the chain after a restart)."""
        if request_id not in self._events:
            logs = self.chain.get_logs(self.deployment.backbone_execution, "InferenceRequested",
                                       self.deployment.block, argument_filters={"requestId": request_id})
            if not logs:
                raise ChainError(f"request {request_id}: its InferenceRequested event is not on chain")
            self._remember(request_id, logs[0])
        return self._events[request_id]

    def _hold_foreign(self, request_id: int, ev: Any) -> bool:
        """True for another node's request: held in memory through its claim grace, with no
        checkpoint write and no chain read, so that n nodes do not each checkpoint every request.
        :meth:`_take_over_foreign` checkpoints the few that are still open after the grace."""
        if self.node_count == 1 or request_id % self.node_count == self.node_index:
            return False
        if request_id in self._foreign or request_id in self._foreign_done:
            return True
        if self.checkpoint.get(request_id) is not None:  # taken over before this node restarted
            return False
        self._foreign[request_id] = (int(ev["blockNumber"]), time.monotonic())
        self._remember(request_id, ev)
        return True

    def _take_over_foreign(self) -> None:
        """Held requests whose grace passed: one log query finds those that ended on-chain (they
        are dropped, never checkpointed); the others are checkpointed and served by this node."""
        now = time.monotonic()
        if not self._foreign or now < self._next_takeover or self._stopping.is_set():
            return
        due = {rid: block for rid, (block, seen) in self._foreign.items() if now - seen >= self.claim_grace}
        if not due:
            return
        self._next_takeover = now + self.claim_grace / 4
        # ended as pushed; the chain is asked only about the others (a push lost, or none offered)
        ended = {rid for rid in due if rid in self._ended_pushed}
        unknown = [block for rid, block in due.items() if rid not in ended]
        if unknown:
            ended |= self._ended_since(min(unknown), self.chain.block_number())
        for rid, block in due.items():
            first_seen = self._foreign.pop(rid)[1]
            self._foreign_done[rid] = None
            if rid in ended:
                self._events.pop(rid, None)
                continue
            log.info("request_id=%d taken over from node %d after %.1f s", rid, rid % self.node_count,
                     now - first_seen)
            self.checkpoint.see(rid, block)
            self._first_seen[rid] = first_seen  # its grace has passed: _mine_first lets it through
        while len(self._foreign_done) > _KEPT_TIMES:
            self._foreign_done.pop(next(iter(self._foreign_done)))

    def _mine_first(self, request_id: int) -> bool:
        """Several nodes: the preferred node claims at once, the others after a grace period."""
        if self.node_count == 1 or request_id % self.node_count == self.node_index:
            return True
        first = self._first_seen.setdefault(request_id, time.monotonic())
        return time.monotonic() - first >= self.claim_grace

    def _guard(self, request_id: int, step: Callable[[], Any]) -> Any:
        """Run one step of one request; what goes wrong ends up on-chain or in a retry, and the
        node goes on with the next request. Returns the step's value, or ``_HANDLED``."""
        try:
            return step()
        except InputProblem as problem:
            self._fail(request_id, problem.code, str(problem))
        except BackboneUnavailable as exc:
            # leave the request to a node that serves this model; it times out if none does
            log.log(logging.INFO if isinstance(exc, HybridRequest) else logging.WARNING,
                    "request_id=%d skipped: %s", request_id, exc)
            self.stats.skipped += 1
            self._finish(request_id, Stage.SKIPPED, str(exc))
        except ContractRevertError as exc:
            self._on_revert(request_id, exc)
        except (ChainError, EnclaveError, OSError) as exc:
            self._retry(request_id, exc)
        except ModelError as exc:  # e.g. a backbone file with no output or several inputs
            self._fail(request_id, FailureCode.INTERNAL, f"the model version cannot be served: {exc}")
        except Exception as exc:  # noqa: BLE001 - no request stops the node
            log.exception("request_id=%d failed inside the node", request_id)
            self._fail(request_id, FailureCode.INTERNAL,
                       f"the node could not process the request ({type(exc).__name__}: {exc})")
        return _HANDLED

    def _plan(self, request_id: int, stage: Stage, fresh: bool) -> Any:
        """``_ASK`` when the request is ours to serve now; None to look again later; else handled.
        ``fresh``: its event was read just now, so it is Requested unless another node delivered
        it meanwhile, which the delivery transaction finds out anyway."""
        if stage is Stage.SEEN and not self._mine_first(request_id):
            return None  # another node's turn: no need to ask the chain about it yet
        if time.monotonic() < self._not_before.get(request_id, 0.0):
            return None  # backing off after a transient failure
        status = RequestStatus.REQUESTED if fresh else \
            RequestStatus(self.chain.call(self.deployment.backbone_execution.functions.status(request_id)))
        if status is not RequestStatus.REQUESTED:
            # ended, or claimed by a node that records its transfer before asking its enclave
            self.stats.skipped += 1
            self._finish(request_id, Stage.SKIPPED, f"{status.name} on-chain")
            return _HANDLED
        if stage is Stage.SEEN:
            self._prepare_transfer(request_id)
        return _ASK

    def _prepare_transfer(self, request_id: int) -> None:
        """Input → backbone → output encrypted to the enclave, kept in the checkpoint: its hash
        goes on-chain, so a retry must hand the enclave these very bytes."""
        if self.checkpoint.load_transfer(request_id) is not None:
            return
        ev = self._request_event(request_id)
        times = self.stats.times.setdefault(request_id, StageTimes())
        t0 = time.perf_counter()
        ciphertext = self._fetch_input(request_id, ev)
        if is_hybrid_manifest(ciphertext):
            # its input is in shares at the MPC nodes; their relay serves it (chain_node.hybrid)
            raise HybridRequest(f"request {request_id} is a hybrid request, served by an MPC node set")
        if self._input_keys.recipient is not self.input_key:
            self._input_keys = SessionKeys(self.input_key)
        x = open_input(self._input_keys, bytes(ev["modelId"]), int(ev["version"]), bytes(ev["requesterKey"]),
                       ciphertext)
        backbone = self.backbones(bytes(ev["modelId"]), int(ev["version"]))
        x = _check_shape(x, backbone.input_shape)
        t1 = time.perf_counter()
        output = np.asarray(backbone.run(x))
        t2 = time.perf_counter()
        if output.dtype.kind == "f" and not np.all(np.isfinite(output)):
            raise InputProblem(FailureCode.BAD_INPUT, "the backbone output holds NaN or infinite values for "
                                                      "this input (values out of the model's range?)")
        transfer, shape, dtype = encrypt_transfer(self.enclave.encryption_key, self.enclave.address,
                                                  request_id, bytes(ev["modelId"]), int(ev["version"]), output,
                                                  session=self._transfer_session)
        # Deterministic in the backbone output, so independent nodes can be cross-checked.
        commitment = keccak256(np.ascontiguousarray(output).tobytes())
        self.checkpoint.store_transfer(request_id, transfer, shape, dtype, commitment)
        times.fetch, times.backbone, times.transfer = t1 - t0, t2 - t1, time.perf_counter() - t2

    def _ask_and_send(self, request_id: int) -> Any:
        """The enclave's signed, encrypted answer (asked once, kept until on-chain), delivered
        with the backbone commitment and the transfer hash in one transaction."""
        delivery = self._answer(request_id)
        return _HANDLED if delivery is _HANDLED else self._send_single(request_id, delivery)

    def _answer(self, request_id: int) -> Any:
        """The arguments of the request's ``deliverResult`` (an ``IBackboneExecution.Delivery``),
        asking the enclave unless its answer is saved; ``_HANDLED`` when the request ended here."""
        ev = self._request_event(request_id)
        stored = self.checkpoint.load_transfer(request_id)
        if stored is None:
            raise ChainError(f"request {request_id}: transfer ciphertext missing from the checkpoint")
        times = self.stats.times.setdefault(request_id, StageTimes())
        saved = self.checkpoint.load_reply(request_id)
        if saved is None:
            t0 = time.perf_counter()
            try:
                reply = self._infer(request_id, ev, stored)
            except EnclaveUnavailableError:
                raise
            except EnclaveError as exc:
                kind = getattr(exc, "kind", "")
                if kind == "ReplayError" and self.node_count > 1:
                    # answered for another node and no longer among the enclave's recent answers:
                    # that node delivers it, or the keeper ends it at its deadline
                    self.stats.skipped += 1
                    self._finish(request_id, Stage.SKIPPED, "answered by the enclave for another node")
                    return _HANDLED
                if kind == "NotProvisionedError" and self.restore_enclave():
                    raise EnclaveUnavailableError("the enclave had restarted; restored it, asking again") from None
                self._fail(request_id, _refusal_code(exc), f"enclave refused: {exc}")
                return _HANDLED
            times.enclave = time.perf_counter() - t0
            saved = (reply.encrypted_result, reply.signature, reply.sequence,
                     bytes(getattr(reply, "transfer_hash", b"") or keccak256(stored.ciphertext)), reply.public_label)
            self.checkpoint.store_reply(request_id, *saved, stage=Stage.TRANSFERRED)
        encrypted_result, signature, sequence, transfer_hash, public_label = saved
        claim = ResultClaim(request_id=request_id, model_id=bytes(ev["modelId"]),
                            input_commitment=bytes(ev["inputCommitment"]), requester=str(ev["requester"]),
                            requester_key=bytes(ev["requesterKey"]), enclave=self.enclave.address,
                            transfer_hash=transfer_hash or keccak256(stored.ciphertext), sequence=sequence,
                            consumer=str(ev["consumer"]), callback_gas_limit=int(ev["callbackGasLimit"]),
                            label=public_label)
        return self._delivery(claim, stored.output_commitment, encrypted_result, signature)

    def _deliver_batched(self, asks: list[int]) -> int:
        """Phase 2 and 3 with batching: every answer of this round, ``delivery_batch`` per
        ``deliverResults`` transaction (all sent, then all confirmed); returns requests moved."""
        moved = 0
        items: list[tuple[int, tuple[Any, ...]]] = []
        for rid in asks:
            delivery = self._guard(rid, lambda: self._answer(rid))
            if delivery is _HANDLED:
                moved += 1
            else:
                items.append((rid, delivery))
        size = self.config.delivery_batch
        sent: list[tuple[list[int], PendingTx]] = []
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            ids = [rid for rid, _ in chunk]
            fn = self.deployment.backbone_execution.functions.deliverResults([d for _, d in chunk])
            try:
                gas = self.chain.estimate_gas(fn, sender=self.account.address)
                now = time.perf_counter()
                for rid in ids:
                    self._mark_sent(rid, now)
                sent.append((ids, self.chain.send(fn, sender=self.account, gas=gas + gas // 4 + 10_000)))
            except ContractRevertError:
                # the batch itself was refused (too little gas cannot be it: estimated): one by one,
                # so that each request meets its own revert
                for rid, delivery in chunk:
                    pending = self._guard(rid, lambda: self._send_single(rid, delivery))
                    if isinstance(pending, PendingTx):
                        sent.append(([rid], pending))
                    else:
                        moved += 1
            except (ChainError, OSError) as exc:
                for rid in ids:
                    self._retry(rid, exc)
                moved += len(ids)
        for ids, pending in sent:
            moved += len(ids)
            try:
                receipt = self.chain.confirm(pending)
            except (ChainError, OSError) as exc:  # not mined, or reverted as a whole: send again
                for rid in ids:
                    self._retry(rid, exc)
                continue
            skipped = {int(e["requestId"]): bytes(e["reason"]) for e in
                       self.chain.events(receipt, self.deployment.backbone_execution, "DeliverySkipped")}
            for rid in ids:
                if rid in skipped:
                    error = self.chain.errors.error(skipped[rid], "deliverResults")
                    log.warning("request_id=%d delivery skipped in batch: %s", rid, error)
                    self._guard(rid, lambda: self._on_revert(rid, error))
                else:
                    self._guard(rid, lambda: self._delivered(rid, pending, batch=len(ids)))
        return moved

    def _send_single(self, request_id: int, delivery: tuple[Any, ...]) -> PendingTx:
        fn = ContractCall(self.deployment.backbone_execution, "deliverResult", *delivery)
        self._mark_sent(request_id, time.perf_counter())
        return self.chain.send(fn, sender=self.account, gas=self._delivery_gas(fn, delivery))

    def _mark_sent(self, request_id: int, now: float) -> None:
        self._sent_at[request_id] = now
        pushed = self._pushed_at.pop(request_id, None)
        if pushed is not None:
            self.stats.times.setdefault(request_id, StageTimes()).handling = now - pushed

    def _delivery_gas(self, fn: Any, delivery: tuple[Any, ...]) -> int:
        """Gas limit of a delivery: estimated once per size class of results and kept (an
        estimate re-runs the transaction, on the embedded chain a binary search of EVM runs, a
        round trip on a node, on the critical path of every request; result documents of one
        model differ in length by a few bytes, so one per exact size meant an estimate for most
        requests). A delivery's cost depends on the result's size and on the gas a consumer's
        callback asks for (the cache key, sizes in classes of RESULT_SIZE_CLASS bytes); the
        estimate is raised to the largest size of its class at GAS_PER_RESULT_BYTE (calldata,
        memory, hashing), and the margin covers the rest. A delivery that would revert (another
        node delivered, the deadline passed) then reverts on-chain instead of in the estimate
        and is handled the same way."""
        claim, inline = delivery[0], delivery[2]
        size_class = len(inline) // RESULT_SIZE_CLASS if inline else -1  # -1: by pointer
        key = (size_class, int(claim[9]))  # and the callback's gas
        gas = self._gas_by_result_size.get(key)
        if gas is None:
            gas = self.chain.estimate_gas(fn, sender=self.account.address)
            if inline:
                gas += GAS_PER_RESULT_BYTE * ((size_class + 1) * RESULT_SIZE_CLASS - len(inline))
            if len(self._gas_by_result_size) < 256:
                self._gas_by_result_size[key] = gas
        return gas + gas // 4 + 10_000

    def _infer(self, request_id: int, ev: Any, stored: Any) -> Any:
        return self.enclave.endpoint.infer(
            request_id=request_id, model_id=bytes(ev["modelId"]), version=int(ev["version"]),
            input_commitment=bytes(ev["inputCommitment"]), transfer_ciphertext=stored.ciphertext,
            shape=stored.shape, dtype=stored.dtype, requester_key=bytes(ev["requesterKey"]),
            requester=str(ev["requester"]))

    def _delivery(self, claim: ResultClaim, output_commitment: bytes, encrypted_result: bytes,
                  signature: bytes) -> Any:
        """Inline up to ``INLINE_RESULT_LIMIT`` bytes; larger results go to the blob store (the
        requester's, as for large inputs) and the chain gets their pointer and commitment."""
        inline, pointer, commitment = encrypted_result, "", bytes(32)
        if len(encrypted_result) > INLINE_RESULT_LIMIT:
            inline, pointer, commitment = b"", self.blobs.put(encrypted_result), keccak256(encrypted_result)
        return (claim.as_abi(), output_commitment, inline, pointer, commitment, signature)

    def _confirm_delivery(self, request_id: int, pending: PendingTx) -> None:
        self.chain.confirm(pending)
        self._delivered(request_id, pending)

    def _delivered(self, request_id: int, pending: PendingTx, *, batch: int = 1) -> None:
        times = self.stats.times.setdefault(request_id, StageTimes())
        times.delivery_tx = time.perf_counter() - self._sent_at.pop(request_id, time.perf_counter())
        self._finish(request_id, Stage.COMPLETED, "")
        self.stats.completed += 1
        log.info("request_id=%d stage=completed backbone_ms=%.2f enclave_ms=%.2f delivery_ms=%.2f fetch_ms=%.2f "
                 "transfer_ms=%.2f handling_ms=%.2f batch=%d tx=%s", request_id, times.backbone * 1e3,
                 times.enclave * 1e3, times.delivery_tx * 1e3, times.fetch * 1e3, times.transfer * 1e3,
                 times.handling * 1e3, batch, pending.tx_hash.hex()[:18])

    # --- outcomes ------------------------------------------------------------------------

    def _fetch_input(self, request_id: int, ev: Any) -> bytes:
        """The encrypted input: at the pointer, or (inline) the request transaction's calldata,
        which the event does not repeat; either must hash to the input commitment."""
        commitment = bytes(ev["inputCommitment"])
        pointer = str(ev["inputPointer"])
        if pointer:
            return self.blobs.get(pointer, commitment, max_bytes=2 * MAX_INPUT_BYTES)
        prefetch = self._prefetched.pop(request_id, None)
        call = prefetch.wait(PREFETCH_WAIT) if prefetch is not None else None
        self.stats.prefetched += call is not None
        tx_hash = self._request_txs[request_id]
        try:
            inline = checked_read(lambda c: request_inline_input(self.chain, self.deployment, tx_hash, call=c),
                                  lambda v: keccak256(v) == commitment, call)
        except CalldataNotFound as exc:
            raise InputProblem(FailureCode.INPUT_UNAVAILABLE, str(exc)) from None
        if keccak256(inline) != commitment:
            raise InputProblem(FailureCode.INPUT_HASH_MISMATCH,
                               "inline input does not match the request's input commitment")
        return inline

    def _time_out(self, request_id: int) -> bool:
        """The deadline passed before our claim or result: end the request on-chain."""
        if self.keeper.end(request_id):
            self.stats.timed_out += 1
        self._finish(request_id, Stage.FAILED, "deadline passed; timed out on-chain")
        return True

    def _fail(self, request_id: int, code: FailureCode, reason: str) -> None:
        reason = report_failure(self.chain, self.deployment, self.account, request_id, code, reason)
        self.stats.failed += 1
        self._finish(request_id, Stage.FAILED, f"{code.name}: {reason}")
        log.warning("request_id=%d stage=failed code=%s reason=%s", request_id, code.name, reason)

    def _on_revert(self, request_id: int, exc: ContractRevertError) -> bool:
        if exc.error_name in ("BackboneExecutionDeadlinePassed", "EnclaveTransferDeadlinePassed"):
            return self._time_out(request_id)
        status = RequestStatus(self.chain.call(self.deployment.backbone_execution.functions.status(request_id)))
        if status is not RequestStatus.REQUESTED:  # another node delivered it, or it ended
            self.stats.skipped += 1
            self._finish(request_id, Stage.SKIPPED, f"{exc.error_name}; status {status.name}")
            return True
        self._fail(request_id, FailureCode.INTERNAL, f"contract rejected the node's transaction: {exc.error_name}")
        return True

    def _retry(self, request_id: int, exc: Exception) -> bool:
        """A transient failure: try again later, until the request's deadline (then the keeper, or
        the next attempt's revert, ends it as timed out). Never blocks the other requests."""
        attempts = self.checkpoint.attempt(request_id)
        self.stats.retried += 1
        self._gas_by_result_size.clear()  # a delivery out of gas reverts with no reason: estimate afresh
        delay = min(self.config.retry_max_backoff, self.config.retry_backoff * (2 ** min(attempts - 1, 16)))
        self._not_before[request_id] = time.monotonic() + delay
        log.warning("request_id=%d attempt=%d error=%s retry_in=%.2fs", request_id, attempts, exc, delay)
        return False

    def _finish(self, request_id: int, stage: Stage, detail: str) -> None:
        self.checkpoint.finish(request_id, stage, detail)
        if self.on_finished is not None:
            self.on_finished(request_id, stage, detail, self.stats.times.get(request_id))
        self._events.pop(request_id, None)
        self._request_txs.pop(request_id, None)
        self._prefetched.pop(request_id, None)
        self._pushed_at.pop(request_id, None)
        self._first_seen.pop(request_id, None)
        self._not_before.pop(request_id, None)
        while len(self.stats.times) > _KEPT_TIMES:  # a long-running node keeps the latest only
            self.stats.times.pop(next(iter(self.stats.times)))


def _refusal_code(exc: EnclaveError) -> FailureCode:
    """The enclave's refusal reason as an on-chain code (ENCLAVE_REFUSED when it names none)."""
    try:
        return FailureCode(int(getattr(exc, "reason", FailureCode.ENCLAVE_REFUSED)))
    except ValueError:
        return FailureCode.ENCLAVE_REFUSED

