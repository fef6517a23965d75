"""Import an ONNX model and check that it stays inside the operator set its user runs.

The one ONNX importer of the project, below both of its users: the split
(``orchestrator.models.load_model`` passes the operator set of the enclave's head interpreter)
and the MPC model owner (``mpc.client.owner.load_onnx`` passes the operators the MPC protocol
runs and lowers the result into its layers). It depends on onnx and numpy only.

Loading runs, in order: protobuf parse (a corrupt or truncated file is refused), the ONNX
checker, a scan of opsets, operators, attributes and dtypes against the caller's set
(``operators``: operator -> allowed attribute names; ``opsets``: the accepted ai.onnx opset
range), folding of ``Constant`` nodes into initializers, naming of unnamed nodes, and strict
shape inference. Every tensor must end up with a known float32 shape whose
dimensions are all static except the batch dimension (dimension 0), which may be symbolic.
Errors name the node and the operator and say what to change.

The result, :class:`ImportedModel`, is the normalised model its users work on: it computes
exactly what the input file computes (constants folded, names added), and ``source_bytes`` keeps
the original file so its hash can be recorded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Any, Mapping

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from splitseal.errors import ModelError, UnsupportedOperatorError
from splitseal.protocol.crypto import keccak256

logger = logging.getLogger(__name__)

#: What a caller passes as ``operators``: operator -> the attribute names it may carry.
OperatorSet = Mapping[str, AbstractSet[str]]
#: Operators with weights that count as a "layer" for ``protect_last_layers``.
LAYER_OPS = frozenset({"Conv", "Gemm", "MatMul"})
#: Operators whose input and output tensors are 4-D (N, C, H, W).
_SPATIAL_OPS = frozenset({"Conv", "MaxPool", "AveragePool"})
_ONNX_FLOAT = onnx.TensorProto.FLOAT
_ONNX_INT64 = onnx.TensorProto.INT64
#: Largest model file accepted, bytes.
MAX_MODEL_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class ValueSpec:
    """A tensor's dtype and shape; ``None`` in position 0 is the symbolic batch dimension."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


@dataclass
class ImportedModel:
    """A validated, normalised model."""

    model: onnx.ModelProto
    source_bytes: bytes
    opset: int
    inputs: list[ValueSpec]
    outputs: list[ValueSpec]
    values: dict[str, ValueSpec]
    initializers: dict[str, np.ndarray]
    #: parameter name -> role: "weight", "bias", "statistic" (BN mean/var) or "constant"
    roles: dict[str, str]
    #: node name -> names of parameters it consumes
    node_params: dict[str, list[str]] = field(default_factory=dict)
    #: opset version of every domain the model imports besides ai.onnx (e.g. ai.onnx.ml)
    domains: dict[str, int] = field(default_factory=dict)
    #: node name -> {attribute: parameter name} for attributes a user lifted into parameters
    #: (present in ``initializers``, not in ``model``, whose node keeps the attribute)
    lifted: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def nodes(self) -> list[onnx.NodeProto]:
        return list(self.model.graph.node)

    @property
    def source_hash(self) -> bytes:
        """keccak256 of the model file as given (what the registry records)."""
        return keccak256(self.source_bytes)

    def layers(self) -> list[onnx.NodeProto]:
        """Weighted layers (Conv, Gemm, MatMul with a parameter operand) in graph order."""
        return [n for n in self.model.graph.node
                if n.op_type in LAYER_OPS and any(i in self.initializers for i in n.input)]

    def producer(self) -> dict[str, onnx.NodeProto]:
        return {o: n for n in self.model.graph.node for o in n.output if o}

    def consumers(self) -> dict[str, list[onnx.NodeProto]]:
        out: dict[str, list[onnx.NodeProto]] = {}
        for n in self.model.graph.node:
            for i in n.input:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def serialize(self) -> bytes:
        return self.model.SerializeToString()


