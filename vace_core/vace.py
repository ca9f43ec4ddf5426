"""VACE: a side stream of transformer blocks that turns the 96-channel context into hints.

Hint stream (Wan2.1-VACE): c = patch-embedded VACE context; in block 0, c = before_proj(c) + x
where x is the patch-embedded noisy latent before any main block; each VACE block runs on c and
emits after_proj(c) as hint k, which is added (times its scale) after main block `vace_layers[k]`.

Causal choice: VACE blocks attend only within the current block (they keep no KV cache), so a
chunk's hints depend on its own noisy latents and context slice alone.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .config import WanConfig
from .layers import WanBlock, linear


class VaceBlock(WanBlock):
    def __init__(self, config: WanConfig, index: int) -> None:
        super().__init__(config)
        if index == 0:
            self.before_proj = nn.Linear(config.dim, config.dim)
        self.after_proj = nn.Linear(config.dim, config.dim)


def build_vace_modules(config: WanConfig) -> tuple[nn.Conv3d, nn.ModuleList]:
    patch_embedding = nn.Conv3d(config.vace_in_dim, config.dim, kernel_size=config.patch_size,
                                stride=config.patch_size)
    blocks = nn.ModuleList(VaceBlock(config, k) for k in range(config.num_vace_blocks))
    return patch_embedding, blocks


def layer_scales(vace_scale: float | Sequence[float], num_blocks: int) -> list[float]:
    """One scale per VACE hint, from a single number or a per-layer list."""
    if isinstance(vace_scale, (int, float)):
        return [float(vace_scale)] * num_blocks
    scales = [float(s) for s in vace_scale]
    if len(scales) != num_blocks:
        raise ValueError(f"vace_scale lists {len(scales)} values but the model has {num_blocks} VACE blocks")
    return scales


def compute_hints(patch_embedding: nn.Conv3d, blocks: nn.ModuleList, x: torch.Tensor,
                  vace_context: torch.Tensor, time_mod: torch.Tensor,
                  text_kv: Sequence[tuple[torch.Tensor, torch.Tensor]],
                  rope: tuple[torch.Tensor, torch.Tensor],
                  attn_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
    """x [B, S, dim] embedded latent tokens, vace_context [B, 96, F, H, W] -> hints, each [B, S, dim]."""
    c = patch_embedding(vace_context.to(patch_embedding.weight.dtype))  # [B, dim, F, H/2, W/2]
    c = c.flatten(2).transpose(1, 2).float()  # [B, S, dim]
    hints = []
    for k, block in enumerate(blocks):
        if k == 0:
            c = linear(block.before_proj, c).float() + x
        c = block(c, time_mod, text_kv[k], rope, attn_mask=attn_mask)
        hints.append(linear(block.after_proj, c).float())
    return hints
