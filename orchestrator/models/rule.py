"""Protection rules: where to split a model, what must be protected, what leaves the enclave.

A rule is a small TOML file (see ``rules/*.toml`` and ``docs/FORMATS.md``)::

    version = 1
    name = "digits classifier: neck + head in the enclave"

    [split]                       # exactly one of:
    at_tensor = "neck.pool"       #   the backbone ends with this tensor; its consumers start the head
    # at_node = "neck.conv"       #   this node and everything that depends on it form the head
    # protect_last_layers = 2     #   the last N weighted layers (Conv, Gemm, MatMul) and all after them

    [protect]
    parameters = ["neck.*", "head.*"]   # names or fnmatch globs; each must match a parameter
    kinds = ["weights", "biases"]       # weights (incl. BN scale/statistics) and/or biases

    [output]
    policy = "label_scores"             # label | label_scores | features

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
from splitseal.protocol.crypto import keccak256
from splitseal.errors import ProtectionRuleError

RULE_VERSION = 1
KINDS = ("weights", "biases")
#: parameter role (from the importer) -> the kind a rule names it by
ROLE_KIND = {"weight": "weights", "statistic": "weights", "bias": "biases"}

_TOP = {"version", "name", "split", "protect", "output"}
_SPLIT = {"at_tensor", "at_node", "protect_last_layers"}
_PROTECT = {"parameters", "kinds"}
_OUTPUT = {"policy"}


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

    @property
    def hash(self) -> bytes:
        """keccak256 of the rule file (``protectionRuleHash`` in the registry)."""
        return keccak256(self.source_bytes)

    def describe_split(self) -> str:
        if self.at_tensor is not None:
            return f"at tensor {self.at_tensor!r}"
        if self.at_node is not None:
            return f"at node {self.at_node!r}"
        return f"protect the last {self.protect_last_layers} layer(s)"

    def matches(self, name: str, role: str) -> bool:
        """True when parameter ``name`` with ``role`` must be protected under this rule."""
        kind = ROLE_KIND.get(role)
        return kind in self.kinds and any(fnmatch.fnmatchcase(name, p) for p in self.parameters)

    def pattern_matches(self, pattern: str, roles: dict[str, str]) -> list[str]:
        return sorted(n for n, r in roles.items()
                      if ROLE_KIND.get(r) in self.kinds and fnmatch.fnmatchcase(n, pattern))


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
    chosen = [k for k in ("at_tensor", "at_node", "protect_last_layers") if k in split]
    if len(chosen) != 1:
        raise fail(f"[split] needs exactly one of at_tensor, at_node, protect_last_layers; got {chosen or 'none'}")
    at_tensor = split.get("at_tensor")
    at_node = split.get("at_node")
    last = split.get("protect_last_layers")
    for key, value in (("at_tensor", at_tensor), ("at_node", at_node)):
        if key in split and (not isinstance(value, str) or not value):
            raise fail(f"[split].{key} must be a non-empty string (a {key[3:]} name of the model)")
    if "protect_last_layers" in split and (not isinstance(last, int) or isinstance(last, bool) or last < 1):
        raise fail(f"[split].protect_last_layers must be a positive integer, got {last!r}")

    protect = section(doc, "protect", _PROTECT)
    params = protect.get("parameters")
    if not isinstance(params, list) or not params or not all(isinstance(p, str) and p for p in params):
        raise fail("[protect].parameters must be a non-empty list of parameter names or globs")
    kinds = protect.get("kinds", list(KINDS))
    if not isinstance(kinds, list) or not kinds or any(k not in KINDS for k in kinds):
        raise fail(f"[protect].kinds must be a non-empty list of {list(KINDS)}, got {kinds!r}")

    output = section(doc, "output", _OUTPUT)
    policy = output.get("policy")
    if policy not in OUTPUT_POLICIES:
        raise fail(f"[output].policy must be one of {list(OUTPUT_POLICIES)}, got {policy!r}")

    return ProtectionRule(name.strip(), at_tensor, at_node, last, tuple(params), frozenset(kinds), policy,
                          bytes(data), label)
