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

from mpc.engine.matmul import ConvSpec, conv_float
from mpc.engine.protocol import Layer, NodeModel, PoolSpec, activate, layer_inputs, pool_windows
from mpc.engine.ring import encode, share
from splitseal.errors import ModelError, UnsupportedOperatorError

if TYPE_CHECKING:
    from splitseal.onnx_import import ImportedModel

log = logging.getLogger(__name__)


@dataclass
class FloatLayer:
    op: str  # conv | linear | act | pool | flatten | sumpool | mulc | add | concat (mpc.engine.protocol.OPS)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class FloatModel:
    input_shape: tuple[int, int, int]
    layers: list[FloatLayer]
    #: length of the feature vector (None: the last linear layer's outputs)
    features: int | None = None

    @property
    def output_dim(self) -> int:
        if self.features is not None:
            return int(self.features)
        lin = [la for la in self.layers if la.op == "linear"]
        if not lin:
            raise ModelError("the embedding model has no fully connected layer")
        return int(lin[-1].weight.shape[0])


def plain_forward(model: FloatModel, x: np.ndarray) -> np.ndarray:
    """Plaintext float64 reference of the same layers (a DAG), (B, C, H, W) -> (B, D)."""
    vals: dict[int, np.ndarray] = {-1: np.asarray(x, dtype=np.float64)}
    for i, layer in enumerate(model.layers):
        args = [vals[j] for j in layer_inputs(layer, i)]
        x = args[0]
        op = layer.op
        if op == "conv":
            x = conv_float(x, layer.weight, layer.bias, ConvSpec.from_params(layer.params))
        elif op == "linear":
            x = x.reshape(x.shape[0], -1) @ layer.weight.T.astype(np.float64)
            if layer.bias is not None:
                x = x + layer.bias
        elif op == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif op == "act":
            slope = None
            if layer.params["kind"] == "prelu":
                sl = np.asarray(layer.params["slope"], dtype=np.float64)
                slope = sl.reshape((1, -1) + (1,) * (x.ndim - 2)) if sl.size > 1 else float(sl[0])
            x = activate(layer.params["kind"], x, slope)
        elif op in ("pool", "sumpool"):
            ps = PoolSpec(layer.params)
            b, c, h, w = x.shape
            idx, valid, ho, wo = ps.index(h, w)
            win = x.reshape(b * c, h * w)[:, idx]
            if op == "sumpool":
                x = np.where(valid[None], win, 0.0).sum(axis=2).reshape(b, c, ho, wo)
            else:
                win = np.where(valid[None], win, -np.inf).reshape(-1, idx.shape[1])
                x = pool_windows(layer.params["kind"], win).reshape(b, c, ho, wo)
        elif op == "mulc":
            x = x * np.asarray(layer.weight, dtype=np.float64)
        elif op == "add":
            x = args[0] + args[1]
        elif op == "concat":
            x = np.concatenate(args, axis=int(layer.params.get("axis", 1)))
        vals[i] = x
    out = vals[len(model.layers) - 1]
    return out.reshape(out.shape[0], -1)


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
        if layer.op == "mulc":  # a public constant of the architecture (reciprocal window counts)
            c = encode(layer.weight, weight_frac_bits).view(np.int64)
            for i in range(n_parties):
                per_node[i].append(Layer("mulc", c, None, dict(layer.params)))
        elif layer.op in ("conv", "linear"):
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
    out = [NodeModel(tuple(model.input_shape), layers, shared, frac_bits, model_id, weight_frac_bits)
           for layers in per_node]
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

