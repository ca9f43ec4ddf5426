"""Our LONGLIVE_MODEL inside ComfyUI's own memory manager (in-process, ComfyUI's python, --cpu).

run_comfy_memory.py does the work in a subprocess and reports what ComfyUI did; these tests check
it: the network is a comfy ModelPatcher built from comfy.ops layers, LoRAs and VACE applied as
patches give exactly the weights vace_core merges itself, comfy.model_management lists the model
while it is loaded and unloading restores the file's weights, and a partial (lowvram) load
streams layers through the comfy.ops cast path with the same output. The server-level behaviour
(POST /free, file reads per run) is in test_comfy_memory_server.py.

Tolerance: outputs are float32 and ComfyUI merges LoRAs in float32 on the CPU in the same order as
vace_core, so they agree exactly (measured 0.0); 1e-5 allows a reordered sum (~1e-7 at these
magnitudes) while a LoRA left out or doubled moves outputs by the measured case-to-case gaps (> 1e-2).
"""

from __future__ import annotations

import json

import pytest

from comfy_harness import HERE, REPO_ROOT

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def report(comfy_install, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp(f"comfy_memory_{comfy_install.label}")
    out = work / "report.json"
    result = comfy_install.run_python([str(HERE / "run_comfy_memory.py"), str(REPO_ROOT), str(work), str(out)],
                                      timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return json.loads(out.read_text())


def test_the_model_is_a_comfy_model_patcher_built_from_comfy_ops(report, comfy_install):
    assert report["patcher_class"] == "comfy.model_patcher.ModelPatcher"
    assert report["linear_class"] == "comfy.ops.disable_weight_init.Linear"
    assert report["auto_dtype"] == "fp32"  # ComfyUI's choice for diffusion models on the CPU
    assert report["same_network"]  # base, + LoRA and + VACE are clones of one patcher
    # where the checkout's RAM cache recognises models among node outputs (0.33), it sees ours
    has_check = "def is_model_patcher_output" in (comfy_install.dir / "comfy" / "model_patcher.py").read_text()
    assert report["ram_cache_sees_a_model"] == (True if has_check else None)


def test_patches_give_the_merged_weights(report):
    assert report["extra_lora_vs_base_lora"] > 1e-2 and report["base_lora_vs_plain_base"] > 1e-2
    for name, error in report["errors_full_load"].items():
        assert error <= TOLERANCE, name


def test_model_management_lists_the_model_until_it_is_unloaded(report):
    for name in ("base_lora", "extra_lora", "vace", "base_lora_again"):
        assert report[f"loaded_after_{name}"] == ["LongLiveDiT"], name  # one entry: clones replace each other
        assert report[f"is_loaded_{name}"], name
    assert report["loaded_after_unload_all"] == []
    assert report["weights_restored"] and report["vace_detached_after_unload"]


def test_a_partial_lowvram_load_streams_layers_with_the_same_output(report):
    lowvram = report["lowvram"]
    assert lowvram["model_lowvram"] and lowvram["loaded_bytes"] <= lowvram["budget"]
    assert 0 < lowvram["streamed_layers"] < lowvram["layers"]
    assert lowvram["lowvram_patches"] > 0  # LoRA'd weights that stream get their patch per call
    assert lowvram["vace_attached"]
    assert lowvram["error_vs_full_load"] <= TOLERANCE
    assert not lowvram["model_lowvram_after_unload"]


def test_a_model_unloaded_during_a_run_is_loaded_again_before_the_next_pass(report):
    assert report["evicted"] == {"is_loaded": False, "vace_attached": False}
    assert report["reloaded"]["is_loaded"] and report["reloaded"]["loaded"] == ["LongLiveDiT"]
    assert report["reloaded"]["error_vs_full_load"] <= TOLERANCE


def test_lazily_created_comfy_weights_load(report, comfy_install):
    """Where the checkout has DynamicVRAM (0.33: comfy.ops creates Linear weights only when they are
    loaded), the model loads with exact outputs that way too; a checkout without it (0.8) must not
    have run the check, so a version that has the feature can never pass by not trying."""
    source = comfy_install.dir / "comfy" / "memory_management.py"
    has_dynamic_vram = source.is_file() and "aimdo_enabled" in source.read_text()
    assert ("error_lazy_weights" in report) == has_dynamic_vram
    if has_dynamic_vram:
        assert report["error_lazy_weights"] <= TOLERANCE
