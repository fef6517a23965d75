"""Gradient checks: every layer's backward pass against central finite differences (float64)."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.training.layers import (
    Conv2d,
    CosineClassifier,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Softmax,
    softmax,
    softmax_cross_entropy,
)
from orchestrator.training.models import build, get_spec

EPS = 1e-6
RTOL = 1e-6


def numeric_grad(f, x: np.ndarray) -> np.ndarray:
    """d f / d x by central differences, entry by entry (x is modified and restored)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        up = f()
        flat[i] = old - EPS
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * EPS)
    return grad


def assert_close(analytic: np.ndarray, numeric: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(numeric).max()))
    np.testing.assert_allclose(analytic, numeric, rtol=0, atol=RTOL * scale * 10)


def check_layer(layer: Layer, x: np.ndarray, seed: int = 0) -> None:
    """Check d<g, layer(x)>/dx and /dparams for a random upstream gradient g."""
    for key in layer.params:
        layer.params[key] = layer.params[key].astype(np.float64)
    out = layer.forward(x, train=True)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    dx = layer.backward(g)

    def loss() -> float:
        return float((layer.forward(x, train=False) * g).sum())

    assert dx.shape == x.shape
    assert_close(dx, numeric_grad(loss, x))
    for key, value in layer.params.items():
        assert layer.grads[key].shape == value.shape
        assert_close(layer.grads[key], numeric_grad(loss, value))


def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.mark.parametrize("stride,padding", [(1, 1), (1, 0), (2, 1)])
def test_conv2d_gradients(stride: int, padding: int) -> None:
    r = rng()
    layer = Conv2d("c", 2, 3, 3, r, stride=stride, padding=padding)
    layer.params["bias"] = r.standard_normal(3)
    check_layer(layer, r.standard_normal((2, 2, 6, 6)))


def test_conv2d_matches_direct_convolution() -> None:
    """im2col must compute ONNX Conv's cross-correlation, not a flipped or transposed variant."""
    r = rng()
    layer = Conv2d("c", 2, 3, 3, r, padding=1)
    layer.params["bias"] = r.standard_normal(3).astype(np.float32)
    x = r.standard_normal((2, 2, 5, 5)).astype(np.float32)
    w, b = layer.params["weight"].astype(np.float64), layer.params["bias"].astype(np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((2, 3, 5, 5))
    for n in range(2):
        for o in range(3):
            for i in range(5):
                for j in range(5):
                    expected[n, o, i, j] = (xp[n, :, i:i + 3, j:j + 3] * w[o]).sum() + b[o]
    np.testing.assert_allclose(layer.forward(x), expected, atol=1e-5)


def test_first_conv_skips_input_gradient_but_not_parameter_gradients() -> None:
    r = rng()
    full = Conv2d("a", 1, 2, 3, np.random.default_rng(5), padding=1)
    first = Conv2d("b", 1, 2, 3, np.random.default_rng(5), padding=1, input_grad=False)
    x = r.standard_normal((2, 1, 4, 4)).astype(np.float32)
    g = r.standard_normal((2, 2, 4, 4)).astype(np.float32)
    full.forward(x, train=True), first.forward(x, train=True)
    full.backward(g), first.backward(g)
    np.testing.assert_array_equal(full.grads["weight"], first.grads["weight"])


def test_relu_gradients() -> None:
    x = rng().standard_normal((3, 4, 5))
    x[np.abs(x) < 1e-2] = 0.5  # keep away from the kink
    check_layer(ReLU("r"), x)


def test_maxpool_gradients_and_values() -> None:
    x = rng().permutation(2 * 3 * 4 * 6).reshape(2, 3, 4, 6).astype(np.float64) / 10.0  # no ties
    check_layer(MaxPool2d("p", 2), x)
    out = MaxPool2d("p", 2).forward(x)
    assert out.shape == (2, 3, 2, 3)
    assert out[0, 0, 0, 0] == x[0, 0, :2, :2].max()


def test_maxpool_rejects_sizes_it_cannot_tile() -> None:
    from splitseal.errors import ModelError

    with pytest.raises(ModelError, match="not a multiple"):
        MaxPool2d("p", 2).forward(np.zeros((1, 1, 5, 4)))


def test_flatten_gradients() -> None:
    check_layer(Flatten("f"), rng().standard_normal((2, 3, 2, 2)))


def test_linear_gradients() -> None:
    r = rng()
    layer = Linear("l", 5, 4, r)
    layer.params["bias"] = r.standard_normal(4)
    check_layer(layer, r.standard_normal((3, 5)))


def test_softmax_gradients() -> None:
    check_layer(Softmax("s"), rng().standard_normal((3, 5)))


def test_cosine_classifier_gradients() -> None:
    r = rng()
    check_layer(CosineClassifier("cos", 6, 4, r, scale=3.0), r.standard_normal((3, 6)))


def test_softmax_cross_entropy_gradient_and_value() -> None:
    r = rng()
    logits = r.standard_normal((4, 5))
    labels = np.array([0, 3, 4, 1])
    loss, grad = softmax_cross_entropy(logits, labels)
    expected = -np.mean(np.log(softmax(logits)[np.arange(4), labels]))
    assert loss == pytest.approx(expected, rel=1e-12)
    assert_close(grad, numeric_grad(lambda: softmax_cross_entropy(logits, labels)[0], logits))


@pytest.mark.parametrize("name", ["digits_classifier", "digits_embedding"])
def test_whole_training_network_gradients(name: str) -> None:
    """The composition (backbone, neck, head, training loss) on two images, every 7th weight."""
    network = build(get_spec(name), np.random.default_rng(7))
    model: Sequential = network.training.astype(np.float64)
    for _, layer, key in model.parameters():
        if key == "bias":
            layer.params[key] = np.random.default_rng(3).standard_normal(layer.params[key].shape) * 0.1
    x = np.random.default_rng(8).random((2, 1, 16, 16))
    y = np.array([3, 7])
    _, g = softmax_cross_entropy(model.forward(x, train=True), y)
    model.backward(g)
    for full, layer, key in model.parameters():
        p = layer.params[key].reshape(-1)
        for i in range(0, p.size, 97 if p.size > 500 else 7):
            old = p[i]
            p[i] = old + EPS
            up = softmax_cross_entropy(model.forward(x), y)[0]
            p[i] = old - EPS
            down = softmax_cross_entropy(model.forward(x), y)[0]
            p[i] = old
            numeric = (up - down) / (2 * EPS)
            assert layer.grads[key].reshape(-1)[i] == pytest.approx(numeric, abs=1e-6), (full, i)


def test_backward_before_forward_is_a_clear_error() -> None:
    from splitseal.errors import ModelError

    with pytest.raises(ModelError, match="before forward"):
        Linear("neck.fc", 3, 2, rng()).backward(np.zeros((1, 2)))
