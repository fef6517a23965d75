"""The HTML audit report in a real headless browser (Debian's Chromium): the page renders, the
verdict and every request row are in the DOM the browser built, the plots are drawn, and the
embedded JSON parses. Skipped, with the reason, where no Chromium is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from orchestrator.audit import Auditor, render_html
from tests.support import enclave_support as es

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian package `chromium`; "
                                              ".ci/run installs it where it can)")
def test_the_report_renders_in_chromium(embedded_chain, embedded_deployment, tmp_path):
    snapshot = embedded_chain.snapshot()
    w = es.build_world(embedded_chain, embedded_deployment, tmp_path)
    try:
        run = es.open_request(w, es.sample_inputs(1, seed=2))
        es.submit(w, run, es.infer(w, run))
        audit = Auditor(w.chain, w.deployment).model(w.model_id)
        page = tmp_path / "report.html"
        page.write_text(render_html(audit))
    finally:
        w.client.close()
        w.process.stop()
        embedded_chain.revert(snapshot)
    profile = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(r'id="verdict">(NOT )?VERIFIED<', dom.stdout)
    assert f"<td>{run.request_id}</td>" in dom.stdout and "<svg" in dom.stdout
    raw = re.search(r'<script type="application/json" id="audit-json">(.*?)</script>', dom.stdout, re.S)
    assert raw and json.loads(raw.group(1).replace("<\\/", "</"))["modelId"] == audit.model_id
    shot = tmp_path / "report.png"
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                           "--window-size=1280,2000", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]
