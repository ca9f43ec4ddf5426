"""Smoke test of scripts/bench_native_ar.py: its quick mode runs end to end against a real ComfyUI with
the native AR nodes and writes the expected fields.

It needs ComfyUI's python (the script imports `comfy`): COMFYUI_PYTHON (default
/opt/comfy-venv/bin/python) and a checkout with comfy/ldm/wan/ar_model.py in COMFYUI_DIR (default
/opt/ComfyUI); it skips without them. Timings are not asserted (noise on a shared CPU); the facts
that do not depend on timing are: the cache bytes each path allocates and that both run one network.
"""

import json

import pytest

from helpers import comfyui_for_scripts, run_quick_script

COMFYUI_DIR, COMFYUI_PYTHON, FOUND = comfyui_for_scripts("comfy/ldm/wan/ar_model.py")

pytestmark = pytest.mark.skipif(not FOUND, reason="needs a ComfyUI with the native AR nodes (COMFYUI_DIR, 0.2x+) "
                                                  "and its python (COMFYUI_PYTHON)")


def test_quick_side_by_side_writes_json_and_markdown(tmp_path):
    run = run_quick_script("bench/bench_native_ar.py", COMFYUI_PYTHON, COMFYUI_DIR, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "results-native-ar-cpu-quick.json").read_text())
    markdown = (tmp_path / "results-native-ar-cpu-quick.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results-native-ar-cpu-quick.json",
                                                         "results-native-ar-cpu-quick.md"]  # no section file

    plan = result["plan"]
    for name in ("ours", "ours_w21", "native"):
        curve = result["per_chunk"][name]
        assert len(curve["wall_s"]) == len(curve["cpu_s"]) == plan["chunks"]
        assert all(t > 0 for t in curve["wall_s"])
        for key in ("late_over_early_wall", "late_over_early_cpu", "late_over_steady_wall"):
            assert result["timing"][f"{name}_{key}"] > 0
        assert result["memory"][f"{name}_peak_long_over_short"] > 0
    assert len(result["memory_runs"]) == 6 and all(r["rss_peak_mib"] > 0 for r in result["memory_runs"])

    # cache bytes, independent of timing: ours holds the window, the native path the whole video
    short, long = plan["memory_chunks"]
    frame_bytes = 4 * 2 * result["tokens_per_frame"] * 256 * 4  # 4 layers, K and V, dim 256, float32
    assert result["memory"]["native_kv_cache_bytes"] == [3 * short * frame_bytes, 3 * long * frame_bytes]
    assert result["memory"]["ours_kv_cache_bytes"] == [12 * frame_bytes] * 2
    assert result["memory"]["ours_w21_kv_cache_bytes"] == [21 * frame_bytes] * 2
    full = {row["video_frames"]: row for row in result["full_size_cache"]}
    one_frame = 30 * 2 * 1560 * 1536 * 2  # Wan2.1-1.3B, 480x832, bf16
    assert full[81]["native_bytes"] == 21 * one_frame and full[3841]["native_bytes"] == 961 * one_frame
    assert full[3841]["ours_bytes"] == 12 * one_frame

    assert result["first_pass_max_abs_diff"] < 1e-4  # both load the same network from the same file
    assert result["comfyui"] != "unknown" and result["machine"]["torch_threads"] == 1
    assert set(result["checks"]) == {"ours_flat_time", "ours_flat_memory"}
    assert "## Side by side with ComfyUI's native AR nodes" in markdown
    for name in result["checks"]:
        assert f"PASS {name}" in run.stdout or f"FAIL {name}" in run.stdout
