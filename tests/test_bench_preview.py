"""Smoke test of scripts/bench_preview.py: its quick mode runs end to end with ComfyUI's Latent2RGB
previewer and writes the expected fields.

It needs ComfyUI's python: COMFYUI_PYTHON (default /opt/comfy-venv/bin/python) and a checkout in
COMFYUI_DIR (the first of a ':'-separated list; default /opt/ComfyUI); it skips without them.
Timings are not asserted (noise on a shared CPU); the clip shapes are.
"""

import json

import pytest

from helpers import comfyui_for_scripts, run_quick_script

COMFYUI_DIR, COMFYUI_PYTHON, FOUND = comfyui_for_scripts("latent_preview.py")

pytestmark = pytest.mark.skipif(not FOUND, reason="needs a ComfyUI checkout (COMFYUI_DIR) and its python "
                                                  "(COMFYUI_PYTHON)")


def test_quick_preview_bench_writes_json_and_markdown(tmp_path):
    run = run_quick_script("bench/bench_preview.py", COMFYUI_PYTHON, COMFYUI_DIR, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results-preview-cpu-quick.json",
                                                         "results-preview-cpu-quick.md"]
    result = json.loads((tmp_path / "results-preview-cpu-quick.json").read_text())
    tiny = result["tiny_run"]
    assert tiny["chunks"] == 3 and tiny["chunk_s_without"] > 0 and tiny["chunk_s_with"] > 0
    part = result["parts"]["tiny"]
    # a chunk of 3 latent frames is 12 video frames: 16x16 Latent2RGB images, or the 128x128 frames
    assert part["latent_clip"] == [12, 16, 16, 3] and part["decoded_clip"] == [12, 128, 128, 3]
    assert all(part[key] > 0 for key in ("latent_frames_s", "latent_encode_s", "decoded_frames_s",
                                         "decoded_encode_s"))
    assert result["comfyui"] != "unknown" and result["machine"]["torch_threads"] == 1
    assert "Live chunk previews" in (tmp_path / "results-preview-cpu-quick.md").read_text()
