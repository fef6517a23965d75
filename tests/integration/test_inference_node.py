"""The REE inference node end to end on the embedded chain with a real enclave process.

The node is driven with ``poll_once`` (no sleeps). Requests are real transactions from a
requester that encrypts its input to the node's key and decrypts the enclave's result.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from chain_node.checkpoint import Stage
from chain_node.inputs import BlobStore
from orchestrator.audit import Auditor
from orchestrator.node_setup import authorize_node, build_node, load_or_create_x25519_key
from orchestrator.requester import Requester
from splitseal.config import ChainConfig, Config, NodeConfig
from splitseal.errors import ConfigError, InvalidInputError
from splitseal.protocol import FailureCode, RequestStatus, crypto
from splitseal.protocol.crypto import X25519KeyPair, keccak256
from tests.support import enclave_support as es


@pytest.fixture(scope="module")
def world(embedded_chain, embedded_deployment, tmp_path_factory):
    chain = embedded_chain
    snapshot = chain.snapshot()
    base = Path(tmp_path_factory.mktemp("node"))
    w = es.build_world(chain, embedded_deployment, base)
    authorize_node(chain, embedded_deployment, w.admin, w.node,
                   load_or_create_x25519_key(base / "node-state" / "input.key"))
    try:
        yield w
    finally:
        w.client.close()
        w.process.stop()
        chain.revert(snapshot)


def make_node(w: es.World, *, state: str = "node-state", index: int = 0, count: int = 1, grace: float = 0.0,
              account=None, confirmations: int = 0, start_block: int | None = None, **node_overrides):
    config = Config(home=str(w.base), node=NodeConfig(retry_backoff=0.0, **node_overrides),
                    chain=ChainConfig(confirmations=confirmations))
    wiring = build_node(config, w.chain, w.deployment, account or w.node, backbone_paths=[w.base / "node" / "backbone.onnx"],
                        socket_path=w.socket_path, state_dir=w.base / state, node_index=index, node_count=count,
                        # nodes of one operator share the input key
                        input_key=load_or_create_x25519_key(w.base / "node-state" / "input.key"),
                        start_block=start_block)
    wiring.node.claim_grace = grace
    return wiring


def requester(w: es.World) -> Requester:
    return Requester(w.chain, w.deployment, w.requester, key=X25519KeyPair.generate(), blob_dir=w.base / "var" / "blobs")


def expected_labels(w: es.World, xs: np.ndarray) -> np.ndarray:
    return np.argmax(w.run_full_model(xs), axis=1)


def test_requests_are_served_and_decrypted_by_the_requester_only(world):
    w = world
    wiring = make_node(w)
    req = requester(w)
    xs = es.sample_inputs(3, seed=11)
    submitted = [req.submit(w.model_id, w.version, x) for x in xs]
    endpoint, transfers = wiring.node.enclave.endpoint, []

    class Recording:  # what the node hands the enclave
        def __getattr__(self, name):
            return getattr(endpoint, name)

        def infer(self, **kwargs):
            transfers.append(kwargs["transfer_ciphertext"])
            return endpoint.infer(**kwargs)

    wiring.node.enclave = dataclasses.replace(wiring.node.enclave, endpoint=Recording())
    assert wiring.node.poll_once() == 3
    outcomes = [req.wait(s, timeout=5) for s in submitted]
    assert [o.status for o in outcomes] == [RequestStatus.COMPLETED] * 3
    # the node's transfer session: one ephemeral key for the three, a nonce each
    parts = [crypto.ecies_ephemeral_and_nonce(t) for t in transfers]
    assert len(parts) == 3 and len({e for e, _ in parts}) == 1 and len({n for _, n in parts}) == 3
    assert [o.label for o in outcomes] == list(expected_labels(w, xs))
    np.testing.assert_allclose([o.scores for o in outcomes], w.run_full_model(xs), atol=1e-5)
    # another key cannot open the result
    other = Requester(w.chain, w.deployment, w.requester, key=X25519KeyPair.generate(), blob_dir=w.base / "var" / "blobs")
    with pytest.raises(Exception, match="names another result key"):
        other.outcome(submitted[0].request_id, from_block=submitted[0].block)
    audit = Auditor(w.chain, w.deployment).request(submitted[0].request_id)
    assert audit.verified, [c for c in audit.checks if not c.ok]
    assert wiring.node.poll_once() == 0  # nothing left, nothing done twice
    wiring.node.close()


def test_a_result_pushed_before_its_requester_knows_the_request_id_is_taken_from_the_push(world, caplog):
    w = world
    wiring = make_node(w)
    req = requester(w)
    x = es.sample_inputs(1, seed=5)[0]
    submitted = req.submit(w.model_id, w.version, x)
    with req._pushed_cv:  # as if the node ended it before submit had read the id from its receipt
        req._waiting.discard(submitted.request_id)
    assert wiring.node.poll_once() == 1
    assert submitted.request_id not in req._pushed
    req._expect(submitted.request_id)
    assert "ResultSubmitted" in req._pushed[submitted.request_id]  # kept, not lost to a 1 s poll
    outcome = req.wait(submitted, timeout=5)
    assert outcome.ok and outcome.label == expected_labels(w, x[None])[0]
    assert "pushed log not handled" not in caplog.text  # its own request's log is no error either
    req.close()
    wiring.node.close()


@pytest.mark.integration
def test_on_anvil_the_push_threads_fetch_inputs_and_deliveries_and_each_request_is_served_once(
        anvil_chain, anvil_deployment, tmp_path):
    import threading

    w = es.build_world(anvil_chain, anvil_deployment, tmp_path)
    authorize_node(w.chain, w.deployment, w.admin, w.node, load_or_create_x25519_key(tmp_path / "node-state" / "input.key"),
                   rotate=True)
    wiring = make_node(w, start_block=w.chain.block_number() + 1)
    node = wiring.node.setup()
    runner = threading.Thread(target=lambda: node.run(install_signal_handlers=False), daemon=True)
    runner.start()
    req = requester(w)
    try:
        xs = es.sample_inputs(3, seed=21)
        outcomes = [req.infer(w.model_id, w.version, x, timeout=30) for x in xs]
        assert [o.status for o in outcomes] == [RequestStatus.COMPLETED] * 3
        assert [o.label for o in outcomes] == list(expected_labels(w, xs))
        deadline = time.monotonic() + 10  # the requester may open its result before the node counts it
        while node.stats.completed < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert node.stats.prefetched == 3 and node.stats.completed == 3
        assert req.prefetched == 3  # and the requester's push thread fetched each delivery
        # anvil pushes the pending transactions: inputs and deliveries came with them (a log that
        # overtook its transaction's push is fetched instead, so at least one of each, not all)
        assert node._pending_calls is not None and node._pending_calls.taken >= 1
        assert req._pending_calls is not None and req._pending_calls.taken >= 1

        class Tampered:  # a node that pushes other calldata under the right hash: read by hash after all
            def __init__(self, real):
                self.real, self.taken = real, 0

            def take(self, tx_hash):
                call = self.real.take(tx_hash)
                if call is None:
                    return None
                self.taken += 1
                return {**call, "input": call["input"][:4] + bytes(len(call["input"]) - 4)}

            def stop(self):
                self.real.stop()

        node._pending_calls, req._pending_calls = Tampered(node._pending_calls), Tampered(req._pending_calls)
        more = es.sample_inputs(2, seed=22)
        served = [req.infer(w.model_id, w.version, x, timeout=30) for x in more]
        assert [o.status for o in served] == [RequestStatus.COMPLETED] * 2
        assert [o.label for o in served] == list(expected_labels(w, more))
        assert node._pending_calls.taken + req._pending_calls.taken >= 1  # tampered calls were offered
        # a call fetched for another transaction is not taken for the delivery's
        from splitseal.chain import delivered_result

        stranger = w.chain.transaction_call(outcomes[0].transactions["request"])
        delivered = delivered_result(w.chain, w.deployment, outcomes[1].transactions["result"],
                                     outcomes[1].request_id, call=stranger)
        assert delivered.request_id == outcomes[1].request_id and delivered.function == "deliverResult"
    finally:
        req.close()
        node.close()
        runner.join(timeout=10)
        w.client.close()
        w.process.stop()


def test_large_input_goes_off_chain_and_its_hash_is_checked(world):
    w = world
    wiring = make_node(w)
    req = requester(w)
    x = es.sample_inputs(1, seed=12)[0]
    submitted = req.submit(w.model_id, w.version, x, inline_limit=0)
    assert wiring.node.poll_once() == 1
    assert req.wait(submitted).label == expected_labels(w, x[None])[0]

    # a blob that does not match its commitment is refused with InputHashMismatch
    tampered = req.submit(w.model_id, w.version, x, inline_limit=0)
    (ev,) = w.chain.get_logs(w.deployment.backbone_execution, "InferenceRequested", tampered.block,
                             argument_filters={"requestId": tampered.request_id})
    pointer = ev["args"]["inputPointer"]
    path = w.base / "var" / "blobs" / f"{pointer.split('0x')[1]}.bin"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    wiring.node.poll_once()
    outcome = req.wait(tampered)
    assert outcome.status is RequestStatus.FAILED
    assert outcome.failure_code is FailureCode.INPUT_HASH_MISMATCH
    wiring.node.close()


def test_blob_store_holds_a_224x224x3_float32_image(tmp_path):
    from chain_node.inputs import decode_tensor, encode_tensor, open_input, seal_input

    key = X25519KeyPair.generate()
    requester_key = X25519KeyPair.generate().public
    image = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    ciphertext = seal_input(key.public, b"\x01" * 32, 1, requester_key, image)
    store = BlobStore(tmp_path)
    pointer = store.put(ciphertext)
    fetched = store.get(pointer, keccak256(ciphertext), max_bytes=2 * len(ciphertext))
    np.testing.assert_array_equal(open_input(key, b"\x01" * 32, 1, requester_key, fetched), image)
    assert decode_tensor(encode_tensor(image)).shape == (1, 3, 224, 224)


@pytest.mark.parametrize("case, code", [
    ("wrong_key", FailureCode.BAD_INPUT),
    ("wrong_shape", FailureCode.SHAPE_MISMATCH),
    ("garbage", FailureCode.BAD_INPUT),
])
def test_bad_inputs_are_recorded_as_failed_on_chain_and_the_node_goes_on(world, case, code):
    w = world
    wiring = make_node(w)
    req = requester(w)
    if case == "wrong_key":
        req._input_key = X25519KeyPair.generate().public
        bad = req.submit(w.model_id, w.version, es.sample_inputs(1)[0])
    elif case == "wrong_shape":
        bad = req.submit(w.model_id, w.version, np.ones((3, 5), np.float32))
    else:
        garbage = b"\x01" + bytes(100)
        receipt = w.chain.transact(w.deployment.backbone_execution.functions.requestInference(
            w.model_id, w.version, keccak256(garbage), garbage, "", req.key.public, 600), sender=w.requester)
        (ev,) = w.chain.events(receipt, w.deployment.backbone_execution, "InferenceRequested")
        from orchestrator.requester import Submitted
        bad = Submitted(int(ev["requestId"]), w.model_id, w.version, keccak256(garbage), "", receipt["blockNumber"],
                        0.0, 0.0, receipt["gasUsed"])
    good_requester = requester(w)
    good = good_requester.submit(w.model_id, w.version, es.sample_inputs(1, seed=3)[0])
    wiring.node.poll_once()
    outcome = req.wait(bad)
    assert outcome.status is RequestStatus.FAILED
    assert outcome.failure_code is code
    assert outcome.failure_reason
    assert good_requester.wait(good).status is RequestStatus.COMPLETED
    wiring.node.close()


def test_deadline_passed_ends_the_request_as_timed_out(world):
    w = world
    wiring = make_node(w)
    req = requester(w)
    submitted = req.submit(w.model_id, w.version, es.sample_inputs(1)[0], deadline_seconds=5)
    w.chain.increase_time(10)
    wiring.node.poll_once()
    assert req.wait(submitted).status is RequestStatus.TIMED_OUT
    wiring.node.close()


class _Killed(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the node catches it."""


