"""Previews, from ComfyUI's own previewers: the progress bar's latent preview (as its KSampler makes
it), the progress bar's preview of a decoded frame, and the Latent2RGB projection of a chunk's
latents for the live chunk previews (nodes/live.py). Standalone (or with previews off) there are
none: the functions return None.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .comfyui import IN_COMFYUI, log, warn_once
from .devices import compute_device


def make_previewer() -> Callable[[torch.Tensor], Any] | None:
    """A function from normalised Wan latents [1, 16, f, h, w] to a ComfyUI preview (the last frame),
    or None when previews are off, unavailable or the host is standalone.

    Uses ComfyUI's own previewer for the Wan 2.1 latent format (latent->RGB factors, or TAEHV when
    the user enabled TAESD previews and installed it), exactly as its KSampler does.
    """
    if not IN_COMFYUI:
        return None
    try:
        import comfy.latent_formats
        import latent_preview

        previewer = latent_preview.get_previewer(compute_device(), comfy.latent_formats.Wan21())
    except Exception as error:  # a preview is never worth failing a run for
        log.warning("LongLive: latent previews disabled (%s)", error)
        return None
    if previewer is None:
        return None

    failed = False

    def preview(x0: torch.Tensor) -> Any:
        nonlocal failed
        if failed:
            return None
        try:
            return previewer.decode_latent_to_preview_image("JPEG", x0[:, :, -1:])
        except Exception as error:
            failed = True  # warn once, then run on without previews
            log.warning("LongLive: latent previews disabled after an error (%s)", error)
            return None

    return preview


def frame_previewer() -> Callable[[torch.Tensor], Any] | None:
    """A function from one decoded frame [H, W, 3] (0..1) to a progress-bar preview, or None when
    previews are off (ComfyUI's preview method 'none') or the host is standalone."""
    if not IN_COMFYUI:
        return None
    try:
        from comfy.cli_args import LatentPreviewMethod, args
        from PIL import Image
    except ImportError as error:
        log.warning("LongLive: frame previews disabled (%s)", error)
        return None
    if args.preview_method == LatentPreviewMethod.NoPreviews:
        return None

    def preview(frame: torch.Tensor) -> Any:
        data = (frame[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        return ("JPEG", Image.fromarray(data), args.preview_size)

    return preview


def latent_rgb_previewer() -> Callable[[torch.Tensor], Any] | None:
    """A function from normalised Wan 2.1 latents [1, 16, t, h, w] to uint8 images [t, h, w, 3]:
    ComfyUI's own Latent2RGB previewer with its Wan 2.1 factors, one image per latent frame, used
    whatever the user's preview setting. None standalone or when this ComfyUI lacks either."""
    if not IN_COMFYUI:
        return None
    try:
        import comfy.latent_formats
        import latent_preview

        wan = comfy.latent_formats.Wan21()
        previewer = latent_preview.Latent2RGBPreviewer(wan.latent_rgb_factors,
                                                       getattr(wan, "latent_rgb_factors_bias", None),
                                                       getattr(wan, "latent_rgb_factors_reshape", None))
    except Exception as error:  # previews are never worth failing a run for
        warn_once("latent2rgb", "LongLive: no chunk previews from LATENT samplers: ComfyUI's Latent2RGB previewer "
                                "for Wan 2.1 is unavailable (%s)", error)
        return None

    def project(latents: torch.Tensor) -> Any:
        import numpy as np

        frames = [np.asarray(previewer.decode_latent_to_preview(latents[:, :, i:i + 1]).convert("RGB"))
                  for i in range(latents.shape[2])]
        return np.stack(frames)

    return project
