"""A minimal numpy layer library with hand-written forward and backward passes.

No autograd: each layer caches what its backward pass needs during ``forward(train=True)`` and
returns the gradient with respect to its input from ``backward``, storing the gradients of its
parameters in ``grads``. Layers keep the dtype of their parameters, so training runs in float32
(BLAS sgemm through im2col) and the gradient checks in the tests run the same code in float64.

Each layer also knows how to express itself as ONNX nodes (:meth:`Layer.onnx`), so the exported
graph is built from the very objects that were trained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from splitseal.errors import ModelError

if TYPE_CHECKING:
    from onnx import TensorProto

#: (ONNX nodes, initializers) of one layer; onnx loads when a layer is exported, not when the
#: CLI lists the models
OnnxPart = tuple[list[Any], list[Any]]


def _helpers() -> Any:
    import onnx.helper

    return onnx.helper


class Layer:
    """Base class: a named operation with optional parameters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """The layer's output; with ``train`` it also caches what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """d loss / d input from d loss / d output; fills ``grads`` for the parameters."""
        raise NotImplementedError

    def onnx(self, input_name: str, output_name: str) -> OnnxPart:
        """ONNX nodes (named after this layer) and initializers computing this layer."""
        raise NotImplementedError

    def _initializers(self) -> list["TensorProto"]:
        from onnx import numpy_helper

        return [numpy_helper.from_array(np.ascontiguousarray(v, dtype=np.float32), f"{self.name}.{k}")
                for k, v in self.params.items()]

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.name!r}{', ' + shapes if shapes else ''})"


def _require_forward(layer: Layer, cache: object) -> None:
    """Backward needs what forward(train=True) cached; say so instead of failing obscurely."""
    if cache is None:
        raise ModelError(f"{layer.name}: backward called before forward(train=True)")


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """He initialisation: keeps activation variance steady through ReLU layers."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


class Conv2d(Layer):
    """2-D convolution (cross-correlation, as ONNX Conv) computed by im2col and one matmul."""

    def __init__(self, name: str, in_channels: int, out_channels: int, kernel: int,
                 rng: np.random.Generator, stride: int = 1, padding: int = 0,
                 input_grad: bool = True) -> None:
        super().__init__(name)
        self.kernel, self.stride, self.padding = kernel, stride, padding
        #: False for a first layer: the gradient w.r.t. the image is never used, skip col2im.
        self.input_grad = input_grad
        fan_in = in_channels * kernel * kernel
        self.params["weight"] = he_normal(rng, (out_channels, in_channels, kernel, kernel), fan_in)
        self.params["bias"] = np.zeros(out_channels, dtype=np.float32)
        self._cache: tuple[np.ndarray, tuple[int, ...], int, int] | None = None

    def _im2col(self, x: np.ndarray) -> tuple[np.ndarray, int, int]:
        n, c, h, w = x.shape
        k, s, p = self.kernel, self.stride, self.padding
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
        win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]  # N C OH OW k k
        oh, ow = win.shape[2], win.shape[3]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * k * k)
        return cols, oh, ow

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        w, b = self.params["weight"], self.params["bias"]
        if x.ndim != 4 or x.shape[1] != w.shape[1]:
            raise ModelError(f"{self.name}: expected input (N, {w.shape[1]}, H, W), got {x.shape}")
        cols, oh, ow = self._im2col(x)
        out = cols @ w.reshape(w.shape[0], -1).T + b
        if train:
            self._cache = (cols, x.shape, oh, ow)
        return out.reshape(x.shape[0], oh, ow, w.shape[0]).transpose(0, 3, 1, 2)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        _require_forward(self, self._cache)
        cols, xshape, oh, ow = self._cache
        w = self.params["weight"]
        o = w.shape[0]
        n, c, h, wd = xshape
        k, s, p = self.kernel, self.stride, self.padding
        g = grad.transpose(0, 2, 3, 1).reshape(-1, o)
        self.grads["weight"] = (g.T @ cols).reshape(w.shape)
        self.grads["bias"] = g.sum(axis=0)
        if not self.input_grad:
            return np.zeros(xshape, dtype=grad.dtype)
        dcols = (g @ w.reshape(o, -1)).reshape(n, oh, ow, c, k, k)
        dxp = np.zeros((n, c, h + 2 * p, wd + 2 * p), dtype=grad.dtype)
        for i in range(k):
            for j in range(k):
                dxp[:, :, i:i + s * oh:s, j:j + s * ow:s] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
        return dxp[:, :, p:p + h, p:p + wd] if p else dxp

    def onnx(self, input_name: str, output_name: str) -> OnnxPart:
        helper = _helpers()
        k, s, p = self.kernel, self.stride, self.padding
        node = helper.make_node("Conv", [input_name, f"{self.name}.weight", f"{self.name}.bias"],
                                [output_name], name=self.name, kernel_shape=[k, k], strides=[s, s],
                                pads=[p, p, p, p], dilations=[1, 1], group=1)
        return [node], self._initializers()


