"""BackboneExecution: requests, the backbone/transfer stage, timeouts, admin settings and the
links to EnclaveTransfer. Every event and custom error with its arguments."""

from __future__ import annotations

import os

import pytest
from eth_abi import encode
from eth_utils import keccak

from splitseal.chain import delivered_result, request_inline_input
from splitseal.protocol import DEFAULT_ADMIN_ROLE, NODE_ROLE
from tests.support.contract_kit import (
    COMPLETED,
    INLINE_INPUT_SIZE,
    REQUESTED,
    TIMED_OUT,
    TRANSFERRED,
    ZERO32,
    ZERO_ADDRESS,
    EnclaveKey,
    Kit,
    make_kit_fixture,
    rand32,
    reverts,
)

kit = make_kit_fixture("chain", "deployment")


@pytest.fixture
def served(kit: Kit):
    """A registered model version with a serving enclave."""
    model_id, version = kit.register_model()
    return model_id, version, kit.serving_enclave(model_id, version)


def test_request_inference_inline(kit: Kit, served) -> None:
    model_id, version, _ = served
    before = kit.call(kit.backbone.functions.requestCount())
    commitment, key, inline = rand32(), rand32(), os.urandom(INLINE_INPUT_SIZE)
    receipt = kit.tx(kit.backbone.functions.requestInference(model_id, version, commitment, inline, "", key, 600),
                     kit.requester)
    # the deadline is the including block's time plus the time to live: chain idleness cannot shrink it
    deadline = int(kit.chain.get_block(receipt["blockNumber"])["timestamp"]) + 600
    ev = kit.one_event(receipt, kit.backbone, "InferenceRequested")
    assert dict(ev) == {"requestId": before + 1, "modelId": model_id, "requester": kit.requester.address,
                        "version": version, "inputCommitment": commitment, "inputPointer": "",
                        "requesterKey": key, "deadline": deadline, "consumer": ZERO_ADDRESS, "callbackGasLimit": 0}
    # the inline input is not repeated in the event: it is the transaction's calldata
    assert request_inline_input(kit.chain, kit.d, receipt["transactionHash"]) == inline
    assert kit.call(kit.backbone.functions.requestCount()) == before + 1
    stored = kit.call(kit.backbone.functions.request(before + 1))
    binding = keccak(encode(["bytes32", "bytes32", "address", "bytes32"],
                            [model_id, commitment, kit.requester.address, key]))[:22]
    assert tuple(stored) == (binding, deadline, version, REQUESTED)
    assert kit.call(kit.backbone.functions.requestBinding(model_id, commitment, kit.requester.address, key)) == binding
    assert kit.call(kit.backbone.functions.status(before + 1)) == REQUESTED


def test_request_ids_count_from_one_and_pointer_requests(kit: Kit, served) -> None:
    model_id, version, _ = served
    first = kit.request(model_id, version, pointer="file://blobs/abc")
    second = kit.request(model_id, version)
    assert second.request_id == first.request_id + 1 >= 2
    ev = kit.one_event(first.receipt, kit.backbone, "InferenceRequested")
    assert ev["inputPointer"] == "file://blobs/abc"
    assert request_inline_input(kit.chain, kit.d, first.receipt["transactionHash"]) == b""
    assert kit.call(kit.backbone.functions.status(10**6)) == 0
    assert tuple(kit.call(kit.backbone.functions.request(10**6))) == (bytes(22), 0, 0, 0)


