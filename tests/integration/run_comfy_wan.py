"""Run ComfyUI's own Wan2.1 / VACE DiT on saved weights and inputs; write its outputs back.

Runs with ComfyUI's python (it imports `comfy`, never our package):

    python run_comfy_wan.py WEIGHTS CASES OUT

WEIGHTS  safetensors state dict in original Wan key names (main + vace_* keys).
CASES    safetensors with "<case>.latents" [B,16,F,H,W], "<case>.timestep" [B], "<case>.context"
         [B,L,text_dim] (already padded the way ComfyUI's umT5 conditioning arrives) and, for VACE
         cases, "<case>.vace_context" [B,96,F,H,W]. Its metadata holds "config" (JSON: dim, ffn_dim,
         freq_dim, text_dim, num_heads, num_layers, num_vace_blocks, vace_in_dim, patch_size, eps) and
         "cases" (JSON list of {"name", "vace_strength" or null}); null runs `WanModel`, a number
         runs `VaceWanModel` with that strength.
OUT      safetensors "<case>.out" [B,16,F,H,W] float32.

The ComfyUI checkout is taken from $COMFYUI_DIR (fallback /opt/ComfyUI); it runs with --cpu.
"""

from __future__ import annotations

import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_child import import_comfy  # noqa: E402


def build(wan, ops, config: dict, vace: bool, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    common = dict(patch_size=tuple(config["patch_size"]), text_len=512, in_dim=16, dim=config["dim"],
                  ffn_dim=config["ffn_dim"], freq_dim=config["freq_dim"], text_dim=config["text_dim"],
                  out_dim=16, num_heads=config["num_heads"], num_layers=config["num_layers"],
                  cross_attn_norm=True, eps=config["eps"], device=torch.device("cpu"), dtype=torch.float32,
                  operations=ops.disable_weight_init)
    if vace:
        model = wan.VaceWanModel(model_type="vace", vace_layers=config["num_vace_blocks"],
                                 vace_in_dim=config["vace_in_dim"], **common)
        weights = state
    else:
        model = wan.WanModel(model_type="t2v", **common)
        weights = {k: v for k, v in state.items() if not k.startswith("vace_")}
    model.load_state_dict(weights, strict=True)  # strict: every original key must have a home
    return model.eval()


def main(weights_path: str, cases_path: str, out_path: str) -> None:
    # tiny tensors: on a small shared CPU box extra intra-op threads only add contention
    torch.set_num_threads(1)
    wan, ops = import_comfy("comfy.ldm.wan.model", "comfy.ops")
    state = load_file(weights_path)
    with safe_open(cases_path, framework="pt") as handle:
        metadata = handle.metadata()
    config = json.loads(metadata["config"])
    tensors = load_file(cases_path)
    models: dict[bool, torch.nn.Module] = {}
    outputs = {}
    with torch.no_grad():
        for case in json.loads(metadata["cases"]):
            name, strength = case["name"], case["vace_strength"]
            vace = strength is not None
            if vace not in models:
                models[vace] = build(wan, ops, config, vace, state)
            args = (tensors[f"{name}.latents"], tensors[f"{name}.timestep"], tensors[f"{name}.context"])
            if vace:
                # ComfyUI stacks several VACE inputs on dim 1: [B, N, 96, F, H, W], one strength each
                out = models[vace](*args, vace_context=tensors[f"{name}.vace_context"][:, None],
                                   vace_strength=[strength], transformer_options={})
            else:
                out = models[vace](*args, transformer_options={})
            outputs[f"{name}.out"] = out.float().contiguous()
            print(f"{name}: {tuple(out.shape)}", flush=True)
    save_file(outputs, out_path)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
