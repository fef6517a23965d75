"""The CrypTen comparison's converter (scripts/bench_crypten_sface -> scripts/crypten_sface.py).

The export/reload round trip runs in the project venv; the torch rebuild against onnxruntime
needs the optional CrypTen venv (scripts/setup_crypten) and is skipped without it.
"""

from __future__ import annotations

import importlib.machinery
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mpc.client import faces
from mpc.client.owner import load_onnx

ROOT = Path(__file__).resolve().parents[2]
CRYPTEN_PY = ROOT / ".venv" / "crypten" / "bin" / "python"
pytestmark = pytest.mark.skipif(not faces.available(), reason="face data missing: run scripts/setup")


def _script(name: str, path: str):
    return importlib.machinery.SourceFileLoader(name, str(ROOT / "scripts" / path)).load_module()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = load_onnx(faces.sface_path())
    path = tmp_path_factory.mktemp("crypten") / "sface_layers.npz"
    _script("bench_crypten_sface", "bench_crypten_sface").export_layers(model, path)
    return model, path


def test_export_round_trip_keeps_every_layer(exported):
    model, path = exported
    specs = _script("crypten_sface", "crypten_sface.py").load_layers(str(path))
    assert [s["op"] for s in specs] == [la.op for la in model.layers]
    for spec, la in zip(specs, model.layers):
        assert spec["params"] == json.loads(json.dumps(la.params))
        for key in ("weight", "bias"):
            ours = getattr(la, key)
            assert (ours is None) == (key not in spec)
            if ours is not None:
                np.testing.assert_array_equal(spec[key], ours.astype(np.float32))


@pytest.mark.skipif(not CRYPTEN_PY.is_file(), reason="no CrypTen venv: run scripts/setup_crypten (optional)")
def test_torch_rebuild_equals_onnxruntime(exported, tmp_path):
    _, path = exported
    x = np.random.default_rng(0).random((1, 3, 112, 112), dtype=np.float32) * 255
    np.save(tmp_path / "x.npy", x)
    out = subprocess.run([str(CRYPTEN_PY), str(ROOT / "scripts" / "crypten_sface.py"), "--layers", str(path),
                          "--onnx", str(faces.sface_path()), "--input", str(tmp_path / "x.npy"), "--check-only"],
                         capture_output=True, text=True, check=True)
    check = json.loads(out.stdout.splitlines()[-1])
    assert check["torch_vs_ort_max_abs_diff"] < 1e-4 * max(1.0, check["ort_abs_max"])


def test_without_the_crypten_venv_it_says_how_to_make_it(monkeypatch, capsys, tmp_path):
    bench = _script("bench_crypten_sface", "bench_crypten_sface")
    monkeypatch.setattr(bench, "CRYPTEN_PY", tmp_path / "absent" / "bin" / "python")
    monkeypatch.setattr("sys.argv", ["bench_crypten_sface"])
    assert bench.main() == 2
    out = capsys.readouterr().out
    assert "scripts/setup_crypten" in out and "No CrypTen figure" in out
