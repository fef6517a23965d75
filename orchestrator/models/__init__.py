"""Model import, protection rules, the split into backbone + head package, inspection.

Public entry points: :func:`orchestrator.models.onnx_import.load_model`,
:func:`orchestrator.models.rule.load_rule`, :func:`orchestrator.models.split.split_model`,
:class:`orchestrator.models.backbone.Backbone`.
"""
