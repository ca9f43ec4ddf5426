"""Tiny random checkpoints in every file format the loaders accept, and full-size key maps.

Real weights cannot be downloaded in tests, so the tests (and `scripts/selftest.py`) write one set of
small random weights in each real layout and check that every layout loads to the same tensors.

* `wan_key_shapes(config)` - key -> shape of a Wan2.1 (VACE) DiT in original names, written out from
  the published architecture (independent of `vace_core.model`, so the model can be checked against it).
* `full_size_state_dict(name)` - the same for a full-size preset as meta tensors (no memory).
* `make_state_dict(config, seed)` / `make_lora(config, rank, seed)` - deterministic random weights.
* `write_*` - one writer per supported file layout; each returns the path it wrote.
* `write_fp8_safetensors` - the same weights as an fp8 checkpoint in each fp8 layout ComfyUI reads.
* `to_diffusers_key(key)` - original Wan name -> diffusers `WanVACETransformer3DModel` name, spelled
  out here on purpose separately from the loader's reverse mapping, so a slip in one shows up.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping

import torch
from safetensors.torch import save_file

from ..config import WanConfig, architecture

StateDict = dict[str, torch.Tensor]
# target module name ("blocks.3.self_attn.q") -> (down/A [rank, in], up/B [out, rank])
LoraPairs = dict[str, tuple[torch.Tensor, torch.Tensor]]

ATTENTION_LINEARS = ("q", "k", "v", "o")


# ---------------------------------------------------------------------------------------------
# key -> shape specification


def block_key_shapes(config: WanConfig) -> dict[str, tuple[int, ...]]:
    """Parameters of one attention block (main or VACE), relative to the block."""
    dim, ffn = config.dim, config.ffn_dim
    shapes: dict[str, tuple[int, ...]] = {}
    for attn in ("self_attn", "cross_attn"):
        for name in ATTENTION_LINEARS:
            shapes[f"{attn}.{name}.weight"] = (dim, dim)
            shapes[f"{attn}.{name}.bias"] = (dim,)
        shapes[f"{attn}.norm_q.weight"] = (dim,)
        shapes[f"{attn}.norm_k.weight"] = (dim,)
    shapes["norm3.weight"] = (dim,)
    shapes["norm3.bias"] = (dim,)
    shapes["ffn.0.weight"] = (ffn, dim)
    shapes["ffn.0.bias"] = (ffn,)
    shapes["ffn.2.weight"] = (dim, ffn)
    shapes["ffn.2.bias"] = (dim,)
    shapes["modulation"] = (1, 6, dim)
    return shapes


def wan_key_shapes(config: WanConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Wan2.1 DiT (plus VACE when `config.has_vace`) in original key names."""
    dim, patch = config.dim, tuple(config.patch_size)
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (dim, config.in_channels, *patch),
        "patch_embedding.bias": (dim,),
        "text_embedding.0.weight": (dim, config.text_dim),
        "text_embedding.0.bias": (dim,),
        "text_embedding.2.weight": (dim, dim),
        "text_embedding.2.bias": (dim,),
        "time_embedding.0.weight": (dim, config.freq_dim),
        "time_embedding.0.bias": (dim,),
        "time_embedding.2.weight": (dim, dim),
        "time_embedding.2.bias": (dim,),
        "time_projection.1.weight": (6 * dim, dim),
        "time_projection.1.bias": (6 * dim,),
        "head.head.weight": (config.out_channels * math.prod(patch), dim),
        "head.head.bias": (config.out_channels * math.prod(patch),),
        "head.modulation": (1, 2, dim),
    }
    block = block_key_shapes(config)
    for n in range(config.num_layers):
        shapes.update({f"blocks.{n}.{k}": s for k, s in block.items()})
    if config.has_vace:
        shapes["vace_patch_embedding.weight"] = (dim, config.vace_in_dim, *patch)
        shapes["vace_patch_embedding.bias"] = (dim,)
        for k in range(config.num_vace_blocks):
            shapes.update({f"vace_blocks.{k}.{name}": s for name, s in block.items()})
            shapes[f"vace_blocks.{k}.after_proj.weight"] = (dim, dim)
            shapes[f"vace_blocks.{k}.after_proj.bias"] = (dim,)
        shapes["vace_blocks.0.before_proj.weight"] = (dim, dim)
        shapes["vace_blocks.0.before_proj.bias"] = (dim,)
    return shapes


