"""Key names: from any supported layout to the original Wan2.1 names, and which layout a file uses.

Supported DiT layouts: Wan2.1 in original key names, optionally prefixed ``model.diffusion_model.`` /
``diffusion_model.``; LongLive / trainer ``.pt`` files (``model.<key>``, with FSDP wrapper segments
``_fsdp_wrapped_module.``, ``_checkpoint_wrapped_module.``, ``_orig_mod.`` anywhere in a key, all
dropped); diffusers ``WanTransformer3DModel`` / ``WanVACETransformer3DModel`` names; VACE-only module
files. `detect_format` names the layout: "peft-lora", "comfy-lora", "diffusers", "longlive-pt",
"wan-prefixed", "wan", "vace-module" or "unknown".
"""

from __future__ import annotations

import re
from typing import Iterable

from .checkpoint_files import CheckpointError, PathLike, preview

# segments that training wrappers insert into parameter names
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
# leading namespaces that trainers / ComfyUI / PEFT / diffusers pipelines put before the names
_PREFIXES = ("base_model.model.", "model.", "diffusion_model.", "transformer.")
_VACE_PREFIXES = ("vace_blocks.", "vace_patch_embedding.")


def strip_namespaces(key: str) -> str:
    """Drop wrapper segments and leading namespaces: 'model._fsdp_wrapped_module.blocks.0...' -> 'blocks.0...'."""
    for segment in WRAPPER_SEGMENTS:
        key = key.replace(segment, "")
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def is_vace_key(key: str) -> bool:
    return key.startswith(_VACE_PREFIXES)


# diffusers module path -> original Wan module path (from diffusers' Wan/VACE conversion table)
_FROM_DIFFUSERS_TOP = {
    "patch_embedding": "patch_embedding",
    "vace_patch_embedding": "vace_patch_embedding",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "proj_out": "head.head",
}
_FROM_DIFFUSERS_BLOCK = {
    f"{attn_d}.{proj_d}": f"{attn_w}.{proj_w}"
    for attn_d, attn_w in (("attn1", "self_attn"), ("attn2", "cross_attn"))
    for proj_d, proj_w in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "o"),
                           ("norm_q", "norm_q"), ("norm_k", "norm_k"))
}
_FROM_DIFFUSERS_BLOCK.update({
    "norm2": "norm3",  # diffusers numbers norms in call order; the affine cross-attn norm is Wan's norm3
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
    "proj_in": "before_proj",
    "proj_out": "after_proj",
})
_DIFFUSERS_MARKERS = ("condition_embedder.", "attn1.", "attn2.", "scale_shift_table", "ffn.net.",
                      "proj_in.", "proj_out.")
_BLOCK_RE = re.compile(r"^((?:vace_)?blocks\.\d+)\.(.+)$")


def _looks_diffusers(keys: Iterable[str]) -> bool:
    return any(marker in key for key in keys for marker in _DIFFUSERS_MARKERS)


def diffusers_module(module: str) -> str | None:
    """diffusers module path -> Wan module path, or None when it has no Wan counterpart."""
    match = _BLOCK_RE.match(module)
    if match:
        block, rest = match.groups()
        mapped = _FROM_DIFFUSERS_BLOCK.get(rest)
        return f"{block}.{mapped}" if mapped else None
    return _FROM_DIFFUSERS_TOP.get(module)


def _diffusers_key(key: str) -> str | None:
    """diffusers tensor name -> Wan tensor name (scale_shift_table is a bare parameter)."""
    if key == "scale_shift_table":
        return "head.modulation"
    match = _BLOCK_RE.match(key)
    if match and match.group(2) == "scale_shift_table":
        return f"{match.group(1)}.modulation"
    module, _, param = key.rpartition(".")
    mapped = diffusers_module(module)
    return f"{mapped}.{param}" if mapped else None


def wan_names(keys: Iterable[str], path: PathLike = "<keys>") -> dict[str, str]:
    """File key -> original Wan key for a DiT state dict in any supported layout."""
    stripped = {key: strip_namespaces(key) for key in keys}
    if _looks_diffusers(stripped.values()):
        converted = {key: _diffusers_key(name) for key, name in stripped.items()}
        unknown = [key for key, name in converted.items() if name is None]
        if unknown:
            raise CheckpointError(f"{path} uses diffusers names, but {len(unknown)} of its keys have no "
                                  f"Wan2.1 counterpart: {preview(unknown)}")
        stripped = {key: name for key, name in converted.items() if name is not None}  # all of them
    seen: dict[str, str] = {}
    for key, name in stripped.items():
        if name in seen:
            raise CheckpointError(f"{path} holds two tensors for {name!r}: {seen[name]!r} and {key!r}")
        seen[name] = key
    return stripped


_LORA_SUFFIXES = ((".lora_A.weight", "down"), (".lora_A.default.weight", "down"),
                  (".lora_down.weight", "down"), (".lora_B.weight", "up"),
                  (".lora_B.default.weight", "up"), (".lora_up.weight", "up"), (".alpha", "alpha"))


def lora_role(key: str) -> tuple[str, str] | None:
    """'x.lora_A.weight' -> ('x', 'down'); None for keys that are not LoRA factors or alphas."""
    for suffix, role in _LORA_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return None


def detect_format(keys: Iterable[str]) -> str:
    """Name the key layout of a checkpoint (see the module docstring for the list)."""
    keys = list(keys)
    if any((role := lora_role(k)) is not None and role[1] != "alpha" for k in keys):
        return "peft-lora" if any(k.startswith("base_model.model.") for k in keys) else "comfy-lora"
    stripped = [strip_namespaces(k) for k in keys]
    if _looks_diffusers(stripped):
        return "diffusers"
    if any(k.startswith("model.") and not k.startswith("model.diffusion_model.") for k in keys) \
            or any(segment in k for k in keys for segment in WRAPPER_SEGMENTS):
        return "longlive-pt"
    if any(k.startswith(("model.diffusion_model.", "diffusion_model.")) for k in keys):
        return "wan-prefixed"
    if any(k.startswith("blocks.") for k in stripped):
        return "wan"
    if any(is_vace_key(k) for k in stripped):
        return "vace-module"
    return "unknown"