_POOL_ATTRS = frozenset({"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"})
#: The operators :func:`lower` turns into MPC layers (or skips), each with the attribute names the
#: importer lets through; unsupported attribute *values* are refused by :func:`lower`.
MPC_OPERATORS: dict[str, frozenset[str]] = {
    "Conv": frozenset({"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}),
    "BatchNormalization": frozenset({"epsilon", "momentum", "training_mode"}),
    "Relu": frozenset(), "Sigmoid": frozenset(), "Tanh": frozenset(), "PRelu": frozenset(),
    "MaxPool": _POOL_ATTRS,
    "AveragePool": _POOL_ATTRS | {"count_include_pad"},
    "GlobalAveragePool": frozenset(),
    "Flatten": frozenset({"axis"}),
    "Reshape": frozenset({"allowzero"}),
    "Gemm": frozenset({"alpha", "beta", "transA", "transB"}),
    "MatMul": frozenset(),
    "Add": frozenset(), "Sub": frozenset(), "Mul": frozenset(),
    "Concat": frozenset({"axis"}),
    "Identity": frozenset(),
    "Dropout": frozenset({"ratio", "seed"}),
    "LpNormalization": frozenset({"axis", "p"}),
}
#: ai.onnx opsets accepted for the MPC lowering (these operators' semantics are unchanged in it).
MPC_OPSETS = (7, 23)
_SKIPPED = ("Identity", "Dropout", "LpNormalization")
_OP_LIST = ("(Conv incl. grouped/depthwise/dilated/padded, BatchNormalization, Relu, PRelu, Sigmoid, Tanh, "
            "MaxPool, AveragePool, GlobalAveragePool, Add, Sub, Mul, Concat, Flatten/Reshape, Gemm, MatMul)")


def load_onnx(path: str | Path) -> FloatModel:
    """Read an embedding model from ONNX into the MPC operator subset.

    The project's one importer (:func:`splitseal.onnx_import.load_model`: checker, opset,
    operator and attribute scan against :data:`MPC_OPERATORS`, Constant folding, strict shape
    inference) followed by :func:`lower`.
    """
    from splitseal.onnx_import import load_model

    path = Path(path)
    return lower(load_model(path, operators=MPC_OPERATORS, opsets=MPC_OPSETS), str(path))


def lower(imported: "ImportedModel", label: str = "model") -> FloatModel:
    """Lower an imported model into :class:`FloatLayer` s: a DAG in graph order.

    Each layer's ``params["inputs"]`` names the layers it reads (-1 = the model input).
    Supported: Conv (groups incl. depthwise, dilations, asymmetric pads and strides),
    BatchNormalization (folded into the Conv or Gemm that produces its input when nothing else
    reads that, otherwise a per-channel affine), Relu, PRelu (scalar or per-channel slope),
    Sigmoid, Tanh, MaxPool (any window, stride and padding), AveragePool (tiling windows: one
    mask-recovery pool; otherwise a local window sum and a public reciprocal-count product),
    GlobalAveragePool (local), Add / Concat of data tensors, Add / Sub / Mul with a scalar or
    per-channel constant (an affine layer: a depthwise 1x1 conv, its constants shared like any
    weight in shared mode; folded into a following Flatten + Gemm), Flatten / Reshape to
    (B, features), Gemm (transA 0) and MatMul with a constant second operand (+ Add: its bias),
    Identity/Dropout (skipped), and a final LpNormalization (skipped: recognition's cosine is
    the L2 normalisation). Every layer's shape must be the one shape inference found.
    """
    from splitseal.onnx_import import attributes

    if len(imported.inputs) != 1:
        raise ModelError(f"{label}: expected one data input, found {len(imported.inputs)}")
    dims = list(imported.inputs[0].shape)
    if len(dims) != 4 or min(dims[1:]) <= 0:
        raise ModelError(f"{label}: input must be (batch, C, H, W) with known C, H, W; got {dims}")
    inits = {k: v.astype(np.float64) for k, v in imported.initializers.items() if v.dtype != np.int64}
    nodes = imported.nodes
    readers: dict[str, int] = {}
    for node in nodes:
        for i in node.input:
            readers[i] = readers.get(i, 0) + 1
    for o in imported.outputs:
        readers[o.name] = readers.get(o.name, 0) + 1
    layers: list[FloatLayer] = []
    #: ONNX value name -> (layer index or -1, per-example shape)
    where_is: dict[str, tuple[int, tuple[int, ...]]] = {imported.inputs[0].name: (-1, tuple(dims[1:]))}

    def add(layer: FloatLayer, src: list[int]) -> int:
        layer.params["inputs"] = src
        layers.append(layer)
        return len(layers) - 1

    def sole_reader(name: str, src: int) -> bool:
        return src >= 0 and readers.get(name, 0) == 1 and all(
            src not in la.params["inputs"] for la in layers[src + 1:])

    for index, node in enumerate(nodes):
        op = node.op_type
        where = f"{label}: {op} node {node.name!r}"
        attrs = attributes(node)
        data = [i for i in node.input if i and i not in imported.initializers]
        consts = [i for i in node.input if i and i in imported.initializers]
        for d in data:
            if d not in where_is:
                raise UnsupportedOperatorError(f"{where} reads {d!r}, which no supported layer computes")
        src = [where_is[d][0] for d in data]
        shapes = [where_is[d][1] for d in data]

        def param(i: int, what: str) -> np.ndarray:
            name = node.input[i] if len(node.input) > i else ""
            if name not in inits:
                raise UnsupportedOperatorError(f"{where}: the {what} must be a constant of the model")
            return inits[name]

        if op in ("Add", "Concat") and len(data) >= 2:
            if op == "Add" and (len(data) != 2 or shapes[0] != shapes[1]):
                raise UnsupportedOperatorError(f"{where}: adds shapes {shapes}; only equal shapes are supported")
            if op == "Concat":
                axis = int(attrs.get("axis", 1))
                if axis not in (1, -len(shapes[0])) or consts or any(len(s_) != len(shapes[0]) for s_ in shapes):
                    raise UnsupportedOperatorError(f"{where}: only channel concatenation (axis 1) of data tensors")
                shape = (sum(s_[0] for s_ in shapes),) + tuple(shapes[0][1:])
                out = add(FloatLayer("concat", params={"axis": 1}), src)
            else:
                shape = shapes[0]
                out = add(FloatLayer("add"), src)
        elif len(data) != 1:
            raise UnsupportedOperatorError(f"{where} reads {len(data)} data tensors; the MPC lowering needs one here")
        else:
            shape = shapes[0]
            s0 = src[0]
            if op in _SKIPPED:
                if op == "LpNormalization" and index != len(nodes) - 1:
                    raise UnsupportedOperatorError(f"{where}: LpNormalization is supported only as the last node")
                where_is[node.output[0]] = (s0, shape)
                continue
            if op == "Conv":
                _no_same_padding(attrs, where)
                w = param(1, "weight")
                if w.ndim != 4:
                    raise UnsupportedOperatorError(f"{where}: only 2-D convolutions")
                b = param(2, "bias") if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
                spec = ConvSpec(tuple(attrs.get("strides", [1, 1])), _pads4(attrs),
                                tuple(attrs.get("dilations", [1, 1])), int(attrs.get("group", 1)))
                ho, wo = spec.out_hw(shape[1], shape[2], w.shape[2], w.shape[3])
                shape = (w.shape[0], ho, wo)
                out = add(FloatLayer("conv", w, b, spec.to_params()), [s0])
            elif op == "BatchNormalization":
                if attrs.get("training_mode", 0):
                    raise UnsupportedOperatorError(f"{where}: training_mode is not supported")
                scale, bias, mean, var = (param(i, "scale/bias/mean/var") for i in range(1, 5))
                k = scale / np.sqrt(var + attrs.get("epsilon", 1e-5))
                t = bias - mean * k
                prev = layers[s0] if s0 >= 0 else None
                if prev is not None and prev.op in ("conv", "linear") and sole_reader(data[0], s0):
                    prev.weight = prev.weight * (k[:, None, None, None] if prev.op == "conv" else k[:, None])
                    prev.bias = (prev.bias if prev.bias is not None else 0.0) * k + t
                    out = s0
                else:
                    out = _affine(add, s0, shape, k, t, where)
            elif op in ("Relu", "Sigmoid", "Tanh"):
                out = add(FloatLayer("act", params={"kind": op.lower()}), [s0])
            elif op == "PRelu":
                slope = param(1, "slope").reshape(-1)
                if slope.size not in (1, shape[0]):
                    raise UnsupportedOperatorError(f"{where}: slope of {slope.size} values; scalar or one per channel")
                out = add(FloatLayer("act", params={"kind": "prelu", "slope": [float(v) for v in slope]}), [s0])
            elif op in ("MaxPool", "AveragePool"):
                _no_same_padding(attrs, where)
                if len(shape) != 3:
                    raise UnsupportedOperatorError(f"{where}: pooling needs a (C, H, W) input")
                if any(d != 1 for d in attrs.get("dilations", [1, 1])):
                    raise UnsupportedOperatorError(f"{where}: dilated pooling is not supported")
                if attrs.get("ceil_mode", 0):
                    raise UnsupportedOperatorError(f"{where}: ceil_mode is not supported; re-export with floor")
                ks = [int(v) for v in attrs["kernel_shape"]]
                pparams: dict[str, Any] = {"kernel": ks, "strides": [int(v) for v in attrs.get("strides", [1, 1])],
                                           "pads": list(_pads4(attrs))}
                ps = PoolSpec(pparams)
                ho, wo = ps.geom.out_hw(shape[1], shape[2], *ks)
                kind = "max" if op == "MaxPool" else "avg"
                if kind == "max" or (ps.tiling and (ho, wo) == ps.out_hw(shape[1], shape[2])):
                    pparams["kind"] = kind
                    out = add(FloatLayer("pool", params=pparams), [s0])
                else:
                    summed = add(FloatLayer("sumpool", params=pparams), [s0])
                    if attrs.get("count_include_pad", 0) or not any(pparams["pads"]):
                        recip = np.full((1, 1, 1), 1.0 / (ks[0] * ks[1]))
                    else:
                        counts = conv_float(np.ones((1, 1, shape[1], shape[2])), np.ones((1, 1, ks[0], ks[1])), None,
                                            ps.geom)
                        recip = (1.0 / counts)[0]
                    out = add(FloatLayer("mulc", recip), [summed])
                shape = (shape[0], ho, wo)
            elif op == "GlobalAveragePool":
                summed = add(FloatLayer("sumpool", params={"kernel": [shape[1], shape[2]], "strides": [1, 1],
                                                           "pads": [0, 0, 0, 0]}), [s0])
                out = add(FloatLayer("mulc", np.full((1, 1, 1), 1.0 / (shape[1] * shape[2]))), [summed])
                shape = (shape[0], 1, 1)
            elif op in ("Flatten", "Reshape"):
                inferred = imported.values[node.output[0]].shape if node.output[0] in imported.values else ()
                if len(inferred) != 2:
                    raise UnsupportedOperatorError(f"{where}: only flattening to (batch, features) is supported")
                out = add(FloatLayer("flatten"), [s0])
                shape = (int(np.prod(shape)),)
            elif op == "Gemm":
                if attrs.get("transA", 0):
                    raise UnsupportedOperatorError(f"{where}: transA not supported")
                w = param(1, "weight (operand B)") * attrs.get("alpha", 1.0)
                if not attrs.get("transB", 0):
                    w = w.T
                b = None
                if len(node.input) > 2 and node.input[2]:
                    b = _bias(param(2, "bias (operand C)") * attrs.get("beta", 1.0), w.shape[0], where)
                out = _linear(add, layers, s0, shape, w, b, where)
                shape = (w.shape[0],)
            elif op == "MatMul":
                if node.input[0] != data[0]:
                    raise UnsupportedOperatorError(f"{where}: the constant must be the second operand")
                w = param(1, "weight (second operand)").T
                out = _linear(add, layers, s0, shape, w, None, where)
                shape = (w.shape[0],)
            elif op in ("Add", "Sub", "Mul"):
                if len(consts) != 1:
                    raise UnsupportedOperatorError(f"{where}: needs one data tensor and one constant")
                c = inits[consts[0]]
                prev = layers[s0] if s0 >= 0 else None
                sole = prev is not None and sole_reader(data[0], s0)
                if op == "Add" and sole and prev.op == "linear" and prev.bias is None:
                    prev.bias = _bias(c, prev.weight.shape[0], where)
                    out = s0
                else:
                    cc = _per_channel(c, shape, where)
                    if op == "Mul":
                        k, t = cc, np.zeros_like(cc)
                    elif op == "Add":
                        k, t = np.ones_like(cc), cc
                    elif node.input[0] == data[0]:  # x - c
                        k, t = np.ones_like(cc), -cc
                    else:  # c - x
                        k, t = -np.ones_like(cc), cc
                    out = _affine(add, s0, shape, k, t, where, layers if sole else None)
            else:
                raise UnsupportedOperatorError(
                    f"{label}: node {node.name!r} uses {op}, outside the MPC operator set {_OP_LIST}")
        name = node.output[0]
        inferred = imported.values[name].shape[1:] if name in imported.values else None
        if inferred is not None and tuple(inferred) != tuple(shape):
            raise UnsupportedOperatorError(
                f"{where}: the MPC layers compute shape {shape}, the model {tuple(inferred)} (per example); "
                "re-export it with explicit pads, floor rounding and (batch, features) flattening")
        where_is[name] = (out, tuple(shape))
    outs = [o.name for o in imported.outputs]
    if len(outs) != 1 or outs[0] not in where_is:
        raise UnsupportedOperatorError(f"{label}: the model must have one output computed by supported layers")
    final, final_shape = where_is[outs[0]]
    if final != len(layers) - 1:
        raise UnsupportedOperatorError(f"{label}: the output must be the last layer computed")
    model = FloatModel((dims[1], dims[2], dims[3]), layers, int(np.prod(final_shape)))
    return _fold_affine_into_linear(model)


def _pads4(attrs: dict[str, Any]) -> tuple[int, int, int, int]:
    """ONNX pads (x1_begin, x2_begin, x1_end, x2_end) = (top, left, bottom, right)."""
    p = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
    if len(p) != 4:
        raise UnsupportedOperatorError(f"only 2-D pads are supported, got {p}")
    return p[0], p[1], p[2], p[3]


def _per_channel(c: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A constant operand as one value per channel (per feature for (B, D) tensors)."""
    c = np.asarray(c, dtype=np.float64)
    ch = shape[0]
    if c.size == 1:
        return np.full(ch, float(c.reshape(-1)[0]))
    full = (1,) * max(0, len(shape) + 1 - c.ndim) + c.shape  # as (1, C, ...) broadcast dims
    if c.size == ch and full[-len(shape)] == ch:
        return c.reshape(-1).copy()
    raise UnsupportedOperatorError(f"{where}: a constant of shape {c.shape} is neither scalar nor per channel")


def _affine(add, src: int, shape: tuple[int, ...], k: np.ndarray, t: np.ndarray, where: str,
            layers: list[FloatLayer] | None = None) -> int:
    """x * k + t per channel: composed into the previous affine layer when this is its sole
    reader, else a depthwise 1x1 conv (a diagonal linear layer for (B, D) tensors)."""
    k = np.asarray(k, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if layers is not None and src >= 0 and layers[src].params.get("affine"):
        prev = layers[src]
        prev.weight = prev.weight * (k[:, None, None, None] if prev.op == "conv" else k[:, None])
        prev.bias = prev.bias * k + t
        return src
    if len(shape) == 3:
        return add(FloatLayer("conv", k.reshape(-1, 1, 1, 1), t, dict(ConvSpec(group=shape[0]).to_params(),
                                                                      affine=True)), [src])
    if len(shape) == 1:
        return add(FloatLayer("linear", np.diag(k), t, {"affine": True}), [src])
    raise UnsupportedOperatorError(f"{where}: per-channel constants need a (C, H, W) or (D,) tensor")


def _linear(add, layers: list[FloatLayer], src: int, shape: tuple[int, ...], w: np.ndarray, b, where: str) -> int:
    if int(np.prod(shape)) != w.shape[1]:
        raise UnsupportedOperatorError(f"{where}: a weight of {w.shape} does not fit {int(np.prod(shape))} inputs")
    if len(shape) != 1 and (src < 0 or layers[src].op != "flatten"):
        src = add(FloatLayer("flatten"), [src])
    return add(FloatLayer("linear", w, b), [src])


def _fold_affine_into_linear(model: FloatModel) -> FloatModel:
    """affine -> [flatten] -> linear, nothing else reading the affine or the flatten: fold the
    per-channel scale and shift into the linear layer (exact: no padding in between) and drop
    the affine layer (one truncation fewer)."""
    layers = model.layers
    readers: dict[int, list[int]] = {}
    for i, la in enumerate(layers):
        for j in la.params["inputs"]:
            readers.setdefault(j, []).append(i)
    drop: set[int] = set()
    for i, la in enumerate(layers):
        if not la.params.get("affine") or la.op != "conv" or len(readers.get(i, [])) != 1:
            continue
        lin = readers[i][0]
        if layers[lin].op == "flatten" and len(readers.get(lin, [])) == 1:
            lin = readers[lin][0]
        target = layers[lin]
        if target.op != "linear" or target.params.get("affine"):
            continue
        per = target.weight.shape[1] // la.weight.shape[0]
        k = np.repeat(la.weight.reshape(-1), per)
        t = np.repeat(la.bias.reshape(-1), per)
        bias = target.bias if target.bias is not None else np.zeros(target.weight.shape[0])
        target.bias = bias + target.weight @ t
        target.weight = target.weight * k[None, :]
        drop.add(i)
    if not drop:
        return model
    remap: dict[int, int] = {-1: -1}
    kept: list[FloatLayer] = []
    for i, la in enumerate(layers):
        if i in drop:
            remap[i] = remap[la.params["inputs"][0]]
            continue
        la.params["inputs"] = [remap[j] for j in la.params["inputs"]]
        remap[i] = len(kept)
        kept.append(la)
    return FloatModel(model.input_shape, kept, model.features)


def _no_same_padding(attrs: dict[str, Any], where: str) -> None:
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedOperatorError(f"{where}: auto_pad {attrs['auto_pad']} is not supported; "
                                       "give explicit pads")


def _bias(b: np.ndarray, out: int, where: str) -> np.ndarray:
    try:
        return np.broadcast_to(np.asarray(b, dtype=np.float64), (1, out)).reshape(-1).copy()
    except ValueError:
        raise UnsupportedOperatorError(f"{where}: a bias of shape {b.shape} does not fit {out} outputs") from None
