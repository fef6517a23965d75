"""Short runs of the benchmarks (scripts/bench_split, scripts/bench_inference): every series runs
on the real components and the report holds every figure. No timing is asserted: the machine
is shared, and the figures in docs/BENCHMARKS.md come from full runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, script: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSEAL_")}
    # its deployment records and state stay in tmp_path, not in the checkout
    env["SPLITSEAL_HOME"] = str(tmp_path / "home")
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args, "--out", str(tmp_path / "out")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def test_bench_split_runs_the_cnn_through_the_enclave_and_takes_its_call_apart(tmp_path):
    proc = _run(tmp_path, "bench_split", "--requests", "5", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "out" / "split.json").read_text())
    assert report["rounds"] == 5
    assert report["whole_p50_ms"] > 0 and report["split_p50_ms"] > 0
    assert report["ratio_split"] == report["split_p50_ms"] / report["whole_p50_ms"]
    assert report["answer_durability"] == "background"  # the product's default is the headline series
    for other in ("split_fsync", "split_write", "split_in_process"):  # every journal mode, and in-process
        assert report[f"{other}_p50_ms"] > 0 and report[f"ratio_{other}"] > 0
    assert set(report["stages_p50_ms"]) == {"backbone", "transfer_encrypt", "input_commitment", "enclave_call",
                                            "requester_open_verify"}
    assert "journal record sealed + appended (no fsync)" in report["enclave_primitives_ms"]
    # each step also timed after a pause, as it runs in the request's sequence
    assert set(report["enclave_primitives_after_pause_ms"]) == set(report["enclave_primitives_ms"])
    assert all(v > 0 for v in report["enclave_primitives_after_pause_ms"].values())
    cpu = report["enclave_process_cpu_ms_per_request"]  # each enclave process, not the in-process core
    assert set(cpu) == {"split", "split_fsync", "split_write"} and all(v >= 0 for v in cpu.values())
    assert "ratio" in proc.stdout and "inside the enclave call" in proc.stdout
    # the protocol's floor, its enclave half in a process and in this one, answered every round
    # with the whole model's class (the script stops otherwise)
    for floor in ("floor", "floor_in_process"):
        assert report[f"{floor}_p50_ms"] > 0 and report[f"ratio_{floor}"] == \
            report[f"{floor}_p50_ms"] / report["whole_p50_ms"]
    assert "the protocol's floor" in proc.stdout


def test_bench_split_runs_a_baseline_checkout_interleaved_with_its_own(tmp_path):
    # this checkout as its own baseline: the mechanism (a child process over the other checkout's
    # packages and enclave, one round of it per round) is what is checked, not a difference
    proc = _run(tmp_path, "bench_split", "--requests", "3", "--baseline", str(ROOT), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    baseline = json.loads((tmp_path / "out" / "split.json").read_text())["baseline"]
    assert baseline["checkout"] == str(ROOT) and baseline["commit"]
    assert baseline["split_p50_ms"] > 0
    assert baseline["ratio_split"] == baseline["split_p50_ms"] / baseline["whole_p50_ms"]
    assert baseline["enclave_process_cpu_ms_per_request"] >= 0 and baseline["split_now_over_baseline"] > 0
    assert "split now / baseline" in proc.stdout


def test_bench_split_refuses_a_baseline_that_is_not_a_checkout(tmp_path):
    proc = _run(tmp_path, "bench_split", "--requests", "1", "--baseline", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and "is not a checkout" in proc.stderr


def test_bench_inference_runs_floor_ours_and_node_processes_on_both_chains(tmp_path):
    proc = _run(tmp_path, "bench_inference", "--chains", "embedded,anvil", "--requests", "3", "--concurrency", "2",
                "--duration", "1", "--nodes", "2", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "out" / "inference.json").read_text())
    assert len(report["load_average"]["before"]) == 3 and len(report["load_average"]["after"]) == 3
    for chain in ("embedded", "anvil"):
        r = report["chains"][chain]
        assert r["floor"]["latency_ms"]["n"] == 3 and r["ours"]["latency_ms"]["n"] == 3
        assert r["ours"]["audit_verified"] is True
        assert r["ratios"]["latency"] > 0 and r["floor"]["throughput_rps"] > 0
        # the floor's two transactions timed in its latency series (on anvil by the responder process)
        assert r["floor"]["transactions_ms"]["request_tx"] > 0 and r["floor"]["transactions_ms"]["respond_tx"] > 0
        assert r["ratios"]["latency_bound_from_transactions"] > 0
        # the node's share (pushed log to delivery sent) holds its stages; the requester's open timed
        st = r["ours"]["stages_ms"]
        assert st["handling"] >= st["enclave"] > 0 and st["result_open"] > 0
    assert set(report["chains"]["embedded"]["ours"]["throughput_rps"]) == {"1"}
    anvil = report["chains"]["anvil"]["ours"]
    assert set(anvil["throughput_rps"]) == {"2"} and anvil["throughput_rps"]["2"] > 0
    per_node = anvil["completed_per_node"]["2"]
    assert len(per_node) == 2 and sum(per_node.values()) > 0  # two node processes ran and served
    cpu = anvil["cpu_s_per_node"]["2"]
    assert set(cpu) == set(per_node) and all(v > 0 for v in cpu.values())  # each said what it used
    assert 0 < anvil["machine_cpu_busy"]["2"] <= 1
    assert len(anvil["throughput_runs_rps"]["2"]) == 2  # the curve measured twice, in turn
    assert anvil["throughput_rps"]["2"] == sum(anvil["throughput_runs_rps"]["2"]) / 2
    assert anvil["node_cpu_ms_per_request"]["2"] > 0
    assert all(0 < b <= 1 for b in report["chains"]["anvil"]["floor"]["machine_cpu_busy_runs"])
    assert "| anvil |" in (tmp_path / "out" / "inference.md").read_text()
