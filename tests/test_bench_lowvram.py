"""Smoke test of scripts/bench_lowvram.py: its quick mode (CPU, tiny model) runs the LongLive Sampler
node through a real ComfyUI's memory manager in one process per mode and reports what ComfyUI loaded.

It needs ComfyUI's python: COMFYUI_PYTHON (default /opt/comfy-venv/bin/python) and a checkout in
COMFYUI_DIR (the first of a ':'-separated list; default /opt/ComfyUI); it skips without them. The
GPU figures (partial loads, streamed layers, VRAM) need a CUDA device and are not asserted here.
"""

import json

import pytest

from helpers import comfyui_for_scripts, run_quick_script

COMFYUI_DIR, COMFYUI_PYTHON, FOUND = comfyui_for_scripts("comfy/model_management.py")

pytestmark = pytest.mark.skipif(not FOUND, reason="needs a ComfyUI checkout (COMFYUI_DIR) and its python "
                                                  "(COMFYUI_PYTHON)")


def test_quick_run_loads_through_comfyui_and_reports_each_mode(tmp_path):
    run = run_quick_script("bench/bench_lowvram.py", COMFYUI_PYTHON, COMFYUI_DIR, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results-lowvram-cpu-quick.json",
                                                         "results-lowvram-cpu-quick.md"]
    result = json.loads((tmp_path / "results-lowvram-cpu-quick.json").read_text())
    assert [m["mode"] for m in result["modes"]] == ["full", "lowvram"]
    for mode in result["modes"]:
        assert mode["flags"] == ["--cpu"] and mode["vram_state"] == "DISABLED"
        # ComfyUI's manager loaded the whole VACE clone (base + VACE blocks) built from comfy.ops layers
        assert mode["loaded_bytes"] == mode["model_bytes"] > 0
        assert mode["layers"] > 0 and mode["streamed_layers"] == 0 and not mode["lowvram"]
        assert mode["steady_chunk_s"] > 0 and mode["first_chunk_s"] > 0
    markdown = (tmp_path / "results-lowvram-cpu-quick.md").read_text()
    assert markdown.count("\n| full |") == 1 and markdown.count("\n| lowvram |") == 1
