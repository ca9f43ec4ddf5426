"""Progress, interrupt and previews: ComfyUI's progress bar (which drives the UI and the websocket
progress messages), its interrupt flag and its latent previewer; standalone, a progress bar that only
counts, an interrupt flag that only `request_interrupt()` sets (tests), and no previews.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .comfyui import IN_COMFYUI, InterruptProcessingException, comfy_utils, log, model_management
from .memory import compute_device


class CountingProgressBar:
    """Standalone progress bar with ComfyUI's interface; records the previews it was given."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.current = 0
        self.previews = 0

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        self.previews += preview is not None

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)


def progress_bar(total: int) -> Any:
    """ComfyUI's ProgressBar (drives the UI and the websocket progress) or a counting stand-in."""
    if comfy_utils is not None:
        return comfy_utils.ProgressBar(total)
    return CountingProgressBar(total)


_standalone_interrupt = False


def request_interrupt(value: bool = True) -> None:
    """Set (or clear) the interrupt flag: ComfyUI's own flag, or the standalone one."""
    global _standalone_interrupt
    if model_management is not None:
        model_management.interrupt_current_processing(value)
    else:
        _standalone_interrupt = value


def is_interrupted() -> bool:
    """True once the user pressed Cancel (the flag stays set until `check_interrupt` consumes it)."""
    if model_management is not None:
        return bool(model_management.processing_interrupted())
    return _standalone_interrupt


def check_interrupt() -> None:
    """Raise InterruptProcessingException if an interrupt is pending, clearing the flag
    (ComfyUI's `throw_exception_if_processing_interrupted`)."""
    global _standalone_interrupt
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()
    elif _standalone_interrupt:
        _standalone_interrupt = False
        raise InterruptProcessingException()


def raise_interrupted() -> None:
    """The run stopped because of an interrupt: raise ComfyUI's exception in any case."""
    check_interrupt()
    raise InterruptProcessingException()


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
