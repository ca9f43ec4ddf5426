"""The attention kernels the model calls, chosen by the host and injected like `operations`.

The model makes two kinds of attention calls (docs/how-it-works.md#the-gpu-path):

- `unmasked(q, k, v)`: self-attention of the cached passes, about 60 % of a chunk's work at 480x832.
  The KV cache is read as a view of exactly the frames a pass sees, so these calls need no mask
  and any kernel will do: inside ComfyUI the host passes ComfyUI's `optimized_attention`, so the
  user's --use-sage-attention / --use-flash-attention / ... choice applies as for ComfyUI's own Wan.
- `masked(q, k, v, mask)`: cross-attention, whose merged prompt padding carries a logit bias
  (`TextState.bias`), and the cache-free recompute's frame masks. Flash and sage take no mask, so
  these stay on PyTorch's SDPA; cross-attention is about 1 % of a chunk's work.

Masks are None, boolean (True = may attend), or additive in q's dtype on q's device: CUDA's
memory-efficient kernel rejects a float mask of another dtype ("invalid dtype for bias") and cuDNN
has been reported to read a float32 mask as bf16. The CPU kernel accepts anything, so tests check
every call through an injected wrapper.

q [B, heads, Sq, head_dim], k and v [B, heads, Sk, head_dim] -> [B, Sq, heads * head_dim].
On CUDA, SDPA runs with an explicit backend priority, flash, then cuDNN, then memory-efficient, and
without the math kernel: a call no fast kernel takes fails loudly instead of quietly running a
kernel that materialises the [Sq, Sk] score matrix.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F

Unmasked = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Masked = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class AttentionKernels:
    """What the blocks call: `unmasked` for cached self-attention, `masked` for everything with a
    mask (see the module docstring); `name` says which kernels these are, for logs and reports."""
    unmasked: Unmasked
    masked: Masked
    name: str


def _cuda_backends() -> list | None:
    """SDPA's CUDA backends in the order tried, math excluded; None where torch cannot restrict them."""
    try:
        from torch.nn.attention import SDPBackend
    except ImportError:  # torch < 2.3
        return None
    names = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION")
    return [getattr(SDPBackend, name) for name in names if hasattr(SDPBackend, name)]


CUDA_BACKENDS = _cuda_backends()


def cuda_backend_priority() -> ContextManager:
    """Restrict SDPA to the fast CUDA kernels, tried in CUDA_BACKENDS' order (PyTorch's own order
    among them where it cannot take a priority, torch < 2.6)."""
    if CUDA_BACKENDS is None:
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    if "set_priority" in inspect.signature(sdpa_kernel).parameters:
        return sdpa_kernel(CUDA_BACKENDS, set_priority=True)
    return sdpa_kernel(CUDA_BACKENDS)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PyTorch's scaled dot-product attention; on CUDA with the backend priority above."""
    if q.device.type == "cuda":
        with cuda_backend_priority():
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).flatten(2)  # [B, heads, Sq, hd] -> [B, Sq, heads * hd]


def sdpa_unmasked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return sdpa(q, k, v)


SDPA = AttentionKernels(unmasked=sdpa_unmasked, masked=sdpa, name="sdpa")

