"""Terminal (normalise, validity check, image files, sharing), model owner (ONNX import, modes)
and a node's store (two-phase enrolment)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mpc.client.owner import SMALL_SPEC, load_onnx, node_models, plain_forward, random_model
from mpc.client.terminal import Terminal, normalise, read_image, write_pgm
from mpc.engine import ring
from mpc.node.store import NodeStore
from splitseal.errors import InvalidInputError, ModelError, UnsupportedOperatorError

RNG = np.random.default_rng(5)


def test_image_files_read_alike(tmp_path):
    img = RNG.integers(0, 256, (10, 12)).astype(np.uint8)
    Image.fromarray(img, mode="L").save(tmp_path / "a.png")
    write_pgm(tmp_path / "a.pgm", img / 255.0)
    np.save(tmp_path / "a.npy", img)
    png, pgm = read_image(tmp_path / "a.png"), read_image(tmp_path / "a.pgm")
    npy = normalise(read_image(tmp_path / "a.npy"), (1, 10, 12))[0]
    assert np.allclose(png, img / 255.0) and np.allclose(pgm, img / 255.0, atol=1 / 255) and np.allclose(npy, png)


def _variants(img: np.ndarray, tmp_path) -> dict[str, tuple]:
    """The same grey picture stored in every accepted way: (file, tolerance against img / 255)."""
    grey = Image.fromarray(img, mode="L")
    grey.convert("P").save(tmp_path / "palette.png")  # a palette PNG (colour type 3)
    grey.convert("RGBA").save(tmp_path / "rgba.png")
    grey.save(tmp_path / "interlaced.png", interlace=1)
    Image.fromarray(img.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # 16-bit grey
    grey.save(tmp_path / "photo.jpg", quality=95)
    (tmp_path / "plain.pgm").write_text(f"P2\n{img.shape[1]} {img.shape[0]}\n255\n"
                                        + " ".join(str(v) for v in img.ravel()))
    return {"palette.png": 1e-9, "rgba.png": 1e-9, "interlaced.png": 1e-9, "grey16.png": 1e-9,
            "photo.jpg": 0.08, "plain.pgm": 1e-9}


def test_pillow_reads_palette_rgba_16_bit_jpeg_and_plain_pgm(tmp_path):
    img = (np.add.outer(np.arange(16), np.arange(16)) * 8).astype(np.uint8)  # smooth, so JPEG stays close
    for name, tolerance in _variants(img, tmp_path).items():
        x = normalise(read_image(tmp_path / name), (1, 16, 16))[0]
        assert np.max(np.abs(x - img / 255.0)) <= tolerance, name


def test_a_16_bit_pgm_is_scaled_by_its_maxval(tmp_path):
    (tmp_path / "deep.pgm").write_bytes(b"P5\n2 1\n1000\n" + np.array([0, 1000], dtype=">u2").tobytes())
    assert np.allclose(read_image(tmp_path / "deep.pgm"), [[0.0, 1.0]])


@pytest.mark.parametrize("name, content, message", [
    ("a.txt", b"x", "not a PNG, JPEG or PGM"),
    ("bad.png", b"not a png", "not a PNG, JPEG or PGM"),
    ("cut.png", None, "not a readable png"),
    ("a.gif", None, "not a PNG, JPEG or PGM"),
    ("a.npy", b"\x93NUMPY junk", "not a readable .npy"),
    ("missing.png", False, "does not exist"),
])
def test_unreadable_images_are_refused_clearly(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None and name.endswith(".gif"):
        Image.new("L", (4, 4)).save(path, format="GIF")
    elif content is None:  # a PNG cut in the middle of its pixel data
        Image.fromarray(RNG.integers(0, 256, (64, 64)).astype(np.uint8)).save(tmp_path / "full.png")
        path.write_bytes((tmp_path / "full.png").read_bytes()[:400])
    elif content:
        path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=message):
        read_image(path)


def test_resize_matches_the_training_pipeline():
    from orchestrator.training.data import resize_bilinear

    img = RNG.random((8, 8))
    assert np.allclose(normalise(img, (1, 16, 16))[0], resize_bilinear(img[None], 16)[0])


def test_normalise_resizes_and_fixes_channels():
    x = normalise(RNG.integers(0, 17, (8, 8)).astype(np.float64), (3, 28, 28))
    assert x.shape == (3, 28, 28) and 0.0 <= x.min() and x.max() <= 1.0
    rgb = RNG.random((20, 20, 3))
    assert normalise(rgb, (1, 10, 10)).shape == (1, 10, 10)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((28, 28)), "constant"),
    (np.full((28, 28), 0.7), "constant"),
    (np.pad(np.ones((1, 1)), ((0, 27), (0, 27))), "blank"),
])
def test_default_check_rejects_unusable_captures(bad, message):
    t = Terminal((1, 28, 28), 2)
    with pytest.raises(InvalidInputError, match=message):
        t.shares(bad)


def test_pluggable_check_and_wrong_shape():
    def no_dark(x):
        if x.mean() < 0.6:
            raise InvalidInputError("too dark")

    t = Terminal((1, 28, 28), 2, check=no_dark)
    with pytest.raises(InvalidInputError, match="too dark"):
        t.shares(RNG.random((28, 28)) * 0.5)
    with pytest.raises(InvalidInputError, match="channels"):
        Terminal((2, 28, 28), 2).shares(RNG.random((3, 28, 28)))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_terminal_shares_sum_to_encoded_capture_and_look_uniform(n):
    img = RNG.random((28, 28))
    t = Terminal((1, 28, 28), n)
    shares = t.shares(img)
    enc = ring.encode(t.prepare_array(img)[None])
    assert np.array_equal(ring.reconstruct(shares), enc)
    for s in shares:
        assert s.shape == (1, 1, 28, 28)
        assert (s == enc).mean() < 0.01  # no share is (even partly) the encoded capture
        assert 0.4 < (s >> np.uint64(63)).mean() < 0.6


def test_owner_shares_parameters_formula_1():
    model = random_model(SMALL_SPEC, (1, 28, 28), seed=2)
    nodes = node_models(model, 3, shared=True)
    w = ring.reconstruct([n.layers[0].weight for n in nodes])
    assert np.array_equal(w, ring.encode(model.layers[0].weight, nodes[0].weight_frac_bits))
    assert len({n.model_id for n in nodes}) == 1 and nodes[0].model_id
    assert not np.array_equal(nodes[0].layers[0].weight, w)
    plain = node_models(model, 3, shared=False)
    assert all(np.array_equal(p.layers[0].weight, plain[0].layers[0].weight) for p in plain)


def _onnx_model(path, with_bn=True, op="Relu"):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    r = np.random.default_rng(1)
    inits = [numpy_helper.from_array(r.standard_normal((4, 1, 3, 3)).astype(np.float32) * 0.5, "w1"),
             numpy_helper.from_array(r.standard_normal(4).astype(np.float32) * 0.1, "b1"),
             numpy_helper.from_array((r.random(4) + 0.5).astype(np.float32), "g"),
             numpy_helper.from_array(r.standard_normal(4).astype(np.float32) * 0.1, "be"),
             numpy_helper.from_array(r.standard_normal(4).astype(np.float32) * 0.1, "mu"),
             numpy_helper.from_array((r.random(4) + 0.5).astype(np.float32), "var"),
             numpy_helper.from_array(r.standard_normal((6, 4 * 5 * 5)).astype(np.float32) * 0.2, "w2"),
             numpy_helper.from_array(r.standard_normal(6).astype(np.float32) * 0.1, "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1])]
    cur = "c"
    if with_bn:
        nodes.append(helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["bn"]))
        cur = "bn"
    nodes += [helper.make_node(op, [cur], ["r"]),
              helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "emb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 10, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(m, str(path))


def test_onnx_import_matches_onnxruntime(tmp_path):
    import onnxruntime as ort

    _onnx_model(tmp_path / "m.onnx")
    model = load_onnx(tmp_path / "m.onnx")
    assert [la.op for la in model.layers] == ["conv", "act", "pool", "flatten", "linear"]
    x = RNG.random((1, 1, 10, 10)).astype(np.float32)
    ref = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(plain_forward(model, x) - ref).max() < 1e-4


def test_onnx_import_refuses_unknown_operators(tmp_path):
    _onnx_model(tmp_path / "m.onnx", with_bn=False, op="Softplus")
    with pytest.raises(UnsupportedOperatorError, match="Softplus"):
        load_onnx(tmp_path / "m.onnx")


def _chain_model(path, pool_attrs=None, residual=False, features=64):
    """Conv -> Sigmoid -> AveragePool -> Reshape (Constant shape) -> MatMul + Add -> Dropout -> LpNorm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    r = np.random.default_rng(2)
    inits = [numpy_helper.from_array(r.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(r.standard_normal((features, 5)).astype(np.float32) * 0.2, "m"),
             numpy_helper.from_array(r.standard_normal(5).astype(np.float32), "b")]
    pool = pool_attrs or dict(kernel_shape=[2, 2], strides=[2, 2])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Add", ["s", "c"], ["s2"]) if residual else helper.make_node("Identity", ["s"], ["s2"]),
             helper.make_node("AveragePool", ["s2"], ["p"], **pool),
             helper.make_node("Constant", [], ["shape"],
                              value=numpy_helper.from_array(np.array([1, -1], dtype=np.int64))),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "m"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["a"]),
             helper.make_node("Dropout", ["a"], ["d"]),
             helper.make_node("LpNormalization", ["d"], ["y"], axis=1, p=2)]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))