def load_model(source: str | os.PathLike[str] | bytes, *, operators: OperatorSet | None, opsets: tuple[int, int],
               name: str | None = None) -> ImportedModel:
    """Load and validate an ONNX model from a path or from its bytes.

    ``operators`` maps each operator the caller runs to the attribute names it accepts
    (``Constant`` is always importable: it is folded into an initializer); ``opsets`` is the
    inclusive range of ai.onnx opset versions whose semantics the caller implements. ``name``
    labels error messages (default: the path, or ``<bytes>``).

    ``operators=None`` imports *any* model onnxruntime can run (any operator, domain, dtype,
    dynamic dimensions): the caller then checks the nodes it will run itself (the split holds
    only the head's nodes to the enclave interpreter). Tensors whose type shape inference
    cannot find are then absent from ``values``; unknown dimensions are ``None``.
    """
    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), name or "<bytes>"
    else:
        path = Path(source)
        label = name or str(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ModelError(f"model file {path} does not exist") from None
        if size > MAX_MODEL_BYTES:
            raise ModelError(f"model file {path} has {size} bytes, more than {MAX_MODEL_BYTES}")
        data = path.read_bytes()
    return _import(data, label, operators, (int(opsets[0]), int(opsets[1])))


def _import(data: bytes, label: str, operators: OperatorSet, opsets: tuple[int, int]) -> ImportedModel:
    if not data:
        raise ModelError(f"{label}: the model file is empty")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{label} is not a valid ONNX file (corrupt or truncated): "
                         f"{type(exc).__name__}") from None
    if not model.graph.node:
        raise ModelError(f"{label} has no graph nodes; it is not an ONNX model or it is corrupt")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{label} fails the ONNX checker: {_first_line(exc)}") from None
    strict = operators is not None
    opset = _check_opsets(model, label, opsets)
    if strict:
        _check_structure(model, label, operators)
    else:
        _check_storage(model, label)
    _fold_constants(model, label, strict)
    if not strict:
        _fold_parameter_identities(model)
    _name_nodes(model)
    if strict:
        _check_constant_operands(model, label)
    try:
        inferred = shape_inference.infer_shapes(model, check_type=True, strict_mode=strict, data_prop=True)
    except Exception as exc:  # InferenceError, ValidationError
        raise ModelError(f"{label}: shape inference failed: {_first_line(exc)}") from None
    rounds = 0
    while not strict and rounds < MAX_FOLD_ROUNDS and fold_shape_chains(inferred):
        rounds += 1
        try:
            inferred = shape_inference.infer_shapes(inferred, check_type=True, strict_mode=False, data_prop=True)
        except Exception as exc:
            raise ModelError(f"{label}: shape inference failed after folding shape computations: "
                             f"{_first_line(exc)}") from None
    initializers = {t.name: numpy_helper.to_array(t) for t in inferred.graph.initializer}
    values = _collect_values(inferred, initializers, label) if strict else _collect_values_any(inferred, initializers)
    inputs = [values[i.name] for i in inferred.graph.input if i.name not in initializers]
    outputs = [values[o.name] for o in inferred.graph.output]
    roles, node_params = _check_nodes(inferred, initializers, values, label, strict)
    logger.info("model imported name=%s nodes=%d params=%d opset=%d", label, len(inferred.graph.node),
                len(initializers), opset)
    domains = {imp.domain: int(imp.version) for imp in inferred.opset_import if imp.domain not in ("", "ai.onnx")}
    return ImportedModel(inferred, data, opset, inputs, outputs, values, initializers, roles, node_params, domains)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_opsets(model: onnx.ModelProto, label: str, opsets: tuple[int, int]) -> int:
    min_opset, max_opset = opsets
    opset = None
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = imp.version
    if opset is None:
        raise UnsupportedOperatorError(f"{label} does not import the default ai.onnx opset")
    if not min_opset <= opset <= max_opset:
        raise UnsupportedOperatorError(f"{label} uses ai.onnx opset {opset}; supported are {min_opset}.."
                                       f"{max_opset} (re-export with an opset in that range)")
    if len(model.functions):
        raise UnsupportedOperatorError(f"{label} defines model-local functions, which are not supported")
    return opset


def _check_storage(model: onnx.ModelProto, label: str) -> None:
    """What any import needs: every tensor inside the file (its bytes are hashed and shipped)."""
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelError(f"{label}: initializer {t.name!r} is stored as external data; save the "
                             "model with all tensors inside the file")


