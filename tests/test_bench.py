"""scripts/bench.py in CI: `--sections smoke` runs on the CPU at tiny size and passes its checks (the
test fails when one fails: bench.py exits 1), a planted regression makes it fail, the results files
are rewritten after every section and keep the other sections' figures, and a section that cannot
run costs the others nothing (exit 2). With ComfyUI's python at hand, the smoke run also measures
the streaming decode of ComfyUI's Wan VAE (the end-to-end FPS path), so that path cannot rot either.

Timings are not asserted (noise on a shared CPU); the smoke checks do not depend on them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench" / "bench.py"
COMFYUI_DIR = Path((os.environ.get("COMFYUI_DIR") or "/opt/ComfyUI").split(os.pathsep)[0])
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON") or "/opt/comfy-venv/bin/python"
SMOKE_CHECKS = {"smoke_outputs_finite", "smoke_cache_read_as_view", "smoke_prompt_embedded_once",
                "smoke_rope_once_per_block"}

bench = load_script("bench/bench")


def check_smoke(out: Path) -> dict:
    result = json.loads((out / "results-cpu.json").read_text())
    smoke = result["sections"]["smoke"]
    assert result["device"] == "cpu" and smoke["machine"]["torch_threads"] == 1
    assert set(smoke["checks"]) >= SMOKE_CHECKS and all(smoke["checks"].values())
    runs = smoke["figures"]["runs"]
    assert set(runs) == {"kv", "recompute", "vace_off", "vace_causal", "vace_references", "vace_block", "vace_first"}
    assert all(r["finite"] and r["first_chunk_s"] > 0 for r in runs.values())
    assert runs["recompute"]["chunks"] == bench.PLANS["quick"].baseline_chunks  # the whole baseline: every shape
    inst = smoke["figures"]["instrumentation"]
    assert inst["steady_state_passes"] > 0 and inst["steady_state_reads_index_select"] == 0
    markdown = (out / "results-cpu.md").read_text()
    assert "## Smoke (`--sections smoke`)" in markdown and "Checks: smoke_outputs_finite PASS" in markdown
    return smoke


def test_smoke_section_runs_and_passes(tmp_path):
    """The command CI runs; with ComfyUI's python and a checkout (as in CI) it adds --comfyui, and the
    streaming decode of ComfyUI's Wan VAE (width 8 at this size) is measured too."""
    with_comfyui = (COMFYUI_DIR / "comfy" / "model_management.py").is_file() and Path(COMFYUI_PYTHON).is_file()
    command = [COMFYUI_PYTHON if with_comfyui else sys.executable, str(SCRIPT), "--device", "cpu", "--sections",
               "smoke", "--out", str(tmp_path)] + (["--comfyui", str(COMFYUI_DIR)] if with_comfyui else [])
    run = subprocess.run(command, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, check=False,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    smoke = check_smoke(tmp_path)
    for name in smoke["checks"]:
        assert f"PASS {name}" in run.stdout
    decode = smoke["figures"]["decode"]
    if with_comfyui:
        assert decode["vae"].endswith("Wan 2.1 VAE, width 8, random weights") and decode["steady_chunk_s"] > 0
    else:
        assert decode is None


def test_a_planted_regression_fails_the_run(tmp_path, monkeypatch):
    """RoPE tables no longer cached (rebuilt on every pass): the smoke check catches it, exit 1."""
    table = bench.RotaryEmbedding.table

    def rebuilding(self, *args, **kwargs):
        self._tables.clear()
        return table(self, *args, **kwargs)

    monkeypatch.setattr(bench.RotaryEmbedding, "table", rebuilding)
    assert bench.main(["--device", "cpu", "--sections", "smoke", "--out", str(tmp_path)]) == 1
    smoke = json.loads((tmp_path / "results-cpu.json").read_text())["sections"]["smoke"]
    assert smoke["checks"]["smoke_rope_once_per_block"] is False
    assert smoke["figures"]["instrumentation"]["rope_tables_built"] > smoke["figures"]["instrumentation"]["blocks"]


def test_each_section_is_saved_and_a_broken_one_costs_the_others_nothing(tmp_path, monkeypatch):
    assert bench.main(["--device", "cpu", "--sections", "smoke", "--out", str(tmp_path)]) == 0
    before = json.loads((tmp_path / "results-cpu.json").read_text())["sections"]["smoke"]

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.48 GiB")

    monkeypatch.setattr(sys.modules["bench_common"], "generate", out_of_memory)  # what bench's runs call
    assert bench.main(["--device", "cpu", "--sections", "timing", "--out", str(tmp_path)]) == 2
    sections = json.loads((tmp_path / "results-cpu.json").read_text())["sections"]
    assert sections["smoke"] == before  # kept from the earlier run
    assert sections["timing"]["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 3.48 GiB"
    markdown = (tmp_path / "results-cpu.md").read_text()
    assert "## Smoke" in markdown and "Did not finish: OutOfMemoryError: CUDA out of memory" in markdown


def test_sections_that_need_comfyui_say_so():
    with pytest.raises(SystemExit, match="--comfyui"):
        bench.main(["--device", "cpu", "--sections", "lowvram"])
