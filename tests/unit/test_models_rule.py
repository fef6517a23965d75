"""Protection rule parsing and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_utils.crypto import keccak

from orchestrator.models.rule import load_rule, parse_rule
from splitseal.errors import ProtectionRuleError

ROOT = Path(__file__).resolve().parents[2]

GOOD = b'''version = 1
name = "classifier default"
[split]
at_tensor = "backbone.flatten.out"
[protect]
parameters = ["neck.*", "head.fc.weight"]
kinds = ["weights"]
[output]
policy = "label"
'''


def test_parse_good_rule():
    r = parse_rule(GOOD)
    assert r.name == "classifier default"
    assert r.at_tensor == "backbone.flatten.out" and r.at_node is None and r.protect_last_layers is None
    assert r.parameters == ("neck.*", "head.fc.weight") and r.kinds == {"weights"}
    assert r.output_policy == "label"
    assert r.hash == bytes(keccak(GOOD))
    assert r.matches("neck.fc.weight", "weight") and r.matches("neck.bn.mean", "statistic")
    assert not r.matches("neck.fc.bias", "bias")
    assert not r.matches("backbone.conv.weight", "weight")


def test_kinds_default_to_both():
    r = parse_rule(GOOD.replace(b'kinds = ["weights"]\n', b""))
    assert r.kinds == {"weights", "biases"}


@pytest.mark.parametrize("path", sorted((ROOT / "rules").glob("*.toml")), ids=lambda p: p.name)
def test_committed_rules_parse(path):
    assert load_rule(path).hash == bytes(keccak(path.read_bytes()))


@pytest.mark.parametrize("change, message", [
    ((b'at_tensor = "backbone.flatten.out"', b'at_tensor = "x"\nat_node = "y"'), "exactly one of"),
    ((b'at_tensor = "backbone.flatten.out"', b''), "exactly one of"),
    ((b'at_tensor = "backbone.flatten.out"', b'protect_last_layers = 0'), "positive integer"),
    ((b'at_tensor = "backbone.flatten.out"', b'protect_last_layers = true'), "positive integer"),
    ((b'at_tensor = "backbone.flatten.out"', b'at_tensor = ""'), "non-empty string"),
    ((b'at_tensor = "backbone.flatten.out"', b'at_tensr = "a"'), "unknown key"),
    ((b'policy = "label"', b'policy = "everything"'), "policy must be one of"),
    ((b'parameters = ["neck.*", "head.fc.weight"]', b'parameters = []'), r"needs parameters.*and/or layers"),
    ((b'parameters = ["neck.*", "head.fc.weight"]', b'parameters = "neck.*"'), "must be a list of names or globs"),
    ((b'kinds = ["weights"]', b'kinds = ["gradients"]'), "kinds"),
    ((b'version = 1', b'version = 2'), "version"),
    ((b'[output]\npolicy = "label"\n', b''), r"\[output\]"),
    ((b'name = "classifier default"', b'name = "x"\nextra = 1'), "unknown key"),
    ((b'[split]', b'[split'), "not valid TOML"),
])
def test_bad_rules_say_what_to_fix(change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(ProtectionRuleError, match=message):
        parse_rule(GOOD.replace(old, new))


def test_missing_file_and_non_utf8():
    with pytest.raises(ProtectionRuleError, match="does not exist"):
        load_rule("/nonexistent/rule.toml")
    with pytest.raises(ProtectionRuleError, match="UTF-8"):
        parse_rule(b"\xff\xfe")
