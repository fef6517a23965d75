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


def load_model(source: str | os.PathLike[str] | bytes, *, operators: OperatorSet, opsets: tuple[int, int],
               name: str | None = None) -> ImportedModel:
    """Load and validate an ONNX model from a path or from its bytes.

    ``operators`` maps each operator the caller runs to the attribute names it accepts
    (``Constant`` is always importable: it is folded into an initializer); ``opsets`` is the
    inclusive range of ai.onnx opset versions whose semantics the caller implements. ``name``
    labels error messages (default: the path, or ``<bytes>``).
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
    opset = _check_opsets(model, label, opsets)
    _check_structure(model, label, operators)
    _fold_constants(model, label)
    _name_nodes(model)
    _check_constant_operands(model, label)
    try:
        inferred = shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # InferenceError, ValidationError
        raise ModelError(f"{label}: shape inference failed: {_first_line(exc)}") from None
    initializers = {t.name: numpy_helper.to_array(t) for t in inferred.graph.initializer}
    values = _collect_values(inferred, initializers, label)
    inputs = [values[i.name] for i in inferred.graph.input if i.name not in initializers]
    outputs = [values[o.name] for o in inferred.graph.output]
    roles, node_params = _check_nodes(inferred, initializers, values, label)
    logger.info("model imported name=%s nodes=%d params=%d opset=%d", label, len(inferred.graph.node),
                len(initializers), opset)
    return ImportedModel(inferred, data, opset, inputs, outputs, values, initializers, roles, node_params)


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


def _fold_constants(model: onnx.ModelProto, label: str) -> None:
    """Turn ``Constant`` nodes into initializers (same tensor, same name)."""
    g = model.graph
    keep = []
    for node in g.node:
        if node.op_type != "Constant":
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


def _check_nodes(model: onnx.ModelProto, inits: dict[str, np.ndarray], values: dict[str, ValueSpec],
                 label: str) -> tuple[dict[str, str], dict[str, list[str]]]:
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
        else:
            for i in ins:
                role(i, "constant")
    unused = sorted(set(inits) - set(roles))
    for name in unused:
        roles[name] = "unused"
    return roles, node_params


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as plain JSON values (ints, floats, strings, lists of numbers)."""
    out: dict[str, Any] = {}
    for attr in node.attribute:
        v = onnx.helper.get_attribute_value(attr)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, (list, tuple)):
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
