"""Model import, protection rules, the split into backbone + head package, inspection.

Public entry points: :func:`load_model` (below), :func:`orchestrator.models.rule.load_rule`,
:func:`orchestrator.models.split.split_model`, :class:`orchestrator.models.backbone.Backbone`.

The importer itself is :mod:`splitseal.onnx_import` (shared with the MPC model owner); what the
split accepts is what the enclave's head interpreter runs, so :func:`load_model` passes its
operator set and opset range.
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
    """Load and validate an ONNX model for the split (path or bytes): the importer with the
    enclave interpreter's operator set."""
    return _import_model(source, operators=SPLIT_OPERATORS, opsets=SPLIT_OPSETS, name=name)