class ReLU(Layer):
    """max(x, 0)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        mask = x > 0
        if train:
            self._mask = mask
        return np.where(mask, x, np.zeros((), dtype=x.dtype))

    def backward(self, grad: np.ndarray) -> np.ndarray:
        _require_forward(self, self._mask)
        return np.where(self._mask, grad, np.zeros((), dtype=grad.dtype))

    def onnx(self, input_name: str, output_name: str) -> OnnxPart:
        helper = _helpers()
        return [helper.make_node("Relu", [input_name], [output_name], name=self.name)], []


class MaxPool2d(Layer):
    """Non-overlapping max pooling (kernel = stride); the input sides must be multiples of it."""

    def __init__(self, name: str, kernel: int = 2) -> None:
        super().__init__(name)
        self.kernel = kernel
        self._cache: tuple[np.ndarray, tuple[int, ...]] | None = None

    def _windows(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        k = self.kernel
        if h % k or w % k:
            raise ModelError(f"{self.name}: input {h}x{w} is not a multiple of the pool size {k}")
        return x.reshape(n, c, h // k, k, w // k, k).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // k, w // k, k * k)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        win = self._windows(x)
        idx = win.argmax(axis=-1)
        if train:
            self._cache = (idx, x.shape)
        return np.take_along_axis(win, idx[..., None], axis=-1)[..., 0]

    def backward(self, grad: np.ndarray) -> np.ndarray:
        _require_forward(self, self._cache)
        idx, (n, c, h, w) = self._cache
        k = self.kernel
        dwin = np.zeros((n, c, h // k, w // k, k * k), dtype=grad.dtype)
        np.put_along_axis(dwin, idx[..., None], grad[..., None], axis=-1)
        return dwin.reshape(n, c, h // k, w // k, k, k).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)

    def onnx(self, input_name: str, output_name: str) -> OnnxPart:
        helper = _helpers()
        k = self.kernel
        node = helper.make_node("MaxPool", [input_name], [output_name], name=self.name,
                                kernel_shape=[k, k], strides=[k, k], pads=[0, 0, 0, 0])
        return [node], []


class Flatten(Layer):
    """(N, ...) -> (N, prod(...)), row-major, as ONNX Flatten(axis=1)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if train:
            self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        _require_forward(self, self._shape)
        return grad.reshape(self._shape)

    def onnx(self, input_name: str, output_name: str) -> OnnxPart:
        helper = _helpers()
        return [helper.make_node("Flatten", [input_name], [output_name], name=self.name, axis=1)], []


class Linear(Layer):
    """Fully connected layer y = x W^T + b, exported as Gemm(transB=1)."""

    def __init__(self, name: str, in_features: int, out_features: int, rng: np.random.Generator) -> None:
        super().__init__(name)
        self.params["weight"] = he_normal(rng, (out_features, in_features), in_features)
        self.params["bias"] = np.zeros(out_features, dtype=np.float32)
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        w = self.params["weight"]
        if x.ndim != 2 or x.shape[1] != w.shape[1]:
            raise ModelError(f"{self.name}: expected input (N, {w.shape[1]}), got {x.shape}")
        if train:
            self._x = x
        return x @ w.T + self.params["bias"]

    def backward(self, grad: np.ndarray) -> np.ndarray:
        _require_forward(self, self._x)
        self.grads["weight"] = grad.T @ self._x
        self.grads["bias"] = grad.sum(axis=0)
        return grad @ self.params["weight"]

    def onnx(self, input_name: str, output_name: str) -> OnnxPart:
        helper = _helpers()
        node = helper.make_node("Gemm", [input_name, f"{self.name}.weight", f"{self.name}.bias"],
                                [output_name], name=self.name, alpha=1.0, beta=1.0, transA=0, transB=1)
        return [node], self._initializers()


