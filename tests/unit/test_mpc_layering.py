"""Architecture guard: the MPC package's layers point down only (engine <- node <- client)."""

from __future__ import annotations

import ast
from pathlib import Path

import mpc

MPC_DIR = Path(mpc.__file__).resolve().parent
#: layer -> top-level packages / mpc sub-packages it must not import
FORBIDDEN = {
    "engine": ("mpc.node", "mpc.client", "orchestrator", "enclave", "chain_node", "splitseal.chain"),
    "node": ("mpc.client", "orchestrator", "enclave", "chain_node"),
    "client": ("orchestrator", "enclave", "chain_node"),
}


def _imports(path: Path, package: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names.add(node.module)
            elif node.level == 1:  # relative to the module's own package
                names.add(f"{package}.{node.module}" if node.module else package)
            elif node.level == 2:
                names.add(f"mpc.{node.module}" if node.module else "mpc")
    return names


def _offends(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_mpc_layers_point_down_only():
    offenders = {}
    for layer, forbidden in FORBIDDEN.items():
        files = sorted((MPC_DIR / layer).glob("*.py"))
        assert len(files) >= 4, layer
        for path in files:
            bad = {n for n in _imports(path, f"mpc.{layer}") if any(_offends(n, f) for f in forbidden)}
            if bad:
                offenders[f"{layer}/{path.name}"] = sorted(bad)
    assert offenders == {}, f"mpc layers must point down only: {offenders}"


def test_the_node_package_is_what_the_issue_names():
    assert {p.stem for p in (MPC_DIR / "engine").glob("*.py")} >= {
        "ring", "matmul", "beaver", "protocol", "transport", "channel", "recognition"}
    assert {p.stem for p in (MPC_DIR / "node").glob("*.py")} >= {"node", "dealer", "store", "signing", "__main__"}
    assert {p.stem for p in (MPC_DIR / "client").glob("*.py")} >= {"terminal", "owner", "cluster", "audit"}


def test_the_onnx_importer_sits_below_both_of_its_users():
    import splitseal.onnx_import as importer

    names = _imports(Path(importer.__file__), "splitseal")
    top = {n.split(".")[0] for n in names}
    assert not top & {"enclave", "orchestrator", "mpc", "chain_node"}, sorted(names)
    assert {n for n in names if n.split(".")[0] not in ("splitseal", "__future__")} <= {
        "logging", "os", "dataclasses", "pathlib", "typing", "numpy", "onnx"}, sorted(names)
