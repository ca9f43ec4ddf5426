"""The layer classes the network is built from, for the precision vace_core.precision chose.

Weights computed in their own dtype: `comfy.ops` layers inside ComfyUI (whose weights its memory
manager can stream), torch.nn standalone. fp8 weights cast per layer to the compute dtype: inside
ComfyUI its mixed-precision `comfy.ops`, what its own loader builds for scaled-fp8 files (streamable,
LoRA patches applied to the dequantized weight), with fp8 matmuls where the precision has them;
vace_core's cast-per-layer Linear standalone or in a ComfyUI without them.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, cast

import torch

from ...vace_core.casting import SCALE_SUFFIX, cast_operations_for
from ...vace_core.operations import LayerOperations
from ...vace_core.precision import FP8_DTYPES, Precision, torch_name
from .comfyui import log, model_management
from .patcher import MEMORY


def _comfy_fp8_operations(mixed_precision_ops: Callable[..., Any]) -> Callable[[torch.dtype, bool], LayerOperations]:
    """ComfyUI's mixed-precision ops for vace_core's fp8 weights: a weight with a `weight_scale`
    becomes ComfyUI's quantized weight (the per-layer config its loader reads from a file, added
    here); any other weight keeps the dtype the model gave it (ComfyUI would cast it to the compute
    dtype: the float32 time embedding too); `compute_dtype` on the Linear is what the model casts
    its input to."""

    @functools.lru_cache(maxsize=None)  # one class per choice, shared by every model built with it
    def operations(compute_dtype: torch.dtype, fp8_matmul: bool) -> LayerOperations:
        disabled = [] if fp8_matmul else [torch_name(d) for d in FP8_DTYPES]
        mixed = mixed_precision_ops({}, compute_dtype, full_precision_mm=not fp8_matmul, disabled=disabled)
        comfy_linear: Any = mixed.Linear  # a class made by ComfyUI at run time

        class Linear(comfy_linear):
            def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
                weight = state_dict.get(prefix + "weight")
                quantized = prefix + SCALE_SUFFIX in state_dict and weight is not None and weight.dtype in FP8_DTYPES
                if quantized:
                    config = json.dumps({"format": torch_name(weight.dtype)}).encode()
                    state_dict[prefix + "comfy_quant"] = torch.tensor(list(config), dtype=torch.uint8)
                super()._load_from_state_dict(state_dict, prefix, *args)
                if not quantized and weight is not None:
                    self.weight = torch.nn.Parameter(weight, requires_grad=False)

        Linear.compute_dtype = compute_dtype
        # ComfyUI's namespace with this Linear: made at run time, its attributes unseen by mypy
        return cast(LayerOperations, type("LongLiveFp8Ops", (mixed,), {"Linear": Linear}))

    return operations


def _comfy_fp8_support() -> Callable[[torch.dtype, bool], LayerOperations] | None:
    """ComfyUI's fp8 layers, when it has them (mixed_precision_ops, and comfy_kitchen for its
    quantized tensors); else a warning, and fp8 models are built from vace_core's cast layers
    (outside ComfyUI's weight streaming)."""
    if MEMORY is None:
        return None
    import comfy.ops

    try:
        import comfy.quant_ops
    except ImportError:
        quantized_tensors = False
    else:
        quantized_tensors = getattr(comfy.quant_ops, "_CK_AVAILABLE", True)
    mixed = getattr(comfy.ops, "mixed_precision_ops", None)
    if mixed is None or not quantized_tensors or not hasattr(model_management, "supports_fp8_compute"):
        log.warning("LongLive: this ComfyUI has no fp8 layers (comfy.ops.mixed_precision_ops with comfy_kitchen); "
                    "fp8 weights are cast by the pack's own layers, which --lowvram cannot stream")
        return None
    return _comfy_fp8_operations(mixed)


_FP8_OPERATIONS = _comfy_fp8_support()


def layer_operations(precision: Precision) -> LayerOperations | None:
    """The layer namespace of a network of `precision` (see the module docstring); None: torch.nn."""
    if not precision.casts:
        return MEMORY.ops if MEMORY is not None else None
    if _FP8_OPERATIONS is not None:
        return _FP8_OPERATIONS(precision.compute, precision.fp8_matmul)
    return cast_operations_for(precision)
