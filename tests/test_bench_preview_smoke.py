"""Smoke test of scripts/bench_preview.py: its quick mode runs end to end with ComfyUI's Latent2RGB
previewer and writes the expected fields.

It needs ComfyUI's python (the script imports `comfy`): COMFYUI_PYTHON (default
/opt/comfy-venv/bin/python) and a checkout in COMFYUI_DIR (the first one; default /opt/ComfyUI); it
skips without them. Timings are not asserted (noise on a shared CPU); the clip shapes are.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_preview.py"
COMFYUI_DIR = Path((os.environ.get("COMFYUI_DIR") or "/opt/ComfyUI").split(os.pathsep)[0])
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON") or "/opt/comfy-venv/bin/python"

pytestmark = pytest.mark.skipif(
    not (COMFYUI_DIR / "latent_preview.py").is_file() or not Path(COMFYUI_PYTHON).is_file(),
    reason="needs a ComfyUI checkout (COMFYUI_DIR) and its python (COMFYUI_PYTHON)")


def test_quick_preview_bench_writes_json_and_markdown(tmp_path):
    run = subprocess.run([COMFYUI_PYTHON, str(SCRIPT), "--quick", "--comfyui", str(COMFYUI_DIR), "--out",
                          str(tmp_path)], env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                         check=False, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "results-preview-cpu-quick.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results-preview-cpu-quick.json",
                                                         "results-preview-cpu-quick.md"]
    tiny = result["tiny_run"]
    assert tiny["chunks"] == 3 and tiny["chunk_s_without"] > 0 and tiny["chunk_s_with"] > 0
    part = result["parts"]["tiny"]
    # a chunk of 3 latent frames is 12 video frames: 16x16 Latent2RGB images, or the 128x128 frames
    assert part["latent_clip"] == [12, 16, 16, 3] and part["decoded_clip"] == [12, 128, 128, 3]
    assert all(part[key] > 0 for key in ("latent_frames_s", "latent_encode_s", "decoded_frames_s",
                                         "decoded_encode_s"))
    assert result["comfyui"] != "unknown" and result["machine"]["torch_threads"] == 1
    assert "Live chunk previews" in (tmp_path / "results-preview-cpu-quick.md").read_text()
