"""Protection rules: where to split a model, what must be protected, what leaves the enclave.

A rule is a small TOML file (see ``rules/*.toml`` and ``docs/FORMATS.md``)::

    version = 1
    name = "digits classifier: neck + head in the enclave"

    [split]                       # exactly one of:
    at_tensor = "neck.pool"       #   the backbone ends with this tensor; its consumers start the head
    # at_node = "neck.conv"       #   this node and everything that depends on it form the head
    # at_layer = "layer4.*"       #   every node whose name or module path matches this glob, and
    #                             #   everything after them ("/layer4/*" by torch node name too)
    # protect_last_layers = 2     #   the last N weighted layers (Conv, Gemm, MatMul) and all after them

    [protect]
    parameters = ["neck.*", "head.*"]   # names or fnmatch globs; each must match a parameter;
                                        # "*" alone: every parameter of the head
    layers = ["layer4.*", "/fc/*"]      # optional: every parameter read by the nodes whose name
                                        # or module path matches (TorchScript's onnx::Conv_193 too)
    kinds = ["weights", "biases"]       # weights (incl. BN scale/statistics) and/or biases

    [output]
    policy = "label_scores"             # label | label_scores | features | ctc_greedy

Parsing checks the rule on its own (:func:`load_rule`); whether the model can satisfy it is
checked by the split. The rule's hash is keccak256 of the file bytes, as the registry records.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave.package import OUTPUT_POLICIES
from splitseal.errors import ProtectionRuleError
from splitseal.protocol.crypto import keccak256

RULE_VERSION = 1
KINDS = ("weights", "biases")
#: parameter role (from the importer) -> the kind a rule names it by
ROLE_KIND = {"weight": "weights", "statistic": "weights", "bias": "biases"}

_TOP = {"version", "name", "split", "protect", "output"}
_SPLIT = {"at_tensor", "at_node", "at_layer", "protect_last_layers"}
_PROTECT = {"parameters", "layers", "kinds"}
_OUTPUT = {"policy", "max_answers_per_requester", "window_seconds"}


@dataclass(frozen=True)
class ProtectionRule:
    """A parsed, self-consistent protection rule."""

    name: str
    at_tensor: str | None
    at_node: str | None
    protect_last_layers: int | None
    parameters: tuple[str, ...]
    kinds: frozenset[str]
    output_policy: str
    source_bytes: bytes
    label: str = "<rule>"
    at_layer: str | None = None
    layers: tuple[str, ...] = ()
    #: The enclave answers a requester at most this many times per ``window_seconds`` (0: no
    #: limit): the owner's brake on approximating the head by queries.
    max_answers_per_requester: int = 0
    window_seconds: int = 3600

    @property
    def hash(self) -> bytes:
        """keccak256 of the rule file (``protectionRuleHash`` in the registry)."""
        return keccak256(self.source_bytes)

    def describe_split(self) -> str:
        if self.at_tensor is not None:
            return f"at tensor {self.at_tensor!r}"
        if self.at_node is not None:
            return f"at node {self.at_node!r}"
        if self.at_layer is not None:
            return f"at layer {self.at_layer!r}"
        return f"protect the last {self.protect_last_layers} layer(s)"

    def matches(self, name: str, role: str) -> bool:
        """True when parameter ``name`` with ``role`` must be protected under this rule."""
        kind = ROLE_KIND.get(role)
        return kind in self.kinds and any(fnmatch.fnmatchcase(name, p) for p in self.parameters)

    def layer_matches(self, pattern: str, node_name: str) -> bool:
        """True when ``pattern`` (a glob) matches the node's name or its module path."""
        return fnmatch.fnmatchcase(node_name, pattern) or fnmatch.fnmatchcase(module_path(node_name), pattern)

    def pattern_matches(self, pattern: str, roles: dict[str, str]) -> list[str]:
        return sorted(n for n, r in roles.items()
                      if ROLE_KIND.get(r) in self.kinds and fnmatch.fnmatchcase(n, pattern))


