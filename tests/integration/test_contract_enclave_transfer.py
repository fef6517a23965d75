"""EnclaveTransfer: signed results, failures, exactly-once endings, and the whole request
lifecycle (also on anvil). Every event and custom error with its arguments."""

from __future__ import annotations

import os

import pytest
from eth_utils import keccak

from splitseal.chain import delivered_result, last_delivered_sequence
from splitseal.protocol import NODE_ROLE, eip712
from tests.support.contract_kit import (
    COMPLETED,
    FAILED,
    REQUESTED,
    RESULT_SIZE,
    TIMED_OUT,
    TRANSFERRED,
    ZERO_ADDRESS,
    EnclaveKey,
    Kit,
    make_kit_fixture,
    rand32,
    reverts,
)

kit = make_kit_fixture("chain", "deployment")


@pytest.fixture
def any_kit(any_chain, any_deployment) -> Kit:
    return Kit(any_chain, any_deployment)


@pytest.fixture
def transferred(kit: Kit):
    """(request, serving enclave, transfer hash) with the request in Transferred."""
    model_id, version = kit.register_model()
    e = kit.serving_enclave(model_id, version)
    req = kit.request(model_id, version, ttl=600)
    transfer_hash, _ = kit.record_transfer(req, e)
    return req, e, transfer_hash


def test_full_lifecycle_on_every_chain(any_kit: Kit) -> None:
    k = any_kit
    model_id, version = k.register_model()
    e = k.serving_enclave(model_id, version)
    req = k.request(model_id, version)
    transfer_hash, _ = k.record_transfer(req, e)
    result = os.urandom(RESULT_SIZE)
    signature = k.result_signature(e, req, transfer_hash, result)
    receipt = k.submit(req, e, transfer_hash, encrypted_result=result, signature=signature, sender=k.stranger)
    ev = k.one_event(receipt, k.transfer, "ResultSubmitted")
    assert dict(ev) == {"requestId": req.request_id, "enclave": e.address, "sequence": 1,
                        "resultCommitment": keccak(result)}
    # the ciphertext and the signature are read from the calldata, not repeated in the event
    delivered = delivered_result(k.chain, k.d, receipt["transactionHash"], req.request_id)
    assert (delivered.encrypted_result, delivered.result_pointer, delivered.signature) == (result, "", signature)
    assert last_delivered_sequence(k.chain, k.d, e.address) == 1
    assert k.call(k.backbone.functions.status(req.request_id)) == COMPLETED
    with reverts("EnclaveTransferInvalidStatus", requestId=req.request_id, status=COMPLETED):
        k.submit(req, e, transfer_hash, encrypted_result=result, signature=signature)
    lifecycle = sum(k.gas[n] for n in ("BackboneExecution.requestInference", "BackboneExecution.recordBackboneOutput",
                                       "EnclaveTransfer.submitResult"))
    # the two-step path with a 320-byte input and a 100-byte random result: 200k until results could
    # travel by pointer (two more arguments and an event field); the one-transaction path the node
    # uses is guarded at 150k by tests/integration/test_gas.py
    assert lifecycle <= 205_000, f"lifecycle gas {lifecycle} on {k.chain.name}"


def test_domain_separators_match_python(any_kit: Kit) -> None:
    k = any_kit
    for contract in (k.registry, k.index, k.transfer, k.features):
        assert k.call(contract.functions.domainSeparator()) == eip712.domain_separator(k.chain.chain_id,
                                                                                        contract.address)
        # EIP-5267 (OpenZeppelin's EIP712): the same domain, field by field; fields 0x0f = name,
        # version, chainId, verifyingContract (no salt, no extensions).
        fields, name, version, chain_id, verifying, salt, extensions = k.call(contract.functions.eip712Domain())
        assert (fields, name, version, chain_id, verifying, salt, extensions) == (
            b"\x0f", "splitseal", "1", k.chain.chain_id, contract.address, b"\x00" * 32, [])


