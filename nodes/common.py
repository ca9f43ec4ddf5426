"""Names and small helpers shared by the node classes."""

import torch

from ..vace_core.encoding import LATENT_CHANNELS

CATEGORY = "LongLive/VACE"
MODEL_TYPE = "LONGLIVE_MODEL"
VACE_TYPE = "VACE_CONTEXT"
PROMPTS_TYPE = "LONGLIVE_PROMPTS"
REF_FRAMES_KEY = "longlive_ref_frames"  # LATENT entry: leading reference latent frames
STEERING_KEY = "longlive_steering"  # LATENT entry, UI output and video metadata: [{"frame", "text"}, ...]
MAX_RESOLUTION = 16384  # ComfyUI nodes.MAX_RESOLUTION
MAX_VIDEO_FRAMES = 4093  # the RoPE table's 1024 latent frames, as video frames


def default_if_listed(names: list[str], *preferred: str) -> dict:
    """{"default": the first of `preferred` that is one of the combo's options}, else {}: ComfyUI
    shows the first option when the default is absent, so name one only when it exists."""
    for name in preferred:
        if name in names:
            return {"default": name}
    return {}


def video_latents(samples) -> tuple[torch.Tensor, int]:
    """The latents [1, 16, frames, h, w] of a LATENT holding one Wan 2.1 video and its number of
    leading reference frames, checked (nodes that decode or extend a whole video)."""
    raw = samples.get("samples") if isinstance(samples, dict) else None
    if not isinstance(raw, torch.Tensor) or raw.ndim != 5 or raw.shape[:2] != (1, LATENT_CHANNELS):
        shape = tuple(raw.shape) if isinstance(raw, torch.Tensor) else None
        raise ValueError(f"samples: expected one video of Wan 2.1 latents [1, 16, frames, h, w], got {shape}")
    ref_frames = int(samples.get(REF_FRAMES_KEY, 0))
    if not 0 <= ref_frames < raw.shape[2]:
        raise ValueError(f"samples: {ref_frames} reference frames but only {raw.shape[2]} latent frames")
    return raw, ref_frames
