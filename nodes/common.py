"""Names and small helpers shared by the node classes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..vace_core.latents import LATENT_CHANNELS, VAE_STRIDE_S, check_size, video_frames_for

CATEGORY = "LongLive/VACE"
MODEL_TYPE = "LONGLIVE_MODEL"
VACE_TYPE = "VACE_CONTEXT"
PROMPTS_TYPE = "LONGLIVE_PROMPTS"
SETTINGS_TYPE = "LONGLIVE_SETTINGS"
REF_FRAMES_KEY = "longlive_ref_frames"  # LATENT entry: leading reference latent frames
STEERING_KEY = "longlive_steering"  # LATENT entry, UI output and video metadata: [{"frame", "text"}, ...]
MAX_RESOLUTION = 16384  # ComfyUI nodes.MAX_RESOLUTION
MAX_VIDEO_FRAMES = 4093  # the RoPE table's 1024 latent frames, as video frames
MAX_BATCH_SIZE = 4096  # core EmptyHunyuanLatentVideo's batch_size maximum


def default_if_listed(names: list[str], *preferred: str) -> dict:
    """{"default": the first of `preferred` that is one of the combo's options}, else {}: ComfyUI
    shows the first option when the default is absent, so name one only when it exists."""
    for name in preferred:
        if name in names:
            return {"default": name}
    return {}


def video_latents(samples) -> tuple[torch.Tensor, int]:
    """The latents [B, 16, frames, h, w] of a LATENT holding B Wan 2.1 videos (a batch: video after
    video) and their number of leading reference frames, checked (nodes that decode or extend whole
    videos)."""
    raw = samples.get("samples") if isinstance(samples, dict) else None
    if (not isinstance(raw, torch.Tensor) or raw.ndim != 5 or raw.shape[1] != LATENT_CHANNELS
            or raw.shape[0] < 1):
        shape = tuple(raw.shape) if isinstance(raw, torch.Tensor) else None
        image = shape is not None and len(shape) == 4
        hint = ": image latents, where this node expected video latents" if image else ""
        raise ValueError(f"samples: expected Wan 2.1 video latents [videos, 16, frames, h, w], got {shape}{hint}")
    ref_frames = int(samples.get(REF_FRAMES_KEY, 0))
    if not 0 <= ref_frames < raw.shape[2]:
        raise ValueError(f"samples: {ref_frames} reference frames but only {raw.shape[2]} latent frames")
    return raw, ref_frames


@dataclass(frozen=True)
class VideoSize:
    """A video's frame size in pixels and its length in video frames."""
    width: int
    height: int
    length: int

    def describe(self) -> str:
        return f"{self.width}x{self.height}, {self.length} frames"


def latent_video_size(latent, name: str) -> tuple[VideoSize, int]:
    """The size a LATENT input gives the sampler and how many videos it asks for: a Wan 2.1 video
    latent [batch_size, 16, frames, h, w] (core's EmptyHunyuanLatentVideo, or VACE Encode References'
    latent output); its values are not used. Leading reference frames (a LongLive sampler's output)
    do not count."""
    raw = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(raw, torch.Tensor) or raw.ndim != 5 or raw.shape[1] != LATENT_CHANNELS or raw.shape[0] < 1:
        shape = tuple(raw.shape) if isinstance(raw, torch.Tensor) else None
        raise ValueError(f"{name}: expected a Wan 2.1 video latent [batch_size, 16, frames, height/8, width/8] (e.g. "
                         f"from 'Empty HunyuanVideo 1.0 Latent'), got {shape}")
    frames = raw.shape[2] - int(latent.get(REF_FRAMES_KEY, 0))
    if frames < 1:
        raise ValueError(f"{name}: the latent holds no video frames")
    height, width = (s * VAE_STRIDE_S for s in raw.shape[-2:])
    try:
        check_size(width, height)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    return VideoSize(width, height, video_frames_for(frames)), raw.shape[0]


def source_node(prompt, unique_id, input_name: str) -> str | None:
    """"node 7 'VACE Encode References'": the node that feeds `input_name` of node `unique_id` in
    ComfyUI's queued graph (the hidden PROMPT input), with its title; None when unknown."""
    try:
        link = prompt[str(unique_id)]["inputs"][input_name]
        source_id = str(link[0])
        source = prompt[source_id]
    except (KeyError, IndexError, TypeError):
        return None
    title = (source.get("_meta") or {}).get("title") or source.get("class_type", "?")
    return f"node {source_id} '{title}'"
