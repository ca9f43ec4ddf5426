"""The Wan 2.1 latent format: channels, the VAE's strides, normalisation, frame arithmetic, sizes.

- `vae.encode(pixels [T, H, W, 3])` gives RAW latents [1, 16, (T-1)//4+1, H/8, W/8]: the first
  video frame alone, then 4 frames per latent frame (a causal 4x time stride), 8x8 pixels per
  latent pixel;
- the DiT works on NORMALISED latents, (raw - mean) / std with the Wan 2.1 per-channel statistics;
  a ComfyUI LATENT is raw;
- the DiT cuts a latent frame into 2x2 patches, so a video's width and height are multiples of 16.

This is the only module that knows these numbers; the VACE context (encoding.py), the plan of a
run and the streaming decoder build on it.
"""

from __future__ import annotations

import torch

LATENT_CHANNELS = 16
VAE_STRIDE_T = 4
VAE_STRIDE_S = 8
SIZE_MULTIPLE = VAE_STRIDE_S * 2  # VAE stride 8 times the DiT's 2x2 patch

# Wan 2.1 VAE latent statistics (ComfyUI latent format Wan21; the same numbers as Wan2.1's vae.py).
WAN21_LATENTS_MEAN: tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD: tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


# ---------------------------------------------------------------------------------------------
# normalisation


def _latent_stats(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if like.ndim != 5 or like.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"expected latents [B, {LATENT_CHANNELS}, T, h, w], got {tuple(like.shape)}")
    shape = (1, LATENT_CHANNELS, 1, 1, 1)
    mean = torch.tensor(WAN21_LATENTS_MEAN, device=like.device, dtype=like.dtype).view(shape)
    std = torch.tensor(WAN21_LATENTS_STD, device=like.device, dtype=like.dtype).view(shape)
    return mean, std


def normalize_latents(raw: torch.Tensor) -> torch.Tensor:
    """RAW VAE latents [B,16,T,h,w] -> the model's normalised space: (raw - mean) / std."""
    mean, std = _latent_stats(raw)
    return (raw - mean) / std


def denormalize_latents(norm: torch.Tensor) -> torch.Tensor:
    """Normalised latents [B,16,T,h,w] -> RAW VAE space (ComfyUI LATENT): norm * std + mean."""
    mean, std = _latent_stats(norm)
    return norm * std + mean


# ---------------------------------------------------------------------------------------------
# frame arithmetic: the VAE's 4x causal temporal and 8x spatial strides


def latent_frames_for(video_frames: int) -> int:
    """Latent frames the Wan VAE makes of `video_frames` frames: the first frame alone, then 4 each."""
    if video_frames < 1:
        raise ValueError(f"video_frames must be at least 1, got {video_frames}")
    return (video_frames - 1) // VAE_STRIDE_T + 1


def video_frames_for(latent_frames: int) -> int:
    """Video frames that `latent_frames` latent frames decode to: 4 * (latent_frames - 1) + 1."""
    if latent_frames < 1:
        raise ValueError(f"latent_frames must be at least 1, got {latent_frames}")
    return VAE_STRIDE_T * (latent_frames - 1) + 1


def frames_for_chunk(latent_frames: int, first: bool) -> int:
    """Video frames that `latent_frames` consecutive latent frames decode to inside a video (`first`:
    the chunk holding the video's first latent frame, which decodes to 1 frame)."""
    return VAE_STRIDE_T * latent_frames - (VAE_STRIDE_T - 1 if first else 0)


def first_video_frame_of(latent_frame: int) -> int:
    """The first video frame latent frame L decodes to: L >= 1 gives frames 4L-3 .. 4L, 0 gives frame 0."""
    return video_frames_for(latent_frame) if latent_frame > 0 else 0


def switch_latent_frame(video_frame: int) -> int:
    """First latent frame whose video frames all lie at or after `video_frame`: ceil(v / 4)."""
    return -(-video_frame // VAE_STRIDE_T)


# ---------------------------------------------------------------------------------------------
# sizes


def latent_grid(height: int, width: int) -> tuple[int, int]:
    """(h, w) of a latent frame of a height x width video: the VAE's spatial stride 8."""
    return height // VAE_STRIDE_S, width // VAE_STRIDE_S


def check_size(width: int, height: int) -> None:
    """Width and height must be positive multiples of 16 (VAE stride 8 x DiT patch 2)."""
    bad = [f"{name} {value}" for name, value in (("width", width), ("height", height))
           if value < SIZE_MULTIPLE or value % SIZE_MULTIPLE]
    if bad:
        raise ValueError(f"{' and '.join(bad)}: must be a positive multiple of {SIZE_MULTIPLE} "
                         f"(VAE stride 8 x patch 2), e.g. 832x480")