def test_request_validation(kit: Kit, served) -> None:
    model_id, version, _ = served
    fn = kit.backbone.functions.requestInference
    good = dict(modelId=model_id, version=version, inputCommitment=rand32(), inlineInput=b"x", inputPointer="",
                requesterKey=rand32(), ttl=600)

    def send(**changes):
        args = {**good, **changes}
        return kit.tx(fn(*args.values()), kit.requester)

    with reverts("BackboneExecutionBadInput", inlineLength=0, pointerLength=0):
        send(inlineInput=b"")
    with reverts("BackboneExecutionBadInput", inlineLength=1, pointerLength=3):
        send(inputPointer="abc")
    with reverts("BackboneExecutionInputTooLarge", length=16 * 1024 + 1, max=16 * 1024):
        send(inlineInput=b"\x01" * (16 * 1024 + 1))
    with reverts("BackboneExecutionInputTooLarge", length=513, max=512):
        send(inlineInput=b"", inputPointer="p" * 513)
    with reverts("BackboneExecutionZeroCommitment"):
        send(inputCommitment=ZERO32)
    with reverts("BackboneExecutionZeroRequesterKey"):
        send(requesterKey=ZERO32)
    with reverts("BackboneExecutionBadTtl", ttl=0, min=1, max=30 * 86400):
        send(ttl=0)
    with reverts("BackboneExecutionBadTtl", ttl=30 * 86400 + 1, min=1, max=30 * 86400):
        send(ttl=30 * 86400 + 1)
    with reverts("BackboneExecutionUnknownModelVersion", modelId=model_id, version=version + 1):
        send(version=version + 1)
    unknown = rand32()
    with reverts("BackboneExecutionUnknownModelVersion", modelId=unknown, version=1):
        send(modelId=unknown, version=1)


def test_record_backbone_output_emits_both_stages(kit: Kit, served) -> None:
    model_id, version, e = served
    req = kit.request(model_id, version)
    output, transfer_hash = rand32(), rand32()
    receipt = kit.tx(kit.backbone.functions.recordBackboneOutput(req.request_id, output, e.address, transfer_hash),
                     kit.node)
    ev = kit.one_event(receipt, kit.backbone, "BackboneExecuted")
    assert dict(ev) == {"requestId": req.request_id, "node": kit.node.address, "outputCommitment": output}
    tr = kit.one_event(receipt, kit.transfer, "TransferRecorded")
    assert dict(tr) == {"requestId": req.request_id, "enclave": e.address, "transferHash": transfer_hash}
    # BackboneExecuted precedes TransferRecorded in the log order.
    assert [log["address"] for log in receipt["logs"]] == [kit.backbone.address, kit.transfer.address]
    stored = kit.call(kit.backbone.functions.request(req.request_id))
    request_binding = kit.call(kit.backbone.functions.requestBinding(model_id, req.input_commitment, req.requester, req.requester_key))
    expected = keccak(encode(["bytes22", "address", "bytes32"], [request_binding, e.address, transfer_hash]))[:22]
    assert stored[0] == expected == kit.call(kit.backbone.functions.transferBinding(request_binding, e.address,
                                                                                     transfer_hash))
    assert stored[3] == TRANSFERRED

    with reverts("BackboneExecutionInvalidStatus", requestId=req.request_id, status=TRANSFERRED):
        kit.tx(kit.backbone.functions.recordBackboneOutput(req.request_id, output, e.address, transfer_hash), kit.node)


def test_record_backbone_output_preconditions(kit: Kit, served) -> None:
    model_id, version, e = served
    req = kit.request(model_id, version, ttl=100)
    fn = kit.backbone.functions.recordBackboneOutput
    with reverts("AccessControlUnauthorizedAccount", account=kit.stranger.address, neededRole=NODE_ROLE):
        kit.tx(fn(req.request_id, rand32(), e.address, rand32()), kit.stranger)
    with reverts("BackboneExecutionUnknownRequest", requestId=req.request_id + 1):
        kit.tx(fn(req.request_id + 1, rand32(), e.address, rand32()), kit.node)
    with reverts("BackboneExecutionZeroEnclave", requestId=req.request_id):
        kit.tx(fn(req.request_id, rand32(), ZERO_ADDRESS, rand32()), kit.node)
    kit.chain.increase_time(200)
    with reverts("BackboneExecutionDeadlinePassed", requestId=req.request_id, deadline=req_deadline(kit, req)):
        kit.tx(fn(req.request_id, rand32(), e.address, rand32()), kit.node)


def req_deadline(kit: Kit, req) -> int:
    return int(kit.call(kit.backbone.functions.request(req.request_id))[1])