def _check_structure(model: onnx.ModelProto, label: str, operators: OperatorSet) -> None:
    importable = frozenset(operators) | {"Constant"}
    g = model.graph
    if len(g.sparse_initializer):
        raise UnsupportedOperatorError(f"{label} has sparse initializers; store them dense")
    for t in g.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelError(f"{label}: initializer {t.name!r} is stored as external data; save the "
                             "model with all tensors inside the file")
        if t.data_type not in (_ONNX_FLOAT, _ONNX_INT64):
            raise UnsupportedOperatorError(
                f"{label}: initializer {t.name!r} has dtype {_dtype_name(t.data_type)}; "
                "parameters must be float32 (int64 only for Reshape shapes)")
    for i, node in enumerate(g.node):
        where = f"{label}: node {node.name or '#' + str(i)!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOperatorError(f"{where} is in domain {node.domain!r}; only ai.onnx operators "
                                           "are supported")
        if node.op_type not in importable:
            raise UnsupportedOperatorError(
                f"{where}: operator {node.op_type!r} is outside the supported set "
                f"{sorted(importable)}; re-export the model without it")
        if node.op_type == "Constant":
            continue
        allowed = operators[node.op_type]
        for attr in node.attribute:
            if attr.name not in allowed:
                raise UnsupportedOperatorError(f"{where}: attribute {attr.name!r} is not supported "
                                               f"(supported: {sorted(allowed)})")
            if attr.type not in (onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT, onnx.AttributeProto.STRING,
                                 onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS):
                raise UnsupportedOperatorError(f"{where}: attribute {attr.name!r} has an unsupported type")


