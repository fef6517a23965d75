"""The auditor rebuilds histories from events alone and says plainly what does not verify."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from orchestrator.audit import Auditor, render_html, render_model, render_request
from orchestrator.node_setup import authorize_node, build_node, load_or_create_x25519_key
from orchestrator.requester import Requester
from splitseal.config import Config
from splitseal.errors import InvalidInputError
from splitseal.protocol.crypto import X25519KeyPair
from tests.support import enclave_support as es


@pytest.fixture(scope="module")
def served(embedded_chain, embedded_deployment, tmp_path_factory):
    """Two completed requests and one failed one, on a provisioned enclave."""
    chain = embedded_chain
    snapshot = chain.snapshot()
    base = Path(tmp_path_factory.mktemp("audit"))
    w = es.build_world(chain, embedded_deployment, base)
    key = load_or_create_x25519_key(base / "node" / "input.key")
    authorize_node(chain, embedded_deployment, w.admin, w.node, key)
    wiring = build_node(Config(home=str(base)), chain, embedded_deployment, w.node,
                        backbone_paths=[base / "node" / "backbone.onnx"], socket_path=w.socket_path,
                        state_dir=base / "node", input_key=key)
    requester = Requester(chain, embedded_deployment, w.requester, key=X25519KeyPair.generate(),
                          blob_dir=base / "var" / "blobs")
    good = [requester.submit(w.model_id, w.version, x) for x in es.sample_inputs(2, seed=5)]
    bad = requester.submit(w.model_id, w.version, es.sample_inputs(1)[0][:5])
    wiring.node.poll_once()
    for s in good + [bad]:
        requester.wait(s)
    try:
        yield w, [s.request_id for s in good], bad.request_id
    finally:
        wiring.node.close()
        wiring.client.close()
        w.client.close()
        w.process.stop()
        chain.revert(snapshot)


def test_a_completed_request_verifies_from_events_alone(served):
    w, good, _ = served
    audit = Auditor(w.chain, w.deployment).request(good[0])
    assert audit.status == "COMPLETED"
    assert audit.verified, [c for c in audit.checks if not c.ok]
    # the node's one-transaction delivery: its backbone output, enclave and transfer are calldata
    assert [e.name for e in audit.events] == ["InferenceRequested", "ResultSubmitted"]
    assert all(e.gas_used > 0 and e.timestamp > 0 and e.tx.startswith("0x") for e in audit.events)
    names = {c.name for c in audit.checks}
    assert {"enclave signature (EIP-712 InferenceResult) recovers to the enclave",
            "measurement allowed for the model at the result", "enclave loaded the registered head",
            "enclave verified the published parameter index"} <= names
    assert audit.gas_total <= 200_000
    text = render_request(audit)
    assert "VERIFIED" in text and "[FAIL]" not in text


def test_a_failed_request_shows_its_recorded_failure(served):
    w, _, bad = served
    audit = Auditor(w.chain, w.deployment).request(bad)
    assert audit.status == "FAILED"
    assert audit.events[-1].name == "RequestFailed"
    assert any(c.name == "failure recorded on-chain" and "code 2" in c.detail for c in audit.checks)


@pytest.mark.parametrize("tamper, failing", [
    ("inputCommitment", {"inline input matches its commitment",
                         "enclave signature (EIP-712 InferenceResult) recovers to the enclave"}),
    # a result encrypted to another key than the request named (the redirect attack)
    ("requesterKey", {"enclave signature (EIP-712 InferenceResult) recovers to the enclave"}),
    ("sequence", {"enclave signature (EIP-712 InferenceResult) recovers to the enclave"}),
])
def test_a_tampered_history_does_not_verify_and_says_why(served, tamper, failing):
    """The verifier itself, fed a history whose one field was altered."""
    w, good, _ = served
    auditor = Auditor(w.chain, w.deployment)
    audit = auditor.request(good[0])
    forged = copy.deepcopy(audit)
    forged.checks = []
    for event in forged.events:
        if tamper in event.args:
            value = event.args[tamper]
            event.args[tamper] = value + 1 if isinstance(value, int) else \
                value[:-2] + ("00" if value[-2:] != "00" else "01")
            break
    auditor._check_request(forged)
    assert not forged.verified
    assert {c.name for c in forged.checks if not c.ok} == failing


class _TamperedCalldata:
    """The chain as an auditor sees it, except that one transaction's calldata has one field's
    bytes changed (events carry no ciphertexts or signatures: calldata does)."""

    def __init__(self, chain, tx_hash: str, old: bytes, new: bytes) -> None:
        self._chain, self._tx, self._old, self._new = chain, tx_hash, old, new

    def __getattr__(self, name):
        return getattr(self._chain, name)

    def transaction_call(self, tx_hash):  # what readers of calldata ask (splitseal.chain.calldata)
        tx = dict(self._chain.transaction_call(tx_hash))
        if tx["hash"].to_0x_hex() == self._tx:
            assert bytes(tx["input"]).count(self._old) == 1
            tx["input"] = bytes(tx["input"]).replace(self._old, self._new)
        return tx


@pytest.mark.parametrize("field, failing", [
    ("encrypted_result", {"result commitment is the hash of the encrypted result",
                          "enclave signature (EIP-712 InferenceResult) recovers to the enclave"}),
    ("signature", {"enclave signature (EIP-712 InferenceResult) recovers to the enclave"}),
    ("transfer_hash", {"enclave signature (EIP-712 InferenceResult) recovers to the enclave"}),
])
def test_tampered_calldata_does_not_verify_and_says_why(served, field, failing):
    from splitseal.chain import delivered_result

    w, good, _ = served
    audit = Auditor(w.chain, w.deployment).request(good[0])
    delivery_tx = next(e.tx for e in audit.events if e.name == "ResultSubmitted")
    delivered = delivered_result(w.chain, w.deployment, delivery_tx, good[0])
    original = bytes(delivered.claim[6]) if field == "transfer_hash" else getattr(delivered, field)
    altered = original[:-1] + bytes([original[-1] ^ 1]) if field == "encrypted_result" else \
        bytes([original[0] ^ 1]) + original[1:]
    forged = Auditor(_TamperedCalldata(w.chain, delivery_tx, original, altered), w.deployment).request(good[0])
    assert not forged.verified
    assert {c.name for c in forged.checks if not c.ok} == failing


def test_a_request_through_a_contract_is_not_mistaken_for_its_calldata(served):
    """An inline input is read from a direct call only: any other transaction is a finding."""
    w, good, _ = served
    audit = Auditor(w.chain, w.deployment).request(good[0])
    request_tx = audit.events[0].tx
    other_tx = next(e.tx for e in audit.events if e.name == "ResultSubmitted")

    class _Redirected(_TamperedCalldata):
        def transaction_call(self, tx_hash):
            real = tx_hash.to_0x_hex() if hasattr(tx_hash, "to_0x_hex") else str(tx_hash)
            return self._chain.transaction_call(other_tx if real == request_tx else tx_hash)

    forged = Auditor(_Redirected(w.chain, "", b"", b""), w.deployment).request(good[0])
    failed = [c for c in forged.checks if not c.ok]
    assert [c.name for c in failed] == ["inline input matches its commitment"] and "deliverResult" in failed[0].detail


def test_model_history_lists_registration_enclave_provisioning_and_requests(served, tmp_path):
    w, good, bad = served
    audit = Auditor(w.chain, w.deployment).model(w.model_id)
    names = [e.name for e in audit.events]
    for expected in ("ModelRegistered", "MeasurementAllowed", "EnclaveRegistered", "HeadProvisioned", "HeadLoaded",
                     "IndexPublished", "IndexVerified"):
        assert expected in names
    assert {r.request_id for r in audit.requests} >= set(good) | {bad}
    assert audit.verified
    answers = [c for c in audit.checks if c.name.startswith("every answer of enclave")]
    assert len(answers) == 1 and answers[0].ok, answers
    page = render_html(audit)
    assert "<svg" in page and "VERIFIED" in page and str(good[0]) in page
    assert "VERIFIED" in render_model(audit)


def test_unknown_request_and_model_are_clear_errors(served):
    w, _, _ = served
    auditor = Auditor(w.chain, w.deployment)
    with pytest.raises(InvalidInputError, match="request 999999 does not exist"):
        auditor.request(999999)
    with pytest.raises(InvalidInputError, match="is not registered"):
        auditor.model(b"\x42" * 32)


def test_an_answer_given_off_the_record_shows_as_a_gap(served):
    """The attack: the node operator queries the enclave with a request id that exists on no
    chain. The enclave numbers every answer, so the audit finds the number that never arrived."""
    w, good, _ = served
    status = w.client.status()
    before = Auditor(w.chain, w.deployment).enclave_answers(w.enclave, issued=status.sequence)
    assert before.check().ok, before
    from splitseal.protocol import crypto

    features = w.run_backbone(es.sample_inputs(1, seed=9))
    transfer, shape, dtype = crypto.encrypt_transfer(w.encryption_key, w.enclave, 10**9, w.model_id, w.version,
                                                     features)
    off_record = w.client.infer(request_id=10**9, model_id=w.model_id, version=w.version,  # on no chain
                                input_commitment=bytes(32), transfer_ciphertext=transfer, shape=shape, dtype=dtype,
                                requester_key=crypto.X25519KeyPair.generate().public, requester=w.node.address)
    assert off_record.sequence == status.sequence + 1
    after = Auditor(w.chain, w.deployment).enclave_answers(w.enclave, issued=w.client.status().sequence)
    assert not after.check().ok and after.gaps == [off_record.sequence]
