"""Smoke test of scripts/bench.py: the quick mode runs end to end and writes the expected fields.

Timings are not asserted (they are noise on a shared CPU); only the structure of the results and
the facts that do not depend on timing (instrumentation counts) are.
"""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


def test_quick_bench_writes_json_and_markdown(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--out", str(tmp_path)],
                         check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
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
    for name in result["checks"]:
        assert f"PASS {name}" in run.stdout or f"FAIL {name}" in run.stdout
