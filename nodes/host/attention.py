"""The attention kernels the network calls.

Inside ComfyUI the blocks' unmasked self-attention (about 60 % of a chunk's work) goes through
comfy.ldm.modules.attention.optimized_attention, the function ComfyUI's own Wan calls, so the
user's --use-sage-attention / --use-flash-attention / --use-pytorch-cross-attention / ... apply
to this model too. It takes q, k, v [B, heads, S, head_dim] with skip_reshape=True and returns
[B, S, heads * head_dim] (0.8 and 0.33 alike; looked up per call, as ComfyUI sets it at import).
Masked calls (cross-attention's padding bias, the recompute's frame masks) stay on SDPA with the
mask in q's dtype: flash and sage take no mask (vace_core.attention, docs/how-it-works.md#the-gpu-path).
"""

from __future__ import annotations

import torch

from ...vace_core.attention import SDPA, AttentionKernels, sdpa
from .comfyui import log, model_management


def _comfy_attention() -> AttentionKernels | None:
    if model_management is None:
        return None
    try:
        from comfy.ldm.modules import attention as comfy_attention

        found = comfy_attention.optimized_attention
    except (ImportError, AttributeError) as error:
        log.warning("LongLive: ComfyUI's optimized_attention was not found (%s); the model uses PyTorch's "
                    "attention, and ComfyUI's attention options do not apply to it", error)
        return None

    def unmasked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return comfy_attention.optimized_attention(q, k, v, heads=q.shape[1], skip_reshape=True)

    name = getattr(found, "__name__", type(found).__name__)
    return AttentionKernels(unmasked=unmasked, masked=sdpa, name=f"ComfyUI {name} (self-attention), sdpa (masked)")


_ATTENTION = _comfy_attention()


def attention_kernels() -> AttentionKernels:
    """The attention kernels the network calls: ComfyUI's for unmasked self-attention inside ComfyUI,
    PyTorch's SDPA (with its CUDA backend priority) otherwise."""
    return _ATTENTION or SDPA
