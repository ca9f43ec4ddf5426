"""fp8 weights inside ComfyUI 0.8.0 and 0.33.0.

In-process (run_comfy_fp8.py, ComfyUI's python): ComfyUI's own loader and ours read the same fp8
files to the same tensors; our model holds its fp8 weights in ComfyUI's mixed-precision comfy.ops
layers (one byte per weight), computes exactly what vace_core's own fp8 layers compute, takes a LoRA
through ComfyUI's patcher and streams layers in a partial (lowvram) load.

On a server: a scaled-fp8 base and an fp8 VACE module run through the loader (dtype fp8_e4m3fn),
the graft and an R2V sampler run, and the latents equal those of the same files loaded at fp32.

Tolerances: fp8 weights dequantized per call in float32 are the very tensors a float32 load makes
(measured 0.0 in every comparison below; 1e-5 allows a reordered float32 sum). ComfyUI merges a
LoRA into fp8 weights and rounds the result again (stochastic rounding at a recalculated scale):
measured 5.6e-3 (0.8.0) and 6.4e-3 (0.33.0) relative RMS against the merge in float32; tolerance
2e-2, below the LoRA's own effect (8.2e-2), so a LoRA left out fails.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from comfy_harness import HERE, REPO_ROOT

from vace_core.testing import fixtures as fx
from vace_core.config import architecture

EXACT = 1e-5
LORA_TOL = 2e-2
RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def report(comfy_install, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp(f"comfy_fp8_{comfy_install.label}")
    out = work / "report.json"
    result = comfy_install.run_python([str(HERE / "run_comfy_fp8.py"), str(REPO_ROOT), str(work), str(out)],
                                      timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("key", ["base", "full_vace"])
def test_comfyui_and_we_read_fp8_files_to_the_same_tensors(report, key):
    """scaled_fp8 + scale_weight (base) and _quantization_metadata (full VACE model): ComfyUI's
    loader builds its quantized layers from them; dequantized, every tensor equals ours."""
    theirs = report[f"comfy_loader_{key}"]
    assert theirs["model_class"] == {"base": "WanModel", "full_vace": "VaceWanModel"}[key]
    assert theirs["linear_class"].endswith("MixedPrecisionOps.Linear") and theirs["weight_class"] == "QuantizedTensor"
    assert theirs["unmatched"] == [] and theirs["tensors"] > 100
    assert theirs["max_difference"] <= EXACT


def test_our_fp8_model_lives_in_comfyui_mixed_precision_layers(report):
    assert report["linear_mro"][1].startswith("comfy.ops.mixed_precision_ops")
    assert report["weight_class"] == "QuantizedTensor"
    assert report["bytes_per_weight"] == report["vace_bytes_per_weight"] == 1.0
    assert report["compute_dtype"] == "torch.float32"  # ComfyUI's choice on the CPU
    assert report["error_vs_vace_core_fp8"] <= EXACT
    assert report["size_fp8"] < report["size_bf16"]


def test_with_bf16_compute_the_time_embedding_stays_float32(report):
    """ComfyUI's mixed-precision layers cast unquantized weights to the compute dtype on loading; ours
    keep the model's policy (float32 time embedding, bf16 text embedding), so the output is what
    vace_core's own fp8 layers compute in bf16."""
    bf16 = report["bf16_compute"]
    assert (bf16["time_embedding_dtype"], bf16["text_embedding_dtype"]) == ("torch.float32", "torch.bfloat16")
    assert bf16["error_vs_vace_core_fp8"] <= EXACT


def test_comfyui_patches_a_lora_into_fp8_weights(report):
    lora = report["lora"]
    assert lora["relative_rms_vs_fp32_merge"] <= LORA_TOL < lora["lora_effect_relative_rms"]


def test_a_partial_load_streams_fp8_layers_with_the_same_output(report):
    lowvram = report["lowvram"]
    assert lowvram["model_lowvram"] and lowvram["loaded_bytes"] <= lowvram["budget"]
    assert lowvram["streamed_layers"] > 0
    assert lowvram["error_vs_full_load"] <= EXACT