def test_timeout_after_deadline_once(kit: Kit, served) -> None:
    model_id, version, e = served
    requested = kit.request(model_id, version, ttl=100)
    transferred = kit.request(model_id, version, ttl=100)
    kit.record_transfer(transferred, e)
    fn = kit.backbone.functions.timeout
    with reverts("BackboneExecutionDeadlineNotReached", requestId=requested.request_id,
                 deadline=req_deadline(kit, requested)):
        kit.tx(fn(requested.request_id), kit.stranger)
    kit.chain.increase_time(101)
    for req, previous in ((requested, REQUESTED), (transferred, TRANSFERRED)):
        receipt = kit.tx(fn(req.request_id), kit.stranger)
        ev = kit.one_event(receipt, kit.backbone, "RequestTimedOut")
        assert dict(ev) == {"requestId": req.request_id, "caller": kit.stranger.address, "previousStatus": previous}
        assert kit.call(kit.backbone.functions.status(req.request_id)) == TIMED_OUT
        with reverts("BackboneExecutionInvalidStatus", requestId=req.request_id, status=TIMED_OUT):
            kit.tx(fn(req.request_id), kit.stranger)
    with reverts("BackboneExecutionUnknownRequest", requestId=999999):
        kit.tx(fn(999999), kit.stranger)
    # A timed-out request cannot be served any more.
    with reverts("BackboneExecutionInvalidStatus", requestId=requested.request_id, status=TIMED_OUT):
        kit.record_transfer(requested, e)


def test_admin_input_key_and_link(kit: Kit) -> None:
    key = rand32()
    previous = kit.call(kit.backbone.functions.inputKey())
    receipt = kit.tx(kit.backbone.functions.setInputKey(key), kit.admin)
    ev = kit.one_event(receipt, kit.backbone, "InputKeyChanged")
    assert (ev["previousKey"], ev["newKey"]) == (previous, key)
    assert kit.call(kit.backbone.functions.inputKey()) == key
    with reverts("BackboneExecutionZeroInputKey"):
        kit.tx(kit.backbone.functions.setInputKey(ZERO32), kit.admin)
    with reverts("AccessControlUnauthorizedAccount", account=kit.stranger.address, neededRole=DEFAULT_ADMIN_ROLE):
        kit.tx(kit.backbone.functions.setInputKey(key), kit.stranger)

    assert kit.call(kit.backbone.functions.enclaveTransfer()) == kit.transfer.address
    assert kit.call(kit.backbone.functions.modelRegistry()) == kit.registry.address
    assert kit.call(kit.transfer.functions.backboneExecution()) == kit.backbone.address
    assert kit.call(kit.transfer.functions.modelRegistry()) == kit.registry.address


def test_a_new_backbone_deploys_its_own_enclave_transfer(kit: Kit, served) -> None:
    model_id, version, e = served
    fresh, receipt = kit.chain.deploy_with_receipt("BackboneExecution", kit.admin.address, kit.registry.address,
                                                   sender=kit.admin)
    linked = kit.one_event(receipt, fresh, "EnclaveTransferLinked")["enclaveTransfer"]
    assert linked == kit.call(fresh.functions.enclaveTransfer()) != kit.transfer.address
    transfer = kit.chain.contract("EnclaveTransfer", linked)
    assert kit.call(transfer.functions.backboneExecution()) == fresh.address
    assert kit.call(transfer.functions.modelRegistry()) == kit.registry.address
    receipt = kit.tx(fresh.functions.requestInference(model_id, version, rand32(), b"x", "", rand32(),
                                                      600), kit.requester)
    assert kit.one_event(receipt, fresh, "InferenceRequested")["requestId"] == 1  # ids start at 1 everywhere
    with reverts("BackboneExecutionZeroAddress"):
        kit.chain.deploy("BackboneExecution", kit.admin.address, ZERO_ADDRESS, sender=kit.admin)


def test_only_enclave_transfer_may_end_requests(kit: Kit, served) -> None:
    model_id, version, e = served
    req = kit.request(model_id, version)
    for fn in (kit.backbone.functions.markCompleted, kit.backbone.functions.markFailed):
        with reverts("BackboneExecutionNotEnclaveTransfer", caller=kit.admin.address):
            kit.tx(fn(req.request_id), kit.admin)
    with reverts("EnclaveTransferNotBackbone", caller=kit.node.address):
        kit.tx(kit.transfer.functions.recordTransfer(req.request_id, e.address, rand32()), kit.node)