def module_path(node_name: str) -> str:
    """The module path of a torch-exported node name: ``/layer4/layer4.0/conv1/Conv`` ->
    ``layer4.0.conv1`` (scopes joined by dots, a scope already qualified by its parent's name
    replacing it, the operator dropped). Names without ``/`` are their own path."""
    if "/" not in node_name:
        return node_name
    parts = [p for p in node_name.split("/") if p][:-1]
    out: list[str] = []
    for p in parts:
        if out and p.startswith(".".join(out) + "."):
            out = [p]
        elif out and p.startswith(out[-1] + "."):
            out[-1] = p
        else:
            out.append(p)
    return ".".join(out)


def load_rule(source: str | os.PathLike[str] | bytes) -> ProtectionRule:
    """Load a rule from a path or from the file's bytes."""
    if isinstance(source, (bytes, bytearray)):
        return parse_rule(bytes(source))
    path = Path(source)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProtectionRuleError(f"protection rule {path} does not exist") from None
    return parse_rule(data, label=str(path))


def parse_rule(data: bytes, label: str = "<rule>") -> ProtectionRule:
    """Parse and check a rule; errors say which key is wrong and what is expected."""
    def fail(msg: str) -> ProtectionRuleError:
        return ProtectionRuleError(f"protection rule {label}: {msg}")

    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise fail("is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"is not valid TOML: {exc}") from None

    def section(obj: dict[str, Any], key: str, known: set[str]) -> dict[str, Any]:
        value = obj.get(key)
        if not isinstance(value, dict):
            raise fail(f"needs a [{key}] table")
        unknown = sorted(set(value) - known)
        if unknown:
            raise fail(f"unknown key(s) {unknown} in [{key}]; known: {sorted(known)}")
        return value

    unknown = sorted(set(doc) - _TOP)
    if unknown:
        raise fail(f"unknown key(s) {unknown}; known: {sorted(_TOP)}")
    if doc.get("version") != RULE_VERSION:
        raise fail(f"version = {doc.get('version')!r}; this build reads version = {RULE_VERSION}")
    name = doc.get("name", label)
    if not isinstance(name, str) or not name.strip():
        raise fail("name must be a non-empty string")

    split = section(doc, "split", _SPLIT)
    chosen = [k for k in ("at_tensor", "at_node", "at_layer", "protect_last_layers") if k in split]
    if len(chosen) != 1:
        raise fail("[split] needs exactly one of at_tensor, at_node, at_layer, protect_last_layers; got "
                   f"{chosen or 'none'}")
    at_tensor = split.get("at_tensor")
    at_node = split.get("at_node")
    at_layer = split.get("at_layer")
    last = split.get("protect_last_layers")
    for key, value in (("at_tensor", at_tensor), ("at_node", at_node), ("at_layer", at_layer)):
        if key in split and (not isinstance(value, str) or not value):
            raise fail(f"[split].{key} must be a non-empty string (a {key[3:]} name of the model)")
    if "protect_last_layers" in split and (not isinstance(last, int) or isinstance(last, bool) or last < 1):
        raise fail(f"[split].protect_last_layers must be a positive integer, got {last!r}")

    protect = section(doc, "protect", _PROTECT)
    params = protect.get("parameters", [])
    layers = protect.get("layers", [])
    for key, value in (("parameters", params), ("layers", layers)):
        if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
            raise fail(f"[protect].{key} must be a list of names or globs")
    if not params and not layers:
        raise fail("[protect] needs parameters (names or globs, \"*\" for all of the head's) and/or layers "
                   "(globs over node names or module paths)")
    kinds = protect.get("kinds", list(KINDS))
    if not isinstance(kinds, list) or not kinds or any(k not in KINDS for k in kinds):
        raise fail(f"[protect].kinds must be a non-empty list of {list(KINDS)}, got {kinds!r}")

    output = section(doc, "output", _OUTPUT)
    policy = output.get("policy")
    if policy not in OUTPUT_POLICIES:
        raise fail(f"[output].policy must be one of {list(OUTPUT_POLICIES)}, got {policy!r}")
    limit = output.get("max_answers_per_requester", 0)
    window = output.get("window_seconds", 3600)
    for key, value, lo in (("max_answers_per_requester", limit, 0), ("window_seconds", window, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= 2**31:
            raise fail(f"[output].{key} must be a whole number from {lo} to 2^31, got {value!r}")

    return ProtectionRule(name.strip(), at_tensor, at_node, last, tuple(params), frozenset(kinds), policy,
                          bytes(data), label, at_layer, tuple(layers), limit, window)
