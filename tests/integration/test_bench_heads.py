"""scripts/bench_heads runs (a short version: one family, one exporter, few calls, one request
through the embedded chain) and writes its table; the timings themselves are not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.models import zoo

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not zoo.available(), reason="model zoo missing: run scripts/setup_zoo")]


def test_bench_heads_smoke(tmp_path):
    out = tmp_path / "heads.md"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_heads"), "--families", "resnet18",
                           "--exporters", "torchscript", "--cuts", "fc,in_layer4", "--repeats", "2",
                           "--requests", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    rows = report["rows"]
    assert [(r["cut"], r["crossing"]) for r in rows] == [("fc", 1), ("in_layer4", 2)]
    assert report["gemm_tiles"] in ("AVX-512", "AVX2", "scalar") and report["cpu"]
    for r in rows:
        assert r["interpreter_ms"] > 0 and r["onnxruntime_ms"] > 0 and r["e2e_ms"] > 0
    table = out.read_text()
    assert "| resnet18 | torchscript | in_layer4:" in table and "load average" in table
    assert f"the product kernel's {report['gemm_tiles']} tiles" in table


def test_bench_heads_refuses_an_unknown_family():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_heads"), "--families", "alexnet"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "unknown families ['alexnet']" in proc.stderr


def test_bench_heads_covers_the_shipped_models_with_their_e2e(tmp_path):
    """SFace and PP-OCRv4 (from their wheels, scripts/setup) and the boosted trees of models/, each
    timed on both runtimes and served once through the embedded chain."""
    from orchestrator.pretrained import faces, ocr

    if not (faces.available() and ocr.available()):
        pytest.skip("pretrained models missing: run scripts/setup")
    out = tmp_path / "heads.md"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_heads"), "--families", "sface,ppocrv4,gbt",
                           "--repeats", "2", "--requests", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["family"], r["exporter"]) for r in rows] == [("sface", "as shipped"), ("ppocrv4", "as shipped"),
                                                            ("gbt", "as shipped")]
    for r in rows:
        assert r["interpreter_ms"] > 0 and r["onnxruntime_ms"] > 0 and r["e2e_ms"] > 0
