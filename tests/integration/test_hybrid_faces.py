"""Hybrid mode on a real face model: SFace split by rules/sface_hybrid.toml, the network up to its
last pointwise convolution on shares in two MPC node processes (plaintext kernels: the backbone
is public), the last block and the 25088 -> 128 embedding layer in the enclave process, the
128-d feature vector signed on-chain and decrypted by the requester. The terminal detects and
aligns an ORL face with YuNet; no other process sees it.

Bound: the decrypted features within 1e-3 of onnxruntime SFace on the same aligned face
(fixed point with 16 fractional bits, as for features on shares), cosine above 0.9999.
"""

from __future__ import annotations

import numpy as np
import pytest

from chain_node.hybrid import HybridRelay
from mpc.client import cluster as cl
from mpc.client import faces
from mpc.client.owner import load_onnx
from orchestrator.hybrid import HybridRequester
from orchestrator.stack import start_stack
from splitseal.config import PROJECT_ROOT, Config
from splitseal.enclave_client import EnclaveClient
from splitseal.protocol import RequestStatus

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not faces.available(), reason="face data missing: run scripts/setup")]


def test_sface_features_through_mpc_backbone_and_enclave_head(tmp_path):
    det = faces.FaceDetector()
    aligned = []
    for _, _, path in faces.orl_images()[:3]:
        x, ok = faces.terminal_input(faces.read_pgm(path), det)
        assert ok
        aligned.append(x.astype(np.float32))
    samples = np.stack(aligned)
    stack = start_stack(Config(home=str(tmp_path)), chain_target="embedded", state_dir=tmp_path / "state",
                        say=lambda _line: None, node=False)
    mpc_dir = tmp_path / "mpc"
    try:
        chain, deployment = stack.chain, stack.deployment
        served = stack.add_model("sface-hybrid", faces.sface_path(), PROJECT_ROOT / "rules" / "sface_hybrid.toml",
                                 samples, sample_source="ORL faces aligned by YuNet", say=lambda _line: None)
        model_id, version = served.model_id, served.version
        cl.up(mpc_dir, load_onnx(served.split_dir / "node" / "backbone.onnx"), parties=2, shared=False, timeout=600)
        mpc = cl.MpcClient(cl.ClusterInfo.load(mpc_dir))
        set_id = cl.register_node_set(chain, deployment.feature_share_registry, mpc.addresses(), chain.account(0))
        relay_account = chain.account(4)
        be = deployment.backbone_execution
        chain.transact(be.functions.grantRole(chain.call(be.functions.NODE_ROLE()), relay_account.address),
                       sender=chain.account(0))
        requester = stack.requester()
        with EnclaveClient(stack.state_dir / "enclave" / "enclave.sock") as enclave:
            relay = HybridRelay(chain, deployment, relay_account, enclave, blob_dir=stack.state_dir / "blobs")
            hybrid = HybridRequester(requester, mpc, set_id, relay, enclave.status().enclave)
            result = hybrid.infer(model_id, version, aligned[1], model_input=True, timeout=600)
        requester.close()
        mpc.close()
        outcome = result.outcome
        assert outcome.status is RequestStatus.COMPLETED, outcome.failure_reason
        got = np.asarray(outcome.features)
        plain = faces.PlainSFace()(samples[1:2])[0]
        assert got.shape == (128,)
        assert np.abs(got - plain).max() < 1e-3
        assert float(got @ plain / np.linalg.norm(got) / np.linalg.norm(plain)) > 0.9999
        assert [c.node for c in result.delivery.contributions] == list(result.nodes)
    finally:
        cl.down(mpc_dir)
        stack.close()
