"""fp8 weights inside ComfyUI, in-process; writes what happened as JSON.

Runs with ComfyUI's python (`COMFYUI_DIR` names the checkout), forced onto the CPU:

    python run_comfy_fp8.py PACK_DIR WORK_DIR OUT_JSON

It writes tiny fp8 checkpoints (vace_core.testing.fixtures) into WORK_DIR: a base in the scaled-fp8 layout
(`scaled_fp8` marker, `scale_weight`), a full VACE model with `_quantization_metadata`, a VACE
module with per-layer `comfy_quant` configs, and a LoRA; then records:

- ComfyUI's own loader (`comfy.sd.load_diffusion_model`) on the two full models: its model class,
  Linear class, and the largest difference between its dequantized tensors and ours (vace_core
  loading the same file in float32);
- our Load LongLive Model value at dtype fp8_e4m3fn (+ VACE graft): the Linear class, whether the
  weights are held as fp8 (bytes per weight), the output against vace_core's own fp8 model, and the
  patcher's size against the same model in bf16; the same with bf16 compute (as on a GPU): the
  dtypes of the unquantized weights and the output against vace_core's own;
- the base LoRA applied by ComfyUI's patcher to the fp8 weights: output against vace_core merging it
  into float32 weights, beside how far the LoRA moves the output;
- a partial (lowvram) load of the fp8 VACE clone: layers streamed, output against the full load.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_child import import_comfy, import_pack, partial_load  # noqa: E402
from run_comfy_memory import file_refs, forward_inputs  # noqa: E402


def main(pack_dir: str, work_dir: str, out_path: str) -> None:
    torch.set_num_threads(1)
    [mm] = import_comfy("comfy.model_management")
    import comfy.sd

    mods = import_pack(pack_dir, "nodes.model_ref", "nodes.model_files", "vace_core.testing.fixtures",
                       "vace_core.checkpoints", "vace_core.config")
    model_ref, fx, ckpt = mods["nodes.model_ref"], mods["vace_core.testing.fixtures"], mods["vace_core.checkpoints"]
    tiny = mods["vace_core.config"].architecture("tiny-vace")
    work = Path(work_dir)
    state = fx.make_state_dict(tiny, seed=0)
    files = {
        "base": fx.write_fp8_safetensors(work / "base_fp8_scaled.safetensors", fx.main_only(state), "scaled_fp8"),
        "full_vace": fx.write_fp8_safetensors(work / "vace_full_fp8.safetensors", state, "metadata"),
        "vace": fx.write_fp8_safetensors(work / "vace_module_fp8.safetensors", fx.vace_only(state), "comfy_quant",
                                         prefix=""),
        "bf16": fx.write_wan_safetensors(work / "base_bf16.safetensors",
                                         {k: v.to(torch.bfloat16) for k, v in fx.main_only(state).items()}),
        "lora": fx.write_peft_lora(work / "lora.pt", fx.make_lora(tiny, rank=4, seed=1), wrapped=True),
    }

    ref = file_refs(mods["nodes.model_files"], files)
    latents, timestep, context, vace_context = forward_inputs(tiny.text_dim)

    def forward(network) -> torch.Tensor:
        return network.forward_full(latents, timestep, context, vace_context if network.has_vace else None).float()

    def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
        return (a.float() - b.float()).abs().max().item()

    out: dict = {}
    with torch.inference_mode():
        for key in ("base", "full_vace"):
            theirs = comfy.sd.load_diffusion_model(str(files[key])).model.diffusion_model
            linear = theirs.blocks[0].self_attn.q
            ours = ckpt.load_longlive(files[key], dtype=torch.float32).state_dict()
            differences = {}
            for name, value in theirs.named_parameters():  # (0.33's state_dict gives the raw fp8 bytes)
                value = value.dequantize() if hasattr(value, "dequantize") else value
                differences[name] = max_diff(value, ours[name]) if name in ours else None
            out[f"comfy_loader_{key}"] = {
                "model_class": type(theirs).__name__, "linear_class": type(linear).__qualname__,
                "weight_class": type(linear.weight).__name__, "tensors": len(differences),
                "unmatched": sorted(k for k, v in differences.items() if v is None),
                "max_difference": max(v for v in differences.values() if v is not None),
            }
            del theirs

        plain = model_ref.load_model(ref("diffusion_models", "base"), "fp8_e4m3fn")
        grafted = plain.with_vace(ref("diffusion_models", "vace"))
        network = grafted.load_for_run(1 << 20).network
        linear = network.blocks[0].ffn[0]
        out["linear_mro"] = [f"{c.__module__}.{c.__qualname__}" for c in type(linear).__mro__[:2]]
        out["weight_class"] = type(linear.weight).__name__
        vace_weight = network.vace_blocks[0].ffn[0].weight
        out["bytes_per_weight"] = linear.weight.nbytes / linear.weight.numel()
        out["vace_bytes_per_weight"] = vace_weight.nbytes / vace_weight.numel()
        out["compute_dtype"] = str(network.compute_dtype)
        standalone = ckpt.graft_vace(ckpt.load_longlive(files["base"], dtype=torch.float8_e4m3fn), files["vace"])
        full = forward(network)
        out["error_vs_vace_core_fp8"] = max_diff(full, forward(standalone))
        # bf16 compute (a GPU's): ComfyUI's layers keep the float32 time embedding as the model has it
        layers = importlib.import_module("longlive_pack.nodes.host.layers")
        precision = importlib.import_module("longlive_pack.vace_core.precision")
        ops = layers.layer_operations(precision.Precision(torch.float8_e4m3fn, torch.bfloat16))
        in_comfy, alone = (ckpt.graft_vace(ckpt.load_longlive(files["base"], dtype=torch.float8_e4m3fn,
                                                              compute_dtype=torch.bfloat16, operations=operations),
                                           files["vace"]) for operations in (ops, None))
        out["bf16_compute"] = {"time_embedding_dtype": str(in_comfy.time_embedding[0].weight.dtype),
                               "text_embedding_dtype": str(in_comfy.text_embedding[0].weight.dtype),
                               "error_vs_vace_core_fp8": max_diff(forward(in_comfy), forward(alone))}
        bf16 = model_ref.load_model(ref("diffusion_models", "bf16"), "bf16")
        out["size_fp8"], out["size_bf16"] = plain.patcher.model_size(), bf16.patcher.model_size()

        with_lora = model_ref.load_model(ref("diffusion_models", "base"), "fp8_e4m3fn", ref("loras", "lora"), 1.0)
        merged = ckpt.load_longlive(files["base"], files["lora"], dtype=torch.float32)
        unpatched = forward(ckpt.load_longlive(files["base"], dtype=torch.float32))
        lora_out, merged_out = forward(with_lora.load_for_run(1 << 20).network), forward(merged)
        out["lora"] = {"relative_rms_vs_fp32_merge": ((lora_out - merged_out).norm() / merged_out.norm()).item(),
                       "lora_effect_relative_rms": ((merged_out - unpatched).norm() / merged_out.norm()).item()}

        partial, budget = partial_load(mm, grafted.patcher)
        wrapper = grafted.patcher.model
        out["lowvram"] = {
            "model_lowvram": bool(wrapper.model_lowvram), "budget": budget,
            "loaded_bytes": grafted.patcher.loaded_size(),
            "streamed_layers": sum(bool(getattr(m, "comfy_cast_weights", False)) for m in wrapper.modules()),
            "error_vs_full_load": max_diff(forward(wrapper.diffusion_model), full),
        }
        partial.model_unload()
        mm.unload_all_models()

    Path(out_path).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
