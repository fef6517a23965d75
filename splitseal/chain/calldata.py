"""What the events leave to calldata: inline inputs and delivered results (docs/PROTOCOL.md,
"Reading inputs and results").

``InferenceRequested`` does not repeat an inline input, and ``ResultSubmitted`` does not repeat
the encrypted result, its pointer or the enclave's signature: each is an argument of the
transaction that emitted the event, and costs its gas once. The node, the requester and the
auditor read them here, from the transaction named by the event's log, and check them against
the commitments the events carry (``inputCommitment``, ``resultCommitment``), so a reader never
trusts this decoding further than the chain's own check.

A request sent through another contract is not a direct call, so its inline input is not found
here (:class:`CalldataNotFound`): such requesters pass their input by pointer.

Likewise the contracts keep no per-enclave answer counter: :func:`last_delivered_sequence` reads
the highest ``sequence`` of the enclave's ``ResultSubmitted`` events (``enclave`` is indexed),
the anchor a restored enclave state must not be older than.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from hexbytes import HexBytes

from splitseal.errors import ChainError

from .codec import codec_of

T = TypeVar("T")
from .deployment import Deployment

_REQUEST_FUNCTIONS = ("requestInference", "requestInferenceWithCallback")

log = logging.getLogger(__name__)


class CalldataNotFound(ChainError):
    """The transaction is not a direct call that carries what was looked for."""


@dataclass(frozen=True)
class DeliveredResult:
    """One delivered result as its delivering call carried it."""

    request_id: int
    claim: tuple[Any, ...]  # RequestBinding.ResultClaim as decoded (ABI tuple order)
    output_commitment: bytes | None  # None on the two-step path (submitResult)
    encrypted_result: bytes
    result_pointer: str
    result_commitment: bytes  # as passed: zero with an inline result
    signature: bytes
    function: str
    sender: str  # who sent the delivering transaction (the node, on the node's paths)


def _decode(deployment: Deployment, tx: Any, contracts: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    to = str(tx.get("to") or "").lower()
    for name in contracts:
        contract = getattr(deployment, name)
        if to == contract.address.lower():
            try:
                return codec_of(contract.address, contract.abi).decode(bytes(tx["input"]))
            except ValueError as exc:
                raise CalldataNotFound(f"transaction {_hex(tx)} is not a call of a known function: {exc}") from None
    raise CalldataNotFound(f"transaction {_hex(tx)} does not call the deployment's contracts directly "
                           f"(to {to or 'nobody'}): a request sent through a contract must pass its input "
                           f"by pointer")


def _hex(tx: Any) -> str:
    h = tx.get("hash")
    return h.to_0x_hex() if hasattr(h, "to_0x_hex") else str(h)


def request_inline_input(chain: Any, deployment: Deployment, tx_hash: Any, *, call: dict[str, Any] | None = None) -> bytes:
    """The ``inlineInput`` argument of the request transaction ``tx_hash`` (empty with a pointer);
    ``call``: that transaction's :meth:`~splitseal.chain.Chain.transaction_call`, fetched already."""
    if call is None or bytes(call["hash"]) != bytes(HexBytes(tx_hash)):
        call = chain.transaction_call(tx_hash)
    tx = call
    name, args = _decode(deployment, tx, ("backbone_execution",))
    if name not in _REQUEST_FUNCTIONS:
        raise CalldataNotFound(f"transaction {_hex(tx)} calls {name}, not a request function")
    return bytes(args["inlineInput"])


def delivered_result(chain: Any, deployment: Deployment, tx_hash: Any, request_id: int, *,
                     call: dict[str, Any] | None = None) -> DeliveredResult:
    """The result of ``request_id`` that transaction ``tx_hash`` delivered (``deliverResult``,
    one item of ``deliverResults``, or ``submitResult``); ``call``: that transaction's
    :meth:`~splitseal.chain.Chain.transaction_call`, fetched already."""
    fetched = call is not None and bytes(call["hash"]) == bytes(HexBytes(tx_hash))
    tx = call if fetched else chain.transaction_call(tx_hash)
    name, args = _decode(deployment, tx, ("backbone_execution", "enclave_transfer"))
    if name == "deliverResults":
        items = [dict(zip(("claim", "outputCommitment", "encryptedResult", "resultPointer", "resultCommitment",
                           "signature"), _as_tuple(d))) for d in args["deliveries"]]
    elif name in ("deliverResult", "submitResult"):
        items = [args]
    else:
        raise CalldataNotFound(f"transaction {_hex(tx)} calls {name}, not a delivery function")
    for item in items:
        claim = _as_tuple(item["claim"])
        if int(claim[0]) == request_id:
            oc = item.get("outputCommitment")
            return DeliveredResult(request_id, claim, bytes(oc) if oc is not None else None,
                                   bytes(item["encryptedResult"]), str(item["resultPointer"]),
                                   bytes(item["resultCommitment"]), bytes(item["signature"]), name,
                                   str(tx["from"]))
    raise CalldataNotFound(f"transaction {_hex(tx)} delivers no result for request {request_id}")


class PrefetchedCall:
    """A transaction's :meth:`~splitseal.chain.Chain.transaction_call`, fetched on a push
    subscription's thread as soon as the log naming the transaction arrives, for a reader on
    another thread (the inference node's service loop, a requester's waiting caller): the reader's
    wake-up overlaps the round trip. Only the fetch moves; the reader checks what it reads
    exactly as it checks a call it fetched itself, and fetches it itself when this one failed."""

    __slots__ = ("call", "done")

    def __init__(self) -> None:
        self.call: dict[str, Any] | None = None
        self.done = threading.Event()

    def fetch(self, chain: Any, tx_hash: Any) -> None:
        try:
            self.call = chain.transaction_call(tx_hash)
        except Exception as exc:  # noqa: BLE001 - the reader fetches it itself, and meets the error there
            log.debug("prefetch of transaction %s failed: %s", HexBytes(tx_hash).hex(), exc)
        finally:
            self.done.set()

    def have(self, call: dict[str, Any]) -> None:
        """The call is at hand already (pushed with its pending transaction): no fetch."""
        self.call = call
        self.done.set()

    def wait(self, timeout: float) -> dict[str, Any] | None:
        """The fetched call, or None (it failed, or took longer than ``timeout`` seconds)."""
        return self.call if self.done.wait(timeout) else None


def checked_read(read: Callable[[dict[str, Any] | None], T], fits: Callable[[T], bool],
                 call: dict[str, Any] | None) -> T:
    """``read(call)`` when ``call`` (pushed with its pending transaction, or prefetched) decodes
    and what it holds ``fits`` the chain's record (a commitment); else ``read(None)``, the
    transaction's calldata fetched by hash. A call that is not what the chain recorded costs a
    fetch, never a wrong read; what the fetch gives the reader checks as before."""
    if call is not None:
        try:
            value = read(call)
            if fits(value):
                return value
        except CalldataNotFound:
            pass
    return read(None)


def last_delivered_sequence(chain: Any, deployment: Deployment, enclave: str) -> int:
    """The highest answer sequence ``enclave`` delivered on this deployment (0 if none)."""
    logs = chain.get_logs(deployment.enclave_transfer, "ResultSubmitted", deployment.block,
                          argument_filters={"enclave": enclave})
    return max((int(entry["args"]["sequence"]) for entry in logs), default=0)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    """web3 decodes a struct as a tuple or a dict, depending on the version: tuple order either way."""
    if isinstance(value, dict):
        return tuple(value.values())
    return tuple(value)
