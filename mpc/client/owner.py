"""The model owner: the embedding model in plaintext, and its distribution to the N nodes.

Two modes, as the patent describes:

* **shared** (formula (1)): every weight and bias is encoded in fixed point and split into N
  additive shares mod 2^64, ``W = W_0 + ... + W_{N-1}``; node i receives ``W_i`` only. No node
  holds the model.
* **plaintext kernels**: every node receives the same plaintext kernels (fixed point); cheaper
  (linear layers are local), protects the input and features but not the model.

The plaintext model is a list of :class:`FloatLayer` (the operator subset the MPC protocol runs:
Conv, Relu/Sigmoid/Tanh, MaxPool/AveragePool with stride = kernel, Flatten, Gemm/MatMul+Add, and
BatchNormalization folded into the preceding Conv). :func:`load_onnx` reads it from an ONNX file
(the embedding model ``models/digits_embedding.onnx``), :func:`random_model` builds one with
random weights, :func:`plain_forward` is the plaintext reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mpc.engine.matmul import conv2d_float
from mpc.engine.protocol import Layer, NodeModel, activate, pool_windows
from mpc.engine.ring import encode, share
from splitseal.errors import ModelError, UnsupportedOperatorError

log = logging.getLogger(__name__)


@dataclass
class FloatLayer:
    op: str  # conv | linear | act | pool | flatten
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class FloatModel:
    input_shape: tuple[int, int, int]
    layers: list[FloatLayer]

    @property
    def output_dim(self) -> int:
        lin = [la for la in self.layers if la.op == "linear"]
        if not lin:
            raise ModelError("the embedding model has no fully connected layer")
        return int(lin[-1].weight.shape[0])


def plain_forward(model: FloatModel, x: np.ndarray) -> np.ndarray:
    """Plaintext float64 reference of the same layers, (B, C, H, W) -> (B, D)."""
    x = np.asarray(x, dtype=np.float64)
    for layer in model.layers:
        if layer.op == "conv":
            x = conv2d_float(x, layer.weight, layer.bias, int(layer.params.get("stride", 1)),
                             int(layer.params.get("padding", 0)))
        elif layer.op == "linear":
            x = x.reshape(x.shape[0], -1) @ layer.weight.T.astype(np.float64)
            if layer.bias is not None:
                x = x + layer.bias
        elif layer.op == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif layer.op == "act":
            x = activate(layer.params["kind"], x)
        elif layer.op == "pool":
            k = int(layer.params["k"])
            b, c, h, w = x.shape
            ho, wo = h // k, w // k
            win = x[:, :, :ho * k, :wo * k].reshape(b, c, ho, k, wo, k).transpose(0, 1, 2, 4, 3, 5)
            x = pool_windows(layer.params["kind"], win.reshape(-1, k * k)).reshape(b, c, ho, wo)
    return x.reshape(x.shape[0], -1)


def random_model(spec: Sequence[tuple], input_shape: tuple[int, int, int], seed: int = 0) -> FloatModel:
    """A random-weight network from a compact spec, He-initialised so activations stay O(1).

    spec items: ("conv", cout, k) | ("act", kind) | ("pool", kind, k) | ("flatten",) |
    ("linear", out).
    """
    rng = np.random.default_rng(seed)
    layers: list[FloatLayer] = []
    shape = tuple(input_shape)
    for item in spec:
        op = item[0]
        if op == "conv":
            cout, k = item[1], item[2]
            fan = shape[0] * k * k
            layers.append(FloatLayer("conv", rng.standard_normal((cout, shape[0], k, k)) * np.sqrt(2 / fan),
                                     rng.standard_normal(cout) * 0.05, {"stride": 1, "padding": 0}))
            shape = (cout, shape[1] - k + 1, shape[2] - k + 1)
        elif op == "act":
            layers.append(FloatLayer("act", params={"kind": item[1]}))
        elif op == "pool":
            layers.append(FloatLayer("pool", params={"kind": item[1], "k": item[2]}))
            shape = (shape[0], shape[1] // item[2], shape[2] // item[2])
        elif op == "flatten":
            layers.append(FloatLayer("flatten"))
            shape = (int(np.prod(shape)),)
        elif op == "linear":
            fan = int(np.prod(shape))
            layers.append(FloatLayer("linear", rng.standard_normal((item[1], fan)) * np.sqrt(1 / fan),
                                     rng.standard_normal(item[1]) * 0.05))
            shape = (item[1],)
        else:
            raise ModelError(f"unknown layer kind {op!r} in spec")
    return FloatModel(tuple(input_shape), layers)


SMALL_SPEC = [("conv", 8, 5), ("act", "relu"), ("pool", "max", 2), ("conv", 16, 5), ("act", "relu"),
              ("pool", "max", 2), ("flatten",), ("linear", 64)]
BIG_SPEC = [("conv", 16, 3), ("act", "relu"), ("pool", "max", 2), ("conv", 32, 3), ("act", "relu"),
            ("pool", "max", 2), ("flatten",), ("linear", 128)]


def node_models(model: FloatModel, n_parties: int, shared: bool, frac_bits: int = 16,
                weight_frac_bits: int = 20) -> list[NodeModel]:
    """What each node receives: shares of every parameter (shared) or the same plaintext kernels.

    Weights are encoded with ``weight_frac_bits`` fractional bits, biases with
    ``frac_bits + weight_frac_bits`` (they are added to products of activations and weights).
    """
    per_node: list[list[Layer]] = [[] for _ in range(n_parties)]
    for layer in model.layers:
        if layer.op in ("conv", "linear"):
            w = encode(layer.weight, weight_frac_bits)
            b = encode(layer.bias, frac_bits + weight_frac_bits) if layer.bias is not None else None
            if shared:
                ws = share(w, n_parties)
                bs = share(b, n_parties) if b is not None else [None] * n_parties
                for i in range(n_parties):
                    per_node[i].append(Layer(layer.op, ws[i], bs[i], dict(layer.params)))
            else:
                for i in range(n_parties):
                    per_node[i].append(Layer(layer.op, w.view(np.int64), None if b is None else b.view(np.int64),
                                             dict(layer.params)))
        else:
            for i in range(n_parties):
                per_node[i].append(Layer(layer.op, None, None, dict(layer.params)))
    import os

    model_id = os.urandom(16).hex()
    out = [NodeModel(model.input_shape, layers, shared, frac_bits, model_id, weight_frac_bits) for layers in per_node]
    for m in out:
        m.validate()
    return out


def recorded_threshold(model_path: str | Path) -> float | None:
    """The acceptance threshold recorded next to a trained model (``<name>.metrics.json``, key
    ``threshold`` — the equal-error-rate cosine threshold), or None."""
    import json

    model_path = Path(model_path)
    for cand in (model_path.with_name(model_path.stem + ".metrics.json"), model_path.with_suffix(".json")):
        if not cand.exists():
            continue
        try:
            data = json.loads(cand.read_text())
        except ValueError:
            continue
        if isinstance(data, dict):
            for scope in (data, data.get("metrics") if isinstance(data.get("metrics"), dict) else {}):
                for key in ("threshold", "eer_threshold", "verification_threshold"):
                    if isinstance(scope.get(key), (int, float)):
                        return float(scope[key])
    return None


# --- ONNX --------------------------------------------------------------------------------------

def load_onnx(path: str | Path) -> FloatModel:
    """Read a sequential embedding model from ONNX into the MPC operator subset.

    Supported: Conv (group 1, any stride/pads symmetric), Relu, Sigmoid, Tanh, MaxPool and
    AveragePool (stride = kernel, no padding), Flatten, Reshape to (B, -1), Gemm (transB 0/1),
    MatMul followed by Add, BatchNormalization after a Conv (folded), Identity/Dropout (skipped),
    and a final LpNormalization (skipped: cosine similarity is scale invariant).
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    path = Path(path)
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        proto = shape_inference.infer_shapes(proto)
    except Exception as exc:  # onnx raises several unrelated types
        raise ModelError(f"{path}: not a valid ONNX model ({type(exc).__name__}); re-export it") from None
    g = proto.graph
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
    consts = {}
    for node in g.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    graph_inputs = [i for i in g.input if i.name not in inits]
    if len(graph_inputs) != 1:
        raise ModelError(f"{path}: expected one data input, found {len(graph_inputs)}")
    dims = [d.dim_value for d in graph_inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or min(dims[1:]) <= 0:
        raise ModelError(f"{path}: input must be (batch, C, H, W) with known C, H, W; got {dims}")
    layers: list[FloatLayer] = []
    for node in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        if op == "Constant" or op in ("Identity", "Dropout", "LpNormalization"):
            continue
        if op == "Conv":
            if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
                raise UnsupportedOperatorError(f"{path}: Conv node {node.name!r}: group/dilation not supported")
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            strides = list(attrs.get("strides", [1, 1]))
            if len(set(pads)) > 1 or len(set(strides)) > 1:
                raise UnsupportedOperatorError(f"{path}: Conv node {node.name!r}: asymmetric pads/strides")
            w = inits[node.input[1]]
            b = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
            layers.append(FloatLayer("conv", w, b, {"stride": strides[0], "padding": pads[0]}))
        elif op == "BatchNormalization":
            if not layers or layers[-1].op != "conv":
                raise UnsupportedOperatorError(f"{path}: BatchNormalization node {node.name!r} must follow a Conv")
            scale, bias, mean, var = (inits[n] for n in node.input[1:5])
            k = scale / np.sqrt(var + attrs.get("epsilon", 1e-5))
            conv = layers[-1]
            conv.weight = conv.weight * k[:, None, None, None]
            conv.bias = (conv.bias - mean) * k + bias
        elif op in ("Relu", "Sigmoid", "Tanh"):
            layers.append(FloatLayer("act", params={"kind": op.lower()}))
        elif op in ("MaxPool", "AveragePool"):
            ks = list(attrs["kernel_shape"])
            strides = list(attrs.get("strides", ks))
            if len(set(ks)) > 1 or strides != ks or any(attrs.get("pads", [0])):
                raise UnsupportedOperatorError(
                    f"{path}: {op} node {node.name!r}: only square windows with stride = kernel, no padding")
            layers.append(FloatLayer("pool", params={"kind": "max" if op == "MaxPool" else "avg", "k": ks[0]}))
        elif op in ("Flatten", "Reshape"):
            layers.append(FloatLayer("flatten"))
        elif op == "Gemm":
            w = inits[node.input[1]] * attrs.get("alpha", 1.0)
            if not attrs.get("transB", 0):
                w = w.T
            if attrs.get("transA", 0):
                raise UnsupportedOperatorError(f"{path}: Gemm node {node.name!r}: transA not supported")
            b = inits[node.input[2]] * attrs.get("beta", 1.0) if len(node.input) > 2 else None
            layers.append(FloatLayer("linear", w, b))
        elif op == "MatMul":
            layers.append(FloatLayer("linear", inits[node.input[1]].T, None))
        elif op == "Add" and layers and layers[-1].op == "linear" and layers[-1].bias is None:
            other = node.input[1] if node.input[1] in inits else node.input[0]
            layers[-1].bias = inits[other].reshape(-1)
        else:
            raise UnsupportedOperatorError(
                f"{path}: node {node.name!r} uses {op}, outside the MPC operator set "
                "(Conv, BatchNormalization, Relu, Sigmoid, Tanh, MaxPool, AveragePool, Flatten, Gemm, MatMul+Add)")
    model = FloatModel((dims[1], dims[2], dims[3]), layers)
    model.output_dim  # noqa: B018 - validates a linear layer exists
    return model