def test_deliver_result_records_every_stage_in_one_transaction(kit: Kit, served) -> None:
    model_id, version, e = served
    req = kit.request(model_id, version)
    output, transfer_hash, encrypted = rand32(), rand32(), os.urandom(100)
    receipt = kit.deliver(req, e, transfer_hash=transfer_hash, encrypted_result=encrypted, output_commitment=output)
    # one event: the backbone output, the enclave and the transfer hash are the call's arguments
    # (the node its sender), not repeated in BackboneExecuted / TransferRecorded
    assert [log["address"] for log in receipt["logs"]] == [kit.transfer.address]
    result = kit.one_event(receipt, kit.transfer, "ResultSubmitted")
    assert dict(result) == {"requestId": req.request_id, "enclave": e.address, "sequence": 1,
                            "resultCommitment": keccak(encrypted)}
    delivered = delivered_result(kit.chain, kit.d, receipt["transactionHash"], req.request_id)
    assert (delivered.output_commitment, delivered.claim[5], delivered.claim[6], delivered.encrypted_result) == \
        (output, e.address, transfer_hash, encrypted)
    # a completed request's slot is cleared (its refund pays part of the delivery); it reads Completed
    assert tuple(kit.call(kit.backbone.functions.request(req.request_id))) == (bytes(22), 0, 0, COMPLETED)
    assert kit.call(kit.backbone.functions.status(req.request_id)) == COMPLETED
    with reverts("BackboneExecutionInvalidStatus", requestId=req.request_id, status=COMPLETED):
        kit.deliver(req, e)


def test_deliver_result_is_all_or_nothing(kit: Kit, served) -> None:
    model_id, version, e = served
    req = kit.request(model_id, version)
    with reverts("AccessControlUnauthorizedAccount", account=kit.stranger.address, neededRole=NODE_ROLE):
        kit.deliver(req, e, sender=kit.stranger)
    forger = EnclaveKey.new()
    transfer_hash, encrypted = rand32(), os.urandom(100)
    bad = kit.result_signature(forger, req, transfer_hash, encrypted)
    with reverts("EnclaveTransferBadSignature", requestId=req.request_id, enclave=e.address,
                 recovered=forger.address):
        kit.deliver(req, e, transfer_hash=transfer_hash, encrypted_result=encrypted, signature=bad)
    # nothing of the failed delivery stuck: the request is still open and can be delivered
    assert kit.call(kit.backbone.functions.status(req.request_id)) == REQUESTED
    kit.deliver(req, e)
    assert kit.call(kit.backbone.functions.status(req.request_id)) == COMPLETED

    late = kit.request(model_id, version, ttl=50)
    kit.chain.increase_time(100)
    with reverts("BackboneExecutionDeadlinePassed", requestId=late.request_id):
        kit.deliver(late, e)


def test_role_constants_are_the_contracts(kit: Kit) -> None:
    """splitseal.protocol holds the one Python copy of the roles the contracts define."""
    from splitseal.protocol import ATTESTATION_ADMIN_ROLE

    assert kit.call(kit.backbone.functions.NODE_ROLE()) == NODE_ROLE
    assert kit.call(kit.backbone.functions.DEFAULT_ADMIN_ROLE()) == DEFAULT_ADMIN_ROLE
    assert kit.call(kit.registry.functions.ATTESTATION_ADMIN_ROLE()) == ATTESTATION_ADMIN_ROLE


def test_the_python_bounds_are_the_contracts(kit: Kit) -> None:
    """splitseal.protocol mirrors the bounds the node and the requester check before sending."""
    from splitseal.protocol import MAX_CALLBACK_GAS, MAX_DELIVERY_BATCH, MIN_CALLBACK_GAS

    assert (kit.call(kit.backbone.functions.MAX_BATCH()), kit.call(kit.backbone.functions.MIN_CALLBACK_GAS()),
            kit.call(kit.backbone.functions.MAX_CALLBACK_GAS())) == \
        (MAX_DELIVERY_BATCH, MIN_CALLBACK_GAS, MAX_CALLBACK_GAS)
