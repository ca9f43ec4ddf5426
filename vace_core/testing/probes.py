"""Small test-only operations on the product's objects: a model without its VACE blocks, the frames a
KV cache holds, and the whole-video fold of a pixel mask into VACE mask channels."""

from __future__ import annotations

import torch

from ..cache import KVCache
from ..encoding import fold_patches, mask_sources
from ..model import CausalWanModel


def detach_vace(model: CausalWanModel) -> CausalWanModel:
    """Remove the grafted VACE blocks in place: the same model as the plain base checkpoint."""
    for name in ("vace_patch_embedding", "vace_blocks"):
        if hasattr(model, name):
            delattr(model, name)
    model.config = model.config.without_vace()
    return model


def cached_frames(cache: KVCache) -> list[int]:
    """The frames whose keys and values the cache holds, in order."""
    return sorted(f for f in cache.slot_frame if f >= 0)


def fold_mask(mask: torch.Tensor, latent_frames: int) -> torch.Tensor:
    """Pixel mask [T, H, W] -> VACE mask channels [64, latent_frames, H/8, W/8]: the time axis
    resampled to the latent frame count with nearest-exact (as upstream VACE does), each frame folded
    into 8x8 patches (`encoding.fold_patches`)."""
    if mask.ndim != 3:
        raise ValueError(f"mask must be [T, H, W], got {tuple(mask.shape)}")
    return fold_patches(mask[mask_sources(mask.shape[0], latent_frames)])