def full_size_state_dict(name: str = "wan2.1-vace-1.3B") -> StateDict:
    """Key -> meta tensor of a full-size preset (Wan2.1-VACE-1.3B: 1264 tensors); uses no memory."""
    return {k: torch.empty(s, device="meta") for k, s in wan_key_shapes(architecture(name)).items()}


def lora_target_shapes(config: WanConfig) -> dict[str, tuple[int, int]]:
    """Module name -> (out, in) of every Linear a LongLive LoRA targets (10 per main block)."""
    dim, ffn = config.dim, config.ffn_dim
    targets: dict[str, tuple[int, int]] = {}
    for n in range(config.num_layers):
        for attn in ("self_attn", "cross_attn"):
            for name in ATTENTION_LINEARS:
                targets[f"blocks.{n}.{attn}.{name}"] = (dim, dim)
        targets[f"blocks.{n}.ffn.0"] = (ffn, dim)
        targets[f"blocks.{n}.ffn.2"] = (dim, ffn)
    return targets


# ---------------------------------------------------------------------------------------------
# random weights


def _is_norm_weight(key: str) -> bool:
    return key.endswith(("norm_q.weight", "norm_k.weight", "norm3.weight"))


def make_state_dict(config: WanConfig | None = None, seed: int = 0) -> StateDict:
    """Deterministic small random weights (std 0.02, norm weights near 1) for `config` (float32)."""
    config = config or architecture("tiny-vace")
    generator = torch.Generator().manual_seed(seed)
    state: StateDict = {}
    for key, shape in sorted(wan_key_shapes(config).items()):
        values = torch.randn(shape, generator=generator) * 0.02
        state[key] = values + 1.0 if _is_norm_weight(key) else values
    return state


def make_lora(config: WanConfig | None = None, rank: int = 4, seed: int = 1, std: float = 0.1,
              targets: Iterable[str] | None = None) -> LoraPairs:
    """Random LoRA pairs for every LongLive target (or `targets`), large enough to change outputs."""
    config = config or architecture("tiny-vace")
    shapes = lora_target_shapes(config)
    names = sorted(targets) if targets is not None else sorted(shapes)
    generator = torch.Generator().manual_seed(seed)
    pairs: LoraPairs = {}
    for name in names:
        out_features, in_features = shapes[name]
        down = torch.randn(rank, in_features, generator=generator) * std
        up = torch.randn(out_features, rank, generator=generator) * std
        pairs[name] = (down, up)
    return pairs


# ---------------------------------------------------------------------------------------------
# diffusers names (written from diffusers' scripts/convert_wan_to_diffusers.py VACE table)

_DIFFUSERS_TOP = {
    "patch_embedding": "patch_embedding",
    "vace_patch_embedding": "vace_patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
}
_DIFFUSERS_IN_BLOCK = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "cross_attn.norm_q": "attn2.norm_q", "cross_attn.norm_k": "attn2.norm_k",
    "norm3": "norm2",  # diffusers numbers the norms in call order; Wan's affine norm3 runs second
    "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
    "before_proj": "proj_in", "after_proj": "proj_out",
}


def to_diffusers_key(key: str) -> str:
    """Original Wan key -> diffusers WanVACETransformer3DModel key."""
    if key == "head.modulation":
        return "scale_shift_table"
    parts = key.split(".")
    if parts[0] in ("blocks", "vace_blocks"):
        head, rest = ".".join(parts[:2]), parts[2:]
        if rest == ["modulation"]:
            return f"{head}.scale_shift_table"
        module, param = ".".join(rest[:-1]), rest[-1]
        return f"{head}.{_DIFFUSERS_IN_BLOCK[module]}.{param}"
    module, param = ".".join(parts[:-1]), parts[-1]
    return f"{_DIFFUSERS_TOP[module]}.{param}"


