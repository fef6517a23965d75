"""Test kit for the contracts: throwaway keys, quotes and signatures built with the project's own
``splitseal.protocol.eip712`` and ``enclave.quote``, and one-call set-ups of the usual states (a registered
model, a serving enclave, a request at each stage).

Roles used throughout: ``admin`` (deployer, every admin role), ``owner`` (model owner),
``node`` (NODE_ROLE), ``requester``, ``stranger`` (no role).
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from eth_utils import keccak

from enclave import quote as quote_mod
from splitseal.errors import ContractRevertError
from splitseal.protocol import NODE_ROLE, eip712
from splitseal.protocol.result import ResultClaim

ZERO32 = bytes(32)
ZERO_ADDRESS = "0x" + "00" * 20

# Realistic sizes for the gas budget: ~320-byte ECIES input, ~100-byte encrypted result.
INLINE_INPUT_SIZE = 320
RESULT_SIZE = 100

# Status enum of BackboneExecution.
NONE, REQUESTED, TRANSFERRED, COMPLETED, FAILED, TIMED_OUT = range(6)


_rng = random.Random(os.urandom(16))


def seed(value: int) -> None:
    """Make every value the kit invents (keys, hashes, inputs) reproducible, for the gas snapshot
    (calldata gas depends on how many bytes are zero)."""
    _rng.seed(value)


def randbytes(n: int) -> bytes:
    return _rng.randbytes(n)


def rand32() -> bytes:
    return _rng.randbytes(32)


def reverts(name: str, **args: Any) -> "RevertExpectation":
    """``with reverts("ErrorName", arg=value): ...``: the call must revert with exactly this
    custom error; the given arguments must match (all of them when ``args`` names them all)."""
    return RevertExpectation(name, args)


class RevertExpectation:
    def __init__(self, name: str, args: dict[str, Any]) -> None:
        self.name, self.args = name, args
        self.error: ContractRevertError | None = None

    def __enter__(self) -> "RevertExpectation":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            pytest.fail(f"expected revert {self.name}{self.args}, but the call succeeded")
        if not isinstance(exc, ContractRevertError):
            return False
        assert exc.error_name == self.name, f"expected {self.name}, got {exc}"
        for key, value in self.args.items():
            assert key in exc.error_args, f"{self.name} has no argument {key!r}: {exc.error_args}"
            got = exc.error_args[key]
            if isinstance(value, str) and isinstance(got, str):
                assert got.lower() == value.lower(), f"{self.name}.{key}: expected {value}, got {got}"
            else:
                assert got == value, f"{self.name}.{key}: expected {value!r}, got {got!r}"
        self.error = exc
        return True


@dataclass
class EnclaveKey:
    """A throwaway enclave identity: signing key, X25519-like public key, measurement."""

    private_key: bytes
    address: str
    encryption_key: bytes
    measurement: bytes
    signer: bytes = field(default_factory=rand32)
    isv_svn: int = 3

    @classmethod
    def new(cls, measurement: bytes | None = None) -> "EnclaveKey":
        pk = rand32()
        return cls(private_key=pk, address=eip712.address_of(pk), encryption_key=rand32(),
                   measurement=measurement or rand32())


@dataclass
class Request:
    request_id: int
    model_id: bytes
    version: int
    input_commitment: bytes
    receipt: Any
    requester: str = ""
    requester_key: bytes = b""


class Kit:
    """The deployed system plus helpers; one per test (the chain is reverted between tests)."""

    def __init__(self, chain: Any, deployment: Any) -> None:
        self.chain = chain
        self.d = deployment
        self.registry = deployment.model_registry
        self.index = deployment.parameter_index
        self.backbone = deployment.backbone_execution
        self.transfer = deployment.enclave_transfer
        self.features = deployment.feature_share_registry
        accts = chain.accounts
        self.admin, self.owner, self.node, self.requester, self.stranger = accts[0], accts[1], accts[2], accts[3], accts[4]
        self.quoting_key = rand32()
        self.quoting_address = eip712.address_of(self.quoting_key)
        self.tx(self.registry.functions.setQuotingKey(self.quoting_address), self.admin)
        self.tx(self.backbone.functions.grantRole(NODE_ROLE, self.node.address), self.admin)
        self.gas: dict[str, int] = {}

    # --- plumbing ------------------------------------------------------------------------

    def tx(self, fn: Any, sender: Any, *, label: str | None = None) -> Any:
        receipt = self.chain.transact(fn, sender=sender)
        if label:
            self.gas[label] = int(receipt["gasUsed"])
        return receipt

    def call(self, fn: Any) -> Any:
        return self.chain.call(fn)

    def events(self, receipt: Any, contract: Any, name: str) -> list[Any]:
        return self.chain.events(receipt, contract, name)

    def one_event(self, receipt: Any, contract: Any, name: str) -> Any:
        found = self.events(receipt, contract, name)
        assert len(found) == 1, f"expected one {name} event, got {len(found)}"
        return found[0]

    def now(self) -> int:
        return int(self.chain.get_block("latest")["timestamp"])

    # --- models --------------------------------------------------------------------------

    def register_model(self, model_id: bytes | None = None, owner: Any = None) -> tuple[bytes, int]:
        model_id = model_id or rand32()
        owner = owner or self.owner
        receipt = self.tx(self.registry.functions.registerModel(model_id, rand32(), rand32(), rand32(), rand32()),
                          owner, label="ModelRegistry.registerModel")
        version = self.one_event(receipt, self.registry, "ModelRegistered")["version"]
        return model_id, int(version)

    # --- attestation ---------------------------------------------------------------------

    def make_quote(self, enclave: EnclaveKey, nonce: bytes, *, issued_at: int | None = None, debug: bool = False,
                   quoting_key: bytes | None = None, report_data: bytes | None = None,
                   chain_id: int | None = None, measurement: bytes | None = None) -> bytes:
        body = quote_mod.ReportBody(
            mr_enclave=measurement or enclave.measurement, mr_signer=enclave.signer, isv_prod_id=1,
            isv_svn=enclave.isv_svn, debug=debug,
            report_data=report_data or quote_mod.report_data_for(
                enclave.address, enclave.encryption_key, chain_id or self.chain.chain_id, nonce))
        return quote_mod.sign_quote(body, self.now() if issued_at is None else issued_at,
                                    quoting_key or self.quoting_key)

    def registration_signature(self, enclave: EnclaveKey, nonce: bytes, *, signing_key: bytes | None = None,
                               measurement: bytes | None = None) -> bytes:
        digest = eip712.enclave_registration_digest(
            self.chain.chain_id, self.registry.address, enclave=enclave.address,
            encryption_key=enclave.encryption_key, measurement=measurement or enclave.measurement, nonce=nonce)
        return eip712.sign(signing_key or enclave.private_key, digest)

    def register_enclave(self, enclave: EnclaveKey, nonce: bytes | None = None, sender: Any = None) -> Any:
        nonce = nonce or rand32()
        return self.tx(self.registry.functions.registerEnclave(
            self.make_quote(enclave, nonce), enclave.address, enclave.encryption_key, nonce,
            self.registration_signature(enclave, nonce)), sender or self.stranger, label="ModelRegistry.registerEnclave")

    def head_loaded_signature(self, enclave: EnclaveKey, model_id: bytes, version: int, package_hash: bytes,
                              state_version: int, *, signing_key: bytes | None = None,
                              graph_hash: bytes | None = None, params_hash: bytes | None = None) -> bytes:
        mv = self.call(self.registry.functions.modelVersion(model_id, version))
        digest = eip712.head_loaded_digest(
            self.chain.chain_id, self.registry.address, model_id=model_id, model_version=version,
            enclave=enclave.address, head_graph_hash=graph_hash or bytes(mv[1]),
            head_params_hash=params_hash or bytes(mv[2]), package_hash=package_hash, state_version=state_version)
        return eip712.sign(signing_key or enclave.private_key, digest)

    def serving_enclave(self, model_id: bytes, version: int, enclave: EnclaveKey | None = None,
                        state_version: int = 1) -> EnclaveKey:
        """Register an enclave, allow its measurement, provision and confirm the head."""
        enclave = enclave or EnclaveKey.new()
        self.register_enclave(enclave)
        if not self.call(self.registry.functions.isMeasurementAllowed(model_id, enclave.measurement)):
            self.tx(self.registry.functions.allowMeasurement(model_id, enclave.measurement), self.owner,
                    label="ModelRegistry.allowMeasurement")
        package_hash = rand32()
        self.tx(self.registry.functions.provisionHead(model_id, version, enclave.address, package_hash), self.owner,
                label="ModelRegistry.provisionHead")
        sig = self.head_loaded_signature(enclave, model_id, version, package_hash, state_version)
        self.tx(self.registry.functions.confirmHeadLoaded(model_id, version, enclave.address, state_version, sig),
                self.stranger, label="ModelRegistry.confirmHeadLoaded")
        return enclave

    # --- requests ------------------------------------------------------------------------

    def request(self, model_id: bytes, version: int, *, inline: bytes | None = None, pointer: str = "",
                ttl: int = 3600, sender: Any = None) -> Request:
        if inline is None:
            inline = b"" if pointer else randbytes(INLINE_INPUT_SIZE)
        commitment, key = rand32(), rand32()
        sender = sender or self.requester
        receipt = self.tx(self.backbone.functions.requestInference(
            model_id, version, commitment, inline, pointer, key, ttl), sender,
            label="BackboneExecution.requestInference")
        event = self.one_event(receipt, self.backbone, "InferenceRequested")
        return Request(int(event["requestId"]), model_id, version, commitment, receipt, sender.address, key)

    def record_transfer(self, req: Request, enclave: EnclaveKey, transfer_hash: bytes | None = None,
                        sender: Any = None) -> tuple[bytes, Any]:
        transfer_hash = transfer_hash or rand32()
        receipt = self.tx(self.backbone.functions.recordBackboneOutput(
            req.request_id, rand32(), enclave.address, transfer_hash), sender or self.node,
            label="BackboneExecution.recordBackboneOutput")
        return transfer_hash, receipt

    def claim(self, req: Request, enclave: EnclaveKey | str, transfer_hash: bytes, /, **changes: Any) -> ResultClaim:
        """The claim of a request's result (fields overridable, to test every mismatch)."""
        claim = ResultClaim(request_id=req.request_id, model_id=req.model_id, input_commitment=req.input_commitment,
                            requester=req.requester, requester_key=req.requester_key,
                            enclave=enclave if isinstance(enclave, str) else enclave.address,
                            transfer_hash=transfer_hash, sequence=1)
        return dataclasses.replace(claim, **changes)

    def result_signature(self, enclave: EnclaveKey, req: Request, transfer_hash: bytes, encrypted_result: bytes,
                         *, signing_key: bytes | None = None, claim: ResultClaim | None = None,
                         commitment: bytes | None = None, **changes: Any) -> bytes:
        claim = claim or self.claim(req, enclave, transfer_hash, **changes)
        digest = claim.digest(self.chain.chain_id, self.transfer.address, model_version=req.version,
                              result_commitment=commitment or keccak(encrypted_result))
        return eip712.sign(signing_key or enclave.private_key, digest)

    def submit(self, req: Request, enclave: EnclaveKey, transfer_hash: bytes, *,
               encrypted_result: bytes | None = None, signature: bytes | None = None, sender: Any = None,
               pointer: str = "", commitment: bytes = bytes(32), **changes: Any) -> Any:
        """Submit a result; ``changes`` alter the claim passed (not the one signed);
        ``transfer_hash_arg`` stands for the claim's transfer hash. With ``pointer``, the result
        travels by pointer and ``commitment`` (give ``encrypted_result=b""``)."""
        if "transfer_hash_arg" in changes:
            changes["transfer_hash"] = changes.pop("transfer_hash_arg")
        encrypted_result = encrypted_result if encrypted_result is not None else randbytes(RESULT_SIZE)
        signature = signature or self.result_signature(enclave, req, transfer_hash, encrypted_result)
        claim = self.claim(req, enclave, transfer_hash, **changes)
        return self.tx(self.transfer.functions.submitResult(claim.as_abi(), encrypted_result, pointer, commitment,
                                                            signature),
                       sender or self.node, label="EnclaveTransfer.submitResult")

    def deliver(self, req: Request, enclave: EnclaveKey, *, transfer_hash: bytes | None = None,
                encrypted_result: bytes | None = None, signature: bytes | None = None,
                output_commitment: bytes | None = None, sender: Any = None, sequence: int = 1) -> Any:
        """The node's one-transaction path: backbone output, transfer and result together."""
        transfer_hash = transfer_hash or rand32()
        encrypted_result = encrypted_result if encrypted_result is not None else randbytes(RESULT_SIZE)
        claim = self.claim(req, enclave, transfer_hash, sequence=sequence)
        signature = signature or self.result_signature(enclave, req, transfer_hash, encrypted_result, claim=claim)
        return self.tx(self.backbone.functions.deliverResult(
            claim.as_abi(), output_commitment or rand32(), encrypted_result, "", bytes(32), signature),
            sender or self.node, label="BackboneExecution.deliverResult")


    def delivery(self, req: Request, enclave: EnclaveKey, *, encrypted_result: bytes | None = None,
                 sequence: int = 1) -> tuple[Any, ...]:
        """One ``IBackboneExecution.Delivery`` (the arguments of ``deliverResult``) for a batch."""
        transfer_hash = rand32()
        encrypted_result = encrypted_result if encrypted_result is not None else randbytes(RESULT_SIZE)
        claim = self.claim(req, enclave, transfer_hash, sequence=sequence)
        signature = self.result_signature(enclave, req, transfer_hash, encrypted_result, claim=claim)
        return (claim.as_abi(), rand32(), encrypted_result, "", bytes(32), signature)

    def deliver_batch(self, deliveries: list[tuple[Any, ...]], *, sender: Any = None) -> Any:
        """``deliverResults``: labelled with the batch size, e.g. ``deliverResults(16)``."""
        return self.tx(self.backbone.functions.deliverResults(deliveries), sender or self.node,
                       label=f"BackboneExecution.deliverResults({len(deliveries)})")


def make_kit_fixture(chain_fixture: str, deployment_fixture: str) -> Callable[..., Kit]:
    """A pytest fixture building a :class:`Kit` on the named chain/deployment fixtures."""

    @pytest.fixture
    def kit(request: pytest.FixtureRequest) -> Kit:
        return Kit(request.getfixturevalue(chain_fixture), request.getfixturevalue(deployment_fixture))

    return kit
