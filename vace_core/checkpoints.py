"""Load LongLive / Wan2.1 base checkpoints and graft VACE weights onto them.

``load_longlive(base_path, lora_path=None, lora_strength=1.0, dtype=torch.bfloat16, device="cpu",
*, lora_alpha=None, entry=None, operations=None, attention=None) -> CausalWanModel``
    Build the causal Wan DiT from a base checkpoint (architecture inferred from tensor shapes) and
    merge an optional LoRA (vace_core/lora.py). ``dtype`` is the compute dtype (torch dtype or
    "bf16"/"fp16"/"fp32"); the small time-embedding, modulation and norm parameters stay float32
    (``vace_core.model.param_dtype``). ``entry`` names the state dict to take from a trainer
    checkpoint holding several (vace_core/checkpoint_files.py). A base file that also holds VACE
    weights (a full Wan2.1-VACE checkpoint) gives a model with VACE. ``operations`` is the namespace
    of layer classes the model is built from (default torch.nn; see vace_core.layers), ``attention``
    the attention kernels (default SDPA; see vace_core.attention).
``graft_vace(model, vace_path) -> model``
    Add VACE blocks to ``model`` (the same object is returned) from a full Wan2.1-VACE checkpoint or
    a VACE-only module file, in any key layout (vace_core/key_names.py). Only the ``vace_*`` tensors
    are used. Their width and FFN size (and, for a full Wan2.1-VACE file, the text width) must match
    the base. A model that already has VACE gets the new weights.
``read_vace(model, vace_path, device=None) -> VaceWeights``
    The same VACE blocks built for ``model`` (its operations and dtype policy, on ``device``,
    default the model's) but not attached: ``VaceWeights.attributes()`` are the model attributes
    that graft them, so a host can attach them per run while the base model stays shared.

Memory: the base model is built on the meta device and each tensor is converted to its target
dtype/device one at a time while the source entry is dropped, then assigned
(``load_state_dict(assign=True)``), so no second full copy of the weights exists. ``graft_vace``
reads and checks everything before it changes the model, so a failed call leaves it as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .attention import AttentionKernels
from .checkpoint_files import AUTO_ENTRY_ORDER, CheckpointError, PathLike, Shape, TensorFile, preview
from .config import WanConfig, infer_config
from .key_names import detect_format, is_vace_key, wan_names
from .lora import apply_lora
from .model import CausalWanModel, param_dtype
from .vace import build_vace_modules

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
           "float16": torch.float16, "half": torch.float16, "fp32": torch.float32,
           "float32": torch.float32, "float": torch.float32}


def expected_shapes(config: WanConfig) -> dict[str, Shape]:
    """Key -> shape of the CausalWanModel for `config`, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = CausalWanModel(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_keys(found: Mapping[str, Shape], expected: Mapping[str, Shape], path: PathLike, what: str) -> None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k} {tuple(found[k])} (expected {tuple(expected[k])})"
             for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {preview(unexpected)}")
        if any(k.endswith("scale_weight") or k == "scaled_fp8" for k in unexpected):
            problems.append("fp8-scaled checkpoints are not supported; use an fp16/bf16/fp32 file")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape: {preview(wrong)}")
    if problems:
        raise CheckpointError(f"{path} does not match {what}: " + "; ".join(problems))


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}") from None


