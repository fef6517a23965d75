"""Results larger than the chain takes inline travel by pointer + commitment: a 1000-class
scores vector (about 12 KB encrypted, above the node's 8 KiB inline limit) and a 1024-d embedding are
delivered by the node through the real contracts and the real enclave process, and opened
(fetched, checked against the signed commitment) by the requester."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from orchestrator.audit import Auditor
from orchestrator.models import load_model
from orchestrator.models.rule import parse_rule
from orchestrator.models.split import split_model
from orchestrator.node_setup import authorize_node, build_node, load_or_create_x25519_key
from orchestrator.provision import provision_model, register_model_version
from orchestrator.requester import Requester
from splitseal.chain import delivered_result
from splitseal.config import Config, NodeConfig
from splitseal.protocol import RequestStatus
from splitseal.protocol.crypto import X25519KeyPair, keccak256
from tests.support import enclave_support as es


def wide_model(outputs: int, *, softmax: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(outputs)
    inits = [numpy_helper.from_array((rng.standard_normal((32, es.IN_FEATURES)) * 0.3).astype(np.float32), "bb.weight"),
             numpy_helper.from_array(np.zeros(32, np.float32), "bb.bias"),
             numpy_helper.from_array((rng.standard_normal((outputs, 32)) * 0.2).astype(np.float32), "head.weight"),
             numpy_helper.from_array(np.zeros(outputs, np.float32), "head.bias")]
    nodes = [helper.make_node("Gemm", ["x", "bb.weight", "bb.bias"], ["h0"], name="bb_fc", transB=1),
             helper.make_node("Relu", ["h0"], ["h"], name="bb_relu"),
             helper.make_node("Gemm", ["h", "head.weight", "head.bias"], ["logits" if softmax else "y"],
                              name="head_fc", transB=1)]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1))
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", es.IN_FEATURES])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def world(embedded_chain, embedded_deployment, tmp_path_factory):
    chain = embedded_chain
    snapshot = chain.snapshot()
    base = Path(tmp_path_factory.mktemp("large"))
    w = es.build_world(chain, embedded_deployment, base)
    authorize_node(chain, embedded_deployment, w.admin, w.node,
                   load_or_create_x25519_key(base / "node-state" / "input.key"))
    try:
        yield w
    finally:
        w.client.close()
        w.process.stop()
        chain.revert(snapshot)


@pytest.mark.parametrize("name, outputs, policy", [("scores1000", 1000, "label_scores"),
                                                   # 512 floats (about 6.5 KB as float32 decimals) fit inline
                                                   ("embedding1024", 1024, "features")])
def test_a_result_too_large_for_the_chain_is_delivered_by_pointer(world, name, outputs, policy):
    w = world
    model = wide_model(outputs, softmax=policy != "features")
    rule = es.RULE.replace(b'"label_scores"', f'"{policy}"'.encode())
    split_dir = w.base / name
    summary = split_model(load_model(model.SerializeToString()), parse_rule(rule)).write(split_dir)
    model_id = keccak256(name.encode())
    version = register_model_version(w.chain, w.deployment, w.owner, model_id, split_dir, summary)
    provision_model(w.chain, w.deployment, w.client, w.owner, model_id=model_id, version=version,
                    package_bytes=(split_dir / "head.pkg").read_bytes(),
                    index_bytes=(split_dir / "head.index").read_bytes(), allow_measurement=True)
    node_dir = w.base / f"{name}-node"
    node_dir.mkdir()
    shutil.copy(split_dir / "backbone.onnx", node_dir / "backbone.onnx")
    config = Config(home=str(w.base), node=NodeConfig(retry_backoff=0.0))
    wiring = build_node(config, w.chain, w.deployment, w.node, backbone_paths=[node_dir], socket_path=w.socket_path,
                        state_dir=w.base / f"{name}-state",
                        input_key=load_or_create_x25519_key(w.base / "node-state" / "input.key"))
    req = Requester(w.chain, w.deployment, w.requester, key=X25519KeyPair.generate(), blob_dir=w.base / "var" / "blobs")
    x = es.sample_inputs(1, seed=outputs)[0]
    submitted = req.submit(model_id, version, x)
    wiring.node.poll_once()
    outcome = req.wait(submitted, timeout=10)
    assert outcome.status is RequestStatus.COMPLETED, outcome.failure_reason
    (ev,) = w.chain.get_logs(w.deployment.enclave_transfer, "ResultSubmitted", submitted.block,
                             argument_filters={"requestId": submitted.request_id})
    delivered = delivered_result(w.chain, w.deployment, ev["transactionHash"], submitted.request_id)
    assert delivered.encrypted_result == b"" and delivered.result_pointer.startswith("blob:0x")
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x[None]})[0][0]
    got = outcome.features if policy == "features" else outcome.scores
    assert len(got) == outputs
    np.testing.assert_allclose(got, want, atol=1e-4)
    if policy != "features":
        assert outcome.label == int(np.argmax(want))
    audit = Auditor(w.chain, w.deployment).request(submitted.request_id)
    assert audit.verified, [c for c in audit.checks if not c.ok]
    # the stored result is checked against the signed commitment: a swapped blob is refused
    pointer = delivered.result_pointer
    path = w.base / "var" / "blobs" / f"{pointer.split('0x')[1]}.bin"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(Exception, match="cannot be fetched and checked"):
        req.outcome(submitted.request_id, from_block=submitted.block)
    wiring.node.close()