def test_a_node_killed_while_asking_the_enclave_resumes_and_delivers_once(world):
    w = world
    first = make_node(w, state="restart-state")
    req = requester(w)
    submitted = req.submit(w.model_id, w.version, es.sample_inputs(1, seed=21)[0])

    real = first.node.enclave.endpoint

    class Dies:
        def infer(self, **kwargs):
            raise _Killed()

    first.node.enclave = dataclasses.replace(first.node.enclave, endpoint=Dies())
    with pytest.raises(_Killed):
        first.node.poll_once()
    # the transfer it prepared is kept: a retry hands the enclave the very same ciphertext
    assert first.node.checkpoint.load_transfer(submitted.request_id) is not None
    first.node.checkpoint.close()  # the process is gone; nothing else is cleaned up

    second = make_node(w, state="restart-state")
    assert second.node.enclave.endpoint is not real
    second.node.poll_once()
    outcome = req.wait(submitted)
    assert outcome.status is RequestStatus.COMPLETED
    # one delivery (the node's one transaction emits ResultSubmitted alone)
    assert len(w.chain.get_logs(w.deployment.enclave_transfer, "ResultSubmitted", submitted.block,
                                argument_filters={"requestId": submitted.request_id})) == 1
    second.node.close()


def test_a_node_killed_after_its_delivery_was_mined_does_not_deliver_again(world):
    w = world
    first = make_node(w, state="crash-state")
    req = requester(w)
    submitted = req.submit(w.model_id, w.version, es.sample_inputs(1, seed=22)[0])
    first.node.poll_once()
    # the delivery was mined, but the process died before its checkpoint write
    first.node.checkpoint.advance(submitted.request_id, Stage.TRANSFERRED)
    first.node.checkpoint.close()

    second = make_node(w, state="crash-state")
    second.node.poll_once()
    assert second.node.checkpoint.get(submitted.request_id).stage is Stage.SKIPPED
    assert req.wait(submitted).status is RequestStatus.COMPLETED
    assert len(w.chain.get_logs(w.deployment.enclave_transfer, "ResultSubmitted", submitted.block,
                                argument_filters={"requestId": submitted.request_id})) == 1
    second.node.close()


