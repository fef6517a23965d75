"""Hybrid requests end to end: MPC nodes run the backbone on shares, the enclave runs the head.

Nobody but the requester's terminal holds the image; the MPC nodes hold shares of it and of the
backbone output (and, with shared weights, of the backbone's weights); the enclave holds the
backbone output and the head, never the image. :class:`HybridRequester` runs one request:

1. check on-chain that the enclave serves the model version and read its registered encryption
   key; check the node set's members are the cluster's nodes;
2. split the capture into shares and commit to them (mpc.client.hybrid.prepare);
3. ``requestInference`` with the manifest as inline input, ``inputCommitment = keccak256(manifest)``;
4. the nodes compute and seal their output shares (mpc.client.hybrid.compute); if the MPC session
   fails, the request is recorded failed on-chain with the reason;
5. the relay hands the sealed shares to the enclave and delivers its signed answer
   (chain_node.hybrid.HybridRelay) — or records the enclave's refusal;
6. the requester waits for the ending on-chain, checks the enclave's signature and decrypts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from chain_node.hybrid import HybridDelivery, HybridRelay
from mpc.client.cluster import MpcClient
from mpc.client.hybrid import PreparedInput, compute, prepare
from splitseal.enclave_client import EnclaveUnavailableError
from splitseal.errors import InvalidInputError, ProtocolError
from splitseal.protocol import FailureCode

from .requester import InferenceOutcome, Requester, Submitted

log = logging.getLogger(__name__)


@dataclass
class HybridOutcome:
    """The requester's outcome plus what the relay saw (which nodes contributed)."""

    outcome: InferenceOutcome
    delivery: HybridDelivery
    nodes: tuple[str, ...] = ()
    set_id: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class HybridRequester:
    """One requester's hybrid requests through one MPC node set and one enclave (module doc)."""

    def __init__(self, requester: Requester, mpc: MpcClient, set_id: int, relay: HybridRelay, enclave: str) -> None:
        self.requester = requester
        self.mpc = mpc
        self.set_id = int(set_id)
        self.relay = relay
        self.enclave = enclave
        self.chain = requester.chain
        self.deployment = requester.deployment

    def enclave_key(self, model_id: bytes, version: int) -> bytes:
        """Step 1: the key the nodes seal to is the one the registry holds for a serving enclave."""
        registry = self.deployment.model_registry
        if not self.chain.call(registry.functions.isEnclaveServing(model_id, version, self.enclave)):
            raise InvalidInputError(f"enclave {self.enclave} does not serve model 0x{model_id.hex()[:16]}… v{version} "
                                    "on this deployment (not registered, expired, measurement not allowed or head "
                                    "not confirmed); provision it first")
        record = self.chain.call(registry.functions.enclaveRecord(self.enclave))
        return bytes(record[2])

    def check_node_set(self) -> None:
        members = list(self.chain.call(self.deployment.feature_share_registry.functions.nodeSet(self.set_id)))
        if [m.lower() for m in members] != [a.lower() for a in self.mpc.addresses()]:
            raise InvalidInputError(f"node set {self.set_id} on-chain is {members}, the MPC cluster's nodes are "
                                    f"{self.mpc.addresses()}; register the cluster's nodes "
                                    "(`splitseal mpc up --chain …` does) and give that set")

    def submit(self, model_id: bytes, version: int, image: Any, *, deadline_seconds: int = 600,
               model_input: bool = False) -> tuple[Submitted, PreparedInput, bytes]:
        """Steps 1-3: the request on-chain; returns it, the shares and the enclave key
        (``model_input``: mpc.client.hybrid.prepare)."""
        key = self.enclave_key(model_id, version)
        self.check_node_set()
        prepared = prepare(self.mpc, image, self.set_id, model_input=model_input)
        submitted = self.requester.submit_committed(model_id, version, prepared.manifest.commitment(),
                                                    prepared.manifest_bytes, deadline_seconds=deadline_seconds)
        return submitted, prepared, key

    def request_args(self, submitted: Submitted, prepared: PreparedInput) -> dict[str, Any]:
        """The request as its ``InferenceRequested`` event names it (what the relay needs)."""
        return {"requestId": submitted.request_id, "modelId": submitted.model_id, "version": submitted.version,
                "inputCommitment": submitted.input_commitment, "inlineInput": prepared.manifest_bytes,
                "requester": self.requester.account.address, "requesterKey": self.requester.key.public}

    def serve(self, submitted: Submitted, prepared: PreparedInput, key: bytes) -> HybridDelivery:
        """Steps 4-5."""
        try:
            shares, shape = compute(self.mpc, prepared, request_id=submitted.request_id, model_id=submitted.model_id,
                                    version=submitted.version, enclave=self.enclave, encryption_key=key,
                                    chain_id=self.chain.chain_id, transfer=self.deployment.enclave_transfer.address)
        except ProtocolError as exc:
            return self.relay.fail(submitted.request_id, FailureCode.INPUT_UNAVAILABLE,
                                   f"the MPC nodes did not compute the backbone: {exc}")
        try:
            return self.relay.deliver(self.request_args(submitted, prepared), shares, shape)
        except EnclaveUnavailableError as exc:
            return self.relay.fail(submitted.request_id, FailureCode.INTERNAL, f"the enclave is unreachable: {exc}")

    def infer(self, model_id: bytes, version: int, image: Any, *, timeout: float = 120.0,
              deadline_seconds: int = 600, model_input: bool = False) -> HybridOutcome:
        import time

        t0 = time.perf_counter()
        submitted, prepared, key = self.submit(model_id, version, image, deadline_seconds=deadline_seconds,
                                               model_input=model_input)
        t1 = time.perf_counter()
        delivery = self.serve(submitted, prepared, key)
        t2 = time.perf_counter()
        outcome = self.requester.wait(submitted, timeout=timeout)
        t3 = time.perf_counter()
        return HybridOutcome(outcome, delivery, prepared.manifest.nodes, self.set_id,
                             {"request": t1 - t0, "mpc_and_enclave": t2 - t1, "result": t3 - t2, "total": t3 - t0})