def _dtype_name(code: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(code).lower()
    except ValueError:
        return f"code {code}"


def _fold_constants(model: onnx.ModelProto, label: str, strict: bool = True) -> None:
    """Turn ``Constant`` nodes into initializers (same tensor, same name). Not strict: only
    float32 / int64 values are folded, any other Constant stays a node."""
    g = model.graph
    keep = []
    for node in g.node:
        if node.op_type != "Constant":
            keep.append(node)
            continue
        if not strict and not _foldable_constant(node):
            keep.append(node)
            continue
        if len(node.attribute) != 1:
            raise UnsupportedOperatorError(f"{label}: Constant node {node.name!r} needs exactly one value attribute")
        attr = node.attribute[0]
        value = onnx.helper.get_attribute_value(attr)
        if attr.name == "value":
            array = numpy_helper.to_array(value)
        elif attr.name in ("value_float", "value_floats"):
            array = np.asarray(value, dtype=np.float32)
        elif attr.name in ("value_int", "value_ints"):
            array = np.asarray(value, dtype=np.int64)
        else:
            raise UnsupportedOperatorError(f"{label}: Constant node {node.name!r} uses {attr.name}, "
                                           "supported are value, value_float(s), value_int(s)")
        if array.dtype not in (np.float32, np.int64):
            raise UnsupportedOperatorError(f"{label}: Constant node {node.name!r} has dtype {array.dtype}")
        g.initializer.append(numpy_helper.from_array(array, node.output[0]))
    del g.node[:]
    g.node.extend(keep)


_SHAPE_OPS = frozenset({"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Mul", "Add", "Sub", "Div",
                        "Slice", "Constant"})
_ONNX_INT32 = onnx.TensorProto.INT32
#: Rounds of fold -> shape inference: each round can expose the shapes the next one folds
#: (PaddlePaddle exports chain Shape -> Slice -> Concat -> Reshape block after block).
MAX_FOLD_ROUNDS = 32


def fold_shape_chains(model: onnx.ModelProto) -> bool:
    """Fold shape-only subgraphs (``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``, as torch
    exports flatten and view) into constants; True when the model changed.

    Values are tracked symbolically: a dimension is its number, or the name of a dynamic
    dimension. A computation whose result is fully numeric becomes an int64 initializer; a
    ``Reshape`` whose target is the input's own (dynamic) dimension 0 followed by numbers gets
    the constant target ``[0, ...]`` (0 copies dimension 0, exact when ``allowzero`` is 0). Nodes
    left without consumers are then removed. Everything else is left as it is.
    """
    g = model.graph
    dims: dict[str, list[int | str]] = {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            dims[v.name] = [int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or f"?{v.name}:{k}")
                            for k, d in enumerate(v.type.tensor_type.shape.dim)]
    known: dict[str, tuple[tuple[int, ...], list[int | str]]] = {}   # name -> (shape, flat values)
    #: element type of each tracked value that is not int64 (PaddlePaddle computes shapes in int32)
    int32: set[str] = set()
    for t in g.initializer:
        if t.data_type in (_ONNX_INT64, _ONNX_INT32) and len(t.dims) <= 1:
            a = numpy_helper.to_array(t)
            known[t.name] = (a.shape, [int(x) for x in a.reshape(-1)])
            if t.data_type == _ONNX_INT32:
                int32.add(t.name)
    folded: dict[str, np.ndarray] = {}
    changed = False

    def attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    for node in g.node:
        ins = [i for i in node.input]
        if node.op_type not in _SHAPE_OPS or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            continue
        out = node.output[0]
        res: tuple[tuple[int, ...], list[int | str]] | None = None
        if node.op_type == "Constant":
            value = attr(node, "value", None)
            if value is not None and value.data_type in (_ONNX_INT64, _ONNX_INT32) and len(value.dims) <= 1:
                a = numpy_helper.to_array(value)
                res = (a.shape, [int(x) for x in a.reshape(-1)])
                if value.data_type == _ONNX_INT32:
                    int32.add(out)
        elif node.op_type == "Shape" and ins[0] in dims:
            d = dims[ins[0]]
            start, end = attr(node, "start", 0), attr(node, "end", len(d))
            sl = d[slice(start, end)]
            res = ((len(sl),), list(sl))
        elif all(i in known for i in ins if i):
            vals = [known[i] for i in ins if i]
            if node.op_type == "Gather" and attr(node, "axis", 0) == 0 and len(vals[0][0]) == 1:
                data, (ishape, idx) = vals[0][1], vals[1]
                if all(isinstance(i, int) and -len(data) <= i < len(data) for i in idx):
                    res = (ishape, [data[i] for i in idx])
            elif node.op_type == "Unsqueeze" and len(vals[0][0]) == 0:
                axes = attr(node, "axes", None) if len(vals) == 1 else vals[1][1]
                if list(axes or []) in ([0], [-1]):
                    res = ((1,), vals[0][1])
            elif node.op_type == "Squeeze" and vals[0][0] == (1,):
                res = ((), vals[0][1])
            elif node.op_type == "Concat" and attr(node, "axis", 0) in (0, -1) and all(len(v[0]) == 1 for v in vals):
                flat = [x for v in vals for x in v[1]]
                res = ((len(flat),), flat)
            elif node.op_type == "Cast" and attr(node, "to", 0) in (_ONNX_INT64, _ONNX_INT32):
                res = vals[0]
                if attr(node, "to", 0) == _ONNX_INT32:
                    int32.add(out)
            elif node.op_type == "Slice" and len(vals[0][0]) == 1 and len(vals) >= 3:
                # opset >= 10: data, starts, ends[, axes[, steps]] on a 1-D shape vector
                starts, ends = vals[1][1], vals[2][1]
                axes = vals[3][1] if len(vals) > 3 else [0]
                steps = vals[4][1] if len(vals) > 4 else [1]
                if (len(starts) == len(ends) == len(axes) == len(steps) == 1 and axes[0] in (0, -1)
                        and all(isinstance(x, int) for x in starts + ends + steps) and steps[0] != 0):
                    sl = vals[0][1][slice(starts[0], ends[0], steps[0])]
                    res = ((len(sl),), sl)
            elif node.op_type in ("Mul", "Add", "Sub", "Div") and len(vals) == 2:
                (sa, a), (sb, b) = vals
                if len(a) == 1 or len(b) == 1 or sa == sb:
                    n = max(len(a), len(b))
                    a2, b2 = (a * n if len(a) == 1 else a), (b * n if len(b) == 1 else b)
                    if all(isinstance(x, int) for x in a2 + b2) and (node.op_type != "Div" or 0 not in b2):
                        f = {"Mul": lambda x, y: x * y, "Add": lambda x, y: x + y, "Sub": lambda x, y: x - y,
                             "Div": lambda x, y: x // y}[node.op_type]
                        res = (sa if len(a) >= len(b) else sb, [f(x, y) for x, y in zip(a2, b2)])
        if res is None:
            continue
        if node.op_type in ("Gather", "Unsqueeze", "Squeeze", "Concat", "Mul", "Add", "Sub", "Div", "Slice") \
                and ins[0] in int32:
            int32.add(out)
        known[out] = res
        if all(isinstance(x, int) for x in res[1]):
            folded[out] = np.asarray(res[1], dtype=np.int32 if out in int32 else np.int64).reshape(res[0])
    # Reshape targets: numeric, or the data's own dynamic dimension 0 followed by numbers
    for node in g.node:
        if node.op_type != "Reshape" or node.input[1] in folded or node.input[1] not in known:
            continue
        if attr(node, "allowzero", 0):
            continue
        shape, vals = known[node.input[1]]
        d0 = dims.get(node.input[0], [None])[0]
        if vals and isinstance(vals[0], str) and vals[0] == d0 and all(isinstance(x, int) for x in vals[1:]):
            name = f"{node.name or node.output[0]}.folded_shape"
            g.initializer.append(numpy_helper.from_array(np.asarray([0] + vals[1:], np.int64), name))
            node.input[1] = name
            changed = True
    outputs = {o.name for o in g.output}
    for name, arr in folded.items():
        if name not in outputs:
            g.initializer.append(numpy_helper.from_array(arr, name))
            changed = True
    if changed:
        keep = [n for n in g.node if not (len(n.output) == 1 and n.output[0] in folded and n.output[0] not in outputs)]
        # drop nodes nothing reads any more (the Shape ops feeding folded values)
        while True:
            used = {i for n in keep for i in n.input} | outputs
            alive = [n for n in keep if any(o in used for o in n.output if o)]
            if len(alive) == len(keep):
                break
            keep = alive
        del g.node[:]
        g.node.extend(keep)
        names = {o for n in keep for o in n.output}
        vi = [v for v in g.value_info if v.name in names]
        del g.value_info[:]
        g.value_info.extend(vi)
        used = {i for n in keep for i in n.input}
        inits = [t for t in g.initializer if t.name in used or t.name in outputs or t.name not in folded]
        del g.initializer[:]
        g.initializer.extend(inits)
    return changed


def _fold_parameter_identities(model: onnx.ModelProto) -> None:
    """An ``Identity`` over an initializer (what exporters write when they merge identical
    parameters) becomes a copy of that initializer under the Identity's output name, so the
    parameter is read where it is used instead of being computed on one side of a cut and
    crossing it as an activation."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    outputs = {o.name for o in g.output}
    keep = []
    for node in g.node:
        if (node.op_type == "Identity" and node.domain in ("", "ai.onnx") and len(node.input) == 1
                and node.input[0] in inits and node.output[0] not in outputs):
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            g.initializer.append(copy)
            inits[copy.name] = copy
            continue
        keep.append(node)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)


def _foldable_constant(node: onnx.NodeProto) -> bool:
    if len(node.attribute) != 1:
        return False
    attr = node.attribute[0]
    if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
        return True
    return (attr.name == "value" and attr.t.data_type in (_ONNX_FLOAT, _ONNX_INT64)
            and attr.t.data_location != onnx.TensorProto.EXTERNAL)


def _check_constant_operands(model: onnx.ModelProto, label: str) -> None:
    """Operands every user needs as constants: Reshape shapes, Clip bounds."""
    inits = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        where = f"{label}: node {node.name!r} ({node.op_type})"
        ins = list(node.input)
        if node.op_type == "Reshape" and ins[1] not in inits:
            raise UnsupportedOperatorError(f"{where}: the target shape must be a constant, {ins[1]!r} is computed")
        if node.op_type == "Clip":
            for i in ins[1:]:
                if i and i not in inits:
                    raise UnsupportedOperatorError(f"{where}: min/max must be constants, {i!r} is computed")


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (a split can then name nodes); existing names are kept."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            base = f"{node.op_type}_{i}"
            name = base
            k = 1
            while name in seen:
                name = f"{base}_{k}"
                k += 1
            node.name = name
        seen.add(node.name)


def _spec_from_type(name: str, tp: onnx.TypeProto, where: str, initializer: bool) -> ValueSpec:
    if not tp.HasField("tensor_type"):
        raise ModelError(f"{where}: tensor {name!r} is not a tensor type")
    tt = tp.tensor_type
    if tt.elem_type == _ONNX_FLOAT:
        dtype = "float32"
    elif tt.elem_type == _ONNX_INT64 and initializer:
        dtype = "int64"
    else:
        raise UnsupportedOperatorError(f"{where}: tensor {name!r} has element type "
                                       f"{_dtype_name(tt.elem_type)}; only float32 "
                                       "activations are supported")
    if not tt.HasField("shape"):
        raise ModelError(f"{where}: the shape of tensor {name!r} cannot be inferred; give the model "
                         "static shapes (only the batch dimension may be symbolic)")
    dims: list[int | None] = []
    for k, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif k == 0 and not initializer:
            dims.append(None)
        else:
            raise ModelError(f"{where}: dimension {k} of tensor {name!r} is dynamic "
                             f"({d.dim_param or 'unknown'}); only dimension 0 (batch) may be symbolic")
    return ValueSpec(name, tuple(dims), dtype)


def _collect_values(model: onnx.ModelProto, initializers: dict[str, np.ndarray], label: str) -> dict[str, ValueSpec]:
    g = model.graph
    info = {v.name: v.type for v in list(g.input) + list(g.value_info) + list(g.output)}
    values: dict[str, ValueSpec] = {}
    for name, arr in initializers.items():
        values[name] = ValueSpec(name, tuple(int(d) for d in arr.shape), arr.dtype.name)
    for inp in g.input:
        if inp.name not in initializers:
            values[inp.name] = _spec_from_type(inp.name, inp.type, f"{label}: graph input", False)
    for node in g.node:
        where = f"{label}: node {node.name!r} ({node.op_type})"
        for o in node.output:
            if not o:
                continue
            if o not in info:
                raise ModelError(f"{where}: the shape of output {o!r} cannot be inferred; give the model "
                                 "static shapes (only the batch dimension may be symbolic)")
            values[o] = _spec_from_type(o, info[o], where, False)
    return values


def _collect_values_any(model: onnx.ModelProto, initializers: dict[str, np.ndarray]) -> dict[str, ValueSpec]:
    """Every tensor whose type is known, of any dtype; unknown dimensions are ``None``."""
    g = model.graph
    values: dict[str, ValueSpec] = {}
    for name, arr in initializers.items():
        values[name] = ValueSpec(name, tuple(int(d) for d in arr.shape), arr.dtype.name)
    for v in list(g.input) + list(g.value_info) + list(g.output):
        if v.name in initializers or not v.type.HasField("tensor_type"):
            continue
        tt = v.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        except Exception:  # undefined or exotic element type
            dtype = _dtype_name(tt.elem_type)
        if not tt.HasField("shape"):
            continue
        dims = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)
        values[v.name] = ValueSpec(v.name, dims, dtype)
    for v in list(g.input) + list(g.output):
        if v.name not in values:  # a graph input or output of unknown rank
            values[v.name] = ValueSpec(v.name, (), "unknown")
    return values


#: Parameter roles of the inputs of operators beyond the ones the strict importer knows:
#: op -> role per input position (missing positions: "constant").
_ROLES_BY_POSITION: dict[str, tuple[str, ...]] = {
    "PRelu": ("weight", "weight"),
    "LayerNormalization": ("weight", "weight", "bias"),
    "InstanceNormalization": ("weight", "weight", "bias"),
    "Mul": ("weight", "weight"),
    "Sub": ("bias", "bias"),
    "Gather": ("weight", "constant"),
    "LSTM": ("constant", "weight", "weight", "bias"),
    "GRU": ("constant", "weight", "weight", "bias"),
    "RNN": ("constant", "weight", "weight", "bias"),
    "ConvTranspose": ("weight", "weight", "bias"),
}


def _strict_node_checks(node: onnx.NodeProto, ins: list[str], inits: dict[str, np.ndarray],
                        values: dict[str, ValueSpec], where: str) -> None:
    """The strict importer's per-operator restrictions (2-D spatial inputs, inference-mode Dropout
    and BatchNormalization, int64 only as Reshape shapes)."""
    for i in ins:
        if i and i in inits and inits[i].dtype == np.int64 and not (node.op_type == "Reshape" and ins.index(i) == 1):
            raise UnsupportedOperatorError(f"{where}: int64 parameter {i!r} is only allowed as a Reshape shape")
    if node.op_type in _SPATIAL_OPS and len(values[ins[0]].shape) != 4:
        raise UnsupportedOperatorError(f"{where}: only 2-D (N, C, H, W) inputs are supported, "
                                       f"{ins[0]!r} has rank {len(values[ins[0]].shape)}")
    if node.op_type == "Dropout":
        if len(ins) > 2 and ins[2]:
            if ins[2] not in inits or bool(np.asarray(inits[ins[2]]).reshape(())) is not False:
                raise UnsupportedOperatorError(f"{where}: training_mode must be a constant false")
        if len([o for o in node.output if o]) > 1:
            raise UnsupportedOperatorError(f"{where}: the mask output is not supported")
    if node.op_type == "BatchNormalization" and len([o for o in node.output if o]) > 1:
        raise UnsupportedOperatorError(f"{where}: training outputs (running mean/var) are not supported")


def _check_nodes(model: onnx.ModelProto, inits: dict[str, np.ndarray], values: dict[str, ValueSpec],
                 label: str, strict: bool = True) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Per-operator restrictions (2-D spatial inputs, inference-mode Dropout and
    BatchNormalization, int64 only as Reshape shapes); parameter roles."""
    roles: dict[str, str] = {}
    node_params: dict[str, list[str]] = {}

    def role(name: str, r: str) -> None:
        if name in inits:
            # a parameter used twice keeps its strongest role: weight > statistic > bias > constant
            order = ("constant", "bias", "statistic", "weight")
            if name not in roles or order.index(r) > order.index(roles[name]):
                roles[name] = r

    for node in model.graph.node:
        where = f"{label}: node {node.name!r} ({node.op_type})"
        ins = list(node.input)
        node_params[node.name] = [i for i in ins if i in inits]
        if strict:
            _strict_node_checks(node, ins, inits, values, where)
        if node.op_type == "Conv":
            role(ins[1], "weight")
            if len(ins) > 2 and ins[2]:
                role(ins[2], "bias")
        elif node.op_type == "Gemm":
            role(ins[0], "weight")
            role(ins[1], "weight")
            if len(ins) > 2 and ins[2]:
                role(ins[2], "bias")
        elif node.op_type == "MatMul":
            role(ins[0], "weight")
            role(ins[1], "weight")
        elif node.op_type == "BatchNormalization":
            role(ins[1], "weight")
            role(ins[2], "bias")
            role(ins[3], "statistic")
            role(ins[4], "statistic")
        elif node.op_type == "Add":
            for i in ins:
                role(i, "bias")
        elif node.op_type == "Concat":
            for i in ins:
                role(i, "weight")
        elif node.op_type in _ROLES_BY_POSITION:
            kinds = _ROLES_BY_POSITION[node.op_type]
            for k, i in enumerate(ins):
                role(i, kinds[k] if k < len(kinds) else "constant")
        else:
            for i in ins:
                role(i, "constant")
    unused = sorted(set(inits) - set(roles))
    for name in unused:
        roles[name] = "unused"
    return roles, node_params


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as plain JSON values (ints, floats, strings, lists of numbers or of
    strings); anything else (tensors, graphs) raises UnsupportedOperatorError."""
    out: dict[str, Any] = {}
    for attr in node.attribute:
        v = onnx.helper.get_attribute_value(attr)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, bytes) for x in v):
            v = [x.decode("utf-8") for x in v]
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
            v = [float(x) if isinstance(x, float) else int(x) for x in v]
        elif isinstance(v, float):
            v = float(v)
        elif isinstance(v, int):
            v = int(v)
        else:
            raise UnsupportedOperatorError(f"node {node.name!r} ({node.op_type}): attribute {attr.name!r} "
                                           "has an unsupported type")
        out[attr.name] = v
    return out