def test_two_nodes_share_a_deployment_without_doing_a_request_twice(world):
    w = world
    extra = w.chain.accounts[5]
    authorize_node(w.chain, w.deployment, w.admin, extra, load_or_create_x25519_key(w.base / "node-state" / "input.key"))
    a = make_node(w, state="two-a", index=0, count=2, grace=3600)
    b = make_node(w, state="two-b", index=1, count=2, grace=3600, account=extra)
    req = requester(w)
    xs = es.sample_inputs(6, seed=31)
    submitted = [req.submit(w.model_id, w.version, x) for x in xs]
    a.node.poll_once()
    # a holds b's requests in memory: its checkpointed cursor stays before them (so that a
    # restarted a reads them again), but its next polls do not hand them over again
    held = min(block for block, _ in a.node._foreign.values())
    assert a.node.checkpoint.last_block(0) < held and a.node.poller.poll()[0] == []
    b.node.poll_once()
    outcomes = [req.wait(s) for s in submitted]
    assert [o.label for o in outcomes] == list(expected_labels(w, xs))
    # each node checkpoints its own requests only; the other's it holds in memory through the grace
    for s in submitted:
        own, other = (a, b) if s.request_id % 2 == 0 else (b, a)
        assert own.node.checkpoint.get(s.request_id) is not None
        assert other.node.checkpoint.get(s.request_id) is None
    claims = {}
    for s in submitted:
        (log_,) = w.chain.get_logs(w.deployment.enclave_transfer, "ResultSubmitted", s.block,
                                   argument_filters={"requestId": s.request_id})
        claims[s.request_id] = w.chain.transaction(log_["transactionHash"])["from"]  # the delivering node
    assert set(claims.values()) == {w.node.address, extra.address}
    assert a.node.stats.completed + b.node.stats.completed == 6

    # when one node is down, the other takes its requests over after the grace period
    b.node.claim_grace = 0.0
    more = [req.submit(w.model_id, w.version, x) for x in xs[:4]]
    b.node.poll_once()
    assert all(req.wait(s).status is RequestStatus.COMPLETED for s in more)
    a.node.poll_once()  # reads the events: its own requests are found taken at once,
    a.node.poll_once()  # the others (grace not over) at the next look: all ended, all skipped
    assert all(r.stage is not Stage.SEEN for r in [a.node.checkpoint.get(s.request_id) for s in more] if r)
    a.node.close()
    b.node.close()