def test_second_delivery_of_anything_is_rejected(kit: Kit, transferred) -> None:
    req, e, transfer_hash = transferred
    kit.submit(req, e, transfer_hash)
    rid = req.request_id
    with reverts("EnclaveTransferInvalidStatus", requestId=rid, status=COMPLETED):
        kit.submit(req, e, transfer_hash)
    with reverts("EnclaveTransferInvalidStatus", requestId=rid, status=COMPLETED):
        kit.tx(kit.transfer.functions.reportFailure(rid, 7, "late"), kit.node)
    with reverts("BackboneExecutionInvalidStatus", requestId=rid, status=COMPLETED):
        kit.record_transfer(req, e)
    kit.chain.increase_time(700)
    with reverts("BackboneExecutionInvalidStatus", requestId=rid, status=COMPLETED):
        kit.tx(kit.backbone.functions.timeout(rid), kit.stranger)


def test_result_must_be_signed_by_the_enclave_named_at_transfer(kit: Kit, transferred) -> None:
    req, e, transfer_hash = transferred
    rid = req.request_id
    result = os.urandom(RESULT_SIZE)
    forger = rand32()
    forged = kit.result_signature(e, req, transfer_hash, result, signing_key=forger)
    with reverts("EnclaveTransferBadSignature", requestId=rid, enclave=e.address, recovered=eip712.address_of(forger)):
        kit.submit(req, e, transfer_hash, encrypted_result=result, signature=forged)
    with reverts("EnclaveTransferBadSignature", requestId=rid, enclave=e.address, recovered=ZERO_ADDRESS):
        kit.submit(req, e, transfer_hash, encrypted_result=result, signature=b"\x01" * 65)
    # A signature over another ciphertext does not cover this one (the contract hashes what it gets).
    other = kit.result_signature(e, req, transfer_hash, os.urandom(RESULT_SIZE))
    with reverts("EnclaveTransferBadSignature", requestId=rid, enclave=e.address):
        kit.submit(req, e, transfer_hash, encrypted_result=result, signature=other)
    # A signature for another request id is not replayable here.
    replayed = kit.result_signature(e, req, transfer_hash, result, request_id=rid + 1)
    with reverts("EnclaveTransferBadSignature", requestId=rid, enclave=e.address):
        kit.submit(req, e, transfer_hash, encrypted_result=result, signature=replayed)
    # A signature over another answer number does not cover this one.
    replayed = kit.result_signature(e, req, transfer_hash, result, sequence=2)
    with reverts("EnclaveTransferBadSignature", requestId=rid, enclave=e.address):
        kit.submit(req, e, transfer_hash, encrypted_result=result, signature=replayed)
    assert kit.call(kit.backbone.functions.status(rid)) == TRANSFERRED  # nothing changed
    kit.submit(req, e, transfer_hash, encrypted_result=result)


def test_result_values_must_match_the_binding(kit: Kit, transferred) -> None:
    req, e, transfer_hash = transferred
    rid = req.request_id
    stored = kit.call(kit.backbone.functions.request(rid))[0]
    for changes in ({"model_id": rand32()}, {"input_commitment": rand32()}, {"transfer_hash_arg": rand32()}):
        with reverts("EnclaveTransferBindingMismatch", requestId=rid, stored=stored):
            kit.submit(req, e, transfer_hash, **changes)
    # Another serving enclave (not the one named at transfer) cannot deliver, even with its own valid signature.
    other = kit.serving_enclave(req.model_id, req.version)
    with reverts("EnclaveTransferBindingMismatch", requestId=rid, stored=stored):
        kit.submit(req, other, transfer_hash)


