"""The split: planning by each rule form, crossing tensors (skip connections), where protected
parameters land, both halves checked, equivalence proven (and shown to fail when broken)."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import onnx
import pytest
from eth_utils.crypto import keccak

from enclave.interpreter import HeadInterpreter
from enclave.package import HeadPackage, build_parameter_blob, decode_head_package, decode_index
from orchestrator.cli import main as cli_main
from orchestrator.models import load_model
from orchestrator.models.backbone import Backbone
from orchestrator.models.inspect import inspect_path, render
from orchestrator.models.rule import parse_rule
from orchestrator.models.split import random_samples, split_model, verify_split
from splitseal.errors import InvalidInputError, ModelError, ProtectionRuleError
from tests.support.models_fixtures import small_cnn


def rule(split: str, params: str = '["head.*"]', kinds: str = '["weights", "biases"]', policy: str = "label_scores"):
    return parse_rule(f'version=1\n[split]\n{split}\n[protect]\nparameters={params}\nkinds={kinds}\n'
                      f'[output]\npolicy="{policy}"\n'.encode())


@pytest.fixture(scope="module")
def imp():
    return load_model(small_cnn().SerializeToString())


@pytest.fixture(scope="module")
def samples(imp):
    return random_samples(imp, 40, seed=3)


def test_split_at_tensor(imp, samples):
    res = split_model(imp, rule('at_tensor = "flat"', '["neck.*", "head.*"]'), samples)
    assert res.crossing == ["flat"]
    assert res.head_nodes == ["neck", "neck_act", "head", "softmax"]
    assert res.protected == ["head.bias", "head.weight", "neck.bias", "neck.weight"]
    assert [o.name for o in res.backbone_model.graph.output] == ["flat"]
    assert [i.name for i in res.head_model.graph.input] == ["flat"]
    v = res.verification
    assert v.samples == 40 and v.max_abs_diff_interpreter <= 1e-5 and v.max_abs_diff_onnxruntime <= 1e-5


def test_skip_connection_crosses_the_cut(imp, samples):
    """Split at the residual Add: both its inputs (the skip p1 and the branch r2) cross."""
    res = split_model(imp, rule('at_node = "skip_add"'), samples)
    assert res.crossing == ["p1", "r2"]
    assert sorted(o.name for o in res.backbone_model.graph.output) == ["p1", "r2"]
    assert sorted(i.name for i in res.head_model.graph.input) == ["p1", "r2"]
    assert "conv2" in res.backbone_nodes and "skip_add" in res.head_nodes


def test_split_at_node_with_skip_inside_head(imp, samples):
    """Split before conv2: p1 feeds conv2 and the skip Add, one crossing tensor, read twice."""
    res = split_model(imp, rule('at_node = "conv2"', '["conv2.*", "conv3.*", "neck.*", "head.*"]'), samples)
    assert res.crossing == ["p1"]
    assert res.head_nodes[0] == "conv2" and "skip_add" in res.head_nodes
    assert set(res.protected) == {"conv2.weight", "conv2.bias", "conv3.weight", "neck.weight", "neck.bias",
                                  "head.weight", "head.bias"}


@pytest.mark.parametrize("n, first", [(1, "head"), (2, "neck"), (3, "conv3"), (4, "conv2")])
def test_protect_last_layers(imp, samples, n, first):
    res = split_model(imp, rule(f"protect_last_layers = {n}"), samples)
    assert res.head_nodes[0] == first
    heads = [e.name for e in res.index.entries]
    assert "head.weight" in heads
    for p in res.protected:
        assert res.sides[p] == "head"
    assert res.verification.max_abs_diff_interpreter <= 1e-5


def test_every_protected_parameter_lands_only_in_head(imp):
    res = split_model(imp, rule("protect_last_layers = 3", '["conv3.*", "neck.*", "head.*"]'))
    backbone_params = {t.name for t in res.backbone_model.graph.initializer}
    head_params = {e.name for e in res.index.entries}
    assert res.protected and set(res.protected) <= head_params
    assert not set(res.protected) & backbone_params
    assert set(res.protected) == {"conv3.weight", "neck.weight", "neck.bias", "head.weight", "head.bias"}
    # a glob that also matches backbone parameters is refused rather than silently narrowed
    with pytest.raises(ProtectionRuleError, match="would land in the backbone"):
        split_model(imp, rule("protect_last_layers = 3", '["conv*"]'))
    # "*" alone names every parameter of the head
    star = split_model(imp, rule("protect_last_layers = 3", '["*"]'))
    assert star.protected == sorted(head_params - {"flat_shape"})


def test_protected_parameter_in_backbone_refused(imp):
    with pytest.raises(ProtectionRuleError, match=r"'conv1\.(weight|bias)' would land in the backbone.*conv1"):
        split_model(imp, rule('at_tensor = "flat"', '["conv1.*", "head.*"]'))


def test_pattern_matching_nothing_refused(imp):
    with pytest.raises(ProtectionRuleError, match=r"'hed\.\*' matches no parameter.*known: \['bn1.bias'"):
        split_model(imp, rule('at_tensor = "flat"', '["hed.*"]'))
    # kinds filter: conv3 has no bias, so biases-only protection of conv3 matches nothing
    with pytest.raises(ProtectionRuleError, match="matches no parameter"):
        split_model(imp, rule('at_tensor = "flat"', '["conv3.*"]', '["biases"]'))


@pytest.mark.parametrize("split, message", [
    ('at_tensor = "nope"', "not a tensor of the model"),
    ('at_tensor = "x"', "model input"),
    ('at_tensor = "probs"', "read by no node"),
    ('at_tensor = "head.weight"', "parameter"),
    ('at_node = "nope"', "not a node"),
    ('at_node = "conv1"', "backbone empty"),
    ("protect_last_layers = 5", "every weighted layer"),
    ("protect_last_layers = 9", "only 5 weighted layers"),
])
def test_impossible_splits_refused(imp, split, message):
    with pytest.raises(ProtectionRuleError, match=message):
        split_model(imp, rule(split))


def test_split_with_two_outputs_one_in_backbone_refused():
    m = small_cnn()
    m.graph.output.append(onnx.helper.make_tensor_value_info("p1", onnx.TensorProto.FLOAT, ["N", 4, 4, 4]))
    imp2 = load_model(m.SerializeToString())
    with pytest.raises(ProtectionRuleError, match="'p1' would be computed by the backbone"):
        split_model(imp2, rule('at_tensor = "flat"'))


def test_head_reading_the_model_input_refused():
    from onnx import TensorProto, helper, numpy_helper

    from tests.support.models_fixtures import make_model
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3])  # noqa: E731
    nodes = [helper.make_node("Gemm", ["x", "w"], ["g"], name="fc"),
             helper.make_node("Add", ["g", "x"], ["y"], name="skip_from_input")]
    w = numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")
    imp2 = load_model(make_model(nodes, [vi("x")], [vi("y")], [w]).SerializeToString())
    with pytest.raises(ProtectionRuleError, match="'skip_from_input'.*reads the model input 'x'"):
        split_model(imp2, rule('at_node = "skip_from_input"', '["w"]'))


def test_both_halves_pass_the_checker(imp):
    res = split_model(imp, rule('at_node = "skip_add"'))
    onnx.checker.check_model(res.backbone_model, full_check=True)
    onnx.checker.check_model(res.head_model, full_check=True)


def test_verification_detects_a_wrong_head(imp, samples):
    """The equivalence check can fail: a head whose weights differ slightly is refused."""
    res = split_model(imp, rule('at_tensor = "flat"', '["neck.*", "head.*"]'))
    params = []
    for e in res.index.entries:
        arr = res.imported.initializers[e.name]
        if e.name == "head.weight":
            arr = arr.copy()
            arr[0] += np.float32(1e-3)
        params.append((e.name, arr))
    blob, index = build_parameter_blob(params)
    bad = dataclasses.replace(res, package=HeadPackage(res.package.graph_bytes, blob), index=index)
    with pytest.raises(ModelError, match="enclave interpreter differs.*not equivalent"):
        verify_split(bad, samples)


def test_write_and_inspect(tmp_path, imp, samples):
    res = split_model(imp, rule('at_node = "skip_add"', policy="label"), samples, sample_source="test")
    summary = res.write(tmp_path, model_path="m.onnx", rule_path="r.toml")
    on_disk = json.loads((tmp_path / "split.json").read_text())
    assert on_disk == summary
    pkg = decode_head_package((tmp_path / "head.pkg").read_bytes())
    index = decode_index((tmp_path / "head.index").read_bytes())
    assert on_disk["head"]["graph_hash"] == "0x" + bytes(keccak(pkg.graph_bytes)).hex()
    assert on_disk["head"]["params_hash"] == "0x" + bytes(keccak(pkg.params_bytes)).hex()
    assert on_disk["backbone"]["hash"] == "0x" + bytes(keccak((tmp_path / "backbone.onnx").read_bytes())).hex()
    assert on_disk["rule"]["hash"] == "0x" + res.rule.hash.hex()
    assert (tmp_path / "rule.toml").read_bytes() == res.rule.source_bytes
    assert on_disk["index"]["merkle_root"] == "0x" + index.merkle_root().hex()
    assert on_disk["verification"]["source"] == "test"
    sides = {p["name"]: p["side"] for p in on_disk["parameters"]}
    assert sides["conv1.weight"] == "backbone" and sides["head.weight"] == "head"
    report = inspect_path(tmp_path)
    assert report["problems"] == []
    assert "files match split.json" in render(report)
    # a swapped file is reported
    (tmp_path / "backbone.onnx").write_bytes(small_cnn(seed=9).SerializeToString())
    assert inspect_path(tmp_path)["problems"]


def test_backbone_engine(imp, samples):
    res = split_model(imp, rule('at_node = "skip_add"'))
    bb = Backbone(res.backbone_bytes)
    assert bb.input_specs == [("x", (None, 1, 8, 8), "float32")]
    assert sorted(bb.output_names) == ["p1", "r2"]
    out = bb.run(samples)
    head = HeadInterpreter(res.package, res.index)
    assert head.run(out)["probs"].shape == (40, 5)
    with pytest.raises(InvalidInputError, match="float32"):
        bb.run({"x": samples["x"].astype(np.float64)})
    with pytest.raises(InvalidInputError, match="shape"):
        bb.run({"x": samples["x"][:, :, :4]})
    with pytest.raises(InvalidInputError, match="exactly"):
        bb.run({"y": samples["x"]})
    with pytest.raises(InvalidInputError, match="NaN"):
        bb.run({"x": np.full((1, 1, 8, 8), np.nan, np.float32)})


def test_cli_split_and_inspect(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    model.write_bytes(small_cnn().SerializeToString())
    rule_file = tmp_path / "r.toml"
    rule_file.write_text('version=1\nname="cli"\n[split]\nat_tensor="flat"\n[protect]\nparameters=["neck.*","head.*"]\n'
                         '[output]\npolicy="label"\n')
    out = tmp_path / "split"
    assert cli_main(["model", "split", str(model), "--rule", str(rule_file), "--out", str(out), "--random", "16"]) == 0
    text = capsys.readouterr().out
    assert "headGraphHash" in text and "16 seeded random inputs" in text
    assert {p.name for p in out.iterdir()} == {"backbone.onnx", "head.pkg", "head.index", "rule.toml", "split.json", "node"}
    assert cli_main(["model", "inspect", str(out)]) == 0
    assert "files match split.json" in capsys.readouterr().out
    assert cli_main(["model", "inspect", str(model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weighted_layers"] == ["conv1", "conv2", "conv3", "neck", "head"]
    assert cli_main(["model", "inspect", str(model), "--rule", str(rule_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    sides = {layer["name"]: layer["side"] for layer in report["layers"]}
    assert sides["neck"] == "head" and sides["conv1"] == "backbone" and report["rule"]["crossing"] == ["flat"]
    assert {p["name"] for p in report["parameters"] if p["protected"]} == {"neck.weight", "neck.bias",
                                                                           "head.weight", "head.bias"}
    np.save(tmp_path / "in.npy", np.zeros((3, 1, 8, 8), np.float32))
    assert cli_main(["model", "split", str(model), "--rule", str(rule_file), "--out", str(out),
                     "--inputs", str(tmp_path / "in.npy")]) == 0
    capsys.readouterr()
    bad_rule = tmp_path / "bad.toml"
    bad_rule.write_text(rule_file.read_text().replace('"flat"', '"flatt"'))
    assert cli_main(["model", "split", str(model), "--rule", str(bad_rule), "--out", str(out)]) == 2
    assert "did you mean ['flat']" in capsys.readouterr().err


def test_the_split_keeps_the_plaintext_head_owner_only_and_gives_the_node_its_own_directory(tmp_path):
    import stat

    from orchestrator.models.split import NODE_DIR

    result = split_model(load_model(small_cnn().SerializeToString()), parse_rule(
        b'version=1\n[split]\nat_node="conv3"\n[protect]\nparameters=["conv3.*","neck.*","head.*"]\n'
        b'[output]\npolicy="label_scores"\n'))
    out = tmp_path / "split"
    out.mkdir(mode=0o755)
    (out / "head.pkg").write_bytes(b"old")  # an earlier, wider file must not keep its mode
    os.chmod(out / "head.pkg", 0o644)
    result.write(out)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    for name in ("head.pkg", "head.index", "rule.toml", "split.json", "backbone.onnx"):
        assert mode(out / name) == 0o600, name
    assert mode(out) & 0o077 in (0o011, 0)  # reachable by name at most, never listable by others
    assert sorted(p.name for p in (out / NODE_DIR).iterdir()) == ["backbone.onnx"]
    assert mode(out / NODE_DIR / "backbone.onnx") == 0o644
    assert (out / NODE_DIR / "backbone.onnx").read_bytes() == result.backbone_bytes