def test_with_pushed_endings_a_node_drops_the_requests_another_served_without_asking_the_chain(world):
    w = world
    extra = w.chain.accounts[5]
    authorize_node(w.chain, w.deployment, w.admin, extra, load_or_create_x25519_key(w.base / "node-state" / "input.key"))
    a = make_node(w, state="push-a", index=0, count=2, grace=3600, start_block=w.chain.block_number() + 1)
    b = make_node(w, state="push-b", index=1, count=2, grace=3600, account=extra, start_block=w.chain.block_number() + 1)
    a.node.setup()
    b.node.setup()
    queries = []
    real = a.node._ended_since
    a.node._ended_since = lambda *blocks: queries.append(blocks) or real(*blocks)  # a spy: still asks
    req = requester(w)
    xs = es.sample_inputs(4, seed=41)
    a.node._wakeup.event.clear()
    b.node._wakeup.event.clear()
    first = req.submit(w.model_id, w.version, xs[0])
    owner, other = (a, b) if first.request_id % 2 == 0 else (b, a)
    # the pushed request wakes its node only; the other queues it without a wake-up
    assert owner.node._wakeup.event.is_set() and not other.node._wakeup.event.is_set()
    assert len(other.node._pushed) == 1
    submitted = [first] + [req.submit(w.model_id, w.version, x) for x in xs[1:]]
    b_own = [s.request_id for s in submitted if s.request_id % 2 == 1]
    a.node.poll_once()  # serves its own, holds b's
    b.node.poll_once()  # serves b's: their endings are pushed to a
    assert all(req.wait(s).ok for s in submitted)
    assert set(b_own) <= set(a.node._ended_pushed)
    a.node.claim_grace = 0.0
    queries.clear()
    a.node.poll_once()  # the grace is over: b's requests are dropped, never checkpointed
    assert a.node._foreign == {} and set(b_own) <= set(a.node._foreign_done)
    assert queries == [] and a.node.stats.completed + b.node.stats.completed == 4
    assert all(a.node.checkpoint.get(rid) is None for rid in b_own)
    req.close()
    a.node.close()
    b.node.close()


def test_several_nodes_keepers_read_logs_once_and_still_end_what_no_node_served_when_its_node_is_dead(world):
    """With pushed endings each node's keeper reads the logs at its first sweep only, then takes
    requests from its node and endings from the subscription; the keeper of a dead node is
    covered by another after the grace, and an ending whose push was lost is asked about, not
    timed out."""
    from chain_node.inference_node import BackboneUnavailable

    w = world
    extra = w.chain.accounts[5]
    authorize_node(w.chain, w.deployment, w.admin, extra,
                   load_or_create_x25519_key(w.base / "node-state" / "input.key"))
    start = w.chain.block_number() + 1
    a = make_node(w, state="keep-a", index=0, count=2, grace=0.0, start_block=start)
    b = make_node(w, state="keep-b", index=1, count=2, grace=0.0, account=extra, start_block=start)
    a.node.setup()
    b.node.setup()
    req = requester(w)
    served = req.submit(w.model_id, w.version, es.sample_inputs(1, seed=43)[0])
    a.node.poll_once()
    b.node.poll_once()
    assert req.wait(served).ok
    assert a.node.keeper.log_reads == b.node.keeper.log_reads == 1  # the first sweep's read

    def no_backbone(model_id, version):
        raise BackboneUnavailable("this node holds no backbone for it")

    a.node.backbones = b.node.backbones = no_backbone
    orphan = req.submit(w.model_id, w.version, es.sample_inputs(1, seed=44)[0], deadline_seconds=600)
    a.node.poll_once()
    b.node.poll_once()
    a.node.poll_once()  # the grace (0) is over: the other node takes it over, and skips it too
    b.node.poll_once()
    assert RequestStatus(w.chain.call(w.deployment.backbone_execution.functions.status(orphan.request_id))) \
        is RequestStatus.REQUESTED
    preferred, other = (a, b) if orphan.request_id % 2 == 0 else (b, a)
    assert orphan.request_id in other.node.keeper.open_requests
    # the served request's ending push lost at the other node: it asks the chain, sends no timeout
    other.node._ended_pushed.pop(served.request_id)
    other.node.keeper.note_request(served.request_id, 0)
    w.chain.increase_time(610)
    w.chain.mine(1)
    preferred.node.close()  # the preferred keeper is dead: the other ends the request after its grace
    sent, real_end = [], other.node.keeper.end
    other.node.keeper.end = lambda rid: sent.append(rid) or real_end(rid)  # a spy: still sends
    assert other.node.sweep_now() == 1
    assert sent == [orphan.request_id]  # no timeout sent for the served request
    assert req.wait(orphan).status is RequestStatus.TIMED_OUT
    assert other.node.keeper.timed_out == 1 and other.node.keeper.open_requests == {}
    assert other.node.keeper.log_reads == 1
    req.close()
    other.node.close()