# ---------------------------------------------------------------------------------------------
# writers: base checkpoints


def _is_vace(key: str) -> bool:
    return key.startswith(("vace_blocks.", "vace_patch_embedding."))


def main_only(state: Mapping[str, torch.Tensor]) -> StateDict:
    return {k: v for k, v in state.items() if not _is_vace(k)}


def vace_only(state: Mapping[str, torch.Tensor]) -> StateDict:
    return {k: v for k, v in state.items() if _is_vace(k)}


def _fsdp_name(key: str) -> str:
    """Mimic FSDP-wrapped EMA names: a wrapper segment at the root and inside every block."""
    parts = key.split(".")
    if parts[0] == "blocks":
        parts.insert(2, "_fsdp_wrapped_module")
    return "model._fsdp_wrapped_module." + ".".join(parts)


def write_longlive_pt(path: str | Path, state: Mapping[str, torch.Tensor], entry: str = "generator",
                      fsdp: bool = False) -> Path:
    """LongLive trainer checkpoint: {entry: {"model.<key>": tensor}} (FSDP EMA names when `fsdp`)."""
    rename = _fsdp_name if fsdp else (lambda k: f"model.{k}")
    torch.save({entry: {rename(k): v for k, v in state.items()}}, path)
    return Path(path)


def write_trainer_pt(path: str | Path, entries: Mapping[str, Mapping[str, torch.Tensor]]) -> Path:
    """A distillation trainer's checkpoint (Self-Forcing, Causal Forcing, CausVid, LongLive): one
    {"model.<key>": tensor} dict per entry (e.g. generator, critic, generator_ema) beside the
    non-weight entries such trainers also save (an optimizer state, the step)."""
    content: dict = {name: {f"model.{k}": v for k, v in state.items()} for name, state in entries.items()}
    content["generator_optimizer"] = {"state": {}, "param_groups": [{"lr": 2e-6, "params": [0]}]}
    content["step"] = 600
    torch.save(content, path)
    return Path(path)


