"""Split a model by a protection rule into a backbone (ONNX) and a head package + index.

Steps, in order:

1. The head is chosen from the rule: the consumers of ``at_tensor``, or ``at_node``, or the last
   N weighted layers, together with every node that depends on them. Everything else is the
   backbone.
2. Every tensor a head node reads that a backbone node produced *crosses the cut*: it becomes a
   backbone output and a head input (skip connections included). A head node reading a model
   input, or a model output computed by the backbone, is refused.
3. Every protected parameter must be read by head nodes only.
4. Both halves are cut with ``onnx.utils.Extractor`` and pass the ONNX checker (full check); the
   node sets of the extracted halves must be exactly the planned ones (a missed crossing tensor
   would silently pull a node across).
5. The head is converted into a graph file + parameter blob + parameter index table.
6. Proof of equivalence: on the given inputs, backbone then head equals the whole model within
   ``1e-5`` both with the head on onnxruntime and with the head on the enclave's interpreter.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
import onnx.utils

from enclave.interpreter import OPERATORS, HeadInterpreter, node_problems, op_key
from enclave.package import (
    HeadGraph,
    HeadPackage,
    NodeSpec,
    ParameterIndexTable,
    TensorSpec,
    build_parameter_blob,
    encode_graph,
    keccak256,
)
from orchestrator.models.backbone import Backbone, ort_session
from orchestrator.models.rule import ROLE_KIND, ProtectionRule, module_path
from splitseal.errors import InvalidInputError, ModelError, ProtectionRuleError, UnsupportedOperatorError
from splitseal.onnx_import import ImportedModel, ValueSpec, attributes
from splitseal.protocol import bundle

logger = logging.getLogger(__name__)

#: Largest absolute (and relative) difference allowed between the whole model and its split.
TOLERANCE = 1e-5
SPLIT_FORMAT = "splitseal.split.v1"


@dataclass
class Verification:
    """Measured agreement of the split with the whole model."""

    samples: int
    source: str
    max_abs_diff_onnxruntime: float
    max_abs_diff_interpreter: float
    tolerance: float = TOLERANCE

    def as_json(self) -> dict[str, Any]:
        return {"samples": self.samples, "source": self.source, "tolerance": self.tolerance,
                "max_abs_diff_onnxruntime": self.max_abs_diff_onnxruntime,
                "max_abs_diff_interpreter": self.max_abs_diff_interpreter}


@dataclass
class SplitResult:
    """Both halves, the package, the index and where every parameter went."""

    imported: ImportedModel
    rule: ProtectionRule
    backbone_model: onnx.ModelProto
    head_model: onnx.ModelProto
    head_graph: HeadGraph
    package: HeadPackage
    index: ParameterIndexTable
    crossing: list[str]
    backbone_nodes: list[str]
    head_nodes: list[str]
    protected: list[str]
    sides: dict[str, str]
    verification: Verification | None = None
    backbone_bytes: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if not self.backbone_bytes:
            self.backbone_bytes = self.backbone_model.SerializeToString()

    @property
    def backbone_hash(self) -> bytes:
        return keccak256(self.backbone_bytes)

    def summary(self, model_path: str = "", rule_path: str = "") -> dict[str, Any]:
        """The content of ``split.json``: every hash the registry records, and where things went."""
        imp = self.imported
        values = imp.values
        return {
            "format": SPLIT_FORMAT,
            "model": {"path": model_path, "hash": _hex(imp.source_hash), "opset": imp.opset,
                      "inputs": [_spec(v) for v in imp.inputs], "outputs": [_spec(v) for v in imp.outputs]},
            "rule": {"file": "rule.toml", "path": rule_path, "name": self.rule.name, "hash": _hex(self.rule.hash),
                     "split": self.rule.describe_split(), "output_policy": self.rule.output_policy},
            "backbone": {"file": "backbone.onnx", "hash": _hex(self.backbone_hash), "bytes": len(self.backbone_bytes),
                         "nodes": self.backbone_nodes, "outputs": [_spec(values[t]) for t in self.crossing]},
            "head": {"package_file": "head.pkg", "package_hash": _hex(self.package.plain_hash),
                     "graph_hash": _hex(self.package.graph_hash), "params_hash": _hex(self.package.params_hash),
                     "graph_bytes": len(self.package.graph_bytes), "params_bytes": len(self.package.params_bytes),
                     "nodes": self.head_nodes, "inputs": [_spec(values[t]) for t in self.crossing],
                     "outputs": [_spec(v) for v in imp.outputs], "output_policy": self.rule.output_policy},
            "index": {"file": "head.index", "hash": _hex(self.index.plain_hash),
                      "merkle_root": _hex(self.index.merkle_root()), "entry_count": self.index.entry_count},
            "parameters": [
                {"name": n, "role": imp.roles[n], "side": self.sides[n], "protected": n in self.protected,
                 "dtype": imp.initializers[n].dtype.name, "shape": list(imp.initializers[n].shape),
                 "bytes": int(imp.initializers[n].nbytes)}
                for n in sorted(self.sides)],
            "verification": self.verification.as_json() if self.verification else None,
        }

    def write(self, out_dir: str | Path, *, model_path: str = "", rule_path: str = "") -> dict[str, Any]:
        """Write the model owner's split directory and, inside it, the node's.

        ``out_dir`` (mode 0700, files 0600: the owner's only) holds backbone.onnx, the plaintext
        head.pkg and head.index (provisioned encrypted to an enclave, never handed to a node),
        rule.toml (the rule's exact bytes, so its hash can be re-checked) and split.json.
        ``out_dir/node`` holds just what an inference node needs, the public backbone.onnx
        (world-readable): give the node that directory.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(out, 0o700)
        summary = self.summary(model_path, rule_path)
        owner_files = {"rule.toml": self.rule.source_bytes, "backbone.onnx": self.backbone_bytes,
                       "head.pkg": self.package.encode(), "head.index": self.index.encode(),
                       "split.json": (json.dumps(summary, indent=2) + "\n").encode()}
        for name, data in owner_files.items():
            _write_private(out / name, data)
        node = out / NODE_DIR
        node.mkdir(exist_ok=True)
        os.chmod(node, 0o755)
        (node / "backbone.onnx").write_bytes(self.backbone_bytes)
        os.chmod(node / "backbone.onnx", 0o644)
        os.chmod(out, 0o711)  # the node's user may reach out/node by name, never list or read the rest
        return summary


#: Subdirectory of a split with what an inference node needs (the public backbone only).
NODE_DIR = "node"


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only, also when the file existed with wider bits."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _spec(v: ValueSpec) -> dict[str, Any]:
    return {"name": v.name, "shape": list(v.shape), "dtype": v.dtype}


# --- planning ----------------------------------------------------------------------------

def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3)
    return f"; did you mean {close}?" if close else f"; known: {choices[:20]}{' ...' if len(choices) > 20 else ''}"


def plan_head(imported: ImportedModel, rule: ProtectionRule) -> list[str]:
    """Names of the head's nodes, in graph order."""
    nodes = imported.nodes
    by_name = {n.name: n for n in nodes}
    consumers = imported.consumers()
    graph_inputs = {v.name for v in imported.inputs}
    if rule.at_tensor is not None:
        t = rule.at_tensor
        if t in graph_inputs:
            raise ProtectionRuleError(f"[split].at_tensor {t!r} is a model input: the backbone would be "
                                      "empty; name a tensor computed by the model")
        if t in imported.initializers:
            raise ProtectionRuleError(f"[split].at_tensor {t!r} is a parameter, not an activation")
        if t not in imported.values:
            raise ProtectionRuleError(f"[split].at_tensor {t!r} is not a tensor of the model"
                                      + _suggest(t, [o for n in nodes for o in n.output]))
        seeds = consumers.get(t, [])
        if not seeds:
            raise ProtectionRuleError(f"[split].at_tensor {t!r} is read by no node (a model output?): "
                                      "the head would be empty; split earlier")
    elif rule.at_node is not None:
        if rule.at_node not in by_name:
            raise ProtectionRuleError(f"[split].at_node {rule.at_node!r} is not a node of the model"
                                      + _suggest(rule.at_node, list(by_name)))
        seeds = [by_name[rule.at_node]]
    elif rule.at_layer is not None:
        seeds = [n for n in nodes if rule.layer_matches(rule.at_layer, n.name)]
        if not seeds:
            raise ProtectionRuleError(f"[split].at_layer {rule.at_layer!r} matches no node name or module path"
                                      + _suggest(rule.at_layer, sorted({module_path(n.name) for n in nodes})))
    else:
        layers = imported.layers()
        n = rule.protect_last_layers or 0
        if n > len(layers):
            raise ProtectionRuleError(f"[split].protect_last_layers = {n} but the model has only "
                                      f"{len(layers)} weighted layers ({[l.name for l in layers]})")
        if n == len(layers):
            raise ProtectionRuleError(f"[split].protect_last_layers = {n} puts every weighted layer in the "
                                      "head and leaves the backbone without one; protect fewer layers")
        seeds = layers[-n:]
    head: set[str] = set()
    stack = list(seeds)
    while stack:
        node = stack.pop()
        if node.name in head:
            continue
        head.add(node.name)
        for o in node.output:
            stack.extend(consumers.get(o, []))
    return [n.name for n in nodes if n.name in head]


def _crossing(imported: ImportedModel, head: set[str]) -> list[str]:
    producer = imported.producer()
    graph_inputs = {v.name for v in imported.inputs}
    crossing: list[str] = []
    for node in imported.nodes:
        if node.name not in head:
            continue
        for i in node.input:
            if not i or i in imported.initializers:
                continue
            if i in graph_inputs:
                raise ProtectionRuleError(
                    f"head node {node.name!r} ({node.op_type}) reads the model input {i!r} directly; the "
                    "head may only read tensors the backbone computes; choose a later split")
            if producer[i].name not in head and i not in crossing:
                crossing.append(i)
    order = {o: k for k, n in enumerate(imported.nodes) for o in n.output}
    crossing.sort(key=lambda t: order[t])
    return crossing


def _constant_only(imported: ImportedModel, tensors: list[str]) -> list[str]:
    """Those of ``tensors`` computed from parameters alone (no model input reaches them)."""
    producer = imported.producer()
    graph_inputs = {v.name for v in imported.inputs}
    memo: dict[str, bool] = {}

    def from_input(t: str) -> bool:
        if t in memo:
            return memo[t]
        memo[t] = False
        if t in graph_inputs:
            memo[t] = True
        elif t in producer:
            memo[t] = any(from_input(i) for i in producer[t].input if i)
        return memo[t]

    return [t for t in tensors if not from_input(t)]


def head_problems(imported: ImportedModel, head_nodes: list[str], crossing: list[str]) -> list[str]:
    """Everything about the planned head the enclave interpreter cannot run, grouped by operator
    (every unsupported operator with the nodes that use it), then tensors of the wrong kind."""
    by_name = {n.name: n for n in imported.nodes}
    head_params = {i: imported.initializers[i].dtype.name for n in head_nodes for i in by_name[n].input
                   if i in imported.initializers}
    grouped: dict[tuple[str, str], list[str]] = {}
    tensors: list[str] = []
    for name in head_nodes:
        node = by_name[name]
        try:
            spec = head_node(imported, node)
        except Exception as exc:
            grouped.setdefault((node.op_type, str(exc).split(": ")[-1]), []).append(name)
            continue
        for why in node_problems(spec, imported.opset, head_params, imported.domains):
            grouped.setdefault((node.op_type, why), []).append(name)
        for o in node.output:
            if not o:
                continue
            v = imported.values.get(o)
            if v is None or v.dtype not in ("float32", "int64"):
                tensors.append(f"{o!r} (output of {name}) has {'an unknown type' if v is None else 'dtype ' + v.dtype}"
                               "; the head computes float32 (int64 only for indices)")
            elif None in v.shape[1:] and o in {x.name for x in imported.outputs}:
                tensors.append(f"{o!r} (output of {name}) has shape {list(v.shape)}: only the batch "
                               "dimension of a head output may be dynamic")
    for t in crossing:
        v = imported.values.get(t)
        if v is None or v.dtype != "float32" or None in v.shape[1:]:
            tensors.append(f"crossing tensor {t!r} must be float32 with static non-batch dimensions, it is "
                           f"{'of unknown type' if v is None else v.dtype + ' ' + str(list(v.shape))}")
    for o in imported.outputs:
        if o.dtype != "float32":
            tensors.append(f"model output {o.name!r} is {o.dtype}; the head's outputs are float32 scores or "
                           "features (keep only those, e.g. with onnx.utils.extract_model, and let the output "
                           "policy compute the label)")
    out = []
    for op in sorted({k[0] for k in grouped}):
        reasons = [(why, nodes) for (o, why), nodes in grouped.items() if o == op]
        for why, nodes in reasons:
            shown = ", ".join(nodes[:8]) + (f" and {len(nodes) - 8} more" if len(nodes) > 8 else "")
            out.append(f"{op} ({len(nodes)} node{'s' if len(nodes) > 1 else ''}: {shown}): {why}")
    return out + tensors


def _extract(model: onnx.ModelProto, inputs: list[str], outputs: list[str], what: str) -> onnx.ModelProto:
    try:
        part = onnx.utils.Extractor(model).extract_model(inputs, outputs)
        onnx.checker.check_model(part, full_check=True)
    except Exception as exc:
        raise ModelError(f"the {what} does not pass the ONNX checker: {str(exc).splitlines()[0]}") from None
    return part


# --- head conversion ---------------------------------------------------------------------

def _tspec(v: ValueSpec) -> TensorSpec:
    return TensorSpec(v.name, v.shape, v.dtype)


def head_node(imported: ImportedModel, node: onnx.NodeProto) -> NodeSpec:
    """The graph file's description of one head node (its domain: "" for ai.onnx)."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    return NodeSpec(node.name, node.op_type, tuple(node.input), tuple(node.output), attributes(node), domain)


def head_to_graph(imported: ImportedModel, head_model: onnx.ModelProto, crossing: list[str],
                  output_policy: str, meta: dict[str, Any]) -> tuple[HeadGraph, list[tuple[str, np.ndarray]]]:
    """Convert the ONNX head into the enclave's graph description and its parameter list."""
    inits = {t.name for t in head_model.graph.initializer}
    params: list[str] = []
    nodes = []
    values = {}
    for node in head_model.graph.node:
        for i in node.input:
            if i in inits and i not in params:
                params.append(i)
        spec = head_node(imported, node)
        lifted = imported.lifted.get(node.name)
        if lifted:   # the lifted attributes become the parameter inputs 1, 2, ... of the node
            order = OPERATORS[op_key(spec.domain, spec.op)].lifted
            extra = [lifted.get(a, "") for a in order]
            while extra and not extra[-1]:
                extra.pop()
            spec = dataclasses.replace(spec, inputs=spec.inputs + tuple(extra),
                                       attrs={k: v for k, v in spec.attrs.items() if k not in lifted})
            params.extend(p for p in extra if p and p not in params)
        nodes.append(spec)
        for o in node.output:
            if o:
                values[o] = _tspec(imported.values[o])
    graph = HeadGraph(
        opset=imported.opset, output_policy=output_policy,
        inputs=tuple(_tspec(imported.values[t]) for t in crossing),
        outputs=tuple(_tspec(v) for v in imported.outputs),
        parameters=tuple(_tspec(imported.values[p]) for p in params),
        values=values, nodes=tuple(nodes), meta=meta,
        domains={n.domain: imported.domains[n.domain] for n in nodes if n.domain})
    return graph, [(p, imported.initializers[p]) for p in params]


# --- the split ---------------------------------------------------------------------------

def split_model(imported: ImportedModel, rule: ProtectionRule,
                samples: Mapping[str, np.ndarray] | np.ndarray | None = None, *,
                sample_source: str = "given inputs") -> SplitResult:
    """Split ``imported`` by ``rule``; with ``samples``, also prove the split equivalent.

    Refused before anything is written: a head the enclave interpreter cannot run (every
    unsupported operator is listed with its nodes), a crossing tensor computed from parameters
    alone, and several crossing tensors that cannot travel as one bundle (different leading
    dimensions; :mod:`splitseal.protocol.bundle`)."""
    head_nodes = plan_head(imported, rule)
    head = set(head_nodes)
    backbone_nodes = [n.name for n in imported.nodes if n.name not in head]
    if not backbone_nodes:
        raise ProtectionRuleError("the split leaves the backbone empty; split later in the model")
    producer = imported.producer()
    for out in imported.outputs:
        if producer[out.name].name not in head:
            raise ProtectionRuleError(f"model output {out.name!r} would be computed by the backbone "
                                      f"(node {producer[out.name].name!r}); split before it")
    crossing = _crossing(imported, head)
    problems = head_problems(imported, head_nodes, crossing)
    if problems:
        raise UnsupportedOperatorError(
            f"the head ({len(head_nodes)} nodes, {rule.describe_split()}) cannot run in the enclave "
            f"interpreter:\n  - " + "\n  - ".join(problems) +
            "\nMove the cut so that these nodes stay in the backbone (onnxruntime runs any operator), or "
            f"re-export the model without them. The enclave interpreter supports: {', '.join(sorted(OPERATORS))}")
    derived = _constant_only(imported, crossing)
    if derived:
        raise ProtectionRuleError(
            f"tensor(s) {derived} would cross the cut although they are computed from parameters alone "
            "(e.g. an exporter's Identity over a shared initializer): parameters would reach the head "
            "through the public backbone; move the cut so that the nodes computing them are in the head")
    if len(crossing) > 1:
        try:   # several crossing tensors travel as one bundle: they must share the batch dimension
            bundle.bundle_shape([(t, imported.values[t].shape) for t in crossing])
        except InvalidInputError as exc:
            raise ProtectionRuleError(
                f"the cut ({rule.describe_split()}) is crossed by {len(crossing)} tensors that cannot travel "
                f"into the enclave together: {exc}. Move the cut to a point where the crossing tensors are "
                "batch-major alike (or a single tensor crosses)") from None

    # where each parameter lands
    sides: dict[str, str] = {}
    for node in imported.nodes:
        side = "head" if node.name in head else "backbone"
        for p in imported.node_params[node.name]:
            sides[p] = side if sides.get(p, side) == side else "both"
    protected: list[str] = []
    for pattern in rule.layers:
        users = [n for n in imported.nodes if rule.layer_matches(pattern, n.name)]
        if not users:
            raise ProtectionRuleError(f"[protect].layers pattern {pattern!r} matches no node name or module path"
                                      + _suggest(pattern, sorted({module_path(n.name) for n in imported.nodes})))
        matched = sorted({p for n in users for p in imported.node_params[n.name]
                          if ROLE_KIND.get(imported.roles[p]) in rule.kinds})
        if not matched:
            raise ProtectionRuleError(f"[protect].layers pattern {pattern!r} matches nodes "
                                      f"{[n.name for n in users][:8]} that read no parameter of kind {sorted(rule.kinds)}")
        protected.extend(m for m in matched if m not in protected)
    for pattern in rule.parameters:
        if pattern == "*":   # every parameter of the head, of the rule's kinds
            matched = sorted(p for p, side in sides.items()
                             if side == "head" and ROLE_KIND.get(imported.roles[p]) in rule.kinds)
            if not matched:
                raise ProtectionRuleError(f"[protect].parameters \"*\": the head reads no parameter of kind "
                                          f"{sorted(rule.kinds)}")
            protected.extend(m for m in matched if m not in protected)
            continue
        matched = rule.pattern_matches(pattern, {n: r for n, r in imported.roles.items() if n in sides})
        if not matched:
            candidates = sorted(n for n, r in imported.roles.items() if r in ("weight", "bias", "statistic"))
            raise ProtectionRuleError(f"[protect].parameters pattern {pattern!r} matches no parameter of kind "
                                      f"{sorted(rule.kinds)}" + _suggest(pattern, candidates))
        protected.extend(m for m in matched if m not in protected)
    for p in protected:
        if sides[p] != "head":
            users = [n.name for n in imported.nodes if n.name not in head and p in imported.node_params[n.name]]
            raise ProtectionRuleError(
                f"protected parameter {p!r} would land in the backbone (used by {users}); move the split "
                "before those nodes (e.g. a deeper rule) or drop it from [protect].parameters")
    protected.sort()

    graph_inputs = [v.name for v in imported.inputs]
    backbone_model = _extract(imported.model, graph_inputs, crossing, "backbone")
    # the model's metadata travels with the public half: it says what the outputs mean (a text
    # recogniser's character list), which the node and the requester read, never the weights
    backbone_model.metadata_props.extend(imported.model.metadata_props)
    head_model = _extract(imported.model, crossing, [o.name for o in imported.outputs], "head")
    got_b = [n.name for n in backbone_model.graph.node]
    got_h = [n.name for n in head_model.graph.node]
    if sorted(got_b) != sorted(backbone_nodes) or sorted(got_h) != sorted(head_nodes):
        raise ModelError(f"the extracted halves differ from the plan (backbone {sorted(set(got_b) ^ set(backbone_nodes))}, "
                         f"head {sorted(set(got_h) ^ set(head_nodes))}); the model has dead nodes or a "
                         "crossing tensor was missed")
    head_params = {t.name for t in head_model.graph.initializer} | {
        p for n in head_nodes for p in imported.lifted.get(n, {}).values()}
    leaked = sorted(set(protected) & {t.name for t in backbone_model.graph.initializer})
    if leaked or not set(protected) <= head_params:
        raise ProtectionRuleError(f"protected parameters {leaked or sorted(set(protected) - head_params)} "
                                  "did not land only in the head")

    meta = {"source_model_hash": _hex(imported.source_hash), "rule_hash": _hex(rule.hash),
            "protected": protected}
    if rule.max_answers_per_requester:
        # part of the head graph, whose hash the registry records: the node cannot lift it
        meta["rate_limit"] = {"answers": rule.max_answers_per_requester, "window_seconds": rule.window_seconds}
    graph, params = head_to_graph(imported, head_model, crossing, rule.output_policy, meta)
    if not params:
        raise ProtectionRuleError("the head holds no parameters; there is nothing to protect; split earlier")
    blob, index = build_parameter_blob(params)
    package = HeadPackage(encode_graph(graph), blob)
    result = SplitResult(imported, rule, backbone_model, head_model, graph, package, index, crossing,
                         backbone_nodes, head_nodes, protected, sides)
    logger.info("model split rule=%s backbone_nodes=%d head_nodes=%d crossing=%d params=%d",
                rule.name, len(backbone_nodes), len(head_nodes), len(crossing), index.entry_count)
    if samples is not None:
        result.verification = verify_split(result, samples, source=sample_source)
    return result


def _as_feed(imported: ImportedModel, samples: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
    if isinstance(samples, np.ndarray):
        if len(imported.inputs) != 1:
            raise ModelError(f"the model has {len(imported.inputs)} inputs; pass samples as a dict by name")
        samples = {imported.inputs[0].name: samples}
    feed = {}
    for spec in imported.inputs:
        if spec.name not in samples:
            raise ModelError(f"no samples for model input {spec.name!r}")
        x = np.asarray(samples[spec.name], dtype=np.float32)
        fixed = spec.shape[0] if spec.shape else None
        if (x.ndim != len(spec.shape) or any(d is not None and a != d for a, d in zip(x.shape[1:], spec.shape[1:]))
                or (fixed is not None and (fixed == 0 or x.shape[0] % fixed))):
            raise ModelError(f"samples for {spec.name!r} have shape {x.shape}, the model expects {spec.shape}"
                             + (f" (a fixed batch of {fixed}: give a multiple of {fixed} samples)" if fixed else ""))
        feed[spec.name] = x
    return feed


def _max_diff(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], names: list[str], what: str) -> float:
    worst = 0.0
    for n in names:
        x, y = np.asarray(a[n], np.float64), np.asarray(b[n], np.float64)
        if x.shape != y.shape:
            raise ModelError(f"{what}: output {n!r} has shape {y.shape}, the whole model gives {x.shape}")
        d = np.abs(x - y)
        if not np.all(d <= TOLERANCE + TOLERANCE * np.abs(x)):
            raise ModelError(f"{what} differs from the whole model on output {n!r} by up to {float(d.max()):.3g} "
                             f"(tolerance {TOLERANCE}); the split is not equivalent")
        worst = max(worst, float(d.max()) if d.size else 0.0)
    return worst


def verify_split(result: SplitResult, samples: Mapping[str, np.ndarray] | np.ndarray, *,
                 source: str = "given inputs", batch: int = 256) -> Verification:
    """Backbone then head (onnxruntime, and the enclave interpreter) vs the whole model as given
    (its original file, not the normalised one). A model exported with a fixed batch (say 1) is
    run that many samples at a time; ``samples`` in the result is the number actually run."""
    feed = _as_feed(result.imported, samples)
    n = next(iter(feed.values())).shape[0]
    fixed = [s.shape[0] for s in result.imported.inputs if s.shape and s.shape[0] is not None]
    if fixed:
        batch = fixed[0]
    whole = ort_session(result.imported.source_bytes)
    backbone = Backbone(result.backbone_bytes)
    head_ort = ort_session(result.head_model.SerializeToString())
    head_np = HeadInterpreter(result.package, result.index)
    names = [o.name for o in result.imported.outputs]
    d_ort = d_np = 0.0
    for start in range(0, max(n, 1), batch):
        part = {k: v[start:start + batch] for k, v in feed.items()}
        want = dict(zip(names, whole.run(names, part)))
        mid = backbone.run(part)
        got_ort = dict(zip(names, head_ort.run(names, {t: mid[t] for t in result.crossing})))
        got_np = head_np.run({t: mid[t] for t in result.crossing})
        d_ort = max(d_ort, _max_diff(want, got_ort, names, "backbone + head on onnxruntime"))
        d_np = max(d_np, _max_diff(want, got_np, names, "backbone + head on the enclave interpreter"))
    logger.info("split verified samples=%d max_diff_ort=%.3g max_diff_interpreter=%.3g", n, d_ort, d_np)
    return Verification(n, source, d_ort, d_np)


def random_samples(imported: ImportedModel, n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Uniform [0, 1) inputs of the model's shapes with ``n`` rows (also when the model's batch
    dimension is fixed: verification then runs them a fixed batch at a time), seeded."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in imported.inputs:
        if None in spec.shape[1:]:
            raise ModelError(f"input {spec.name!r} has dynamic dimensions {list(spec.shape)}; random samples need "
                             "static ones: verify with --inputs FILE.npy")
        shape = (n,) + tuple(d for d in spec.shape[1:])
        if math.prod(shape) > 1 << 26:
            raise ModelError(f"input {spec.name!r} of shape {shape} is too large to sample")
        out[spec.name] = rng.random(shape, dtype=np.float32)
    return out
