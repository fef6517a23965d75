"""Model import, protection rules, the split into backbone + head package, inspection.

Public entry points: :func:`load_model` (below), :func:`orchestrator.models.rule.load_rule`,
:func:`orchestrator.models.split.split_model`, :class:`orchestrator.models.backbone.Backbone`.

The importer itself is :mod:`splitseal.onnx_import` (shared with the MPC model owner); what the
split holds the head (only) to what the enclave's head interpreter runs.
"""

from __future__ import annotations

import os

from enclave.interpreter import MAX_OPSET, MIN_OPSET, SUPPORTED_OPS
from splitseal.onnx_import import ImportedModel
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
    return _import_model(source, operators=None, opsets=SPLIT_OPSETS, name=name)