class Softmax(Layer):
    """Softmax over the class axis (axis 1 of (N, K))."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        y = softmax(x)
        if train:
            self._y = y
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        _require_forward(self, self._y)
        y = self._y
        return y * (grad - (grad * y).sum(axis=1, keepdims=True))

    def onnx(self, input_name: str, output_name: str) -> OnnxPart:
        helper = _helpers()
        return [helper.make_node("Softmax", [input_name], [output_name], name=self.name, axis=1)], []


class CosineClassifier(Layer):
    """Training-only head: logits = scale * cos(x, w_k) (normalised features and class weights).

    Used to train the embedding model so that same-class feature vectors point the same way
    (NormFace); it is dropped before export, so it never appears in an ONNX graph.
    """

    def __init__(self, name: str, in_features: int, classes: int, rng: np.random.Generator,
                 scale: float = 16.0, eps: float = 1e-12) -> None:
        super().__init__(name)
        self.scale, self.eps = scale, eps
        self.params["weight"] = he_normal(rng, (classes, in_features), in_features)
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        w = self.params["weight"]
        xnorm = np.sqrt((x * x).sum(axis=1, keepdims=True) + self.eps)
        wnorm = np.sqrt((w * w).sum(axis=1, keepdims=True) + self.eps)
        xn, wn = x / xnorm, w / wnorm
        if train:
            self._cache = (xn, xnorm, wn, wnorm)
        return self.scale * (xn @ wn.T)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        _require_forward(self, self._cache)
        xn, xnorm, wn, wnorm = self._cache
        g = grad * self.scale
        dxn, dwn = g @ wn, g.T @ xn
        self.grads["weight"] = (dwn - wn * (dwn * wn).sum(axis=1, keepdims=True)) / wnorm
        return (dxn - xn * (dxn * xn).sum(axis=1, keepdims=True)) / xnorm

    def onnx(self, input_name: str, output_name: str) -> OnnxPart:
        raise ModelError(f"{self.name}: the cosine training head is not part of any exported model")


def softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over axis 1."""
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean multi-class cross-entropy of ``logits`` (N, K) and its gradient w.r.t. the logits."""
    n = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    logsum = np.log(np.exp(z).sum(axis=1, keepdims=True))
    logp = z - logsum
    loss = float(-logp[np.arange(n), labels].mean())
    grad = np.exp(logp)
    grad[np.arange(n), labels] -= 1.0
    return loss, grad / n


class Sequential:
    """An ordered chain of layers; parameters are addressed as ``<layer name>.<param>``."""

    def __init__(self, layers: Iterable[Layer]) -> None:
        self.layers = list(layers)
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ModelError(f"duplicate layer names in {names}")

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, grad: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def parameters(self) -> Iterator[tuple[str, Layer, str]]:
        """(full name, layer, key) of every parameter, in layer order."""
        for layer in self.layers:
            for key in layer.params:
                yield f"{layer.name}.{key}", layer, key

    def state(self) -> dict[str, np.ndarray]:
        """Copies of all parameters by full name."""
        return {name: layer.params[key].copy() for name, layer, key in self.parameters()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Replace parameters from ``state``; shapes must match exactly."""
        for name, layer, key in self.parameters():
            if name not in state:
                raise ModelError(f"parameter {name} missing from the state to load")
            value = np.asarray(state[name])
            if value.shape != layer.params[key].shape:
                raise ModelError(f"parameter {name}: shape {value.shape} != {layer.params[key].shape}")
            layer.params[key] = value.astype(layer.params[key].dtype, copy=True)

    def astype(self, dtype: np.dtype | type) -> "Sequential":
        """Cast every parameter (in place) to ``dtype``; the gradient checks use float64."""
        for _, layer, key in self.parameters():
            layer.params[key] = layer.params[key].astype(dtype)
        return self
