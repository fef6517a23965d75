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
(the embedding model ``models/digits_embedding.onnx``) with the project's one importer,
:mod:`splitseal.onnx_import`, and :func:`lower` s the imported model into these layers;
:func:`random_model` builds one with random weights, :func:`plain_forward` is the plaintext
reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mpc.engine.matmul import conv2d_float
from mpc.engine.protocol import Layer, NodeModel, activate, pool_windows
from mpc.engine.ring import encode, share
from splitseal.errors import ModelError, UnsupportedOperatorError

if TYPE_CHECKING:
    from splitseal.onnx_import import ImportedModel

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


# --- ONNX ---------------------------------------------------------------------------------------

#: The operators :func:`lower` turns into MPC layers (or skips), each with the attribute names the
#: importer lets through; unsupported attribute *values* are refused by :func:`lower`.
MPC_OPERATORS: dict[str, frozenset[str]] = {
    "Conv": frozenset({"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}),
    "BatchNormalization": frozenset({"epsilon", "momentum", "training_mode"}),
    "Relu": frozenset(), "Sigmoid": frozenset(), "Tanh": frozenset(),
    "MaxPool": frozenset({"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"}),
    "AveragePool": frozenset({"auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads",
                              "strides"}),
    "Flatten": frozenset({"axis"}),
    "Reshape": frozenset({"allowzero"}),
    "Gemm": frozenset({"alpha", "beta", "transA", "transB"}),
    "MatMul": frozenset(),
    "Add": frozenset(),
    "Identity": frozenset(),
    "Dropout": frozenset({"ratio", "seed"}),
    "LpNormalization": frozenset({"axis", "p"}),
}
#: ai.onnx opsets accepted for the MPC lowering (these operators' semantics are unchanged in it).
MPC_OPSETS = (7, 23)
_SKIPPED = ("Identity", "Dropout", "LpNormalization")
_OP_LIST = "(Conv, BatchNormalization, Relu, Sigmoid, Tanh, MaxPool, AveragePool, Flatten, Gemm, MatMul+Add)"


def load_onnx(path: str | Path) -> FloatModel:
    """Read a sequential embedding model from ONNX into the MPC operator subset.

    The project's one importer (:func:`splitseal.onnx_import.load_model`: checker, opset,
    operator and attribute scan against :data:`MPC_OPERATORS`, Constant folding, strict shape
    inference) followed by :func:`lower`.
    """
    from splitseal.onnx_import import load_model

    path = Path(path)
    return lower(load_model(path, operators=MPC_OPERATORS, opsets=MPC_OPSETS), str(path))


def lower(imported: "ImportedModel", label: str = "model") -> FloatModel:
    """Lower an imported model into :class:`FloatLayer` s, node by node in graph order.

    Supported: Conv (group 1, no dilation, symmetric pads and strides), Relu, Sigmoid, Tanh,
    MaxPool and AveragePool (square, stride = kernel, no padding), Flatten / Reshape to
    (B, features), Gemm (transA 0, transB 0/1, alpha/beta folded), MatMul followed by Add,
    BatchNormalization after a Conv (folded into it), Identity/Dropout (skipped), and a final
    LpNormalization (skipped: cosine similarity is scale invariant). The model must be a chain:
    every node reads the previous node's output, and the shape each layer produces must be the
    one shape inference found for that node.
    """
    from splitseal.onnx_import import attributes

    if len(imported.inputs) != 1:
        raise ModelError(f"{label}: expected one data input, found {len(imported.inputs)}")
    dims = list(imported.inputs[0].shape)
    if len(dims) != 4 or min(dims[1:]) <= 0:
        raise ModelError(f"{label}: input must be (batch, C, H, W) with known C, H, W; got {dims}")
    inits = {k: v.astype(np.float64) for k, v in imported.initializers.items() if v.dtype != np.int64}
    nodes = imported.nodes
    layers: list[FloatLayer] = []
    cur = imported.inputs[0].name
    shape: tuple[int, ...] = tuple(dims[1:])

    for index, node in enumerate(nodes):
        op = node.op_type
        where = f"{label}: {op} node {node.name!r}"
        attrs = attributes(node)

        def param(i: int, what: str) -> np.ndarray:
            name = node.input[i] if len(node.input) > i else ""
            if name not in inits:
                raise UnsupportedOperatorError(f"{where}: the {what} must be a constant of the model")
            return inits[name]

        data = [i for i in node.input if i and i not in imported.initializers]
        if data != [cur]:
            raise UnsupportedOperatorError(f"{where} reads {data}, not the previous output {cur!r}: the MPC "
                                           "protocol runs sequential models only")
        if op in _SKIPPED:
            if op == "LpNormalization" and index != len(nodes) - 1:
                raise UnsupportedOperatorError(f"{where}: LpNormalization is supported only as the last node")
        elif op == "Conv":
            if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
                raise UnsupportedOperatorError(f"{label}: Conv node {node.name!r}: group/dilation not supported")
            _no_same_padding(attrs, where)
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            strides = list(attrs.get("strides", [1, 1]))
            if len(set(pads)) > 1 or len(set(strides)) > 1:
                raise UnsupportedOperatorError(f"{label}: Conv node {node.name!r}: asymmetric pads/strides")
            w = param(1, "weight")
            b = param(2, "bias") if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
            layers.append(FloatLayer("conv", w, b, {"stride": strides[0], "padding": pads[0]}))
            k, st, pad = w.shape[2], strides[0], pads[0]
            shape = (w.shape[0], (shape[1] + 2 * pad - k) // st + 1, (shape[2] + 2 * pad - k) // st + 1)
        elif op == "BatchNormalization":
            if not layers or layers[-1].op != "conv":
                raise UnsupportedOperatorError(f"{label}: BatchNormalization node {node.name!r} must follow a Conv")
            if attrs.get("training_mode", 0):
                raise UnsupportedOperatorError(f"{where}: training_mode is not supported")
            scale, bias, mean, var = (param(i, "scale/bias/mean/var") for i in range(1, 5))
            k = scale / np.sqrt(var + attrs.get("epsilon", 1e-5))
            conv = layers[-1]
            conv.weight = conv.weight * k[:, None, None, None]
            conv.bias = (conv.bias - mean) * k + bias
        elif op in ("Relu", "Sigmoid", "Tanh"):
            layers.append(FloatLayer("act", params={"kind": op.lower()}))
        elif op in ("MaxPool", "AveragePool"):
            ks = list(attrs["kernel_shape"])
            strides = list(attrs.get("strides", ks))
            _no_same_padding(attrs, where)
            if (len(set(ks)) > 1 or strides != ks or any(attrs.get("pads", [0]))
                    or any(d != 1 for d in attrs.get("dilations", [1]))):
                raise UnsupportedOperatorError(
                    f"{label}: {op} node {node.name!r}: only square windows with stride = kernel, no padding")
            layers.append(FloatLayer("pool", params={"kind": "max" if op == "MaxPool" else "avg", "k": ks[0]}))
            shape = (shape[0], shape[1] // ks[0], shape[2] // ks[0])
        elif op in ("Flatten", "Reshape"):
            layers.append(FloatLayer("flatten"))
            shape = (int(np.prod(shape)),)
        elif op == "Gemm":
            if attrs.get("transA", 0):
                raise UnsupportedOperatorError(f"{label}: Gemm node {node.name!r}: transA not supported")
            w = param(1, "weight (operand B)") * attrs.get("alpha", 1.0)
            if not attrs.get("transB", 0):
                w = w.T
            b = None
            if len(node.input) > 2 and node.input[2]:
                b = _bias(param(2, "bias (operand C)") * attrs.get("beta", 1.0), w.shape[0], where)
            layers.append(FloatLayer("linear", w, b))
            shape = (w.shape[0],)
        elif op == "MatMul":
            w = param(1, "weight (second operand)").T
            layers.append(FloatLayer("linear", w, None))
            shape = (w.shape[0],)
        elif op == "Add" and layers and layers[-1].op == "linear" and layers[-1].bias is None:
            other = next(i for i in node.input if i != cur)
            if other not in inits:
                raise UnsupportedOperatorError(f"{where}: the bias must be a constant of the model")
            layers[-1].bias = _bias(inits[other], layers[-1].weight.shape[0], where)
        else:
            raise UnsupportedOperatorError(
                f"{label}: node {node.name!r} uses {op}, outside the MPC operator set {_OP_LIST}")
        cur = node.output[0]
        inferred = tuple(imported.values[cur].shape[1:])
        if inferred != shape:
            raise UnsupportedOperatorError(
                f"{where}: the MPC layers compute shape {shape}, the model {inferred} (per example); "
                "re-export it with explicit pads, floor rounding and (batch, features) flattening")
    model = FloatModel((dims[1], dims[2], dims[3]), layers)
    model.output_dim  # noqa: B018 - validates a linear layer exists
    return model


def _no_same_padding(attrs: dict[str, Any], where: str) -> None:
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedOperatorError(f"{where}: auto_pad {attrs['auto_pad']} is not supported; "
                                       "give explicit pads")


def _bias(b: np.ndarray, out: int, where: str) -> np.ndarray:
    try:
        return np.broadcast_to(np.asarray(b, dtype=np.float64), (1, out)).reshape(-1).copy()
    except ValueError:
        raise UnsupportedOperatorError(f"{where}: a bias of shape {b.shape} does not fit {out} outputs") from None
