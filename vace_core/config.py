"""Architecture description of a (causal) Wan2.1 DiT, optionally with VACE blocks.

Everything that depends on model size reads it from a `WanConfig`; the 1.3B numbers live only in
the `wan2.1-1.3B` entry of `ARCHITECTURES` below (vace_core/presets.py holds the sampler presets).
`infer_config` recovers a config from checkpoint tensor shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import torch

from .encoding import CONTEXT_CHANNELS
from .latents import LATENT_CHANNELS

HEAD_DIM = 128  # every released Wan2.1 model uses 128-wide attention heads


@dataclass(frozen=True)
class WanConfig:
    dim: int = 1536
    ffn_dim: int = 8960
    num_layers: int = 30
    num_heads: int = 12
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    in_channels: int = LATENT_CHANNELS
    out_channels: int = LATENT_CHANNELS
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    rope_max_frames: int = 1024
    # main-block index after which VACE hint k is added; empty = no VACE
    vace_layers: tuple[int, ...] = field(default_factory=tuple)
    vace_in_dim: int = CONTEXT_CHANNELS

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        bad = [i for i in self.vace_layers if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"vace_layers {bad} lie outside the {self.num_layers} main blocks")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def has_vace(self) -> bool:
        return len(self.vace_layers) > 0

    @property
    def num_vace_blocks(self) -> int:
        return len(self.vace_layers)

    def with_vace(self, num_vace_blocks: int, vace_in_dim: int = CONTEXT_CHANNELS) -> "WanConfig":
        return replace(self, vace_layers=default_vace_layers(self.num_layers, num_vace_blocks),
                       vace_in_dim=vace_in_dim)

    def without_vace(self) -> "WanConfig":
        return replace(self, vace_layers=())


def default_vace_layers(num_layers: int, num_vace_blocks: int) -> tuple[int, ...]:
    """VACE hints are spread evenly over the main blocks: 15 of 30 -> 0, 2, ..., 28."""
    if num_vace_blocks <= 0:
        return ()
    if num_vace_blocks > num_layers:
        raise ValueError(f"{num_vace_blocks} VACE blocks cannot map onto {num_layers} main blocks")
    stride = num_layers / num_vace_blocks
    return tuple(int(k * stride) for k in range(num_vace_blocks))


ARCHITECTURES: dict[str, WanConfig] = {
    "wan2.1-1.3B": WanConfig(),
    "wan2.1-vace-1.3B": WanConfig().with_vace(15),
    # small enough for CPU tests in milliseconds, same structure (2 heads of 128, VACE every 2nd block)
    "tiny": WanConfig(dim=256, ffn_dim=512, num_layers=4, num_heads=2, freq_dim=32, text_dim=64),
    "tiny-vace": WanConfig(dim=256, ffn_dim=512, num_layers=4, num_heads=2, freq_dim=32,
                           text_dim=64).with_vace(2),
}


def architecture(name: str) -> WanConfig:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}") from None


def infer_config(shapes: Mapping[str, torch.Size | tuple[int, ...]], text_len: int = 512) -> WanConfig:
    """Recover the architecture from the tensor shapes of a state dict in original Wan key names.

    `shapes` maps key -> shape (a state dict works too, its tensors are only asked for `.shape`).
    Raises ValueError naming the first missing key when the dict is not a Wan DiT.
    """

    def shape_of(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise ValueError(f"not a Wan2.1 DiT state dict: key {key!r} is missing")
        value = shapes[key]
        return tuple(value.shape if hasattr(value, "shape") else value)

    patch_weight = shape_of("patch_embedding.weight")  # [dim, in_ch, pt, ph, pw]
    dim, in_channels = patch_weight[0], patch_weight[1]
    patch_size = (patch_weight[2], patch_weight[3], patch_weight[4])
    text_dim = shape_of("text_embedding.0.weight")[1]
    freq_dim = shape_of("time_embedding.0.weight")[1]
    ffn_dim = shape_of("blocks.0.ffn.0.weight")[0]
    head_out = shape_of("head.head.weight")[0]
    out_channels = head_out // (patch_size[0] * patch_size[1] * patch_size[2])
    num_layers = _count_indexed(shapes, "blocks.")
    num_vace_blocks = _count_indexed(shapes, "vace_blocks.")
    if dim % HEAD_DIM:
        raise ValueError(f"model width {dim} is not a multiple of the Wan head size {HEAD_DIM}")
    config = WanConfig(dim=dim, ffn_dim=ffn_dim, num_layers=num_layers, num_heads=dim // HEAD_DIM,
                       freq_dim=freq_dim, text_dim=text_dim, text_len=text_len,
                       in_channels=in_channels, out_channels=out_channels, patch_size=patch_size)
    if num_vace_blocks:
        vace_in_dim = shape_of("vace_patch_embedding.weight")[1]
        config = config.with_vace(num_vace_blocks, vace_in_dim)
    return config


def _count_indexed(keys: Mapping[str, object], prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".", 1)[0]) for k in keys
               if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit()}
    if indices and indices != set(range(len(indices))):
        raise ValueError(f"{prefix.rstrip('.')} indices are not contiguous: {sorted(indices)}")
    return len(indices)