def test_a_lost_enclave_reply_is_asked_again_and_the_same_answer_delivered_once(world):
    w = world
    wiring = make_node(w)
    req = requester(w)
    submitted = req.submit(w.model_id, w.version, es.sample_inputs(1, seed=41)[0])
    real = wiring.node.enclave.endpoint
    replies = []

    class AnswersTwice:
        def infer(self, **kwargs):
            replies.append(real.infer(**kwargs))  # first answer is dropped (a lost reply)
            replies.append(real.infer(**kwargs))
            return replies[-1]

    wiring.node.enclave = dataclasses.replace(wiring.node.enclave, endpoint=AnswersTwice())
    wiring.node.poll_once()
    first, second = replies
    assert second.repeated and not first.repeated
    assert (second.sequence, second.signature, second.encrypted_result) == \
        (first.sequence, first.signature, first.encrypted_result)
    outcome = req.wait(submitted)
    assert outcome.status is RequestStatus.COMPLETED
    assert len(w.chain.get_logs(w.deployment.enclave_transfer, "ResultSubmitted", submitted.block,
                                argument_filters={"requestId": submitted.request_id})) == 1
    wiring.node.close()


def test_enclave_refusal_is_recorded_with_its_reason(world):
    w = world
    wiring = make_node(w)
    req = requester(w)
    submitted = req.submit(w.model_id, w.version, es.sample_inputs(1, seed=42)[0])
    real = wiring.node.enclave.endpoint

    class Tampers:
        def infer(self, **kwargs):
            ct = bytearray(kwargs["transfer_ciphertext"])
            ct[-1] ^= 1
            return real.infer(**{**kwargs, "transfer_ciphertext": bytes(ct)})

    wiring.node.enclave = dataclasses.replace(wiring.node.enclave, endpoint=Tampers())
    wiring.node.poll_once()
    outcome = req.wait(submitted)
    assert outcome.status is RequestStatus.FAILED
    assert outcome.failure_code is FailureCode.ENCLAVE_REFUSED
    assert "does not open" in outcome.failure_reason
    wiring.node.close()


def test_a_node_killed_between_the_enclave_reply_and_submitting_it_submits_the_saved_reply(world):
    w = world
    first = make_node(w, state="reply-state")
    req = requester(w)
    submitted = req.submit(w.model_id, w.version, es.sample_inputs(1, seed=23)[0])

    class DiesOnSubmit:
        def __init__(self, chain):
            self._chain = chain

        def __getattr__(self, name):
            return getattr(self._chain, name)

        def send(self, fn, **kwargs):
            if fn.fn_name == "deliverResult":
                raise _Killed()
            return self._chain.send(fn, **kwargs)

    first.node.chain = DiesOnSubmit(w.chain)
    with pytest.raises(_Killed):
        first.node.poll_once()
    first.node.checkpoint.close()

    # the enclave answers a request once; the restarted node must not ask it again
    second = make_node(w, state="reply-state")
    second.node.poll_once()
    outcome = req.wait(submitted)
    assert outcome.status is RequestStatus.COMPLETED, outcome.failure_reason
    assert outcome.label == expected_labels(w, es.sample_inputs(1, seed=23))[0]
    second.node.close()


def test_a_request_is_served_only_once_buried_under_the_confirmation_depth(world):
    w = world
    # a node joining now (earlier tests' requests are not its business)
    wiring = make_node(w, state="confirm-state", confirmations=2, start_block=w.chain.block_number() + 1)
    wiring.node.setup()  # pushed logs only wake a node that waits for confirmations
    req = requester(w)
    submitted = req.submit(w.model_id, w.version, es.sample_inputs(1, seed=51)[0])
    wiring.node.poll_once()
    assert wiring.node.checkpoint.get(submitted.request_id) is None
    w.chain.mine(1)
    wiring.node.poll_once()  # one block on top: not yet
    assert wiring.node.checkpoint.get(submitted.request_id) is None
    w.chain.mine(1)
    wiring.node.poll_once()
    assert wiring.node.checkpoint.get(submitted.request_id).stage is Stage.COMPLETED
    assert req.wait(submitted).status is RequestStatus.COMPLETED
    wiring.node.close()


def test_a_node_refuses_a_directory_with_the_plaintext_head(world):
    from orchestrator.node_setup import BackboneLibrary

    with pytest.raises(ConfigError, match="plaintext head"):
        BackboneLibrary(world.chain, world.deployment, [world.split_dir])