def _converted(tensor: torch.Tensor, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    # copy=True: the result owns its memory, never a view into a memory-mapped file
    return tensor.to(device=device, dtype=dtype, copy=True)


# ---------------------------------------------------------------------------------------------
# base model


def load_longlive(base_path: PathLike, lora_path: PathLike | None = None, lora_strength: float = 1.0,
                  dtype: torch.dtype | str = torch.bfloat16, device: torch.device | str = "cpu", *,
                  lora_alpha: float | None = None, entry: str | None = None,
                  operations: type | None = None, attention: AttentionKernels | None = None) -> CausalWanModel:
    """Load a LongLive / Wan2.1 base checkpoint (and merge a LoRA); see the module docstring.
    `operations` and `attention` are the host's layers and attention kernels (CausalWanModel)."""
    dtype = resolve_dtype(dtype)
    path = Path(base_path)
    with TensorFile(path, AUTO_ENTRY_ORDER, entry) as source:
        names = wan_names(source.shapes, path)
        shapes = {name: source.shapes[key] for key, name in names.items()}
        config = _base_config(shapes, path, names)
        # expected from a plain model: host operations may create their weights only on loading
        _check_keys(shapes, expected_shapes(config), path, "a Wan2.1 DiT of the inferred size")
        with torch.device("meta"):
            model = CausalWanModel(config, operations, attention)  # parameters without storage, replaced below
        state = {name: _converted(source.take(key), param_dtype(name, dtype), device)
                 for key, name in names.items()}
    model.load_state_dict(state, strict=True, assign=True)
    del state
    model.eval().requires_grad_(False)
    if lora_path is not None and lora_strength != 0:
        apply_lora(model, lora_path, lora_strength, alpha=lora_alpha)
    return model


def _base_config(shapes: Mapping[str, Shape], path: Path, names: Mapping[str, str]) -> WanConfig:
    try:
        return infer_config(shapes)
    except ValueError as error:
        layout = detect_format(names)
        hint = (" It holds only VACE weights: load a base model first and graft this file with the VACE "
                "loader." if layout == "vace-module" else "")
        raise CheckpointError(f"{path} is not a Wan2.1 DiT checkpoint (key layout: {layout}): {error}."
                              f"{hint}") from error


# ---------------------------------------------------------------------------------------------
# VACE


@dataclass
class VaceWeights:
    """VACE blocks read for one base model, not attached to it (see `read_vace`)."""
    config: WanConfig  # the base model's config with these VACE blocks
    patch_embedding: nn.Module
    blocks: nn.ModuleList

    def attributes(self) -> dict[str, object]:
        """The model attributes that carry VACE: setting them on the base model grafts it."""
        return {"config": self.config, "vace_patch_embedding": self.patch_embedding, "vace_blocks": self.blocks}

    def nbytes(self) -> int:
        tensors = list(self.patch_embedding.parameters()) + list(self.blocks.parameters())
        return sum(t.numel() * t.element_size() for t in tensors)


def graft_vace(model: CausalWanModel, vace_path: PathLike) -> CausalWanModel:
    """Give `model` the VACE blocks of `vace_path`; on any error the model is left unchanged."""
    for name, value in read_vace(model, vace_path).attributes().items():
        setattr(model, name, value)
    return model


def read_vace(model: CausalWanModel, vace_path: PathLike, device: torch.device | str | None = None) -> VaceWeights:
    """The VACE blocks of `vace_path` built for `model` (same operations and dtype policy), on
    `device` (default: where the model's weights are)."""
    path = Path(vace_path)
    reference = model.blocks[0].self_attn.q.weight
    device = reference.device if device is None else device
    with TensorFile(path, AUTO_ENTRY_ORDER) as source:
        all_names = wan_names(source.shapes, path)
        names = {key: name for key, name in all_names.items() if is_vace_key(name)}
        if not names:
            raise CheckpointError(
                f"No VACE-specific weights found in {path}: expected keys starting with 'vace_blocks.' "
                f"or 'vace_patch_embedding.' (key layout: {detect_format(source.shapes)}). Use a "
                "Wan2.1-VACE checkpoint or a VACE module file.")
        # a full Wan2.1-VACE file also shows the text width the VACE blocks were trained with
        shapes = {name: source.shapes[key] for key, name in all_names.items()
                  if is_vace_key(name) or name == "text_embedding.0.weight"}
        vace_config = _vace_config(model.config, shapes, path)
        shapes.pop("text_embedding.0.weight", None)
        expected = {k: s for k, s in expected_shapes(vace_config).items() if is_vace_key(k)}
        _check_keys(shapes, expected, path, "the VACE blocks this base model needs")
        state = {name: _converted(source.take(key), param_dtype(name, reference.dtype), device)
                 for key, name in names.items()}
    holder = nn.Module()  # parameter names as in the model: vace_patch_embedding.*, vace_blocks.*
    with torch.device("meta"):
        holder.vace_patch_embedding, holder.vace_blocks = build_vace_modules(vace_config, model.operations)
    holder.load_state_dict(state, strict=True, assign=True)
    holder.requires_grad_(reference.requires_grad)  # inference models carry no gradients
    return VaceWeights(vace_config, holder.vace_patch_embedding, holder.vace_blocks)


def _vace_config(base: WanConfig, shapes: Mapping[str, Shape], path: Path) -> WanConfig:
    """Base config plus the VACE block count / input width of the file, after checking the widths."""
    indices = {int(k.split(".")[1]) for k in shapes if k.startswith("vace_blocks.")}
    if not indices:
        raise CheckpointError(f"{path} has a VACE patch embedding but no 'vace_blocks.N.' weights")
    if indices != set(range(len(indices))):
        raise CheckpointError(f"{path}: VACE block indices {sorted(indices)} are not 0..N-1")
    if len(indices) > base.num_layers:
        raise CheckpointError(f"{path} has {len(indices)} VACE blocks, more than the base model's "
                              f"{base.num_layers} blocks")
    found = {
        "dim": shapes.get("vace_blocks.0.self_attn.q.weight", (None,))[0],
        "ffn_dim": shapes.get("vace_blocks.0.ffn.0.weight", (None,))[0],
        "text_dim": shapes.get("text_embedding.0.weight", (None, None))[1],  # VACE-only files lack it
    }
    mismatched = {k: v for k, v in found.items() if v is not None and v != getattr(base, k)}
    if mismatched:
        theirs = ", ".join(f"{k} {v}" for k, v in found.items() if v is not None)
        ours = ", ".join(f"{k} {getattr(base, k)}" for k, v in found.items() if v is not None)
        raise CheckpointError(f"VACE weights in {path} do not match the base model: the file has {theirs}, "
                              f"the base model has {ours}. Use the VACE checkpoint made for this base "
                              "(Wan2.1-VACE-1.3B for LongLive / Wan2.1-T2V-1.3B).")
    in_dim = shapes.get("vace_patch_embedding.weight", (None, base.vace_in_dim))[1]
    return base.with_vace(len(indices), in_dim)