# ---------------------------------------------------------------------------------------------
# a server run


def with_defaults(info: dict, class_type: str, inputs: dict) -> dict:
    """`inputs` plus the default of every other required widget."""
    node = {"class_type": class_type, "inputs": dict(inputs)}
    for name, spec in info[class_type]["input"]["required"].items():
        if name not in inputs and len(spec) > 1 and "default" in spec[1]:
            node["inputs"][name] = spec[1]["default"]
    return node


def r2v_graph(info: dict, base: str, vace: str, reference: str, vae: str, dtype: str, prefix: str) -> dict:
    size = 64
    return {
        "1": with_defaults(info, "LongLiveTestConditioning", {"text": "a red fox in the snow", "dim": 64}),
        "2": with_defaults(info, "LongLiveModelLoader", {"base_checkpoint": base, "lora": "none",
                                                          "lora_strength": 1.0, "dtype": dtype}),
        "3": {"class_type": "LongLiveVaceGraft", "inputs": {"model": ["2", 0], "vace_checkpoint": vace}},
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "5": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "6": with_defaults(info, "LongLiveVaceEncode", {"vae": ["4", 0], "width": size, "height": size, "length": 9,
                                                        "reference_fit": "pad", "reference_images": ["5", 0]}),
        # the size from VACE Encode References' latent; LongLive's preset: chunk 3, window 12, sink 3
        "7": with_defaults(info, "LongLiveSampler", {
            "model": ["3", 0], "positive": ["1", 0], "vace_context": ["6", 0], "latent": ["6", 1], "seed": 3,
            "vace_scale": 1.0, "preset": "LongLive"}),
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": prefix}},
    }


def test_a_scaled_fp8_file_runs_on_the_server(comfy_server, tmp_path):
    """Acceptance: a scaled-fp8 base (ComfyUI's scaled_fp8 layout) and an fp8 VACE module
    (comfy_quant layout) load at dtype fp8_e4m3fn and run R2V; the latents equal the run of the
    same files at fp32 (which dequantizes them on loading)."""
    state = fx.make_state_dict(architecture("tiny-vace"), seed=4)
    # marked causal as ComfyUI marks a causal (AR) Wan file: the loader refuses an unmarked Wan-named base
    base = comfy_server.add_model("diffusion_models", fx.write_fp8_safetensors(
        tmp_path / "longlive_fp8_scaled.safetensors", fx.main_only(state), "scaled_fp8", causal_ar=True))
    vace = comfy_server.add_model("diffusion_models", fx.write_fp8_safetensors(
        tmp_path / "vace_module_fp8.safetensors", fx.vace_only(state), "comfy_quant", prefix=""))
    pixels = np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "fp8_reference.png")
    reference = comfy_server.add_input(tmp_path / "fp8_reference.png")
    info = comfy_server.get_object_info()
    assert "fp8_e4m3fn" in info["LongLiveModelLoader"]["input"]["required"]["dtype"][0]

    latents = {}
    for dtype in ("fp8_e4m3fn", "fp32"):
        entry = comfy_server.run(r2v_graph(info, base, vace, reference, comfy_server.tiny_vae_name, dtype,
                                           f"fp8_test_{dtype}"), timeout=RUN_TIMEOUT)
        files = [p for p in comfy_server.output_files(entry) if p.suffix == ".latent"]
        assert len(files) == 1, entry.get("outputs")
        latents[dtype] = load_file(str(files[0]))["latent_tensor"]
    fp8, fp32 = latents["fp8_e4m3fn"], latents["fp32"]
    assert fp8.shape == fp32.shape and fp8.shape[2] == 1 + 3  # the reference frame, then 9 video frames
    assert torch.isfinite(fp8).all() and fp8.abs().max() > 0
    assert (fp8 - fp32).abs().max() <= EXACT