def _raw_request(w: es.World, req: Requester, ciphertext: bytes, ttl: int = 600):
    """A request sent as a raw transaction (what a client that checks nothing sends)."""
    from orchestrator.requester import Submitted

    receipt = w.chain.transact(w.deployment.backbone_execution.functions.requestInference(
        w.model_id, w.version, keccak256(ciphertext), ciphertext, "", req.key.public, ttl), sender=w.requester)
    (ev,) = w.chain.events(receipt, w.deployment.backbone_execution, "InferenceRequested")
    return Submitted(int(ev["requestId"]), w.model_id, w.version, keccak256(ciphertext), "", receipt["blockNumber"],
                     0.0, 0.0, receipt["gasUsed"])


def _sealed(w: es.World, req: Requester, plaintext: bytes) -> bytes:
    from splitseal.protocol.crypto import ecies_encrypt, input_aad, request_key_hash

    return ecies_encrypt(req.input_key(), plaintext, input_aad(request_key_hash(w.model_id, w.version, req.key.public)))


@pytest.mark.parametrize("case", ["nan", "inf", "dims_overflow", "zero_dims", "int_dtype"])
def test_poison_inputs_sent_raw_end_as_failed_and_the_node_serves_the_next(world, case):
    """What the project's client refuses, a raw transaction sends: each ends on-chain with a
    reason code, and the request behind it completes (the node neither exits nor loops)."""
    import struct

    from chain_node.inputs import encode_tensor
    from splitseal.protocol.crypto import tensor_header

    w = world
    wiring = make_node(w)
    req = requester(w)
    x = es.sample_inputs(1, seed=61)[0]
    if case in ("nan", "inf"):
        x = x.copy()
        x[0] = np.nan if case == "nan" else np.inf
        plaintext = encode_tensor(x)
    elif case == "dims_overflow":  # 2**31 * 2**31 * 4 elements: a 64-bit product wraps to 0
        plaintext = b"\x03<f4" + bytes([3]) + struct.pack(">III", 2**31, 2**31, 4)
    elif case == "zero_dims":
        plaintext = tensor_header((0, 16), "<f4")
    else:
        plaintext = encode_tensor(np.arange(x.size, dtype=np.int32))
    bad = _raw_request(w, req, _sealed(w, req, plaintext))
    good = req.submit(w.model_id, w.version, es.sample_inputs(1, seed=62)[0])
    wiring.node.poll_once()
    outcome = req.wait(bad)
    assert outcome.status is RequestStatus.FAILED, case
    expected = FailureCode.SHAPE_MISMATCH if case == "int_dtype" else FailureCode.BAD_INPUT
    assert outcome.failure_code is expected, outcome.failure_reason
    assert req.wait(good).status is RequestStatus.COMPLETED
    assert wiring.node.checkpoint.pending() == []
    wiring.node.close()


