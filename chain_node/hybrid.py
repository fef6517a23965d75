"""The relay of a hybrid request: the MPC nodes' sealed output shares → the enclave → the chain.

It holds ciphertexts only (shares sealed to the enclave, a result encrypted to the requester)
and an account with NODE_ROLE. Per request, in order:

1. ask the enclave's ``infer_hybrid`` entry call with the request's manifest (its inline input),
   the sealed shares and the nodes' signatures; the enclave checks and reconstructs them
   (enclave/hybrid.py), runs the head and signs the result over the contributions record;
2. keep the contributions record in the blob store under ``blob:0x<transferHash>`` (the audit
   reads it there to name the nodes and check their signatures);
3. ``BackboneExecution.deliverResult`` with output commitment = keccak256 of the share hashes and
   transfer hash = keccak256(record): the normal lifecycle's events, the normal contract checks.

Whatever the enclave refuses (a missing share, a share of a non-member node, a share of another
request) and whatever failed before it (the MPC session) ends the request on-chain with
``EnclaveTransfer.reportFailure``, a reason code and the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from eth_account.signers.local import LocalAccount

from splitseal.chain import Chain, Deployment
from splitseal.enclave_client import EnclaveUnavailableError
from splitseal.errors import ContractRevertError, EnclaveError
from splitseal.protocol import FailureCode, hybrid
from splitseal.protocol.crypto import keccak256
from splitseal.protocol.result import ResultClaim

from .inference_node import INLINE_RESULT_LIMIT, report_failure
from .inputs import BlobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HybridDelivery:
    """What the relay did with one request."""

    request_id: int
    delivered: bool
    tx: str = ""
    failure_code: FailureCode | None = None
    reason: str = ""
    contributions: tuple[hybrid.Contribution, ...] = ()


class HybridRelay:
    """Hands sealed shares to the enclave and its answer to the chain (see module doc)."""

    def __init__(self, chain: Chain, deployment: Deployment, account: LocalAccount, enclave: Any, *,
                 blob_dir: Path) -> None:
        self.chain = chain
        self.deployment = deployment
        self.account = account
        self.enclave = enclave
        self.blobs = BlobStore(blob_dir)

    def deliver(self, request: Any, shares: Sequence[dict[str, Any]], shape: Sequence[int]) -> HybridDelivery:
        """Serve one hybrid request; ``request`` is its ``InferenceRequested`` args."""
        request_id = int(request["requestId"])
        manifest = bytes(request["inlineInput"])
        if not hybrid.is_manifest(manifest):
            return self.fail(request_id, FailureCode.BAD_INPUT,
                             "not a hybrid request: its inline input is not a manifest")
        try:
            reply = self.enclave.infer_hybrid(
                request_id=request_id, model_id=bytes(request["modelId"]), version=int(request["version"]),
                input_commitment=bytes(request["inputCommitment"]), manifest=manifest, shares=shares, shape=shape,
                requester_key=bytes(request["requesterKey"]), requester=str(request["requester"]))
        except EnclaveUnavailableError:
            raise  # transient: the caller retries while the request's deadline allows
        except EnclaveError as exc:
            return self.fail(request_id, _code(exc), str(exc))
        if keccak256(reply.record) != reply.transfer_hash:
            return self.fail(request_id, FailureCode.INTERNAL, "the enclave's contributions record does not hash to "
                                                               "its transfer hash")
        self.blobs.put(reply.record)
        _, contributions = hybrid.decode_record(reply.record)
        claim = ResultClaim(request_id=request_id, model_id=bytes(request["modelId"]),
                            input_commitment=bytes(request["inputCommitment"]), requester=str(request["requester"]),
                            requester_key=bytes(request["requesterKey"]), enclave=reply.enclave,
                            transfer_hash=reply.transfer_hash, sequence=reply.sequence, label=reply.public_label)
        encrypted = reply.encrypted_result
        inline, pointer, commitment = encrypted, "", bytes(32)
        if len(encrypted) > INLINE_RESULT_LIMIT:
            inline, pointer, commitment = b"", self.blobs.put(encrypted), keccak256(encrypted)
        fn = self.deployment.backbone_execution.functions.deliverResult(
            claim.as_abi(), reply.output_commitment, inline, pointer, commitment, reply.signature)
        try:
            gas = self.chain.estimate_gas(fn, sender=self.account.address)
            receipt = self.chain.transact(fn, sender=self.account, gas=gas + gas // 4 + 10_000)
        except ContractRevertError as exc:
            return self.fail(request_id, FailureCode.INTERNAL, f"the contract rejected the delivery: {exc.error_name}")
        tx = receipt["transactionHash"].to_0x_hex()
        log.info("hybrid request_id=%d delivered nodes=%d tx=%s", request_id, len(contributions), tx[:18])
        return HybridDelivery(request_id, True, tx, contributions=tuple(contributions))

    def fail(self, request_id: int, code: FailureCode, reason: str) -> HybridDelivery:
        """Record the request failed on-chain with its reason (no share values in it)."""
        reason = report_failure(self.chain, self.deployment, self.account, request_id, code, reason)
        log.warning("hybrid request_id=%d failed code=%s reason=%s", request_id, code.name, reason)
        return HybridDelivery(request_id, False, failure_code=code, reason=reason)


def read_record(blobs: BlobStore, transfer_hash: bytes) -> bytes:
    """The contributions record a hybrid request's transfer hash names (raises InvalidInputError)."""
    return blobs.get("blob:0x" + bytes(transfer_hash).hex(), bytes(transfer_hash), max_bytes=1 << 20)


def _code(exc: EnclaveError) -> FailureCode:
    try:
        return FailureCode(int(getattr(exc, "reason", FailureCode.ENCLAVE_REFUSED)))
    except ValueError:
        return FailureCode.ENCLAVE_REFUSED

