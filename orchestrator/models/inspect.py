"""Inspect a model file or a split directory: layers, parameters, sides, sizes, hashes.

For a split directory the files are re-hashed and re-decoded, so ``inspect`` doubles as a check
that ``split.json`` still describes the files next to it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from enclave.package import decode_graph, decode_head_package, decode_index
from orchestrator.models import load_model
from orchestrator.models.rule import load_rule
from orchestrator.models.split import split_model
from splitseal.errors import ModelError
from splitseal.protocol.crypto import keccak256


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def inspect_model(path: str | Path, rule_path: str | Path | None = None) -> dict[str, Any]:
    """Layers (nodes with output shapes), parameters (role, dtype, shape, bytes, sha256); with a
    rule, also the side (backbone / head) each layer and parameter lands on under that rule."""
    imp = load_model(path)
    node_side: dict[str, str] = {}
    param_side: dict[str, str] = {}
    protected: set[str] = set()
    rule_info = None
    if rule_path is not None:
        rule = load_rule(rule_path)
        res = split_model(imp, rule)
        node_side = {n: "head" for n in res.head_nodes} | {n: "backbone" for n in res.backbone_nodes}
        param_side, protected = res.sides, set(res.protected)
        rule_info = {"path": str(rule_path), "name": rule.name, "hash": _hex(rule.hash),
                     "split": rule.describe_split(), "crossing": res.crossing}
    producer_shapes = imp.values
    layers = [{"name": n.name, "op": n.op_type,
               "outputs": [{"name": o, "shape": list(producer_shapes[o].shape)} for o in n.output if o],
               "parameters": imp.node_params[n.name], "side": node_side.get(n.name)} for n in imp.nodes]
    params = [{"name": k, "role": imp.roles[k], "dtype": v.dtype.name, "shape": list(v.shape), "bytes": int(v.nbytes),
               "sha256": hashlib.sha256(v.tobytes()).hexdigest(), "side": param_side.get(k),
               "protected": k in protected} for k, v in imp.initializers.items()]
    return {"kind": "model", "path": str(path), "hash": _hex(imp.source_hash), "bytes": len(imp.source_bytes),
            "rule": rule_info,
            "opset": imp.opset, "inputs": [{"name": v.name, "shape": list(v.shape)} for v in imp.inputs],
            "outputs": [{"name": v.name, "shape": list(v.shape)} for v in imp.outputs],
            "weighted_layers": [n.name for n in imp.layers()], "layers": layers, "parameters": params}


def inspect_split(directory: str | Path) -> dict[str, Any]:
    """split.json, checked against the files it names (hashes, Merkle root, entry count)."""
    d = Path(directory)
    try:
        summary = json.loads((d / "split.json").read_text())
    except FileNotFoundError:
        raise ModelError(f"{d} has no split.json; is it the output of `splitseal model split`?") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{d / 'split.json'} is not valid JSON: {exc}") from None
    problems: list[str] = []
    backbone = (d / "backbone.onnx").read_bytes()
    if _hex(keccak256(backbone)) != summary["backbone"]["hash"]:
        problems.append("backbone.onnx does not match its recorded hash")
    rule_file = d / summary["rule"].get("file", "rule.toml")
    if not rule_file.exists() or _hex(keccak256(rule_file.read_bytes())) != summary["rule"]["hash"]:
        problems.append("rule.toml is missing or does not match its recorded hash")
    pkg_bytes = (d / "head.pkg").read_bytes()
    pkg = decode_head_package(pkg_bytes)
    index = decode_index((d / "head.index").read_bytes())
    head = summary["head"]
    for key, value in (("package_hash", pkg.plain_hash), ("graph_hash", pkg.graph_hash),
                       ("params_hash", pkg.params_hash)):
        if _hex(value) != head[key]:
            problems.append(f"head.pkg: {key} does not match split.json")
    if _hex(index.merkle_root()) != summary["index"]["merkle_root"] or index.entry_count != summary["index"]["entry_count"]:
        problems.append("head.index: Merkle root or entry count does not match split.json")
    if _hex(index.plain_hash) != summary["index"]["hash"]:
        problems.append("head.index: hash does not match split.json")
    graph = decode_graph(pkg.graph_bytes)
    entries = [{"name": e.name, "dtype": e.dtype, "shape": list(e.shape), "offset": e.offset,
                "length": e.length, "sha256": e.sha256.hex()} for e in index.entries]
    return {"kind": "split", "path": str(d), "summary": summary, "index_entries": entries,
            "head_ops": [n.op for n in graph.nodes], "problems": problems}


def inspect_path(path: str | Path, rule_path: str | Path | None = None) -> dict[str, Any]:
    """Inspect a model file (optionally under a rule) or a split directory."""
    p = Path(path)
    if p.is_dir():
        if rule_path is not None:
            raise ModelError("--rule applies to a model file; a split directory already records its rule")
        return inspect_split(p)
    if not p.exists():
        raise ModelError(f"{p} does not exist; pass an ONNX model file or a split directory")
    return inspect_model(p, rule_path)


def _fmt_bytes(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def render(report: dict[str, Any]) -> str:
    """A human-readable table of an inspection report."""
    lines: list[str] = []
    if report["kind"] == "model":
        lines.append(f"model {report['path']}  opset {report['opset']}  {_fmt_bytes(report['bytes'])}  "
                     f"keccak256 {report['hash']}")
        lines.append("inputs:  " + ", ".join(f"{v['name']} {v['shape']}" for v in report["inputs"]))
        lines.append("outputs: " + ", ".join(f"{v['name']} {v['shape']}" for v in report["outputs"]))
        r = report.get("rule")
        if r:
            lines.append(f"rule:    {r['name']} ({r['split']})  keccak256 {r['hash']}")
            lines.append("crossing tensors: " + ", ".join(r["crossing"]))
        lines.append("")
        lines.append(f"{'layer':32} {'op':20} {'side':9} output shape")
        for layer in report["layers"]:
            for o in layer["outputs"]:
                lines.append(f"{layer['name']:32} {layer['op']:20} {layer['side'] or '-':9} {o['shape']}")
        lines.append("")
        lines.append(f"{'parameter':32} {'role':10} {'side':9} {'dtype':8} {'shape':16} {'size':>10}  sha256")
        for p in report["parameters"]:
            side = (p["side"] or "-") + ("*" if p["protected"] else "")
            lines.append(f"{p['name']:32} {p['role']:10} {side:9} {p['dtype']:8} {str(p['shape']):16} "
                         f"{_fmt_bytes(p['bytes']):>10}  {p['sha256'][:16]}…")
        if r:
            lines.append("(* = protected by the rule)")
        return "\n".join(lines)
    s = report["summary"]
    lines.append(f"split {report['path']}")
    lines.append(f"model    {s['model']['path']}  keccak256 {s['model']['hash']}")
    lines.append(f"rule     {s['rule']['name']} ({s['rule']['split']}, output {s['rule']['output_policy']})  "
                 f"keccak256 {s['rule']['hash']}")
    lines.append(f"backbone {len(s['backbone']['nodes'])} nodes  {_fmt_bytes(s['backbone']['bytes'])}  "
                 f"keccak256 {s['backbone']['hash']}")
    h = s["head"]
    lines.append(f"head     {len(h['nodes'])} nodes ({', '.join(h['nodes'])})")
    lines.append(f"  headGraphHash  {h['graph_hash']}  ({_fmt_bytes(h['graph_bytes'])})")
    lines.append(f"  headParamsHash {h['params_hash']}  ({_fmt_bytes(h['params_bytes'])})")
    lines.append(f"  package hash   {h['package_hash']}")
    lines.append(f"index    {s['index']['entry_count']} entries  Merkle root {s['index']['merkle_root']}")
    lines.append("crossing " + ", ".join(f"{v['name']} {v['shape']}" for v in h["inputs"]))
    lines.append("")
    lines.append(f"{'parameter':32} {'side':9} {'protected':9} {'role':10} {'shape':16} {'size':>10}")
    for p in s["parameters"]:
        lines.append(f"{p['name']:32} {p['side']:9} {'yes' if p['protected'] else 'no':9} {p['role']:10} "
                     f"{str(p['shape']):16} {_fmt_bytes(p['bytes']):>10}")
    v = s.get("verification")
    if v:
        lines.append("")
        lines.append(f"verified on {v['samples']} samples ({v['source']}): max |diff| onnxruntime "
                     f"{v['max_abs_diff_onnxruntime']:.3g}, enclave interpreter {v['max_abs_diff_interpreter']:.3g} "
                     f"(tolerance {v['tolerance']})")
    lines.append("")
    lines.append("files match split.json" if not report["problems"] else "PROBLEMS: " + "; ".join(report["problems"]))
    return "\n".join(lines)
