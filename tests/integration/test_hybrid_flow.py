"""Hybrid mode end to end with real processes: the MPC node processes run the digits backbone on
shares, seal their output shares to the enclave process, the enclave reconstructs them, runs the
head and signs; the chain records the normal lifecycle; the requester decrypts.

Hostile cases (each must end the request failed on-chain with its reason): a share of another
request (replayed), a missing share, a share of a node outside the set, an input share that does
not match the request's commitment. An inference node runs beside them and must leave hybrid
requests alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from chain_node.hybrid import HybridRelay, read_record
from chain_node.inputs import BlobStore
from mpc.client import cluster as cl
from mpc.client.hybrid import compute
from mpc.client.owner import load_onnx
from orchestrator.audit import Auditor
from orchestrator.hybrid import HybridRequester
from orchestrator.stack import start_stack
from orchestrator.training import load_split
from splitseal.config import PROJECT_ROOT, Config
from splitseal.enclave_client import EnclaveClient
from splitseal.protocol import FailureCode, RequestStatus, eip712, hybrid

pytestmark = pytest.mark.integration

HYBRID_RULE = PROJECT_ROOT / "rules" / "digits_hybrid.toml"


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """Chain + enclave process + an inference node (stack), an MPC cluster of 2 node processes
    (shared weights) running the split's backbone, its node set on-chain, a relay with NODE_ROLE."""
    home = tmp_path_factory.mktemp("hybrid")
    stack = start_stack(Config(home=str(home)), chain_target="embedded", state_dir=home / "state",
                        say=lambda _line: None, rule=HYBRID_RULE, node=True)
    mpc_dir = home / "mpc"
    try:
        chain, deployment = stack.chain, stack.deployment
        cl.up(mpc_dir, load_onnx(stack.split_dir / "node" / "backbone.onnx"), parties=2, shared=True)
        mpc = cl.MpcClient(cl.ClusterInfo.load(mpc_dir))
        set_id = cl.register_node_set(chain, deployment.feature_share_registry, mpc.addresses(), chain.account(0))
        relay_account = chain.account(4)
        be = deployment.backbone_execution
        chain.transact(be.functions.grantRole(chain.call(be.functions.NODE_ROLE()), relay_account.address),
                       sender=chain.account(0))
        enclave = EnclaveClient(stack.state_dir / "enclave" / "enclave.sock")
        relay = HybridRelay(chain, deployment, relay_account, enclave, blob_dir=stack.state_dir / "blobs")
        requester = stack.requester()
        hybrid_requester = HybridRequester(requester, mpc, set_id, relay, enclave.status().enclave)
        yield stack, hybrid_requester
        requester.close()
        mpc.close()
        enclave.close()
    finally:
        cl.down(mpc_dir)
        stack.close()


@pytest.fixture(scope="module")
def digits():
    _, _, x_test, _ = load_split()
    return x_test


def _whole_model(x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(PROJECT_ROOT / "models" / "digits_classifier.onnx"))
    return session.run(None, {"image": x[None].astype(np.float32)})[0][0]


def _failure(stack, request_id: int):
    be = stack.deployment.backbone_execution
    assert stack.chain.call(be.functions.status(request_id)) == RequestStatus.FAILED
    (event,) = stack.chain.get_logs(stack.deployment.enclave_transfer, "RequestFailed", stack.deployment.block,
                                    argument_filters={"requestId": request_id})
    return FailureCode(int(event["args"]["code"])), str(event["args"]["reason"])


def test_a_hybrid_request_completes_with_the_whole_models_answer(system, digits):
    stack, hr = system
    x = digits[0]
    result = hr.infer(stack.model_id, stack.version, x, timeout=60)
    outcome = result.outcome
    assert outcome.status is RequestStatus.COMPLETED, outcome.failure_reason
    expected = _whole_model(x)
    assert outcome.label == int(np.argmax(expected))
    # fixed point (16 fractional bits) through two conv blocks and a shared-weight fc
    assert np.max(np.abs(np.asarray(outcome.scores) - expected)) < 1e-3
    # every node of the set contributed, with its own signature, recorded under the transfer hash
    assert result.delivery.delivered
    assert [c.node for c in result.delivery.contributions] == list(hr.mpc.addresses())
    # the one-transaction delivery carries the transfer hash in its claim (calldata)
    from splitseal.chain import delivered_result

    transfer_hash = bytes(delivered_result(stack.chain, stack.deployment, outcome.transactions["result"],
                                           outcome.request_id).claim[6])
    record = read_record(BlobStore(stack.state_dir / "blobs"), transfer_hash)
    request_id, contributions = hybrid.decode_record(record)
    assert request_id == outcome.request_id and len(contributions) == 2
    # gas: the hybrid lifecycle costs no more than the same model's request served by the inference
    # node (same result size); the input is a packed manifest instead of an encrypted tensor
    hybrid_gas = sum(int(stack.chain.receipt(tx)["gasUsed"]) for tx in (outcome.transactions["request"],
                                                                        result.delivery.tx))
    normal = hr.requester.infer(stack.model_id, stack.version, x, timeout=60)
    assert normal.ok and normal.label == outcome.label
    normal_gas = sum(int(stack.chain.receipt(tx)["gasUsed"]) for tx in (normal.transactions["request"],
                                                                        normal.transactions["result"]))
    assert hybrid_gas <= normal_gas, (hybrid_gas, normal_gas)
    # the inference node saw the request and left it to the MPC nodes (no failure, no delivery)
    node = stack.nodes[0].node
    assert node.checkpoint.load_transfer(outcome.request_id) is None


