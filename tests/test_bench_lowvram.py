"""Smoke test of scripts/bench_lowvram.py: its quick mode (CPU, tiny model) runs the LongLive Sampler
node through a real ComfyUI's memory manager in one process per mode and reports what ComfyUI loaded.

It needs ComfyUI's python: COMFYUI_PYTHON (default /opt/comfy-venv/bin/python) and a checkout in
COMFYUI_DIR (the first of a ':'-separated list; default /opt/ComfyUI); it skips without them. The
GPU figures (partial loads, streamed layers, VRAM) need a CUDA device and are not asserted here.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_lowvram.py"
COMFYUI_DIR = Path((os.environ.get("COMFYUI_DIR") or "/opt/ComfyUI").split(os.pathsep)[0])
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON") or "/opt/comfy-venv/bin/python"

pytestmark = pytest.mark.skipif(
    not (COMFYUI_DIR / "comfy" / "model_management.py").is_file() or not Path(COMFYUI_PYTHON).is_file(),
    reason="needs a ComfyUI checkout (COMFYUI_DIR) and its python (COMFYUI_PYTHON)")


def test_quick_run_loads_through_comfyui_and_reports_each_mode(tmp_path):
    run = subprocess.run([COMFYUI_PYTHON, str(SCRIPT), "--quick", "--comfyui", str(COMFYUI_DIR), "--out",
                          str(tmp_path)], env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                         check=False, capture_output=True, text=True, timeout=600)
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
