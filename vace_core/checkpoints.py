"""Load LongLive / Wan2.1 base checkpoints and graft VACE weights onto them.

``load_longlive(base_path, lora_path=None, lora_strength=1.0, dtype=torch.bfloat16, device="cpu",
*, lora_alpha=None, entry=None, operations=None, attention=None, compute_dtype=None, fp8_matmul=False,
capabilities=None, operations_for=None) -> CausalWanModel``
    Build the causal Wan DiT from a base checkpoint (architecture inferred from tensor shapes) and
    merge an optional LoRA (vace_core/lora.py). ``dtype`` is the weights' dtype (torch dtype or a
    name of vace_core.precision's table: "bf16"/"fp16"/"fp32"/"fp8_e4m3fn"/"fp8_e4m3fn_fast"/
    "fp8_e5m2", or "auto" for the device's own); the model computes in it, except for fp8: the
    Linear weights of the transformer blocks are then stored in fp8 with a per-tensor scale and cast
    per layer to ``compute_dtype`` (default the device's own: bf16 on a GPU with native bf16, fp16 on
    other GPUs, float32 on the CPU), and ``fp8_matmul`` (or "fp8_e4m3fn_fast") runs them as fp8
    matmuls instead where the device has fp8 tensor cores and the file does not ask for matmuls in
    full precision (vace_core.precision makes the choice). The small time-embedding, modulation and
    norm parameters stay float32 (``vace_core.model.param_dtype``). ``entry`` names the state dict to
    take from a trainer checkpoint holding several (vace_core/checkpoint_files.py). A base file that
    also holds VACE weights (a full Wan2.1-VACE checkpoint) gives a model with VACE. ``operations``
    is the namespace of layer classes the model is built from (default torch.nn, or vace_core's cast
    layers for fp8; see vace_core.layers), ``attention`` the attention kernels (default SDPA; see
    vace_core.attention). A host whose model computes elsewhere than its weights are loaded passes
    that device's ``capabilities`` (default: ``device``'s) and ``operations_for(precision)``, its
    layer classes for the precision chosen.
``graft_vace(model, vace_path) -> model``
    Add VACE blocks to ``model`` (the same object is returned) from a full Wan2.1-VACE checkpoint or
    a VACE-only module file, in any key layout (vace_core/key_names.py). Only the ``vace_*`` tensors
    are used. Their width and FFN size (and, for a full Wan2.1-VACE file, the text width) must match
    the base. A model that already has VACE gets the new weights.
``read_vace(model, vace_path, device=None) -> VaceWeights``
    The same VACE blocks built for ``model`` (its operations and dtypes, fp8 included, on ``device``,
    default the model's) but not attached: ``VaceWeights.attributes()`` are the model attributes
    that graft them, so a host can attach them per run while the base model stays shared.

fp8 files of any layout load too: unscaled, or ComfyUI's scaled-fp8 layouts (``scaled_fp8`` marker
with per-layer ``scale_weight``; ``comfy_quant`` / ``weight_scale`` / ``_quantization_metadata``), read
as ComfyUI reads them (vace_core.quantized). Their weights load into any ``dtype``: dequantized with
their scales, or kept as stored when ``dtype`` is theirs.

Memory: the base model is built on the meta device and each tensor is converted to its target
dtype/device one at a time while the source entry is dropped, then assigned
(``load_state_dict(assign=True)``), so no second full copy of the weights exists. ``graft_vace``
reads and checks everything before it changes the model, so a failed call leaves it as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, cast

import torch
from torch import nn

from .attention import AttentionKernels
from .casting import INPUT_SCALE_SUFFIX, SCALE_SUFFIX, cast_operations_for, dequantize, quantize
from .checkpoint_files import AUTO_ENTRY_ORDER, CheckpointError, PathLike, Shape, TensorFile, preview
from .config import WanConfig, infer_config
from .key_names import detect_format, is_vace_key, wan_names
from .layers import WanBlock
from .lora import apply_lora
from .logs import log
from .model import CausalWanModel, param_dtype
from .operations import LayerOperations
from .precision import DeviceCapabilities, Precision, capabilities_of, choose_precision, is_fp8
from .quantized import QuantizationError, QuantizedTensors, read_quantization
from .vace import build_vace_modules


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
        if any(k.endswith((".scale_weight", ".scale_input")) for k in unexpected):
            problems.append("per-layer fp8 scales without the file's 'scaled_fp8' marker (ComfyUI would ignore "
                            "them and compute with wrongly scaled weights)")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape: {preview(wrong)}")
    if problems:
        raise CheckpointError(f"{path} does not match {what}: " + "; ".join(problems))


def _converted(tensor: torch.Tensor, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    # copy=True: the result owns its memory, never a view into a memory-mapped file
    return tensor.to(device=device, dtype=dtype, copy=True)


def _quantization(source: TensorFile) -> QuantizedTensors:
    try:
        return read_quantization(source.shapes, source.metadata, source.take, str(source.path))
    except QuantizationError as error:
        raise CheckpointError(str(error)) from None


def _model_tensors(source: TensorFile, quant: QuantizedTensors) -> list[str]:
    """The file's keys that hold model tensors (not scales, markers or quantization configs)."""
    return [key for key in source.shapes if key not in quant.consumed]


