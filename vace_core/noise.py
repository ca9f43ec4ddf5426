"""The noise of a run: every block draws its own stream, seeded from (seed, the block's first
generated frame), so a block's noise does not depend on the blocks before it and a continuation
draws exactly what a single run would have drawn there. Video i of a batch draws the streams of
seed + i (`video_seed`): the noise of the single run with that seed, never a share of one stream.
"""

from __future__ import annotations

import torch

from .latents import LATENT_CHANNELS
from .plan import Block

_MASK64 = (1 << 64) - 1


def noise_seed(seed: int, stream: int) -> int:
    """Seed of one noise stream of a run (SplitMix64 of seed and stream), so that neighbouring
    streams are unrelated and a stream can be drawn without drawing the ones before it."""
    z = (seed * 0x9E3779B97F4A7C15 + (stream + 1) * 0xD1B54A32D192ED03) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def video_seed(seed: int, video: int) -> int:
    """The seed of video `video` of a batch made with `seed`: seed + video, wrapped to 64 bits as
    the sampler nodes' seed input is (`noise_seed` reads a seed modulo 2^64 anyway)."""
    return (seed + video) & _MASK64


def block_noise(seed: int, block: Block, ref_frames: int, steps: int, grid: tuple[int, int]) -> torch.Tensor:
    """The noise a block draws: [steps, 1, 16, frames, h, w] on the CPU (the same video on every
    device). Stream -1 is the reference block; generated blocks use their first generated frame."""
    stream = -1 if block.is_reference else block.start - ref_frames
    generator = torch.Generator().manual_seed(noise_seed(seed, stream))
    return torch.randn((steps, 1, LATENT_CHANNELS, block.frames, *grid), generator=generator)
