"""A 224x224x3 float32 image through the whole path: off-chain blob, node, backbone, enclave, chain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from enclave.platform import SimulatedPlatform
from orchestrator.models import load_model
from orchestrator.models.rule import parse_rule
from orchestrator.models.split import split_model
from orchestrator.node_setup import authorize_node, build_node, load_or_create_x25519_key
from orchestrator.provision import attest_enclave, provision_model, register_model_version
from orchestrator.requester import Requester
from splitseal.chain import request_inline_input
from splitseal.config import Config
from splitseal.enclave_client import EnclaveClient
from splitseal.protocol import RequestStatus, crypto
from splitseal.protocol.crypto import X25519KeyPair
from tests.support import enclave_support as es

RULE = b'version=1\n[split]\nat_node="head_fc"\n[protect]\nparameters=["head.*"]\n[output]\npolicy="label_scores"\n'


def image_model() -> onnx.ModelProto:
    """(N, 3, 224, 224) → strided conv → ReLU → global average pool → flatten | head: Gemm → Softmax."""
    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 8, 8)) * 0.1).astype(np.float32), "bb.conv.weight"),
             numpy_helper.from_array(np.zeros(8, np.float32), "bb.conv.bias"),
             numpy_helper.from_array((rng.standard_normal((5, 8)) * 0.5).astype(np.float32), "head.weight"),
             numpy_helper.from_array(np.zeros(5, np.float32), "head.bias")]
    nodes = [helper.make_node("Conv", ["image", "bb.conv.weight", "bb.conv.bias"], ["c"], name="bb_conv",
                              strides=[8, 8], kernel_shape=[8, 8]),
             helper.make_node("Relu", ["c"], ["r"], name="bb_relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="bb_pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="bb_flatten"),
             helper.make_node("Gemm", ["f", "head.weight", "head.bias"], ["logits"], name="head_fc", transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1)]
    graph = helper.make_graph(
        nodes, "image224", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 5])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.integration
def test_a_224x224x3_float32_image_is_served_through_the_off_chain_path(chain, deployment, tmp_path: Path):
    admin, owner, node_account, requester_account = chain.accounts[:4]
    model = image_model()
    split_dir = tmp_path / "split"
    images = np.random.default_rng(0).random((4, 3, 224, 224), dtype=np.float32)
    summary = split_model(load_model(model.SerializeToString()), parse_rule(RULE), images).write(split_dir)
    platform_dir = tmp_path / "platform"
    chain.transact(deployment.model_registry.functions.setQuotingKey(SimulatedPlatform(platform_dir).quoting_address()),
                   sender=admin)
    process, _, sock = es.start_enclave(tmp_path, "enclave", platform_dir=platform_dir)
    try:
        with EnclaveClient(sock) as owner_client:
            model_id = crypto.keccak256(b"image224")
            version = register_model_version(chain, deployment, owner, model_id, split_dir, summary)
            attest_enclave(chain, deployment, owner_client, sender=admin)
            provision_model(chain, deployment, owner_client, owner, model_id=model_id, version=version,
                            package_bytes=(split_dir / "head.pkg").read_bytes(),
                            index_bytes=(split_dir / "head.index").read_bytes(), allow_measurement=True)
        key = load_or_create_x25519_key(tmp_path / "node" / "input.key")
        authorize_node(chain, deployment, admin, node_account, key)
        wiring = build_node(Config(home=str(tmp_path)), chain, deployment, node_account, backbone_paths=[split_dir / "node"],
                            socket_path=sock, state_dir=tmp_path / "node", input_key=key,
                            start_block=chain.block_number() + 1)
        requester = Requester(chain, deployment, requester_account, key=X25519KeyPair.generate(),
                              blob_dir=tmp_path / "var" / "blobs")
        try:
            image = images[0]
            assert image.nbytes == 224 * 224 * 3 * 4
            submitted = requester.submit(model_id, version, image)
            (ev,) = chain.get_logs(deployment.backbone_execution, "InferenceRequested", submitted.block,
                                   argument_filters={"requestId": submitted.request_id})
            assert ev["args"]["inputPointer"].startswith("blob:0x")
            assert request_inline_input(chain, deployment, ev["transactionHash"]) == b""
            wiring.node.poll_once()
            outcome = requester.wait(submitted, timeout=30)
            assert outcome.status is RequestStatus.COMPLETED, outcome.failure_reason
            expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
                ["probs"], {"image": image[None]})[0][0]
            np.testing.assert_allclose(outcome.scores, expected, atol=1e-5)
            assert outcome.label == int(np.argmax(expected))
        finally:
            requester.close()
            wiring.node.close()
            wiring.client.close()
    finally:
        process.stop()