def _read_state(source: TensorFile, names: Mapping[str, str], quant: QuantizedTensors,
                dtype_of: Callable[[str], torch.dtype], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Model name -> tensor in its storage dtype `dtype_of(name)` on `device`, one at a time. An fp8
    weight comes with its `weight_scale` (and a file's `input_scale`): kept as stored when the file
    holds it in that dtype, else rounded to it; every other tensor is dequantized (times its scale,
    in float32) and cast."""
    state = {}
    for key, name in names.items():
        tensor = source.take(key)
        scale_key = quant.weight_scales.get(key)
        scale = source.take(scale_key).float() if scale_key else None
        target = dtype_of(name)
        if not is_fp8(target):
            state[name] = _converted(tensor if scale is None else dequantize(tensor, scale, torch.float32),
                                     target, device)
            continue
        if tensor.dtype == target:
            stored, scale = tensor, torch.ones(()) if scale is None else scale
        else:
            stored, scale = quantize(dequantize(tensor, scale, torch.float32), target)
        layer = name[: -len("weight")]
        state[name] = _converted(stored, target, device)
        state[layer + SCALE_SUFFIX] = _converted(scale.reshape(()), torch.float32, device)
        input_key = quant.input_scales.get(key)
        if input_key is not None:
            state[layer + INPUT_SCALE_SUFFIX] = _converted(source.take(input_key).reshape(()), torch.float32, device)
    return state


# ---------------------------------------------------------------------------------------------
# base model


def load_longlive(base_path: PathLike, lora_path: PathLike | None = None, lora_strength: float = 1.0,
                  dtype: torch.dtype | str = torch.bfloat16, device: torch.device | str = "cpu", *,
                  lora_alpha: float | None = None, entry: str | None = None,
                  operations: LayerOperations | None = None, attention: AttentionKernels | None = None,
                  compute_dtype: torch.dtype | str | None = None, fp8_matmul: bool = False,
                  capabilities: DeviceCapabilities | None = None,
                  operations_for: Callable[[Precision], LayerOperations | None] | None = None) -> CausalWanModel:
    """Load a LongLive / Wan2.1 base checkpoint (and merge a LoRA); see the module docstring.
    `operations` (or `operations_for`) and `attention` are the host's layers and attention kernels
    (CausalWanModel); `capabilities` describes the device the model computes on."""
    path = Path(base_path)
    with TensorFile(path, AUTO_ENTRY_ORDER, entry) as source:
        quant = _quantization(source)
        precision = choose_precision(dtype, capabilities or capabilities_of(device), quant.full_precision_matmul,
                                     compute_dtype=compute_dtype, fp8_matmul=fp8_matmul)
        if precision.note is not None:
            log.info("%s: %s", path.name, precision.note)
        names = wan_names(_model_tensors(source, quant), path)
        shapes = {name: source.shapes[key] for key, name in names.items()}
        config = _base_config(shapes, path, names)
        # expected from a plain model: host operations may create their weights only on loading
        _check_keys(shapes, expected_shapes(config), path, "a Wan2.1 DiT of the inferred size")
        layers = operations or (operations_for or cast_operations_for)(precision)
        with torch.device("meta"):  # parameters without storage, replaced below
            model = CausalWanModel(config, layers, attention, compute_dtype=precision.compute,
                                   weight_dtype=precision.weights)
        state = _read_state(source, names, quant,
                            lambda name: param_dtype(name, precision.compute, precision.weights), device)
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
        tensors = list(self.patch_embedding.state_dict().values()) + list(self.blocks.state_dict().values())
        return sum(t.nbytes for t in tensors)  # fp8 scales included; a quantized weight's stored bytes


def graft_vace(model: CausalWanModel, vace_path: PathLike) -> CausalWanModel:
    """Give `model` the VACE blocks of `vace_path`; on any error the model is left unchanged."""
    for name, value in read_vace(model, vace_path).attributes().items():
        setattr(model, name, value)
    return model


def read_vace(model: CausalWanModel, vace_path: PathLike, device: torch.device | str | None = None) -> VaceWeights:
    """The VACE blocks of `vace_path` built for `model` (same operations and dtype policy), on
    `device` (default: where the model's weights are)."""
    path = Path(vace_path)
    reference = cast(WanBlock, model.blocks[0]).self_attn.q.weight  # nn.ModuleList types its items as Module
    device = reference.device if device is None else device
    with TensorFile(path, AUTO_ENTRY_ORDER) as source:
        quant = _quantization(source)
        all_names = wan_names(_model_tensors(source, quant), path)
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
        state = _read_state(source, names, quant,
                            lambda name: param_dtype(name, model.compute_dtype, model.weight_dtype), device)
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