def test_result_needs_a_serving_enclave(kit: Kit, transferred) -> None:
    req, e, transfer_hash = transferred
    kit.tx(kit.registry.functions.revokeMeasurement(req.model_id, e.measurement), kit.owner)  # wrong measurement now
    with reverts("EnclaveTransferEnclaveNotServing", modelId=req.model_id, version=req.version, enclave=e.address):
        kit.submit(req, e, transfer_hash)
    kit.tx(kit.registry.functions.allowMeasurement(req.model_id, e.measurement), kit.owner)
    kit.tx(kit.registry.functions.revokeEnclave(e.address), kit.admin)  # revoked enclave
    with reverts("EnclaveTransferEnclaveNotServing", modelId=req.model_id, version=req.version, enclave=e.address):
        kit.submit(req, e, transfer_hash)


def test_result_from_an_expired_enclave_is_refused(kit: Kit) -> None:
    model_id, version = kit.register_model()
    e = kit.serving_enclave(model_id, version)
    kit.tx(kit.registry.functions.setRegistrationTtl(300), kit.admin)
    kit.register_enclave(e)  # renewed with a 300 s lifetime
    req = kit.request(model_id, version, ttl=3600)
    transfer_hash, _ = kit.record_transfer(req, e)
    kit.chain.increase_time(301)
    with reverts("EnclaveTransferEnclaveNotServing", modelId=model_id, version=version, enclave=e.address):
        kit.submit(req, e, transfer_hash)


def test_result_needs_the_head_loaded(kit: Kit) -> None:
    model_id, version = kit.register_model()
    e = EnclaveKey.new()
    kit.register_enclave(e)
    kit.tx(kit.registry.functions.allowMeasurement(model_id, e.measurement), kit.owner)  # authorized, no head
    req = kit.request(model_id, version)
    transfer_hash, _ = kit.record_transfer(req, e)
    with reverts("EnclaveTransferEnclaveNotServing", modelId=model_id, version=version, enclave=e.address):
        kit.submit(req, e, transfer_hash)


def test_result_status_deadline_and_length(kit: Kit, transferred) -> None:
    req, e, transfer_hash = transferred
    model_id, version = req.model_id, req.version
    requested = kit.request(model_id, version)
    with reverts("EnclaveTransferInvalidStatus", requestId=requested.request_id, status=REQUESTED):
        kit.submit(requested, e, transfer_hash)
    with reverts("EnclaveTransferInvalidStatus", requestId=10**6, status=0):
        unknown = kit.claim(requested, e, rand32(), request_id=10**6)
        kit.tx(kit.transfer.functions.submitResult(unknown.as_abi(), b"x", "", bytes(32), b""), kit.node)
    with reverts("EnclaveTransferBadResultPointer", requestId=req.request_id, pointerLength=0):
        kit.submit(req, e, transfer_hash, encrypted_result=b"")  # neither inline nor pointer
    with reverts("EnclaveTransferBadResultLength", requestId=req.request_id, length=16 * 1024 + 1):
        kit.submit(req, e, transfer_hash, encrypted_result=b"\x01" * (16 * 1024 + 1))
    with reverts("EnclaveTransferBadResultPointer", requestId=req.request_id, pointerLength=8):
        kit.submit(req, e, transfer_hash, encrypted_result=b"\x01", pointer="blob:0x1")  # both
    with reverts("EnclaveTransferBadResultPointer", requestId=req.request_id, pointerLength=8):
        kit.submit(req, e, transfer_hash, encrypted_result=b"", pointer="blob:0x1")  # no commitment
    with reverts("EnclaveTransferBadResultPointer", requestId=req.request_id, pointerLength=513):
        kit.submit(req, e, transfer_hash, encrypted_result=b"", pointer="x" * 513, commitment=rand32())
    deadline = int(kit.call(kit.backbone.functions.request(req.request_id))[1])
    kit.chain.increase_time(601)
    with reverts("EnclaveTransferDeadlinePassed", requestId=req.request_id, deadline=deadline):
        kit.submit(req, e, transfer_hash)
    kit.tx(kit.backbone.functions.timeout(req.request_id), kit.stranger)
    with reverts("EnclaveTransferInvalidStatus", requestId=req.request_id, status=TIMED_OUT):
        kit.submit(req, e, transfer_hash)