def _two_output_backbone() -> bytes:
    """A backbone whose cut two tensors cross (a skip connection)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Relu", ["x"], ["b"])], "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", es.IN_FEATURES])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", es.IN_FEATURES]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", es.IN_FEATURES])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the pinned onnxruntime reads
    return model.SerializeToString() if onnx.checker.check_model(model) is None else b""


def test_a_backbone_that_does_not_fit_its_head_fails_its_requests_and_the_node_goes_on(world):
    """Two crossing tensors travel as one bundle (tests/integration/test_multi_tensor_cut.py); a
    backbone whose bundle does not fit the registered head is refused by the enclave."""
    from orchestrator.node_setup import SplitBackbone

    w = world
    wiring = make_node(w)
    real = wiring.node.backbones
    calls = []

    def backbones(model_id, version):
        calls.append(version)
        if len(calls) == 1:
            return SplitBackbone(_two_output_backbone())  # what the node's library builds from the file
        return real(model_id, version)

    wiring.node.backbones = backbones
    req = requester(w)
    bad = req.submit(w.model_id, w.version, es.sample_inputs(1, seed=63)[0])
    good = req.submit(w.model_id, w.version, es.sample_inputs(1, seed=64)[0])
    wiring.node.poll_once()
    outcome = req.wait(bad)
    assert outcome.status is RequestStatus.FAILED and outcome.failure_code is FailureCode.SHAPE_MISMATCH
    assert f"[1, {2 * es.IN_FEATURES}]" in outcome.failure_reason, outcome.failure_reason
    assert req.wait(good).status is RequestStatus.COMPLETED
    wiring.node.close()


def test_a_request_no_node_serves_is_timed_out_by_the_keeper(world):
    w = world
    wiring = make_node(w, state="keeper-state")
    req = requester(w)

    def no_backbone(model_id, version):
        from chain_node.inference_node import BackboneUnavailable
        raise BackboneUnavailable("this node holds no backbone for it")

    wiring.node.backbones = no_backbone
    # a deadline far beyond what a loaded machine takes between these lines: the chain's clock is
    # the wall clock until the test moves it past the deadline
    submitted = req.submit(w.model_id, w.version, es.sample_inputs(1, seed=65)[0], deadline_seconds=600)
    wiring.node.poll_once()
    assert wiring.node.checkpoint.get(submitted.request_id).stage is Stage.SKIPPED
    assert RequestStatus(w.chain.call(w.deployment.backbone_execution.functions.status(submitted.request_id))) \
        is RequestStatus.REQUESTED
    assert wiring.node.sweep_now() == 0  # not before its deadline
    w.chain.increase_time(610)
    w.chain.mine(1)
    assert wiring.node.sweep_now() >= 1
    assert req.wait(submitted).status is RequestStatus.TIMED_OUT
    wiring.node.close()


def test_a_node_without_node_role_refuses_to_start(world):
    w = world
    stranger = w.chain.accounts[6]
    with pytest.raises(ConfigError, match="does not hold NODE_ROLE"):
        make_node(w, state="stranger-state", account=stranger)
    assert not (w.base / "stranger-state").exists()  # it touched nothing


def test_authorize_does_not_rotate_the_key_other_nodes_use(world):
    w = world
    other_key = load_or_create_x25519_key(w.base / "other-state" / "input.key")
    before = bytes(w.chain.call(w.deployment.backbone_execution.functions.inputKey()))
    with pytest.raises(ConfigError, match="--input-key"):
        authorize_node(w.chain, w.deployment, w.admin, w.chain.accounts[7], other_key)
    assert bytes(w.chain.call(w.deployment.backbone_execution.functions.inputKey())) == before
    # the shared key file: granted, key unchanged
    authorize_node(w.chain, w.deployment, w.admin, w.chain.accounts[7],
                   load_or_create_x25519_key(w.base / "node-state" / "input.key"))
    assert bytes(w.chain.call(w.deployment.backbone_execution.functions.inputKey())) == before


def test_an_enclave_restart_is_waited_for_and_restored_by_the_node(world):
    """The enclave process dies with a request in flight: the node retries (not a failure), and
    when the enclave comes back it restores it against the chain's anchors and delivers."""
    from splitseal.enclave_client import EnclaveClient, EnclaveProcess

    w = world
    wiring = make_node(w, state="restart-enclave-state")
    req = requester(w)
    w.process.stop()
    submitted = req.submit(w.model_id, w.version, es.sample_inputs(1, seed=66)[0])
    for _ in range(3):
        wiring.node._not_before.clear()
        wiring.node.poll_once()
    assert wiring.node.checkpoint.get(submitted.request_id).stage is Stage.SEEN  # pending, not failed
    assert wiring.node.stats.failed == 0 and wiring.node.stats.retried >= 3
    w.process = EnclaveProcess.start(w.state_dir, w.socket_path, log_path=w.log_path,
                                     extra_args=["--platform-dir", str(w.base / "platform")])
    w.client.close()
    w.client = EnclaveClient(w.socket_path, trace=True)
    assert not w.client.status().restored
    wiring.node._not_before.clear()
    wiring.node.poll_once()  # "not loaded": the node restores the enclave and asks again
    wiring.node._not_before.clear()
    wiring.node.poll_once()
    assert w.client.status().restored
    outcome = req.wait(submitted)
    assert outcome.status is RequestStatus.COMPLETED, outcome.failure_reason
    wiring.node.close()


# --- batched delivery and consumer callbacks ------------------------------------------------

def test_batched_delivery_sends_several_results_in_one_transaction_and_skips_the_bad_one(world):
    """[node].delivery_batch: one deliverResults for the round; an item past its deadline is
    skipped by the contract (DeliverySkipped) and then ended on-chain by the node."""
    w = world
    wiring = make_node(w, state="batch-state", delivery_batch=8)
    req = requester(w)
    xs = es.sample_inputs(5, seed=41)
    late = req.submit(w.model_id, w.version, xs[0], deadline_seconds=5)
    on_time = [req.submit(w.model_id, w.version, x) for x in xs[1:]]
    w.chain.increase_time(10)
    wiring.node.poll_once()
    outcomes = [req.wait(s) for s in on_time]
    assert [o.label for o in outcomes] == list(expected_labels(w, xs[1:]))
    delivery_txs = {o.transactions["result"] for o in outcomes}
    assert len(delivery_txs) == 1, "four results, one transaction"
    receipt = w.chain.receipt(delivery_txs.pop())
    skipped = w.chain.events(receipt, w.deployment.backbone_execution, "DeliverySkipped")
    assert [int(e["requestId"]) for e in skipped] == [late.request_id]
    reason = w.chain.errors.decode(bytes(skipped[0]["reason"]))
    assert reason.name == "BackboneExecutionDeadlinePassed" and reason.args["requestId"] == late.request_id
    assert req.wait(late).status is RequestStatus.TIMED_OUT  # the node ended it after the skip
    assert wiring.node.stats.completed == 4
    # every delivered result still verifies on its own from events and calldata
    auditor = Auditor(w.chain, w.deployment)
    assert all(auditor.request(s.request_id).verified for s in on_time)
    wiring.node.close()