def test_the_audit_names_the_contributing_nodes(system, digits):
    stack, hr = system
    result = hr.infer(stack.model_id, stack.version, digits[1], timeout=60)
    assert result.outcome.ok
    audit = Auditor(stack.chain, stack.deployment, blob_dir=stack.state_dir / "blobs").request(result.outcome.request_id)
    assert audit.verified, audit.problems
    assert audit.hybrid is not None
    assert audit.hybrid.nodes == list(hr.mpc.addresses())
    assert audit.hybrid.set_members_match and audit.hybrid.signatures_verified


def _sealed(hr, stack, image):
    submitted, prepared, key = hr.submit(stack.model_id, stack.version, image)
    shares, shape = compute(hr.mpc, prepared, request_id=submitted.request_id, model_id=stack.model_id,
                            version=stack.version, enclave=hr.enclave, encryption_key=key,
                            chain_id=stack.chain.chain_id, transfer=stack.deployment.enclave_transfer.address)
    return submitted, prepared, key, shares, shape


def test_a_share_of_another_request_is_refused_and_recorded(system, digits):
    stack, hr = system
    _, _, _, old_shares, _ = _sealed(hr, stack, digits[2])
    submitted, prepared, _, shares, shape = _sealed(hr, stack, digits[2])
    replayed = [shares[0], old_shares[1]]
    delivery = hr.relay.deliver(hr.request_args(submitted, prepared), replayed, shape)
    assert not delivery.delivered
    code, reason = _failure(stack, submitted.request_id)
    assert code is FailureCode.ENCLAVE_REFUSED
    assert "party 1's share does not open" in reason


def test_a_missing_share_is_refused_and_recorded(system, digits):
    stack, hr = system
    submitted, prepared, _, shares, shape = _sealed(hr, stack, digits[3])
    hr.relay.deliver(hr.request_args(submitted, prepared), shares[:1], shape)
    code, reason = _failure(stack, submitted.request_id)
    assert code is FailureCode.INPUT_UNAVAILABLE
    assert "no share from party 1" in reason


def test_a_share_from_a_node_outside_the_set_is_refused_and_recorded(system, digits):
    stack, hr = system
    submitted, prepared, key, shares, shape = _sealed(hr, stack, digits[4])
    # an outsider seals a share of its own correctly for this request and party and signs it
    outsider = bytes(range(1, 33))
    rng = np.random.default_rng(7)
    forged = hybrid.seal_share(key, rng.integers(0, 2**63, size=shape, dtype=np.uint64),
                               request_id=submitted.request_id, model_id=stack.model_id, version=stack.version,
                               enclave=hr.enclave, input_commitment=submitted.input_commitment, party=1, parties=2,
                               frac_bits=16)
    digest = eip712.hybrid_share_digest(stack.chain.chain_id, stack.deployment.enclave_transfer.address,
                                        request_id=submitted.request_id, model_id=stack.model_id,
                                        model_version=stack.version, input_commitment=submitted.input_commitment,
                                        enclave=hr.enclave, party=1, share_hash=eip712.keccak256(forged))
    entry = {"party": 1, "sealed": forged, "signature": eip712.sign(outsider, digest)}
    hr.relay.deliver(hr.request_args(submitted, prepared), [shares[0], entry], shape)
    code, reason = _failure(stack, submitted.request_id)
    assert code is FailureCode.ENCLAVE_REFUSED
    assert eip712.address_of(outsider) in reason and "non-member" in reason


def test_an_input_share_that_does_not_match_the_commitment_fails_the_request(system, digits):
    stack, hr = system
    submitted, prepared, key = hr.submit(stack.model_id, stack.version, digits[5])
    tampered = list(prepared.shares)
    tampered[1] = tampered[1] + np.uint64(1)
    bad = type(prepared)(prepared.manifest, tuple(tampered), prepared.salts)
    delivery = hr.serve(submitted, bad, key)
    assert not delivery.delivered
    code, reason = _failure(stack, submitted.request_id)
    assert code is FailureCode.INPUT_UNAVAILABLE
    assert "does not match the request's commitment" in reason
    # the cluster still serves the next request
    assert hr.infer(stack.model_id, stack.version, digits[6], timeout=60).outcome.ok


def test_a_repeated_delivery_is_answered_once(system, digits):
    stack, hr = system
    submitted, prepared, _, shares, shape = _sealed(hr, stack, digits[7])
    first = hr.relay.deliver(hr.request_args(submitted, prepared), shares, shape)
    assert first.delivered
    again = hr.relay.deliver(hr.request_args(submitted, prepared), shares, shape)
    assert not again.delivered
    be = stack.deployment.backbone_execution
    assert stack.chain.call(be.functions.status(submitted.request_id)) == RequestStatus.COMPLETED
