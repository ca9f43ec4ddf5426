"""Weights stored in one dtype and computed in another: fp8 Linear weights cast per layer.

ComfyUI runs fp8 checkpoints this way (UNETLoader's `weight_dtype`, comfy.ops): a Linear keeps its
weight in float8 and casts it to the compute dtype (bf16 / fp16 / fp32) on every call, so memory
holds one byte per weight while the matmul runs in the compute dtype; only the layer being run has
a compute-dtype copy. Each fp8 weight carries a per-tensor float32 scale, the real weight being
`weight.to(compute) * weight_scale`: the layout of ComfyUI's scaled-fp8 files (an unscaled fp8 file
reads with scale 1). Rounding a bf16 / fp32 checkpoint to fp8 here picks scale = max|w| / 448 (what
ComfyUI's quantizer calls "recalculate"): the weights then use fp8's whole range, where plain
rounding leaves trained weights (|w| ~ 0.02, many below fp8's smallest normal 2^-6) in the
subnormals with one to three significant bits.

`fp8_matmul` (ComfyUI's `fp8_e4m3fn_fast`; vace_core.precision decides where it applies): the input
is rounded to fp8 as well (clamped to +-448, like ComfyUI's fp8_linear) and the product runs as one
`torch._scaled_mm`.

`cast_operations(compute_dtype)` is the layer namespace (see vace_core.operations) whose Linear does this,
`cast_operations_for(precision)` the namespace a model of that precision is built from;
`compute_dtype_of(layer)` is what the model casts a layer's input to.
"""

from __future__ import annotations

import functools
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .operations import LayerOperations
from .precision import Precision, is_fp8, torch_name

SCALE_SUFFIX = "weight_scale"  # state-dict name of an fp8 weight's scale, beside "weight" (as ComfyUI's)
INPUT_SCALE_SUFFIX = "input_scale"  # a file's activation scale for fp8 matmuls, where it has one


def quantize(weight: torch.Tensor, dtype: torch.dtype,
             scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (any float dtype) -> (fp8 tensor, float32 scale []) with weight ~ fp8 * scale.

    The scale is max|weight| / fp8 max unless given (then values beyond the range are clamped,
    as ComfyUI's quantizer does); the arithmetic is ComfyUI's, so the same weight rounds to the
    same bytes in both."""
    limit = torch.finfo(dtype).max
    weight = weight.float()
    if scale is None:
        peak = weight.abs().amax()
        scale = torch.where(peak > 0, peak / limit, torch.ones_like(peak))
    scale = scale.to(weight.device, torch.float32).reshape(())
    scaled = torch.clamp(weight * (1.0 / scale), -limit, limit)
    return scaled.to(dtype), scale


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """A stored weight in `dtype`: fp8 times its scale (ComfyUI's order: cast, then multiply in
    `dtype`), any other dtype just cast."""
    cast = weight.to(dtype)
    return cast if scale is None else cast * scale.to(cast.device, dtype)


def stored_like(value: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """`value` (float32, e.g. a weight with a LoRA merged) rounded back to `weight`'s storage: fp8
    at the layer's own scale (values beyond its range clamped), any other dtype cast."""
    if is_fp8(weight.dtype):
        return quantize(value, weight.dtype, scale if scale is not None else torch.ones(()))[0]
    return value.to(weight.dtype)


def compute_dtype_of(layer: nn.Module) -> torch.dtype:
    """The dtype `layer` computes in, which its input is cast to: its `compute_dtype` when its
    weight is stored in another dtype (cast per call), else its weight's dtype."""
    weight = cast(torch.Tensor, layer.weight)  # nn.Module types its attributes as Tensor | Module
    return getattr(layer, "compute_dtype", None) or weight.dtype


class CastLinear(nn.Linear):
    """A Linear whose weight (and bias) is cast per call to its input's device and dtype; an fp8
    weight is multiplied by its `weight_scale`. `compute_dtype` / `fp8_matmul` are set per
    namespace by `cast_operations`."""

    compute_dtype: torch.dtype = torch.float32
    fp8_matmul: bool = False
    weight_scale: torch.Tensor | None  # buffers, registered below
    input_scale: torch.Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        # per-tensor float32 scales, present only for fp8 weights (loaded from the state dict)
        self.register_buffer(SCALE_SUFFIX, None)
        self.register_buffer(INPUT_SCALE_SUFFIX, None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        for name in (SCALE_SUFFIX, INPUT_SCALE_SUFFIX):
            value = state_dict.get(prefix + name)
            if value is not None:  # a buffer that is None takes no state: give it one to load into
                state_dict[prefix + name] = value.float().reshape(())
                setattr(self, name, torch.empty((), dtype=torch.float32, device=value.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.device, x.dtype)
        if self.fp8_matmul and self.weight.dtype == torch.float8_e4m3fn and x.device == self.weight.device:
            return self._fp8_forward(x, bias)
        weight = dequantize(self.weight.to(x.device), self.weight_scale, x.dtype)
        return F.linear(x, weight, bias)

    def _fp8_forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x [..., in] -> [..., out] as one fp8 matmul: x rounded to fp8 at the file's input scale
        (1 without one) after clamping to fp8's range, weight as stored, float32 scales."""
        limit = torch.finfo(self.weight.dtype).max
        one = torch.ones((), device=x.device, dtype=torch.float32)
        x_scale = one if self.input_scale is None else self.input_scale
        w_scale = one if self.weight_scale is None else self.weight_scale
        rows = x.reshape(-1, x.shape[-1])  # [N, in]
        x_fp8 = torch.clamp(rows * (1.0 / x_scale).to(rows.dtype), -limit, limit).to(self.weight.dtype)
        out = torch._scaled_mm(x_fp8.contiguous(), self.weight.t(), scale_a=x_scale, scale_b=w_scale,
                               out_dtype=x.dtype)  # [N, out]
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], self.out_features)


@functools.lru_cache(maxsize=None)
def cast_operations(compute_dtype: torch.dtype, fp8_matmul: bool = False) -> LayerOperations:
    """The layer namespace of a model whose Linear weights may be stored in another dtype (fp8)
    than `compute_dtype`: Linear casts per call; Conv3d and LayerNorm keep their weights in the
    dtype they compute in (the model's dtype policy), so torch.nn's serve."""
    linear = type("Linear", (CastLinear,), {"compute_dtype": compute_dtype, "fp8_matmul": fp8_matmul})
    name = f"CastOps_{torch_name(compute_dtype)}{'_fp8_matmul' if fp8_matmul else ''}"
    # a class made at run time: its attributes are the protocol's, which mypy cannot see through type()
    return cast(LayerOperations, type(name, (), {"Linear": linear, "Conv3d": nn.Conv3d, "LayerNorm": nn.LayerNorm}))


def cast_operations_for(precision: Precision) -> LayerOperations | None:
    """The layers of a model of `precision`: cast per layer when its weights are stored in another
    dtype than it computes in, else None (torch.nn)."""
    return cast_operations(precision.compute, precision.fp8_matmul) if precision.casts else None
