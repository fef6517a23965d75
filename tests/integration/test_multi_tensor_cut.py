"""A cut crossed by several tensors (inside a residual block: the skip connection and the main
path), served through the real chain and the real enclave process: the node packs the backbone's
crossing tensors into one transfer (splitseal.protocol.bundle), the enclave splits them back by its
head graph, the requester's answer equals the whole model's, and the audit verifies the request
from events alone (one transfer hash and one backbone output commitment cover every tensor)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from enclave.platform import SimulatedPlatform
from orchestrator.audit import Auditor
from orchestrator.models import load_model, zoo
from orchestrator.models.backbone import ort_session
from orchestrator.models.rule import parse_rule
from orchestrator.models.split import random_samples, split_model
from orchestrator.node_setup import SplitBackbone, authorize_node, build_node, load_or_create_x25519_key
from orchestrator.provision import attest_enclave, provision_model, register_model_version
from orchestrator.requester import Requester
from splitseal.config import Config, NodeConfig
from splitseal.enclave_client import EnclaveClient
from splitseal.protocol import RequestStatus, bundle
from splitseal.protocol.crypto import X25519KeyPair, keccak256
from tests.support import enclave_support as es
from tests.support.torch_style import torch_style

pytestmark = pytest.mark.integration

RULE = 'version = 1\n[split]\n{split}\n[protect]\nparameters = ["*"]\n[output]\npolicy = "features"\n'


def _torch_style():
    imp = load_model(torch_style().SerializeToString())
    return imp, RULE.format(split='at_node = "/layer1/layer1.0/Add"')


def _resnet18():
    imp = load_model(zoo.model_path("resnet18", "torchscript"))
    cut = next(c for c in zoo.CUTS["resnet18"] if c.crossing > 1)
    return imp, cut.rule_text(imp)


MODELS = {"torch_style": _torch_style,
          "resnet18-in_layer4": pytest.param(_resnet18, marks=pytest.mark.skipif(
              not zoo.available(), reason="model zoo missing: run scripts/setup_zoo"))}


@pytest.fixture(scope="module", params=list(MODELS.values()), ids=list(MODELS))
def world(request, embedded_chain, embedded_deployment, tmp_path_factory):
    chain, dep = embedded_chain, embedded_deployment
    snapshot = chain.snapshot()
    base = Path(tmp_path_factory.mktemp("multi"))
    imp, rule_text = request.param()
    result = split_model(imp, parse_rule(rule_text.encode()), random_samples(imp, 4, seed=5))
    assert len(result.crossing) == 2
    summary = result.write(base / "split", model_path="model.onnx")
    admin, owner, node = chain.accounts[0], chain.accounts[1], chain.accounts[2]
    platform_dir = base / "platform"
    chain.transact(dep.model_registry.functions.setQuotingKey(SimulatedPlatform(platform_dir).quoting_address()),
                   sender=admin)
    process, _, sock = es.start_enclave(base, "enclave", platform_dir=platform_dir)
    client = EnclaveClient(sock)
    try:
        model_id = keccak256(b"multi-tensor-" + request.param.__name__.encode())
        version = register_model_version(chain, dep, owner, model_id, base / "split", summary)
        attest_enclave(chain, dep, client, sender=admin)
        provision_model(chain, dep, client, owner, model_id=model_id, version=version,
                        package_bytes=(base / "split" / "head.pkg").read_bytes(),
                        index_bytes=(base / "split" / "head.index").read_bytes(), allow_measurement=True)
        shutil.copytree(base / "split" / "node", base / "node")
        authorize_node(chain, dep, admin, node, load_or_create_x25519_key(base / "node-state" / "input.key"))
        config = Config(home=str(base), node=NodeConfig(retry_backoff=0.0))
        wiring = build_node(config, chain, dep, node, backbone_paths=[base / "node"], socket_path=sock,
                            state_dir=base / "node-state")
        yield dict(chain=chain, dep=dep, base=base, imp=imp, result=result, model_id=model_id, version=version,
                   node=wiring.node, config=config)
        wiring.node.close()
    finally:
        client.close()
        process.stop()
        chain.revert(snapshot)


def test_the_backbone_sends_both_crossing_tensors_as_one_bundle(world):
    res = world["result"]
    backbone = SplitBackbone(res.backbone_bytes)
    x = random_samples(world["imp"], 2, seed=9)
    packed = backbone.run(next(iter(x.values())))
    specs = [(t.name, tuple(t.shape)) for t in res.head_graph.inputs]
    assert packed.shape == (2, bundle.bundle_shape(specs)[1])
    parts = bundle.unpack(packed, specs)
    whole = ort_session(res.backbone_bytes).run(res.crossing, x)
    for name, want in zip(res.crossing, whole):
        np.testing.assert_array_equal(parts[name], want)


def test_requests_through_the_chain_and_the_enclave_answer_as_the_whole_model(world):
    chain, dep, imp = world["chain"], world["dep"], world["imp"]
    config = world["config"]   # large inputs (the ResNet's images) go by pointer into the node's blob store
    req = Requester(chain, dep, chain.accounts[3], key=X25519KeyPair.generate(),
                    blob_dir=config.path(config.node.blob_dir))
    xs = next(iter(random_samples(imp, 2, seed=21).values()))
    submitted = [req.submit(world["model_id"], world["version"], x[None]) for x in xs]
    assert world["node"].poll_once() == 2
    outcomes = [req.wait(s, timeout=30) for s in submitted]
    assert [o.status for o in outcomes] == [RequestStatus.COMPLETED] * 2
    whole = ort_session(imp.source_bytes)
    out = imp.outputs[0].name
    for x, o in zip(xs, outcomes):
        np.testing.assert_allclose(np.asarray(o.features).reshape(-1),
                                   whole.run([out], {imp.inputs[0].name: x[None]})[0].reshape(-1),
                                   rtol=1e-5, atol=1e-5)
    audit = Auditor(chain, dep).request(submitted[0].request_id)
    assert audit.verified, [c for c in audit.checks if not c.ok]
    req.close()
