"""Drive our LONGLIVE_MODEL through ComfyUI's own memory manager in-process; write what happened.

Runs with ComfyUI's python (`COMFYUI_DIR` names the checkout), forced onto the CPU:

    python run_comfy_memory.py PACK_DIR WORK_DIR OUT_JSON

It imports ComfyUI, then our pack the way ComfyUI imports a custom node folder (so nodes/host
finds ComfyUI), writes tiny checkpoints (vace_core.testing.fixtures) into WORK_DIR and records, as JSON:

- which patcher and layer classes the pack used, and the 'auto' dtype;
- outputs of the loaded network for base + LoRA, + Extra LoRA, + VACE, against the same weights
  merged by vace_core with plain torch layers (max abs difference);
- what comfy.model_management lists as loaded after a load and after unload_all_models, and
  whether unloading restored the file's weights;
- a partial (lowvram) load of a VACE clone through comfy.model_management.LoadedModel with half
  the model's size as budget: ComfyUI's lowvram state, how many layers stream their weights through
  the comfy.ops cast path, and the output against the full load;
- a model unloaded by ComfyUI in the middle of a run, then the sampler's check before a pass;
- on ComfyUI versions with DynamicVRAM (0.33): the same model built while `aimdo_enabled` is set,
  as on a GPU, where comfy.ops' Linear creates its weights only when they are loaded.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_child import import_comfy, import_pack, partial_load  # noqa: E402


def file_refs(model_files, files: dict):
    """ref(kind, key): the host's FileRef of files[key] under the model folder `kind`, as its file
    pickers make it."""
    def ref(kind: str, key: str):
        path = str(files[key])
        stat = os.stat(path)
        return model_files.FileRef(kind, Path(path).name, path, (stat.st_size, stat.st_mtime_ns))
    return ref


def forward_inputs(text_dim: int) -> tuple[torch.Tensor, ...]:
    """Seeded latents [1, 16, 3, 8, 8], timestep, prompt [1, 12, text_dim] and VACE context
    [1, 96, 3, 8, 8] for one full forward of a tiny model."""
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 16, 3, 8, 8, generator=generator)
    context = torch.randn(1, 12, text_dim, generator=generator)
    vace_context = torch.randn(1, 96, 3, 8, 8, generator=generator)
    return latents, torch.tensor([750.0]), context, vace_context


def main(pack_dir: str, work_dir: str, out_path: str) -> None:
    torch.set_num_threads(1)
    mm, model_patcher = import_comfy("comfy.model_management", "comfy.model_patcher")
    mods = import_pack(pack_dir, "nodes.host.memory", "nodes.model_ref", "nodes.model_files",
                       "vace_core.testing.fixtures", "vace_core.checkpoints", "vace_core.config")
    host_memory, model_ref, fx, ckpt = (mods[k] for k in ("nodes.host.memory", "nodes.model_ref",
                                                          "vace_core.testing.fixtures", "vace_core.checkpoints"))
    tiny = mods["vace_core.config"].architecture("tiny-vace")
    work = Path(work_dir)
    state = fx.make_state_dict(tiny, seed=0)
    files = {
        "base": fx.write_longlive_pt(work / "longlive_base.pt", fx.main_only(state)),
        "vace": fx.write_vace_module(work / "vace_module.safetensors", state),
        "lora": fx.write_peft_lora(work / "lora.pt", fx.make_lora(tiny, rank=4, seed=1), wrapped=True),
        "style": fx.write_comfy_lora(work / "style.safetensors", fx.make_lora(tiny, rank=2, seed=2), "down_up"),
    }

    ref = file_refs(mods["nodes.model_files"], files)
    latents, timestep, context, vace_context = forward_inputs(tiny.text_dim)

    def forward(network, vace: bool) -> torch.Tensor:
        return network.forward_full(latents, timestep, context, vace_context if vace else None).float()

    def merged(*steps) -> torch.nn.Module:
        model = ckpt.load_longlive(files["base"], dtype=torch.float32)
        for step in steps:
            ckpt.apply_lora(model, files[step], 0.5 if step == "style" else 1.0) if step != "vace" \
                else ckpt.graft_vace(model, files["vace"])
        return model

    def loaded_names() -> list[str]:
        return [p.model.__class__.__name__ for p in mm.loaded_models()]

    out: dict = {}
    with torch.inference_mode():
        base = model_ref.load_model(ref("diffusion_models", "base"), "auto", ref("loras", "lora"), 1.0)
        styled = base.with_lora(ref("loras", "style"), 0.5)
        grafted = styled.with_vace(ref("diffusion_models", "vace"))
        network = base.shared.network
        out["patcher_class"] = f"{type(base.patcher).__module__}.{type(base.patcher).__name__}"
        linear = type(network.blocks[0].ffn[0])
        out["linear_class"] = f"{linear.__module__}.{linear.__qualname__}"
        out["auto_dtype"] = base.dtype
        out["same_network"] = styled.patcher.model is base.patcher.model is grafted.patcher.model
        recognised = getattr(model_patcher, "is_model_patcher_output", None)
        out["ram_cache_sees_a_model"] = None if recognised is None else bool(recognised(grafted))

        errors, outputs = {}, {}
        for name, value, steps, vace in (("base_lora", base, ("lora",), False),
                                         ("extra_lora", styled, ("lora", "style"), False),
                                         ("vace", grafted, ("lora", "style", "vace"), True),
                                         ("base_lora_again", base, ("lora",), False)):
            outputs[name] = forward(value.load_for_run(1 << 20).network, vace)
            errors[name] = (outputs[name] - forward(merged(*steps), vace)).abs().max().item()
            out[f"loaded_after_{name}"] = loaded_names()
            out[f"is_loaded_{name}"] = host_memory.is_loaded(value.patcher)
        out["errors_full_load"] = errors
        # how far apart the cases are: what a patch left out or applied twice would show
        out["extra_lora_vs_base_lora"] = (outputs["extra_lora"] - outputs["base_lora"]).abs().max().item()
        out["base_lora_vs_plain_base"] = (outputs["base_lora"] - forward(merged(), False)).abs().max().item()

        mm.unload_all_models()
        out["loaded_after_unload_all"] = loaded_names()
        from_file = ckpt.load_longlive(files["base"], dtype=torch.float32).state_dict()
        out["weights_restored"] = all(torch.equal(from_file[k], v) for k, v in network.state_dict().items())
        out["vace_detached_after_unload"] = not network.has_vace

        full = forward(grafted.load_for_run(1 << 20).network, True)
        partial, budget = partial_load(mm, grafted.patcher)
        wrapper = grafted.patcher.model
        out["lowvram"] = {
            "budget": budget, "model_size": grafted.patcher.model_size(),
            "model_lowvram": bool(wrapper.model_lowvram), "loaded_bytes": grafted.patcher.loaded_size(),
            "lowvram_patches": grafted.patcher.lowvram_patch_counter(),
            "streamed_layers": sum(bool(getattr(m, "comfy_cast_weights", False)) for m in wrapper.modules()),
            "layers": sum(hasattr(m, "comfy_cast_weights") for m in wrapper.modules()),
            "vace_attached": wrapper.diffusion_model.has_vace,
            "error_vs_full_load": (forward(wrapper.diffusion_model, True) - full).abs().max().item(),
        }
        partial.model_unload()
        out["lowvram"]["model_lowvram_after_unload"] = bool(wrapper.model_lowvram)

        # another model's load may unload ours in the middle of a run: the check before each pass
        # loads it again, patches and VACE blocks included
        loaded = grafted.load_for_run(1 << 20)
        mm.unload_all_models()
        out["evicted"] = {"is_loaded": host_memory.is_loaded(grafted.patcher), "vace_attached": loaded.network.has_vace}
        loaded.keep_loaded()
        out["reloaded"] = {"is_loaded": host_memory.is_loaded(grafted.patcher), "loaded": loaded_names(),
                           "error_vs_full_load": (forward(loaded.network, True) - full).abs().max().item()}
        mm.unload_all_models()

        memory_management = sys.modules.get("comfy.memory_management")
        if memory_management is not None and hasattr(memory_management, "aimdo_enabled"):
            model_ref.clear_cache()
            memory_management.aimdo_enabled = True  # what a GPU start of 0.33 sets: lazily made Linear weights
            try:
                lazy = model_ref.load_model(ref("diffusion_models", "base"), "fp32", ref("loras", "lora"), 1.0)
                lazy = lazy.with_vace(ref("diffusion_models", "vace"))
            finally:
                memory_management.aimdo_enabled = False
            got = forward(lazy.load_for_run(1 << 20).network, True)
            out["error_lazy_weights"] = (got - forward(merged("lora", "vace"), True)).abs().max().item()

    Path(out_path).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
