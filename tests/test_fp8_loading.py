"""fp8 weights end to end: `load_longlive(path, dtype=torch.float8_e4m3fn)`, VACE grafts and LoRAs on
an fp8 model, fp8 checkpoint files in every layout ComfyUI reads (vace_core.quantized), the memory
they save, and an R2V run with a prompt switch against the same weights in fp32.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import random_text, random_vace_context, tiny_model
from vace_core.testing import fixtures
from vace_core.casting import CastLinear, dequantize
from vace_core.checkpoints import (CheckpointError, apply_lora, expected_shapes, graft_vace, load_longlive,
                                   read_vace)
from vace_core.config import architecture
from vace_core.model import BLOCK_LINEAR_WEIGHT, param_dtype
from vace_core.precision import DeviceCapabilities
from vace_core.sampler import PromptSegment, SamplerSettings, generate

E4M3 = torch.float8_e4m3fn
HEIGHT, WIDTH = 32, 48
SETTINGS = SamplerSettings(chunk_frames=2, window_frames=4, sink_frames=1)
# R2V with a switch vs fp32 (relative RMS of the latents; max abs / max |output| beside it), tiny
# model of std-1/sqrt(fan_in) weights, fp32 compute. Measured: fp8 scaled 2.55e-2 (max 2.9e-2; bf16
# compute 2.57e-2; bf16 weights alone 3.8e-3). e4m3's 3 mantissa bits round each weight by ~2.4 %
# RMS, and the run's error stays at that level. Tolerance 3.2e-2: the planted faults below all
# exceed it: ComfyUI's plain (unscaled) rounding 3.6e-2, e5m2 (2 mantissa bits) 5.0e-2, one layer's
# scale lost 0.87.
FP8_TOL = 3.2e-2
# A GPU with fp8 tensor cores as the dtype decision sees it (vace_core.precision): fp8 matmuls are
# chosen only there. The weights stay on the CPU, whose torch._scaled_mm stands in for the GPU's.
FP8_GPU = DeviceCapabilities("cuda", native_bf16=True, fp8_matmul=True)


def load_for_fp8_gpu(path: Path, fp8_matmul: bool = True) -> torch.nn.Module:
    """fp8 weights chosen as on FP8_GPU, computed in float32 (the CPU's own dtype) on the CPU."""
    return load_longlive(path, dtype=E4M3, fp8_matmul=fp8_matmul, compute_dtype=torch.float32, capabilities=FP8_GPU)


def relative_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """fixtures' tiny-vace weights as a bf16 base, a VACE module and an fp8 file per layout."""
    folder = tmp_path_factory.mktemp("fp8")
    state = fixtures.make_state_dict(architecture("tiny-vace"), seed=0)
    paths = {"base": fixtures.write_wan_safetensors(folder / "base.safetensors", fixtures.main_only(state)),
             "vace": fixtures.write_vace_module(folder / "vace.safetensors", state),
             "lora": fixtures.write_peft_lora(folder / "lora.pt", fixtures.make_lora(architecture("tiny-vace"), 4, 1))}
    for layout in fixtures.FP8_LAYOUTS:
        paths[layout] = fixtures.write_fp8_safetensors(folder / f"{layout}.safetensors", fixtures.main_only(state),
                                                      layout)
    paths["vace_fp8"] = fixtures.write_fp8_safetensors(folder / "vace_fp8.safetensors", fixtures.vace_only(state),
                                                       "comfy_quant", prefix="")
    return paths


# ---------------------------------------------------------------------------------------------
# storage and dtypes


def test_fp8_load_stores_block_linears_in_fp8_and_computes_in_float32_on_the_cpu(files):
    model = load_longlive(files["base"], dtype=E4M3)
    assert (model.weight_dtype, model.compute_dtype) == (E4M3, torch.float32)
    for name, param in model.state_dict().items():
        if name.endswith(("weight_scale", "input_scale")):
            continue
        expected = param_dtype(name, torch.float32, E4M3)
        assert param.dtype == expected, name
        assert (expected == E4M3) == bool(BLOCK_LINEAR_WEIGHT.match(name)), name
    assert isinstance(model.blocks[0].ffn[0], CastLinear) and model.blocks[0].ffn[0].weight_scale.shape == ()
    assert model.text_embedding[0].weight.dtype == torch.float32  # embeddings and head: compute dtype
    half = load_longlive(files["base"], dtype="fp8_e4m3fn", compute_dtype="bf16")
    assert (half.weight_dtype, half.compute_dtype) == (E4M3, torch.bfloat16)
    assert half.text_embedding[0].weight.dtype == torch.bfloat16


def test_the_kv_cache_follows_the_compute_dtype(files, monkeypatch):
    from vace_core import passes

    made: list[torch.dtype] = []

    class Recording(passes.KVCache):
        def __init__(self, *args, dtype, **kwargs):
            made.append(dtype)
            super().__init__(*args, dtype=dtype, **kwargs)

    monkeypatch.setattr(passes, "KVCache", Recording)
    model = load_longlive(files["base"], dtype=E4M3, compute_dtype=torch.bfloat16)
    with torch.no_grad():
        generate(model, random_text(seed=1), video_frames=9, height=HEIGHT, width=WIDTH, seed=0, settings=SETTINGS)
    assert made == [torch.bfloat16]  # 2 bytes per cached value, not fp8's 1


def block_bytes(model: torch.nn.Module) -> int:
    blocks = list(model.blocks) + list(getattr(model, "vace_blocks", []))
    return sum(t.numel() * t.element_size() for block in blocks for t in block.state_dict().values())


def policy_block_bytes(name: str, weight_dtype: torch.dtype) -> int:
    """Bytes of the transformer blocks of preset `name` under the storage policy, scales included."""
    total = 0
    for key, shape in expected_shapes(architecture(name)).items():
        if key.startswith(("blocks.", "vace_blocks.")):
            dtype = param_dtype(key, torch.bfloat16, weight_dtype)
            total += torch.Size(shape).numel() * dtype.itemsize + (4 if dtype == E4M3 else 0)
    return total


def test_block_weights_take_at_most_0_55_of_bf16(files):
    """Acceptance: block weight bytes <= 0.55x bf16. Loaded tiny model (measured 0.506, the float32
    norms and modulation and the bf16 biases are the rest) and the full-size 1.3B + VACE under the
    same policy (0.501)."""
    fp8 = graft_vace(load_longlive(files["base"], dtype=E4M3, compute_dtype=torch.bfloat16), files["vace"])
    bf16 = graft_vace(load_longlive(files["base"], dtype=torch.bfloat16), files["vace"])
    assert block_bytes(fp8) == policy_block_bytes("tiny-vace", E4M3)  # the loader follows the policy
    assert block_bytes(bf16) == policy_block_bytes("tiny-vace", torch.bfloat16)
    assert block_bytes(fp8) <= 0.55 * block_bytes(bf16)
    full = policy_block_bytes("wan2.1-vace-1.3B", E4M3) / policy_block_bytes("wan2.1-vace-1.3B", torch.bfloat16)
    assert 0.49 < full <= 0.55


def test_set_dtype_refuses_fp8():
    with pytest.raises(ValueError, match="load_longlive"):
        tiny_model("tiny").set_dtype(E4M3)


def test_compute_dtype_cannot_be_fp8(files):
    with pytest.raises(ValueError, match="fp8 is a storage dtype"):
        load_longlive(files["base"], dtype=E4M3, compute_dtype=E4M3)


# ---------------------------------------------------------------------------------------------
# fp8 files


def dequantized_file(path: Path) -> dict[str, torch.Tensor]:
    """An fp8 file's tensors in float32 as ComfyUI's loader means them: weight * its scale (old
    `scale_weight` beside the `scaled_fp8` marker, or `weight_scale`), scale 1 without one; read here
    with safetensors alone, independently of the loader."""
    raw = load_file(str(path))
    out = {}
    for key, value in raw.items():
        if key.endswith(("scaled_fp8", "scale_weight", "scale_input", "weight_scale", "comfy_quant")):
            continue
        layer = key[: -len(".weight")]
        scale = raw.get(layer + ".scale_weight", raw.get(layer + ".weight_scale", torch.tensor(1.0)))
        name = key.removeprefix("model.diffusion_model.")
        out[name] = value.float() * scale.float() if value.dtype == E4M3 else value.float()
    return out


@pytest.mark.parametrize("layout", fixtures.FP8_LAYOUTS)
def test_every_fp8_layout_loads_as_comfyui_reads_it(files, layout):
    expected = dequantized_file(files[layout])
    full = load_longlive(files[layout], dtype=torch.float32)
    assert full.state_dict().keys() == expected.keys()
    for name, value in full.state_dict().items():
        assert torch.equal(value, expected[name]), name
    kept = load_longlive(files[layout], dtype=E4M3)  # fp8 in the file and in memory: the same bytes
    raw = load_file(str(files[layout]))
    prefix = "model.diffusion_model."
    q = kept.blocks[1].cross_attn.v
    assert torch.equal(q.weight.view(torch.uint8), raw[prefix + "blocks.1.cross_attn.v.weight"].view(torch.uint8))
    assert torch.equal(dequantize(q.weight, q.weight_scale, torch.float32),
                       expected["blocks.1.cross_attn.v.weight"])


def test_a_vace_module_in_fp8_grafts_onto_fp8_and_bf16_models(files):
    fp8 = graft_vace(load_longlive(files["base"], dtype=E4M3), files["vace_fp8"])
    assert fp8.vace_blocks[0].after_proj.weight.dtype == E4M3
    assert fp8.vace_blocks[0].after_proj.weight_scale is not None
    plain = read_vace(load_longlive(files["base"], dtype=torch.bfloat16), files["vace_fp8"])
    expected = dequantized_file(files["vace_fp8"])["vace_blocks.0.after_proj.weight"]
    assert plain.blocks[0].after_proj.weight.dtype == torch.bfloat16
    assert torch.equal(plain.blocks[0].after_proj.weight, expected.to(torch.bfloat16))


def test_a_file_in_an_unread_format_is_refused_by_name(tmp_path, files):
    raw = load_file(str(files["comfy_quant"]))
    key = "model.diffusion_model.blocks.0.ffn.0.comfy_quant"
    raw[key] = torch.tensor(list(json.dumps({"format": "nvfp4"}).encode()), dtype=torch.uint8)
    save_file(raw, str(tmp_path / "nvfp4.safetensors"))
    with pytest.raises(CheckpointError, match=r"'model.diffusion_model.blocks.0.ffn.0' is quantized as 'nvfp4'"):
        load_longlive(tmp_path / "nvfp4.safetensors", dtype=E4M3)


def test_scales_without_the_marker_are_refused(tmp_path, files):
    """ComfyUI reads `scale_weight` only beside the `scaled_fp8` marker (it would compute with
    unscaled weights otherwise); a file that lost its marker is an error, not a silent misread."""
    raw = load_file(str(files["scaled_fp8"]))
    del raw["model.diffusion_model.scaled_fp8"]
    save_file(raw, str(tmp_path / "no_marker.safetensors"))
    with pytest.raises(CheckpointError, match="without the file's 'scaled_fp8' marker"):
        load_longlive(tmp_path / "no_marker.safetensors", dtype=E4M3)


def test_a_two_element_marker_turns_fp8_matmuls_off(tmp_path, files):
    raw = load_file(str(files["scaled_fp8"]))
    raw["model.diffusion_model.scaled_fp8"] = torch.zeros(2, dtype=E4M3)
    save_file(raw, str(tmp_path / "full_precision.safetensors"))
    declined = load_for_fp8_gpu(tmp_path / "full_precision.safetensors")
    assert not declined.blocks[0].ffn[0].fp8_matmul
    assert load_for_fp8_gpu(files["scaled_fp8"]).blocks[0].ffn[0].fp8_matmul


# ---------------------------------------------------------------------------------------------
# LoRA on fp8 weights


def test_a_lora_merges_into_fp8_weights_at_their_scale(files):
    """W_fp8 <- round((W_fp8 * scale + up @ down) / scale): the merge is computed in float32 from the
    stored weight and rounded once at the layer's own scale."""
    model = load_longlive(files["base"], dtype=E4M3)
    q = model.blocks[2].self_attn.q
    before, scale = dequantize(q.weight, q.weight_scale, torch.float32), q.weight_scale.clone()
    down, up = fixtures.make_lora(architecture("tiny-vace"), 4, 1)["blocks.2.self_attn.q"]  # PEFT: alpha = rank
    apply_lora(model, files["lora"])
    assert q.weight.dtype == E4M3 and torch.equal(q.weight_scale, scale)
    expected = torch.clamp((before + up @ down) / scale, -448, 448).to(E4M3)
    assert torch.equal(q.weight.view(torch.uint8), expected.view(torch.uint8))
    assert not torch.equal(dequantize(q.weight, scale, torch.float32), before)


# ---------------------------------------------------------------------------------------------
# an R2V run


@pytest.fixture(scope="module")
def r2v(tmp_path_factory):
    """A tiny-vace model of O(1) activations saved as an fp32 file, and an R2V run with a prompt
    switch on it: (path, run(model) -> latents, fp32 latents)."""
    path = tmp_path_factory.mktemp("r2v") / "model.safetensors"
    fixtures.write_wan_safetensors(path, tiny_model("tiny-vace", seed=5).state_dict())
    prompts = [PromptSegment(0, random_text(seed=1)), PromptSegment(9, random_text(seed=2))]
    vace = random_vace_context(1, 6, HEIGHT, WIDTH, seed=3)

    @torch.no_grad()
    def run(model):
        return generate(model, prompts, video_frames=21, height=HEIGHT, width=WIDTH, seed=0, vace=vace,
                        settings=SETTINGS).latents

    return path, run, run(load_longlive(path, dtype=torch.float32))


@pytest.mark.parametrize("compute", [torch.float32, torch.bfloat16])
def test_r2v_with_fp8_weights_is_within_fp8_rounding_of_fp32(r2v, compute):
    path, run, reference = r2v
    error = relative_rms(run(load_longlive(path, dtype=E4M3, compute_dtype=compute)), reference)
    print(f"fp8 weights, {compute} compute: {error:.3e} relative RMS of the fp32 run")
    assert 1e-3 < error <= FP8_TOL  # really rounded, within fp8 rounding


def unscaled(model):
    """Planted fault: ComfyUI's plain fp8 rounding (scale 1) instead of per-tensor scales."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, CastLinear) and layer.weight_scale is not None:
                layer.weight.data = dequantize(layer.weight, layer.weight_scale, torch.float32).to(E4M3)
                layer.weight_scale.fill_(1.0)
    return model


def lost_scale(model):
    """Planted fault: one layer's scale not applied."""
    model.blocks[2].ffn[2].weight_scale.fill_(1.0)
    return model


@pytest.mark.parametrize("fault", ["unscaled", "e5m2", "lost_scale"])
def test_the_tolerance_catches_planted_faults(r2v, fault):
    path, run, reference = r2v
    if fault == "e5m2":  # two mantissa bits instead of three
        model = load_longlive(path, dtype=torch.float8_e5m2)
    else:
        model = {"unscaled": unscaled, "lost_scale": lost_scale}[fault](load_longlive(path, dtype=E4M3))
    assert relative_rms(run(model), reference) > FP8_TOL


def test_fp8_matmuls_stay_close(r2v):
    """fp8_matmul rounds activations to e4m3 too (the CPU's _scaled_mm here): measured 3.35e-2;
    tolerance 4.5e-2 (activation and weight rounding, each ~2.4 % RMS)."""
    path, run, reference = r2v
    model = load_for_fp8_gpu(path)
    assert model.blocks[0].self_attn.q.fp8_matmul
    assert 1e-3 < relative_rms(run(model), reference) <= 4.5e-2


@pytest.mark.parametrize("fp8_matmul", [False, True])
def test_compiled_block_parts_run_fp8_weights_in_whole_graphs(r2v, fp8_matmul):
    """The loader's `compile` choice with fp8 weights: the compiled parts (vace_core.compiled; the
    aot_eager backend runs the same kernels) trace the cast-per-layer Linear, and its fp8 matmul,
    without a graph break and give the eager latents."""
    from torch._dynamo.utils import counters

    from vace_core.compiled import BlockCompiler

    path, run, _ = r2v
    eager = run(load_for_fp8_gpu(path, fp8_matmul))
    model = load_for_fp8_gpu(path, fp8_matmul)
    model.compiler = BlockCompiler("aot_eager")
    breaks, graphs = sum(counters["graph_break"].values()), counters["stats"]["unique_graphs"]
    compiled = run(model)
    assert counters["stats"]["unique_graphs"] > graphs  # it did compile
    assert sum(counters["graph_break"].values()) == breaks
    assert relative_rms(compiled, eager) <= 1e-6