def test_a_consumer_is_called_back_with_the_result_through_the_node(world):
    w = world
    consumer = w.chain.deploy("ResultConsumer", w.deployment.enclave_transfer.address, sender=w.admin)
    wiring = make_node(w, state="callback-state")
    req = requester(w)
    x, starved_x = es.sample_inputs(2, seed=43)
    fed = req.submit(w.model_id, w.version, x, consumer=consumer.address, callback_gas_limit=100_000)
    # 5,000 gas cannot pay the example consumer's two storage slots: its callback fails, the
    # delivery stands and the requester still gets the result
    starved = req.submit(w.model_id, w.version, starved_x, consumer=consumer.address, callback_gas_limit=5_000)
    wiring.node.poll_once()
    fed_outcome, starved_outcome = req.wait(fed), req.wait(starved)
    assert fed_outcome.status is starved_outcome.status is RequestStatus.COMPLETED
    assert [fed_outcome.label, starved_outcome.label] == list(expected_labels(w, np.stack([x, starved_x])))

    calls = {}
    for s in (fed, starved):
        (log_,) = w.chain.get_logs(w.deployment.enclave_transfer, "ConsumerCalled", s.block,
                                   argument_filters={"requestId": s.request_id})
        calls[s.request_id] = log_["args"]
    assert calls[fed.request_id]["succeeded"] and calls[fed.request_id]["consumer"] == consumer.address
    assert not calls[starved.request_id]["succeeded"]
    assert calls[starved.request_id]["gasUsed"] <= 5_000 + 1_000  # the limit, plus the call's own cost
    (result,) = w.chain.get_logs(w.deployment.enclave_transfer, "ResultSubmitted", fed.block,
                                 argument_filters={"requestId": fed.request_id})
    received = w.chain.call(consumer.functions.received(fed.request_id))
    assert bytes(received[0]) == bytes(result["args"]["resultCommitment"])
    assert received[2] is False and bytes(received[3]) == bytes(32), "a label_scores model publishes no label"
    assert tuple(w.chain.call(consumer.functions.received(starved.request_id))) == (bytes(32), bytes(32), False,
                                                                                    bytes(32))
    audit = Auditor(w.chain, w.deployment).request(fed.request_id)
    assert audit.verified and any(c.name == "consumer called back in the delivery" and c.ok for c in audit.checks)
    wiring.node.close()


def test_a_public_label_model_hands_its_signed_label_to_the_consumer(world):
    """A version registered from a head under the public_label policy: the enclave signs the
    label in plaintext, the contract forwards it to the consumer, the requester and the auditor
    check it against the signature and the encrypted result."""
    from orchestrator.provision import provision_model, register_model_version

    w = world
    split_dir = w.base / "public-label-split"
    summary = es.write_split(split_dir, es.PUBLIC_LABEL_RULE)
    version = register_model_version(w.chain, w.deployment, w.owner, w.model_id, split_dir, summary)
    assert w.chain.call(w.deployment.model_registry.functions.allowsPublicLabel(w.model_id, version))
    assert not w.chain.call(w.deployment.model_registry.functions.allowsPublicLabel(w.model_id, w.version))
    provision_model(w.chain, w.deployment, w.client, w.owner, model_id=w.model_id, version=version,
                    package_bytes=(split_dir / "head.pkg").read_bytes(),
                    index_bytes=(split_dir / "head.index").read_bytes(), allow_measurement=False)
    consumer = w.chain.deploy("ResultConsumer", w.deployment.enclave_transfer.address, sender=w.admin)
    wiring = make_node(w, state="public-label-state")
    req = requester(w)
    x, plain_x = es.sample_inputs(2, seed=47)
    labelled = req.submit(w.model_id, version, x, consumer=consumer.address, callback_gas_limit=150_000)
    plain = req.submit(w.model_id, w.version, plain_x, consumer=consumer.address, callback_gas_limit=150_000)
    wiring.node.poll_once()
    labelled_outcome, plain_outcome = req.wait(labelled), req.wait(plain)  # wait() checks the label too
    assert labelled_outcome.status is plain_outcome.status is RequestStatus.COMPLETED
    expected, expected_plain = expected_labels(w, np.stack([x, plain_x]))
    assert (labelled_outcome.label, plain_outcome.label) == (expected, expected_plain)
    assert (labelled_outcome.public_label, plain_outcome.public_label) == (expected, None)

    got = w.chain.call(consumer.functions.received(labelled.request_id))
    assert got[2] is True and int.from_bytes(bytes(got[3]), "big") == expected
    none = w.chain.call(consumer.functions.received(plain.request_id))
    assert none[2] is False and bytes(none[3]) == bytes(32), "the label_scores version publishes no label"
    audit = Auditor(w.chain, w.deployment).request(labelled.request_id)
    label_checks = [c for c in audit.checks if c.name.startswith("public label")]
    assert audit.verified and len(label_checks) == 1 and label_checks[0].ok
    plain_audit = Auditor(w.chain, w.deployment).request(plain.request_id)
    assert plain_audit.verified and not any(c.name.startswith("public label") for c in plain_audit.checks)
    wiring.node.close()


def test_a_requester_names_only_a_contract_as_consumer(world):
    w = world
    req = requester(w)
    x = es.sample_inputs(1, seed=44)[0]
    with pytest.raises(InvalidInputError, match="has no code"):
        req.submit(w.model_id, w.version, x, consumer=w.requester.address)
    with pytest.raises(InvalidInputError, match="outside"):
        req.submit(w.model_id, w.version, x, consumer=w.deployment.enclave_transfer.address, callback_gas_limit=10)


def test_a_delivery_batch_outside_the_contracts_bound_is_a_config_error(world):
    for size in (0, 65):
        with pytest.raises(ConfigError, match="delivery_batch"):
            make_node(world, state="bad-batch-state", delivery_batch=size)
