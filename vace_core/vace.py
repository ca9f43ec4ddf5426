"""VACE: a side stream of transformer blocks that turns the 96-channel context into hints.

Hint stream (Wan2.1-VACE): c = patch-embedded VACE context; in block 0, c = before_proj(c) + x
where x is the patch-embedded noisy latent before any main block; each VACE block runs on c and
emits after_proj(c) as hint k, which is added (times its scale) after main block `vace_layers[k]`.

The stream depends on the main stream only through that first x, so `VaceStream` advances one
VACE block at a time, right before its hint is needed: one stream tensor is alive instead of every
hint at once. Which frames the VACE blocks attend to is the caller's choice (a KV cache access and
/ or a frame mask), see `vace_core.sampler` (`vace_attention`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, cast

import torch
from torch import nn

from .attention import SDPA, AttentionKernels
from .casting import compute_dtype_of
from .config import WanConfig
from .layers import BlockParts, WanBlock, linear
from .operations import LayerOperations, TorchOps
from .rope import RopeTable

if TYPE_CHECKING:
    from .cache import BlockCacheAccess


def vace_block(config: WanConfig, index: int, operations: LayerOperations = TorchOps) -> WanBlock:
    """VACE block `index`: a transformer block with `after_proj` (and, for block 0, `before_proj`).
    A WanBlock with those layers attached rather than a subclass, so that compiled block parts
    (vace_core.compiled), which are specialised on the block's class, serve both streams."""
    block = WanBlock(config, operations)
    if index == 0:
        block.before_proj = operations.Linear(config.dim, config.dim)
    block.after_proj = operations.Linear(config.dim, config.dim)
    return block


def build_vace_modules(config: WanConfig, operations: LayerOperations = TorchOps) -> tuple[nn.Conv3d, nn.ModuleList]:
    patch_embedding = operations.Conv3d(config.vace_in_dim, config.dim, kernel_size=config.patch_size,
                                        stride=config.patch_size)
    blocks = nn.ModuleList(vace_block(config, k, operations) for k in range(config.num_vace_blocks))
    return patch_embedding, blocks


def layer_scales(vace_scale: float | Sequence[float], num_blocks: int) -> list[float]:
    """One scale per VACE hint, from a single number or a per-layer list."""
    if isinstance(vace_scale, (int, float)):
        return [float(vace_scale)] * num_blocks
    scales = [float(s) for s in vace_scale]
    if len(scales) != num_blocks:
        raise ValueError(f"vace_scale lists {len(scales)} values but the model has {num_blocks} VACE blocks")
    return scales


class VaceStream:
    """The VACE stream of one pass, run block by block.

    vace_context [B or 1, 96, F, H, W] and x [B, S, dim] (the embedded latent tokens of the same
    frames, before any main block; one context is embedded once and joins every video's x in block
    0); `hint(k)` runs VACE block k (blocks must be asked for in order) and returns hint k [B, S, dim]
    float32.
    """

    def __init__(self, patch_embedding: nn.Conv3d, blocks: nn.ModuleList, vace_context: torch.Tensor,
                 x: torch.Tensor, time_mod: torch.Tensor, text_kv: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 rope: RopeTable, cache: "BlockCacheAccess | None" = None,
                 attn_mask: torch.Tensor | None = None, text_mask: torch.Tensor | None = None, *,
                 kernels: AttentionKernels = SDPA, parts: BlockParts | None = None) -> None:
        c = patch_embedding(vace_context.to(compute_dtype_of(patch_embedding)))  # [B, dim, F, H/2, W/2]
        self._c = c.flatten(2).transpose(1, 2).float()  # [B, S, dim]
        self._x: torch.Tensor | None = x
        self._blocks = blocks
        self._time_mod, self._text_kv, self._rope = time_mod, text_kv, rope
        self._cache, self._attn_mask, self._text_mask = cache, attn_mask, text_mask
        self._kernels, self._parts = kernels, parts
        self._next = 0

    def hint(self, k: int) -> torch.Tensor:
        if k != self._next:
            raise RuntimeError(f"VACE hint {k} asked for before hint {self._next}")
        block = cast(WanBlock, self._blocks[k])  # nn.ModuleList types its items as Module
        if k == 0:
            assert self._x is not None  # hint 0 is asked for once (checked above)
            self._c = linear(block.before_proj, self._c).float() + self._x
            self._x = None  # the stream no longer needs the latent tokens
        self._c = block(self._c, self._time_mod, self._text_kv[k], self._rope, self._cache, k,
                        self._attn_mask, self._text_mask, self._kernels, self._parts)
        self._next += 1
        return linear(block.after_proj, self._c).float()
