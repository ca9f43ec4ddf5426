"""LoRA: match a LoRA file's layers to the model's weights, read them, and merge them.

Layouts: PEFT (``base_model.model.<module>.lora_A.weight`` / ``lora_B``, raw or under
``generator_lora``), ``diffusion_model.<module>.lora_A/lora_B``, ``diffusion_model.<module>.
lora_down/lora_up`` + ``.alpha``, kohya ``lora_unet_<module_with_underscores>``, diffusers
``transformer.<diffusers module>.lora_A/lora_B``. Targets are the Linear layers outside VACE.

A layer changes its weight by ``strength * (alpha / rank) * B @ A``. The rank is read from the
tensors; alpha from the file's ``.alpha`` keys, else ``alpha = rank`` (scale 1, right for LongLive's
rank-256/alpha-256 LoRA and for PEFT files, which store no alpha); an ``alpha`` argument overrides it
for every layer. `patched_weight` is the one merge: `apply_lora` merges into a model with it, and
the standalone host's patcher (nodes/host/patcher.py) applies patches with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from .casting import SCALE_SUFFIX, dequantize, stored_like
from .checkpoint_files import CheckpointError, PathLike, Shape, TensorFile, preview
from .key_names import WRAPPER_SEGMENTS, detect_format, diffusers_module, is_vace_key, lora_role, strip_namespaces
from .model import CausalWanModel

LORA_ENTRIES = ("generator_lora",)


@dataclass(frozen=True)
class LoraLayer:
    """One LoRA pair matched to a model weight."""
    target: str  # model parameter, e.g. "blocks.3.self_attn.q.weight"
    down: str  # file key of A / lora_down [rank, in]
    up: str  # file key of B / lora_up [out, rank]
    rank: int
    alpha_key: str | None  # file key of the layer's alpha scalar, if the file has one


@dataclass(frozen=True)
class LoraDelta:
    """One LoRA layer read from a file: target weight += strength * scale * up @ down."""
    target: str  # model parameter, e.g. "blocks.3.self_attn.q.weight"
    up: torch.Tensor  # B / lora_up [out, rank], as stored in the file
    down: torch.Tensor  # A / lora_down [rank, in]
    scale: float  # alpha / rank


def apply_lora(model: CausalWanModel, lora_path: PathLike, strength: float = 1.0, *,
               alpha: float | None = None) -> CausalWanModel:
    """Merge the LoRA at `lora_path` into `model` (in place); see the module docstring."""
    if strength == 0:
        return model
    # everything is read before the first weight changes, so a bad file leaves the model as it was
    merge_lora(model, read_lora(model, lora_path, alpha=alpha), strength)
    return model


def read_lora(model: CausalWanModel, lora_path: PathLike, *, alpha: float | None = None) -> list[LoraDelta]:
    """The layers of the LoRA at `lora_path`, matched to and checked against `model`'s weights."""
    path = Path(lora_path)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    with TensorFile(path, LORA_ENTRIES) as source:
        layers = plan_lora(source.shapes, shapes, path)
        return [LoraDelta(layer.target, source.take(layer.up), source.take(layer.down),
                          _lora_scale(source, layer, alpha)) for layer in layers]


def merge_lora(model: nn.Module, deltas: Iterable[LoraDelta], strength: float) -> None:
    """Merge every delta into `model`'s weights at `strength` (`patched_weight`, in place)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for delta in deltas:
            weight = params[delta.target]
            weight_scale = getattr(model.get_submodule(delta.target.rpartition(".")[0]), SCALE_SUFFIX, None)
            weight.copy_(patched_weight(weight, [(strength, delta)], weight_scale))


def patched_weight(weight: torch.Tensor, entries: Iterable[tuple[float, LoraDelta]],
                   weight_scale: torch.Tensor | None = None) -> torch.Tensor:
    """weight + sum of strength * scale * up @ down over `entries`, accumulated in float32 and
    rounded once to the weight's storage (an fp8 weight at its layer's `weight_scale`, see
    vace_core.casting)."""
    merged = dequantize(weight, weight_scale, torch.float32)
    for strength, delta in entries:
        down = delta.down.to(weight.device, torch.float32)  # [rank, in]
        up = delta.up.to(weight.device, torch.float32)  # [out, rank]
        merged = merged + (strength * delta.scale) * (up @ down)
    return stored_like(merged, weight, weight_scale)


def _lora_scale(source: TensorFile, layer: LoraLayer, alpha: float | None) -> float:
    """alpha / rank: the override, else the file's alpha, else alpha = rank (PEFT files store none)."""
    if alpha is None and layer.alpha_key is not None:
        alpha = float(source.take(layer.alpha_key).float().reshape(-1)[0])
    return (layer.rank if alpha is None else alpha) / layer.rank