@pytest.mark.parametrize("stage", ["requested", "transferred"])
def test_report_failure(kit: Kit, stage: str) -> None:
    model_id, version = kit.register_model()
    e = kit.serving_enclave(model_id, version)
    req = kit.request(model_id, version)
    if stage == "transferred":
        kit.record_transfer(req, e)
    receipt = kit.tx(kit.transfer.functions.reportFailure(req.request_id, 5, "enclave refused"), kit.node)
    ev = kit.one_event(receipt, kit.transfer, "RequestFailed")
    assert dict(ev) == {"requestId": req.request_id, "node": kit.node.address, "code": 5, "reason": "enclave refused"}
    assert kit.call(kit.backbone.functions.status(req.request_id)) == FAILED
    with reverts("EnclaveTransferInvalidStatus", requestId=req.request_id, status=FAILED):
        kit.tx(kit.transfer.functions.reportFailure(req.request_id, 5, "again"), kit.node)
    if stage == "transferred":
        with reverts("EnclaveTransferInvalidStatus", requestId=req.request_id, status=FAILED):
            kit.submit(req, e, rand32())


def test_report_failure_checks(kit: Kit) -> None:
    model_id, version = kit.register_model()
    req = kit.request(model_id, version, ttl=50)
    fn = kit.transfer.functions.reportFailure
    with reverts("EnclaveTransferNotNode", caller=kit.stranger.address):
        kit.tx(fn(req.request_id, 1, "x"), kit.stranger)
    for code in (0, 8):
        with reverts("EnclaveTransferUnknownReasonCode", code=code):
            kit.tx(fn(req.request_id, code, "x"), kit.node)
    with reverts("EnclaveTransferReasonTooLong", length=257, max=256):
        kit.tx(fn(req.request_id, 1, "r" * 257), kit.node)
    with reverts("EnclaveTransferInvalidStatus", requestId=10**6, status=0):
        kit.tx(fn(10**6, 1, "x"), kit.node)
    # A node that lost its role cannot report; after the deadline a node may still report code 6.
    kit.tx(kit.backbone.functions.revokeRole(NODE_ROLE, kit.node.address), kit.admin)
    with reverts("EnclaveTransferNotNode", caller=kit.node.address):
        kit.tx(fn(req.request_id, 6, "deadline passed"), kit.node)
    kit.tx(kit.backbone.functions.grantRole(NODE_ROLE, kit.node.address), kit.admin)
    kit.chain.increase_time(60)
    receipt = kit.tx(fn(req.request_id, 6, "deadline passed"), kit.node)
    assert kit.one_event(receipt, kit.transfer, "RequestFailed")["code"] == 6
    with reverts("BackboneExecutionInvalidStatus", requestId=req.request_id, status=FAILED):
        kit.tx(kit.backbone.functions.timeout(req.request_id), kit.stranger)


def test_malleable_and_cross_domain_signatures_are_refused(kit: Kit, transferred) -> None:
    req, e, transfer_hash = transferred
    rid = req.request_id
    result = os.urandom(RESULT_SIZE)
    good = kit.result_signature(e, req, transfer_hash, result)
    # The high-s twin of a valid signature recovers to the same key in plain ecrecover; the
    # contracts refuse it (recovered = zero), as splitseal.protocol.eip712.recover does.
    s = int.from_bytes(good[32:64], "big")
    twin = good[:32] + (eip712.SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - good[64]])
    with reverts("EnclaveTransferBadSignature", requestId=rid, enclave=e.address, recovered=ZERO_ADDRESS):
        kit.submit(req, e, transfer_hash, encrypted_result=result, signature=twin)
    # The same struct signed for another verifying contract or another chain does not verify here.
    for chain_id, contract in ((kit.chain.chain_id, kit.registry.address), (kit.chain.chain_id + 1,
                                                                            kit.transfer.address)):
        digest = kit.claim(req, e, transfer_hash).digest(chain_id, contract, model_version=req.version,
                                                         result_commitment=keccak(result))
        with reverts("EnclaveTransferBadSignature", requestId=rid, enclave=e.address):
            kit.submit(req, e, transfer_hash, encrypted_result=result, signature=eip712.sign(e.private_key, digest))
    kit.submit(req, e, transfer_hash, encrypted_result=result, signature=good)


