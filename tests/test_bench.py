"""scripts/bench.py: the quick mode runs end to end, writes the expected fields and passes every
check it judges; a failed check makes the script exit 1.

Timings are not asserted (they are noise on a shared CPU, and the quick mode does not judge its
timing checks); only the structure of the results and the facts that do not depend on timing
(instrumentation counts, flat memory) are.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
TIMING_CHECKS = {"1_kv_flat", "1_baseline_grows", "3_vace_first_cheap"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--out", str(out)],
                         check=False, capture_output=True, text=True, timeout=300)
    return run, out


def test_quick_bench_writes_json_and_markdown(quick_run):
    run, tmp_path = quick_run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "results-cpu-quick.json").read_text())
    markdown = (tmp_path / "results-cpu-quick.md").read_text()

    assert {"device", "quick", "machine", "sizes", "repeats", "cache", "vace", "memory", "memory_runs",
            "per_chunk", "attention", "instrumentation", "profile", "checks", "runtime_s"} <= set(result)
    assert result["device"] == "cpu" and result["quick"] is True
    assert {"cpu", "torch", "torch_threads", "gpu"} <= set(result["machine"])
    assert result["machine"]["torch_threads"] == 1
    assert {"preset", "height", "width", "dtype", "tokens_per_frame", "chunk_frames", "window_frames",
            "sink_frames"} <= set(result["sizes"])

    chunks = result["chunks"]
    vace_runs = ("vace_off", "vace_causal", "vace_references", "vace_block", "vace_first")
    for name, length in [("kv", chunks["kv"]), ("recompute", chunks["recompute"])] + [(n, chunks["vace"])
                                                                                      for n in vace_runs]:
        curve = result["per_chunk"][name]
        assert len(curve["wall_s"]) == len(curve["cpu_s"]) == length
        assert all(t > 0 for t in curve["wall_s"])
        assert {"first_chunk_latency_s", "fps", "steady_fps", "video_frames"} <= set(curve)

    for key in ("kv_late_over_early_wall", "kv_late_over_early_cpu", "baseline_late_over_early_wall",
                "baseline_late_over_early_cpu"):
        assert result["cache"][key] > 0
    for mode in ("causal", "references", "block", "first"):
        for clock in ("wall", "cpu"):
            assert result["vace"][f"{mode}_over_off_{clock}"] > 0
        assert f"vace_attention={mode}" in markdown or mode == "first"
    for key in ("long_over_short_latents_aside", "long_over_short_keep_latents",
                "long_over_short_vace_latents_aside"):
        assert result["memory"][key] > 0
    assert len(result["memory_runs"]) == 8
    assert all(r["rss_peak_mib"] > 0 for r in result["memory_runs"])

    # timing-independent facts: the cache is read as a view, the prompt embedded once,
    # RoPE tables built once per block
    inst = result["instrumentation"]
    assert inst["steady_state_passes"] > 0
    assert inst["steady_state_reads_index_select"] == 0
    assert inst["encode_text_calls"] == 1
    assert inst["rope_tables_built"] == inst["blocks"]
    assert set(result["checks"]) == {"1_kv_flat", "1_baseline_grows", "2_memory_flat", "3_vace_first_cheap",
                                     "5_no_cache_copy_no_reembedding"}
    assert "| figure |" in markdown
    for name, ok in result["checks"].items():
        if name in TIMING_CHECKS:
            assert ok is None and f"SKIP {name}" in run.stdout  # not judged in a smoke run
        else:
            assert ok is True and f"PASS {name}" in run.stdout


def test_a_failed_check_makes_the_bench_exit_1(quick_run, monkeypatch, tmp_path, capsys):
    """The same results with one judged check failed: main() reports it and returns 1."""
    _, out = quick_run
    result = json.loads((out / "results-cpu-quick.json").read_text())
    result["checks"]["2_memory_flat"] = False
    bench = load_script("bench")
    monkeypatch.setattr(bench, "run", lambda args: result)
    assert bench.main(["--quick", "--device", "cpu", "--out", str(tmp_path)]) == 1
    assert "FAIL 2_memory_flat" in capsys.readouterr().out
    result["checks"]["2_memory_flat"] = True
    assert bench.main(["--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
