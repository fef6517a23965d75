"""Architecture guard: layers point down only, and the enclave stays free of chain and host code.

Every module of the product is matched (longest prefix first) to a layer rule that lists the
first-party packages it may import; lazy imports inside functions count as much as top-level
ones. Third-party libraries a layer must not load are listed per layer too (the enclave is the
trusted computing base: no web3, no ONNX runtime, no pickle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("splitseal", "enclave", "mpc", "chain_node", "orchestrator", "tests")
NOT_IN_TCB = ("web3", "eth_tester", "eth_account", "onnx", "onnxruntime", "solcx", "pickle", "requests",
              "websockets", "sklearn")
SHARED = ("splitseal.errors", "splitseal.protocol")

#: module prefix -> (first-party prefixes it may import, third-party top-level names it may not)
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "splitseal": (("splitseal",), ()),
    "splitseal.errors": ((), NOT_IN_TCB),
    "splitseal.config": (SHARED, NOT_IN_TCB),  # errors, and protocol facts a setting names
    "splitseal.protocol": (SHARED, NOT_IN_TCB),
    "splitseal.chain": (SHARED + ("splitseal.config", "splitseal.chain"), ()),
    "splitseal.enclave_client": (SHARED + ("splitseal.config",), ("web3", "eth_tester", "onnx", "onnxruntime")),
    "splitseal.onnx_import": (SHARED, ("web3", "eth_tester", "eth_account", "onnxruntime")),
    # the public Python API: a façade over the whole system, imported by nothing in the project
    "splitseal.api": (("splitseal", "orchestrator"), ()),
    "enclave": (SHARED + ("enclave",), NOT_IN_TCB),
    "mpc.engine": (SHARED + ("mpc.engine",), ("web3", "eth_tester", "eth_account", "onnx", "onnxruntime", "pickle")),
    "mpc.node": (SHARED + ("splitseal.config", "mpc.engine", "mpc.node"), ("web3", "eth_tester", "onnx", "onnxruntime", "pickle")),
    "mpc.client": (("splitseal", "mpc"), ("pickle",)),
    "mpc": (("mpc",), ()),
    "chain_node": (("splitseal", "chain_node"), ("pickle",)),
    "orchestrator": (("splitseal", "enclave", "mpc", "chain_node", "orchestrator"), ("pickle",)),
}
PACKAGES = ("splitseal", "enclave", "mpc", "chain_node", "orchestrator")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> set[tuple[str, ...]]:
    """Every import of ``path``, relative ones resolved: each as the names that would satisfy it
    (``from pkg import x`` is fine if ``pkg.x`` is an allowed module or ``pkg`` is allowed)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[tuple[str, ...]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update((alias.name,) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.update((f"{source}.{alias.name}", source) for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"):
            found.update((a.value,) for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return found


def rule_for(module: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    for prefix in sorted(RULES, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return (prefix, *RULES[prefix])
    raise AssertionError(f"no layer rule covers {module}; add one to RULES")


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(path: Path) -> list[str]:
    module = module_name(path)
    layer, allowed, banned = rule_for(module)
    found = []
    for names in sorted(imports_of(path, module)):
        top = names[0].split(".")[0]
        if top in FIRST_PARTY:
            if not any(_within(n, allowed) for n in names):
                found.append(f"{module} ({layer}) imports {names[0]}")
        elif top in banned:
            found.append(f"{module} ({layer}) loads {names[0]}")
    return found


def product_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_layers_point_down_only():
    files = product_files()
    assert len(files) > 60
    problems = [v for path in files for v in violations(path)]
    assert problems == [], "layer rules broken:\n" + "\n".join(problems)


def test_nothing_in_the_project_imports_the_api_facade():
    users = [module_name(p) for p in product_files() if module_name(p) not in ("splitseal", "splitseal.api")
             and any("splitseal.api" in names for names in imports_of(p, module_name(p)))]
    assert users == []


def test_the_enclave_is_measured_with_every_shared_file_it_imports():
    from enclave import identity

    measured = set(identity.code_files()) | set(identity.interpreter_files())
    needed = set()
    for path in (ROOT / "enclave").glob("*.py"):
        for name in (n for names in imports_of(path, module_name(path)) for n in names):
            if name.split(".")[0] == "splitseal":
                candidate = ROOT / (name.replace(".", "/") + ".py")
                package = ROOT / name.replace(".", "/") / "__init__.py"
                for file in (candidate, package):
                    if file.exists():
                        needed.add(file.relative_to(ROOT).as_posix())
    assert needed and needed <= measured, f"imported by the enclave but not measured: {sorted(needed - measured)}"


@pytest.mark.parametrize("source, expected", [
    ("from web3 import Web3\n", "loads web3"),
    ("import importlib\nimportlib.import_module('orchestrator.chain')\n", "imports orchestrator.chain"),
    ("from splitseal.chain import connect\n", "imports splitseal.chain"),
    ("def f():\n    from chain_node import listener\n", "imports chain_node"),
])
def test_the_guard_catches_a_forbidden_import(tmp_path, monkeypatch, source, expected):
    probe = ROOT / "enclave" / "_layer_probe.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == probe else _read(self))
    assert any(expected in v for v in violations(probe)), violations(probe)


_read = Path.read_text