def _save_safetensors(path: str | Path, state: Mapping[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return Path(path)


# ComfyUI's mark of a causal (autoregressive) Wan checkpoint in a safetensors header
CAUSAL_AR_METADATA = {"config": json.dumps({"transformer": {"causal_ar": True}})}


def write_wan_safetensors(path: str | Path, state: Mapping[str, torch.Tensor], prefix: str = "",
                          causal_ar: bool = False) -> Path:
    """Original Wan names, optionally prefixed (ComfyUI repackages use "model.diffusion_model."); with
    `causal_ar`, the header metadata that marks a causal checkpoint in ComfyUI's convention."""
    return _save_safetensors(path, {prefix + k: v for k, v in state.items()},
                             CAUSAL_AR_METADATA if causal_ar else None)


def write_diffusers_safetensors(path: str | Path, state: Mapping[str, torch.Tensor]) -> Path:
    return _save_safetensors(path, {to_diffusers_key(k): v for k, v in state.items()})


def write_vace_module(path: str | Path, state: Mapping[str, torch.Tensor], prefix: str = "") -> Path:
    """A VACE-only module file (kijai / daydream style): just the vace_* keys."""
    return write_wan_safetensors(path, vace_only(state), prefix)


FP8_LAYOUTS = ("unscaled", "scaled_fp8", "comfy_quant", "metadata")
FP8_MAX = 448.0  # largest float8_e4m3fn value


def fp8_scaled(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8_e4m3fn tensor, float32 scale) with weight ~ tensor * scale, scale = max|w| / 448."""
    scale = weight.float().abs().max() / FP8_MAX
    return (weight.float() / scale).to(torch.float8_e4m3fn), scale.reshape(())


def write_fp8_safetensors(path: str | Path, state: Mapping[str, torch.Tensor], layout: str = "scaled_fp8",
                          prefix: str = "model.diffusion_model.", causal_ar: bool = False) -> Path:
    """`state` as an fp8 checkpoint, every Linear weight (2-D) in float8_e4m3fn and the other tensors
    in bf16, in one of ComfyUI's fp8 layouts:

    "unscaled":    weights rounded to fp8 as they are (kijai's `*_fp8_e4m3fn` files);
    "scaled_fp8":  Comfy-Org's `*_fp8_scaled` files: a `scaled_fp8` marker (an empty e4m3fn tensor) and
                   per layer `<layer>.scale_weight` (float32 scalar) and `<layer>.scale_input` (1.0);
    "comfy_quant": the current layout: `<layer>.weight_scale` and `<layer>.comfy_quant`, the layer's
                   JSON config {"format": "float8_e4m3fn"} as uint8 bytes;
    "metadata":    `<layer>.weight_scale`, the configs in the header's `_quantization_metadata`.

    With `causal_ar`, the header also marks a causal checkpoint in ComfyUI's convention (a causal base).
    """
    if layout not in FP8_LAYOUTS:
        raise ValueError(f"unknown fp8 layout {layout!r}; one of {', '.join(FP8_LAYOUTS)}")
    out: StateDict = {}
    layers: dict[str, dict] = {}
    config = torch.tensor(list(json.dumps({"format": "float8_e4m3fn"}).encode()), dtype=torch.uint8)
    for key, value in state.items():
        name = prefix + key
        if not (key.endswith(".weight") and value.ndim == 2):
            out[name] = value.to(torch.bfloat16)
            continue
        layer = name[: -len(".weight")]
        if layout == "unscaled":
            out[name] = value.to(torch.float8_e4m3fn)
            continue
        out[name], scale = fp8_scaled(value)
        if layout == "scaled_fp8":
            out[f"{layer}.scale_weight"] = scale
            out[f"{layer}.scale_input"] = torch.tensor(1.0)
        else:
            out[f"{layer}.weight_scale"] = scale
            layers[layer[len(prefix):]] = {"format": "float8_e4m3fn"}
            if layout == "comfy_quant":
                out[f"{layer}.comfy_quant"] = config.clone()
    if layout == "scaled_fp8":
        out[prefix + "scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})} \
        if layout == "metadata" else {}
    if causal_ar:
        metadata.update(CAUSAL_AR_METADATA)
    save_file({k: v.contiguous() for k, v in out.items()}, str(path), metadata=metadata or None)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# writers: LoRA


def peft_lora_state(pairs: LoraPairs) -> StateDict:
    """PEFT names as LongLive saves them (no alpha keys)."""
    state: StateDict = {}
    for name, (down, up) in pairs.items():
        state[f"base_model.model.{name}.lora_A.weight"] = down
        state[f"base_model.model.{name}.lora_B.weight"] = up
    return state


def write_peft_lora(path: str | Path, pairs: LoraPairs, wrapped: bool = False) -> Path:
    """PEFT LoRA as .pt (raw or under "generator_lora" when `wrapped`) or .safetensors (raw)."""
    state = peft_lora_state(pairs)
    if str(path).endswith(".safetensors"):
        return _save_safetensors(path, state)
    torch.save({"generator_lora": state} if wrapped else state, path)
    return Path(path)


def write_comfy_lora(path: str | Path, pairs: LoraPairs, style: str = "lora_ab",
                     alpha: float | None = None) -> Path:
    """ComfyUI-circulating Wan LoRA layouts (safetensors).

    style "lora_ab": `diffusion_model.<module>.lora_A.weight` / `lora_B.weight` (no alpha);
    style "down_up": `diffusion_model.<module>.lora_down.weight` / `lora_up.weight` + `.alpha`
    (alpha defaults to the rank, i.e. scale 1);
    style "kohya":   `lora_unet_<module with _>.lora_down.weight` / `lora_up.weight` + `.alpha`.
    """
    if style not in ("lora_ab", "down_up", "kohya"):
        raise ValueError(f"unknown LoRA style {style!r}")
    state: StateDict = {}
    for name, (down, up) in pairs.items():
        rank = down.shape[0]
        if style == "lora_ab":
            state[f"diffusion_model.{name}.lora_A.weight"] = down
            state[f"diffusion_model.{name}.lora_B.weight"] = up
            continue
        base = f"diffusion_model.{name}" if style == "down_up" else "lora_unet_" + name.replace(".", "_")
        state[f"{base}.lora_down.weight"] = down
        state[f"{base}.lora_up.weight"] = up
        state[f"{base}.alpha"] = torch.tensor(float(rank if alpha is None else alpha))
    return _save_safetensors(path, state)


def write_diffusers_lora(path: str | Path, pairs: LoraPairs) -> Path:
    """diffusers-trained Wan LoRA names: `transformer.blocks.N.attn1.to_q.lora_A.weight`."""
    state: StateDict = {}
    for name, (down, up) in pairs.items():
        module = to_diffusers_key(name + ".weight")[: -len(".weight")]
        state[f"transformer.{module}.lora_A.weight"] = down
        state[f"transformer.{module}.lora_B.weight"] = up
    return _save_safetensors(path, state)


# ---------------------------------------------------------------------------------------------
# one call that writes everything (the loader round-trip tests)


def write_all_formats(folder: str | Path, config: WanConfig | None = None, seed: int = 0,
                      lora_rank: int = 4) -> dict[str, Path]:
    """Write the same tiny weights in every supported layout into `folder`; name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = config or architecture("tiny-vace")
    state = make_state_dict(config, seed)
    base = main_only(state)
    pairs = make_lora(config, rank=lora_rank, seed=seed + 1)
    return {
        "longlive_generator.pt": write_longlive_pt(folder / "longlive_generator.pt", base, "generator"),
        "longlive_ema_fsdp.pt": write_longlive_pt(folder / "longlive_ema_fsdp.pt", base, "generator_ema",
                                                  fsdp=True),
        "longlive_model.pt": write_longlive_pt(folder / "longlive_model.pt", base, "model"),
        "wan.safetensors": write_wan_safetensors(folder / "wan.safetensors", base),
        "wan_prefixed.safetensors": write_wan_safetensors(folder / "wan_prefixed.safetensors", base,
                                                          "model.diffusion_model."),
        "vace_full.safetensors": write_wan_safetensors(folder / "vace_full.safetensors", state),
        "vace_module.safetensors": write_vace_module(folder / "vace_module.safetensors", state),
        "vace_prefixed.safetensors": write_wan_safetensors(folder / "vace_prefixed.safetensors", state,
                                                           "model.diffusion_model."),
        "vace_diffusers.safetensors": write_diffusers_safetensors(folder / "vace_diffusers.safetensors", state),
        "lora_peft.pt": write_peft_lora(folder / "lora_peft.pt", pairs),
        "lora_peft_wrapped.pt": write_peft_lora(folder / "lora_peft_wrapped.pt", pairs, wrapped=True),
        "lora_peft.safetensors": write_peft_lora(folder / "lora_peft.safetensors", pairs),
        "lora_comfy_ab.safetensors": write_comfy_lora(folder / "lora_comfy_ab.safetensors", pairs, "lora_ab"),
        "lora_comfy_down_up.safetensors": write_comfy_lora(folder / "lora_comfy_down_up.safetensors", pairs,
                                                           "down_up"),
        "lora_kohya.safetensors": write_comfy_lora(folder / "lora_kohya.safetensors", pairs, "kohya"),
        "lora_diffusers.safetensors": write_diffusers_lora(folder / "lora_diffusers.safetensors", pairs),
    }