def test_a_result_redirected_to_another_key_is_refused(kit: Kit, transferred) -> None:
    """The attack: a node has the enclave encrypt the result to its own key. The requester's key
    is in the request's binding and in the signed claim, so neither version of the claim passes."""
    req, e, transfer_hash = transferred
    rid, stored = req.request_id, kit.call(kit.backbone.functions.request(req.request_id))[0]
    nodes_key = rand32()
    # signed honestly by the enclave for the node's key: the binding names the requester's key
    signed_for_node = kit.result_signature(e, req, transfer_hash, b"r" * 64, requester_key=nodes_key)
    with reverts("EnclaveTransferBindingMismatch", requestId=rid, stored=stored):
        kit.submit(req, e, transfer_hash, encrypted_result=b"r" * 64, signature=signed_for_node,
                   requester_key=nodes_key)
    # the same signature passed with the requester's key in the claim does not recover
    with reverts("EnclaveTransferBadSignature", requestId=rid, enclave=e.address):
        kit.submit(req, e, transfer_hash, encrypted_result=b"r" * 64, signature=signed_for_node)
    # nor may the claim name another requester account
    with reverts("EnclaveTransferBindingMismatch", requestId=rid, stored=stored):
        kit.submit(req, e, transfer_hash, requester=kit.stranger.address)
    assert kit.call(kit.backbone.functions.status(rid)) == TRANSFERRED
    kit.submit(req, e, transfer_hash)
    assert kit.call(kit.backbone.functions.status(rid)) == COMPLETED


def test_answer_numbers_are_recorded_per_enclave(kit: Kit) -> None:
    model_id, version = kit.register_model()
    e = kit.serving_enclave(model_id, version)
    with reverts("EnclaveTransferZeroSequence", requestId=kit.call(kit.backbone.functions.requestCount()) + 1):
        kit.deliver(kit.request(model_id, version), e, sequence=0)
    for sequence, expected in ((3, 3), (2, 3), (5, 5)):  # several nodes may deliver out of order
        kit.deliver(kit.request(model_id, version), e, sequence=sequence)
        assert last_delivered_sequence(kit.chain, kit.d, e.address) == expected
    assert last_delivered_sequence(kit.chain, kit.d, kit.stranger.address) == 0


def test_a_large_result_travels_by_pointer_and_commitment(any_kit: Kit) -> None:
    """A result above MAX_RESULT (a 1000-class scores vector is ~22 KB encrypted) is stored
    off-chain; the chain records the pointer and the signed commitment."""
    k = any_kit
    model_id, version = k.register_model()
    e = k.serving_enclave(model_id, version)
    req = k.request(model_id, version)
    transfer_hash, _ = k.record_transfer(req, e)
    result = os.urandom(22 * 1024)
    commitment = keccak(result)
    pointer = "blob:0x" + commitment.hex()
    with reverts("EnclaveTransferBadSignature"):  # the signature must cover this commitment
        k.submit(req, e, transfer_hash, encrypted_result=b"", pointer=pointer, commitment=rand32(),
                 signature=k.result_signature(e, req, transfer_hash, result))
    receipt = k.submit(req, e, transfer_hash, encrypted_result=b"", pointer=pointer, commitment=commitment,
                       signature=k.result_signature(e, req, transfer_hash, result))
    ev = k.one_event(receipt, k.transfer, "ResultSubmitted")
    delivered = delivered_result(k.chain, k.d, receipt["transactionHash"], req.request_id)
    assert ev["resultCommitment"] == commitment == delivered.result_commitment
    assert delivered.result_pointer == pointer and delivered.encrypted_result == b""
    assert k.call(k.backbone.functions.status(req.request_id)) == COMPLETED