def lora_targets(weight_shapes: Mapping[str, Shape]) -> dict[str, str]:
    """Module name -> weight name of every Linear a LoRA may change (VACE blocks get none)."""
    return {name[: -len(".weight")]: name for name, shape in weight_shapes.items()
            if name.endswith(".weight") and len(shape) == 2 and not is_vace_key(name)}


def _resolve_module(raw: str, targets: Mapping[str, str], kohya: Mapping[str, str]) -> str | None:
    for segment in WRAPPER_SEGMENTS:
        raw = raw.replace(segment, "")
    if raw.startswith("lora_unet_"):
        return kohya.get(raw[len("lora_unet_"):])
    name = strip_namespaces(raw)
    if name in targets:
        return name
    mapped = diffusers_module(name)
    return mapped if mapped in targets else None


def plan_lora(shapes: Mapping[str, Shape], weight_shapes: Mapping[str, Shape],
              path: PathLike = "<keys>") -> list[LoraLayer]:
    """Match a LoRA's keys (key -> shape) to model weights (name -> shape) and check every shape.

    Works on shapes only, so it runs on meta models and before any tensor is read.
    """
    groups: dict[str, dict[str, str]] = {}
    other = []
    for key in shapes:
        role = lora_role(key)
        if role is None:
            other.append(key)
        else:
            groups.setdefault(role[0], {})[role[1]] = key
    if not any("down" in g or "up" in g for g in groups.values()):
        raise CheckpointError(f"{path} is not a LoRA: it has no lora_A/lora_B or lora_down/lora_up keys "
                              f"(key layout: {detect_format(shapes)})")
    if other:
        raise CheckpointError(f"{path} has {len(other)} keys this loader cannot merge (only lora_A/lora_B, "
                              f"lora_down/lora_up and alpha are supported): {preview(other)}")

    targets = lora_targets(weight_shapes)
    kohya = {name.replace(".", "_"): name for name in targets}
    resolved = {raw: _resolve_module(raw, targets, kohya) for raw in groups}
    unmatched = [raw for raw, name in resolved.items() if name is None]
    if len(unmatched) == len(resolved):
        raise CheckpointError(
            f"LoRA {path} matches no layer of the model: none of its {len(resolved)} target modules "
            f"({preview(unmatched)}) is a Linear outside the VACE blocks (expected names like "
            "'blocks.0.self_attn.q', optionally prefixed 'base_model.model.' or 'diffusion_model.').")
    if unmatched:
        raise CheckpointError(f"LoRA {path}: {len(unmatched)} of its {len(resolved)} target modules match "
                              f"no Linear of the model: {preview(unmatched)}")

    layers: list[LoraLayer] = []
    used: dict[str, str] = {}
    for raw, module in resolved.items():
        assert module is not None  # every target module matched (checked above)
        if module in used:
            raise CheckpointError(f"LoRA {path} has two entries for {module!r}: {used[module]!r} and {raw!r}")
        used[module] = raw
        target = targets[module]
        layers.append(_lora_layer(shapes, groups[raw], raw, target, weight_shapes[target], path))
    return layers


def _lora_layer(shapes: Mapping[str, Shape], group: Mapping[str, str], raw: str, target: str,
                weight: Shape, path: PathLike) -> LoraLayer:
    if "down" not in group or "up" not in group:
        raise CheckpointError(f"LoRA {path}: {raw!r} has only one of its two factors (A/down and B/up)")
    down, up = tuple(shapes[group["down"]]), tuple(shapes[group["up"]])
    out_features, in_features = weight
    if len(down) != 2 or len(up) != 2 or down[0] != up[1] or (up[0], down[1]) != (out_features, in_features):
        raise CheckpointError(f"LoRA {path}: {raw!r} has factors A {down} and B {up}, which do not fit "
                              f"{target} {tuple(weight)} (expected A [rank, {in_features}], "
                              f"B [{out_features}, rank])")
    return LoraLayer(target=target, down=group["down"], up=group["up"], rank=down[0],
                     alpha_key=group.get("alpha"))
