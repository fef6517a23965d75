"""The requester: send an inference request as a transaction, wait, decrypt the result.

The Python API behind ``splitseal infer``::

    requester = Requester(chain, deployment, account, key=X25519KeyPair.generate(), blob_dir=...)
    outcome = requester.infer(model_id, version, image)      # submit + wait
    outcome.label, outcome.scores, outcome.latency

Only the requester holds the private half of ``key``: the enclave encrypts the prediction to it,
so the plaintext prediction exists nowhere else outside the enclave.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from chain_node.inputs import INLINE_LIMIT, BlobStore, seal_input
from splitseal.chain import Chain, ContractCall, Deployment
from splitseal.errors import ChainError, InvalidInputError, SplitsealError
from splitseal.protocol import MAX_CALLBACK_GAS, MIN_CALLBACK_GAS, FailureCode, RequestStatus, eip712
from splitseal.protocol.crypto import SessionKeys, TransferSession, X25519KeyPair, keccak256
from splitseal.protocol.result import InferenceResult, ResultClaim, open_result

#: Request ids whose pushed logs a requester keeps while no one waits for them (see Requester._early).
EARLY_LOGS_KEPT = 1024
_KEPT_EARLY = ("ResultSubmitted", "RequestFailed", "RequestTimedOut", "TransferRecorded")
_ENDINGS = ("ResultSubmitted", "RequestFailed", "RequestTimedOut")
#: Largest off-chain result a requester fetches (a result document of scores for 100k classes).
MAX_RESULT_BLOB = 8 * 1024 * 1024
#: Seconds the waiting caller waits for the push thread's fetch of a delivery before fetching it itself.
PREFETCH_WAIT = 5.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    request_id: int
    model_id: bytes
    version: int
    input_commitment: bytes
    tx_hash: str
    block: int
    sent_at: float
    mined_at: float
    gas_used: int


@dataclass
class InferenceOutcome:
    """What the requester learns: the prediction (decrypted locally) or the failure.

    ``label`` / ``scores`` / ``features`` are the first batch row's; ``labels`` / ``all_scores`` /
    ``all_features`` every row's (None where the model's output policy releases no such part);
    ``sequences``: every row's character indices (policy ``ctc_greedy``; decode them with the
    model's character list, :func:`orchestrator.pretrained.ocr.decode`). ``public_label``: the
    class the enclave signed in plaintext for the request's consumer (policy ``public_label``
    only; checked against the signature and the decrypted label)."""

    request_id: int
    status: RequestStatus
    label: int | None = None
    scores: list[float] | None = None
    features: list[float] | None = None
    labels: list[int] | None = None
    all_scores: list[list[float]] | None = None
    all_features: list[list[float]] | None = None
    sequences: list[list[int]] | None = None
    public_label: int | None = None
    failure_code: FailureCode | None = None
    failure_reason: str = ""
    enclave: str = ""
    transactions: dict[str, str] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    gas: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is RequestStatus.COMPLETED


class Requester:
    def __init__(self, chain: Chain, deployment: Deployment, account: LocalAccount, *,
                 key: X25519KeyPair | None = None, blob_dir: Path) -> None:
        self.chain = chain
        self.deployment = deployment
        self.account = account
        self.key = key or X25519KeyPair.generate()
        self.blobs = BlobStore(blob_dir)
        self._input_key: bytes | None = None
        #: inputs go to the node's key in a session, results come back in the enclave's session
        #: to this key (docs/PROTOCOL.md, "Transfer sessions", "Result sessions")
        self._input_session = TransferSession()
        self._result_keys = SessionKeys(self.key)
        self._decoder: Any = None
        self._push: Any = None  # a push subscription, False where the chain pushes nothing, None: not tried
        self._pending_calls: Any = None  # deliveries' calldata pushed with their pending transactions
        self._pushed: dict[int, dict[str, Any]] = {}
        self._waiting: set[int] = set()
        # logs pushed for requests not (yet) waited for, raw, newest last: a fast node can end a
        # request before its requester has read the request's id from the receipt
        self._early: collections.OrderedDict[int, list[Any]] = collections.OrderedDict()
        self._ending_topics: set[str] = set()
        # delivery transactions fetched by the push thread (RPC chains): request id -> its call
        self._calls: dict[int, Any] = {}
        #: results opened from a delivery the push thread had fetched when the caller needed it
        self.prefetched = 0
        self._ended_at: dict[int, float] = {}  # request id -> when its ending was pushed (perf_counter)
        self._pushed_cv = threading.Condition()

    # --- submit ----------------------------------------------------------------------------

    def input_key(self) -> bytes:
        if self._input_key is None:
            key = bytes(self.chain.call(self.deployment.backbone_execution.functions.inputKey()))
            if key == b"\x00" * 32:
                raise ChainError("BackboneExecution has no input key yet: no inference node is set up "
                                 "on this deployment (run `splitseal node run` or the demo)")
            self._input_key = key
        return self._input_key

    def _start_push(self) -> None:
        """Where the chain pushes logs (anvil's WebSocket), subscribe once to the lifecycle events:
        results arrive with their data, no polling and no log query."""
        if self._push is not None:
            return
        self._ensure_decoder()
        # first, so that a delivery's transaction is pushed before its log
        self._pending_calls = self.chain.pending_calls(self._decoder.addresses)
        self._push = self.chain.subscribe(self._decoder.addresses, on_log=self._on_pushed_log) or False

    def _on_pushed_log(self, raw: Any) -> None:
        from splitseal.chain import hex_topic

        # every request's events name it in topic 1: skip other requesters' before decoding, or
        # each of n requesters decodes the events of all n
        topics = raw.get("topics") or []
        if len(topics) < 2:
            return
        topic_id = int(hex_topic(topics[1]), 16)
        with self._pushed_cv:
            if topic_id not in self._waiting:
                if hex_topic(topics[0]) in self._ending_topics:
                    self._early.setdefault(topic_id, []).append(raw)
                    self._early.move_to_end(topic_id)
                    while len(self._early) > EARLY_LOGS_KEPT:
                        self._early.popitem(last=False)
                return
        self._take_pushed(raw, prefetch=True)

    def _take_pushed(self, raw: Any, *, prefetch: bool = False) -> None:
        """Keep a pushed log of a request waited for and wake the waiters. With ``prefetch``
        (the push thread, on a chain reached over RPC) a ``ResultSubmitted``'s delivery
        transaction is fetched here after the wake-up, so the waiting caller's wake-up overlaps
        that round trip; the caller reads and checks it as it would its own fetch."""
        from splitseal.chain import PrefetchedCall

        decoded = self._decoder.decode(raw)
        if decoded is None or "requestId" not in decoded[1]["args"]:
            return  # not a request's event (roles, keys, links)
        entry = decoded[1]
        request_id = int(entry["args"]["requestId"])
        fetch = None
        with self._pushed_cv:
            if request_id in self._waiting:
                self._pushed.setdefault(request_id, {})[entry["event"]] = entry
                if entry["event"] in _ENDINGS:
                    self._ended_at.setdefault(request_id, time.perf_counter())
                    while len(self._ended_at) > EARLY_LOGS_KEPT:  # a wait that raised left its own
                        self._ended_at.pop(next(iter(self._ended_at)))
                if prefetch and entry["event"] == "ResultSubmitted" and self.chain.url is not None:
                    fetch = self._calls[request_id] = PrefetchedCall()
                    pushed = self._pending_calls.take(entry["transactionHash"]) \
                        if self._pending_calls is not None else None
                    if pushed is not None:  # its calldata came with its pending transaction
                        fetch.have(pushed)
                self._pushed_cv.notify_all()
        if fetch is not None and not fetch.done.is_set():
            fetch.fetch(self.chain, entry["transactionHash"])

    def _ensure_decoder(self) -> None:
        from splitseal.chain import LogDecoder

        if self._decoder is None:
            self._decoder = LogDecoder([("BackboneExecution", self.deployment.backbone_execution),
                                        ("EnclaveTransfer", self.deployment.enclave_transfer)])
            self._ending_topics = set(self._decoder.topics(_KEPT_EARLY))

    def submit(self, model_id: bytes, version: int, array: np.ndarray, *, deadline_seconds: int = 600,
               inline_limit: int = INLINE_LIMIT, consumer: str | None = None,
               callback_gas_limit: int = 100_000) -> Submitted:
        """Encrypt the input to the node's key, commit to it, and send ``requestInference``
        (``requestInferenceWithCallback`` when a ``consumer`` contract is to be called back with
        the result, with ``callback_gas_limit`` gas; docs/PROTOCOL.md)."""
        array = np.asarray(array)
        if array.size == 0 or not np.all(np.isfinite(array)):
            raise InvalidInputError("input must be a non-empty array of finite numbers")
        if consumer is not None:
            self._check_consumer(consumer, callback_gas_limit)
        ciphertext = seal_input(self.input_key(), model_id, version, self.key.public, array.astype(np.float32),
                                session=self._input_session)
        inline, pointer = (ciphertext, "") if len(ciphertext) <= inline_limit else (b"", self.blobs.put(ciphertext))
        return self.submit_committed(model_id, version, keccak256(ciphertext), inline, pointer,
                                     deadline_seconds=deadline_seconds, consumer=consumer,
                                     callback_gas_limit=callback_gas_limit)

    def submit_committed(self, model_id: bytes, version: int, commitment: bytes, inline: bytes, pointer: str = "", *,
                         deadline_seconds: int = 600, consumer: str | None = None,
                         callback_gas_limit: int = 100_000) -> Submitted:
        """Send ``requestInference`` for an input already committed to (a sealed input, or a hybrid
        request's manifest: splitseal.protocol.hybrid); with a ``consumer``,
        ``requestInferenceWithCallback``."""
        self._start_push()
        sent = time.perf_counter()
        # a time to live: the contract adds it to the including block's time, so however long
        # the chain sat idle, the request gets the whole of it
        be = self.deployment.backbone_execution
        args = (model_id, version, commitment, inline, pointer, self.key.public, int(deadline_seconds))
        fn = ContractCall(be, "requestInference", *args) if consumer is None else \
            ContractCall(be, "requestInferenceWithCallback", *args, consumer, int(callback_gas_limit))
        receipt = self.chain.transact(fn, sender=self.account, gas=500_000)
        mined = time.perf_counter()
        (event,) = self.chain.events(receipt, self.deployment.backbone_execution, "InferenceRequested")
        self._expect(int(event["requestId"]))
        return Submitted(int(event["requestId"]), model_id, version, commitment, receipt["transactionHash"].to_0x_hex(),
                         receipt["blockNumber"], sent, mined, receipt["gasUsed"])

    def _expect(self, request_id: int) -> None:
        """Wait for ``request_id``'s pushed logs from now on, taking those pushed already."""
        with self._pushed_cv:
            self._waiting.add(request_id)
            early = self._early.pop(request_id, [])
        for raw in early:
            self._take_pushed(raw)

    def _check_consumer(self, consumer: str, gas_limit: int) -> None:
        """The contract refuses these too; here the requester learns what to do about it."""
        from eth_utils import is_address

        if not is_address(consumer):
            raise InvalidInputError(f"consumer {consumer!r} is not an address; give the 0x-prefixed address of "
                                    f"a contract implementing IInferenceConsumer")
        if not MIN_CALLBACK_GAS <= gas_limit <= MAX_CALLBACK_GAS:
            raise InvalidInputError(f"callback gas limit {gas_limit:,} is outside [{MIN_CALLBACK_GAS:,}, "
                                    f"{MAX_CALLBACK_GAS:,}]")
        if not self.chain.code(consumer):
            raise InvalidInputError(f"consumer {consumer} has no code on this chain; a callback needs a contract "
                                    f"(deploy it first, or leave the consumer out)")

    # --- wait ------------------------------------------------------------------------------

    def wait(self, submitted: Submitted, *, timeout: float = 120.0) -> InferenceOutcome:
        """Wait until the request ends on-chain; decrypt and verify the result locally."""
        if self._push:
            outcome = self._wait_pushed(submitted, timeout)
            if outcome is not None:
                return self._finish_wait(outcome, submitted)
        be = self.deployment.backbone_execution
        deadline = time.monotonic() + timeout
        head = submitted.block
        while True:
            status = RequestStatus(self.chain.call(be.functions.status(submitted.request_id)))
            if status.ended:
                break
            if time.monotonic() > deadline:
                raise ChainError(f"request {submitted.request_id} still {status.name} after {timeout} s; "
                                 "is an inference node running for this deployment?")
            # the status changes only with a new block: wait for one rather than re-asking the EVM
            head = self.chain.wait_for_block(head, min(1.0, max(0.0, deadline - time.monotonic())))
        return self._finish_wait(self.outcome(submitted.request_id, from_block=submitted.block), submitted)

    def _wait_pushed(self, submitted: Submitted, timeout: float) -> InferenceOutcome | None:
        """The ending pushed by the node (None: the push went quiet; fall back to polling)."""
        endings = _ENDINGS
        deadline = time.monotonic() + timeout
        rid = submitted.request_id
        while True:
            with self._pushed_cv:
                notified = True
                if not any(name in self._pushed.get(rid, {}) for name in endings):
                    notified = self._pushed_cv.wait(max(0.0, min(deadline - time.monotonic(), 1.0)))
                if any(name in self._pushed.get(rid, {}) for name in endings) or time.monotonic() >= deadline:
                    break
            if notified:
                continue  # another request's news
            # a quiet second: ask the chain (outside the condition's lock: the embedded chain
            # pushes while holding its own), in case a push was lost
            status = RequestStatus(self.chain.call(self.deployment.backbone_execution.functions.status(rid)))
            if status.ended:
                with self._pushed_cv:
                    if not any(name in self._pushed.get(rid, {}) for name in endings):
                        break
        with self._pushed_cv:
            logs = self._pushed.pop(rid, {})
            prefetched = self._calls.pop(rid, None)
            self._waiting.discard(rid)
        if not any(name in logs for name in endings):
            return None
        request = {"requestId": submitted.request_id, "modelId": submitted.model_id, "version": submitted.version,
                   "inputCommitment": submitted.input_commitment, "requester": self.account.address,
                   "requesterKey": self.key.public}
        return self._outcome_from_logs(submitted.request_id, logs, request, prefetched=prefetched)

    def _finish_wait(self, outcome: InferenceOutcome, submitted: Submitted) -> InferenceOutcome:
        done = time.perf_counter()
        outcome.latency.setdefault("request_tx", submitted.mined_at - submitted.sent_at)
        with self._pushed_cv:
            ended = self._ended_at.pop(submitted.request_id, None)
        if ended is not None:  # from the pushed ending to the result read, checked and decrypted
            outcome.latency["result_open"] = done - ended
        outcome.latency["end_to_end"] = done - submitted.sent_at
        outcome.transactions.setdefault("request", submitted.tx_hash)
        outcome.gas.setdefault("request", submitted.gas_used)
        return outcome

    def infer(self, model_id: bytes, version: int, array: np.ndarray, *, timeout: float = 120.0,
              **submit_options: Any) -> InferenceOutcome:
        t0 = time.perf_counter()
        submitted = self.submit(model_id, version, array, **submit_options)
        outcome = self.wait(submitted, timeout=timeout)
        outcome.latency["end_to_end"] = time.perf_counter() - t0
        return outcome

    def outcome(self, request_id: int, *, from_block: int) -> InferenceOutcome:
        """Rebuild a request's ending from its events and decrypt the result, if any."""
        from splitseal.chain import logs_with_first_topic

        self._ensure_decoder()
        logs = {entry["event"]: entry for _, entry in logs_with_first_topic(self.chain, self._decoder, request_id,
                                                                            from_block)}
        request = logs["InferenceRequested"]["args"] if "InferenceRequested" in logs else None
        return self._outcome_from_logs(request_id, logs, request)

    def _outcome_from_logs(self, request_id: int, logs: dict[str, Any], request: Any, *,
                           prefetched: Any = None) -> InferenceOutcome:
        """The request's outcome from its ending's logs; ``prefetched``: the delivery
        transaction's :class:`~splitseal.chain.PrefetchedCall`, where the push thread fetched it."""
        endings = {"ResultSubmitted": RequestStatus.COMPLETED, "RequestFailed": RequestStatus.FAILED,
                   "RequestTimedOut": RequestStatus.TIMED_OUT}
        ended = [endings[name] for name in logs if name in endings]
        status = ended[0] if ended else RequestStatus(
            self.chain.call(self.deployment.backbone_execution.functions.status(request_id)))
        outcome = InferenceOutcome(request_id=request_id, status=status)
        if status is RequestStatus.COMPLETED:
            res = logs["ResultSubmitted"]
            args = res["args"]
            # the ciphertext, the signature and (one-transaction path) the transfer are the
            # delivery's calldata, not repeated in events
            call = prefetched.wait(PREFETCH_WAIT) if prefetched is not None else None
            self.prefetched += call is not None
            delivered = self._delivered(res["transactionHash"], request_id, bytes(args["resultCommitment"]), call)
            encrypted = self._encrypted_result(request_id, args, delivered)
            label = bytes(delivered.claim[11]) if delivered.claim[10] else None
            self._verify_signature(request, bytes(delivered.claim[6]), args, delivered.signature, label)
            if self._result_keys.recipient is not self.key:
                self._result_keys = SessionKeys(self.key)
            result = open_result(self._result_keys, encrypted, request_id, bytes(request["modelId"]),
                                 int(request["version"]))
            if label is not None and (not result.labels or int.from_bytes(label, "big") != result.label):
                raise SplitsealError(f"request {request_id}: the public label handed to the consumer "
                                     f"({int.from_bytes(label, 'big')}) is not the label of the encrypted result")
            outcome.public_label = None if label is None else int.from_bytes(label, "big")
            _set_prediction(outcome, result)
            outcome.enclave = args["enclave"]
            xfer = logs.get("TransferRecorded", res)  # a separate transfer tx on the two-step path only
            outcome.transactions["transfer"] = xfer["transactionHash"].to_0x_hex()
            outcome.transactions["result"] = res["transactionHash"].to_0x_hex()
        elif status is RequestStatus.FAILED:
            failed = logs["RequestFailed"]
            outcome.failure_code = _code(failed["args"]["code"])
            outcome.failure_reason = str(failed["args"]["reason"])
            outcome.transactions["failure"] = failed["transactionHash"].to_0x_hex()
        elif status is RequestStatus.TIMED_OUT:
            outcome.failure_code = FailureCode.DEADLINE_PASSED
            outcome.failure_reason = "deadline passed before a result was delivered"
            outcome.transactions["timeout"] = logs["RequestTimedOut"]["transactionHash"].to_0x_hex()
        return outcome

    def close(self) -> None:
        if self._push:
            self._push.stop()
        if self._pending_calls is not None:
            self._pending_calls.stop()

    def _delivered(self, tx_hash: Any, request_id: int, commitment: bytes, call: Any) -> Any:
        """The delivery of ``request_id`` in ``tx_hash``, from ``call`` (pushed with its pending
        transaction, or prefetched) when that is the delivery the chain recorded, else read by hash."""
        from splitseal.chain import checked_read, delivered_result

        return checked_read(lambda c: delivered_result(self.chain, self.deployment, tx_hash, request_id, call=c),
                            lambda d: not d.encrypted_result or keccak256(d.encrypted_result) == commitment, call)

    def _encrypted_result(self, request_id: int, result: Any, delivered: Any) -> bytes:
        """The encrypted result: inline, or fetched from its pointer, checked against the
        commitment the chain recorded (and the enclave signed)."""
        commitment = bytes(result["resultCommitment"])
        inline = delivered.encrypted_result
        if inline:
            if keccak256(inline) != commitment:
                raise SplitsealError(f"request {request_id}: the inline result does not hash to its commitment")
            return inline
        pointer = delivered.result_pointer
        try:
            return self.blobs.get(pointer, commitment, max_bytes=MAX_RESULT_BLOB)
        except InvalidInputError as exc:
            raise SplitsealError(f"request {request_id}: its result is stored off-chain at {pointer!r} and cannot "
                                 f"be fetched and checked: {exc}") from None

    def _verify_signature(self, req: Any, transfer_hash: bytes, result: Any, signature: bytes,
                          label: bytes | None = None) -> None:
        """Check the enclave's EIP-712 signature ourselves: trust the chain's check, but verify."""
        if bytes(req["requesterKey"]) != self.key.public:
            raise SplitsealError(f"request {req['requestId']} names another result key than this requester's")
        claim = ResultClaim(request_id=int(req["requestId"]), model_id=bytes(req["modelId"]),
                            input_commitment=bytes(req["inputCommitment"]), requester=str(req["requester"]),
                            requester_key=self.key.public, enclave=str(result["enclave"]),
                            transfer_hash=transfer_hash, sequence=int(result["sequence"]), label=label)
        digest = claim.digest(self.chain.chain_id, self.deployment.enclave_transfer.address,
                              model_version=int(req["version"]),
                              result_commitment=bytes(result["resultCommitment"]))
        signer = eip712.recover(digest, signature)
        if signer.lower() != str(result["enclave"]).lower():
            raise SplitsealError(f"request {req['requestId']}: result signature recovers to {signer}, "
                                 f"not to the enclave {result['enclave']}; do not trust this result")


def _set_prediction(outcome: InferenceOutcome, result: InferenceResult) -> None:
    """The decrypted result's parts on ``outcome``: every batch row, and row 0 on its own."""
    outcome.labels = list(result.labels) if result.labels else None
    outcome.all_scores = [list(r) for r in result.scores] if result.scores else None
    outcome.all_features = [list(r) for r in result.features] if result.features else None
    outcome.label = outcome.labels[0] if outcome.labels else None
    outcome.scores = outcome.all_scores[0] if outcome.all_scores else None
    outcome.features = outcome.all_features[0] if outcome.all_features else None
    outcome.sequences = [list(r) for r in result.sequences] if result.sequences is not None else None


def _code(value: int) -> FailureCode | None:
    try:
        return FailureCode(int(value))
    except ValueError:
        return None