def test_onnx_lowering_of_a_chain_matches_onnxruntime_up_to_scale(tmp_path):
    import onnxruntime as ort

    _chain_model(tmp_path / "m.onnx")
    model = load_onnx(tmp_path / "m.onnx")
    assert [la.op for la in model.layers] == ["conv", "act", "pool", "flatten", "linear"]
    x = RNG.random((1, 1, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ours = plain_forward(model, x)
    assert np.abs(ours / np.linalg.norm(ours) - ref).max() < 1e-5  # the final LpNormalization is skipped


def test_onnx_lowering_of_a_skip_connection_matches_onnxruntime(tmp_path):
    import onnxruntime as ort

    _chain_model(tmp_path / "res.onnx", residual=True)
    model = load_onnx(tmp_path / "res.onnx")
    assert [la.op for la in model.layers] == ["conv", "act", "add", "pool", "flatten", "linear"]
    assert model.layers[2].params["inputs"] == [1, 0]  # Add(sigmoid(c), c): a DAG
    x = RNG.random((1, 1, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(tmp_path / "res.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ours = plain_forward(model, x)
    assert np.abs(ours / np.linalg.norm(ours) - ref).max() < 1e-5


def test_onnx_lowering_refuses_what_it_would_compute_differently(tmp_path):
    # a 3x3 pool in ceil mode on the 8x8 map: ONNX computes 3x3 windows, the MPC pool floors
    _chain_model(tmp_path / "ceil.onnx", {"kernel_shape": [3, 3], "strides": [3, 3], "ceil_mode": 1}, features=36)
    with pytest.raises(UnsupportedOperatorError, match="ceil_mode is not supported"):
        load_onnx(tmp_path / "ceil.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a valid ONNX file"):
        load_onnx(tmp_path / "bad.onnx")


def test_store_enrolment_is_two_phase(tmp_path):
    store = NodeStore(tmp_path / "s.sqlite3")
    share = ring.random_ring(64)
    store.stage("alice", share, b"s" * 32, b"c" * 32, "sess1")
    assert store.share("alice") is None and store.gallery()[0] == []  # pending is invisible
    with pytest.raises(InvalidInputError, match="already pending"):
        store.stage("alice", share, b"s" * 32, b"c" * 32, "sess2")
    assert store.discard("sess1") == 1 and store.subject_states() == {}
    store.stage("alice", share, b"s" * 32, b"c" * 32, "sess3")
    assert store.commit("sess3") == 1
    assert np.array_equal(store.share("alice"), share)
    assert store.discard("sess3") == 0  # committed rows are not discarded by a late abort
    store.close()
    again = NodeStore(tmp_path / "s.sqlite3")
    assert again.gallery()[0] == ["alice"]
    again.close()
