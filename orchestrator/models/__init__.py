"""Model import, protection rules, the split into backbone + head package, inspection.

Public entry points: :func:`load_model` (below), :func:`orchestrator.models.rule.load_rule`,
:func:`orchestrator.models.split.split_model`, :class:`orchestrator.models.backbone.Backbone`.

The importer itself is :mod:`splitseal.onnx_import` (shared with the MPC model owner); what the
split holds the head (only) to what the enclave's head interpreter runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from enclave.interpreter import MAX_OPSET, MIN_OPSET, OPERATORS, SUPPORTED_OPS, op_key
from splitseal.errors import ModelError
from splitseal.onnx_import import ImportedModel, ValueSpec
from splitseal.onnx_import import load_model as _import_model

#: Operators (and their attributes) a model to split may use: the enclave interpreter's set.
SPLIT_OPERATORS = SUPPORTED_OPS
#: The ai.onnx opset range the enclave interpreter implements.
SPLIT_OPSETS = (MIN_OPSET, MAX_OPSET)


def load_model(source: str | os.PathLike[str] | bytes, *, name: str | None = None) -> ImportedModel:
    """Load an ONNX model for the split (path or bytes).

    Any model onnxruntime runs is accepted (the backbone runs on onnxruntime); only the nodes a
    rule puts in the head are held to the enclave interpreter's operator set, by the split
    (:func:`orchestrator.models.split.split_model` lists every node it cannot run). The ai.onnx
    opset must be one the interpreter implements, since the head keeps the model's opset."""
    from .fold import folded_bytes

    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), name
    else:
        data, label = _read_model_file(source), name or str(source)
    folded = folded_bytes(data)   # shape-only subgraphs (Shape -> ... -> Reshape/Expand) become constants
    imported = _import_model(folded, operators=None, opsets=SPLIT_OPSETS, name=label)
    imported.source_bytes = data  # the file as given is what the registry records
    lift_attributes(imported)
    return imported


def _read_model_file(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file {path} does not exist") from None


def lift_attributes(imported: ImportedModel) -> None:
    """Make the numbers a model keeps in attributes parameters of their node (a tree ensemble's
    thresholds, leaf weights and base values: the operator's ``lifted`` attributes), named
    ``<node>.<attribute>``: a rule protects them, the split puts them in the head's parameter
    blob (covered by the index and its Merkle root) and the graph file keeps only the structure.
    The ONNX model is left as it is (onnxruntime reads the attributes)."""
    for node in imported.nodes:
        spec = OPERATORS.get(op_key(node.domain, node.op_type))
        if spec is None or not spec.lifted:
            continue
        attrs = {a.name: a for a in node.attribute}
        lifted: dict[str, str] = {}
        for attr in spec.lifted:
            a = attrs.get(attr)
            if a is None or a.type != onnx.AttributeProto.FLOATS or not len(a.floats):
                continue
            name = f"{node.name}.{attr}"
            if name in imported.values or name in imported.initializers:
                raise ModelError(f"node {node.name!r} ({node.op_type}): cannot lift attribute {attr} into a "
                                 f"parameter, the model already has a tensor named {name!r}")
            array = np.asarray(a.floats, dtype=np.float32)
            imported.initializers[name] = array
            imported.values[name] = ValueSpec(name, array.shape, "float32")
            imported.roles[name] = "bias" if attr == "base_values" else "weight"
            imported.node_params.setdefault(node.name, []).append(name)
            lifted[attr] = name
        if lifted:
            imported.lifted[node.name] = lifted
