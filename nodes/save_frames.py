"""Save Videos (from frames): decoded frames -> one mp4 per whole video.

The frames may hold several videos one after another: a batch's decode, or what ComfyUI-Distributed's
"Distributed Collector" returns on the master (the master's videos first, then each worker's). With the
sampler's LATENT connected, the frames are cut into videos as long as the sampler's, one mp4 each, and
frames left over that make no whole video (a worker that stopped part-way) are not saved: the log says
so. Counting whole videos rather than participants is what keeps a missing worker from cutting the
master's own video in two, as a fixed divide-by-N split would.
"""

from __future__ import annotations

import time

import torch

from ..vace_core.latents import video_frames_for
from ..vace_core.logs import log
from ..vace_core.streaming import VideoWriter
from . import host
from .common import CATEGORY, video_latents
from .video_files import HIDDEN_INPUTS, clock, mp4_metadata, saved_videos_ui, video_file_inputs


def frames_per_video(samples: dict) -> int:
    """Video frames one video of the sampler's LATENT decodes to (its reference frames dropped)."""
    latents, ref_frames = video_latents(samples)
    return video_frames_for(latents.shape[2] - ref_frames)


def whole_videos(frames: int, per_video: int) -> tuple[int, int]:
    """(whole videos, frames left over) in `frames` frames of videos `per_video` frames long."""
    return divmod(frames, per_video)


def _checked_frames(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected video frames [frames, height, width, 3], got {shape}")
    height, width = images.shape[1:3]
    if images.shape[0] and (width % 2 or height % 2):
        raise ValueError(f"images: frames of {width}x{height}: an mp4 (H.264, yuv420p) needs an even width and height")
    return images


class LongLiveSaveFrames:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Video frames, one video after another: from Decode, or from "
                                                "ComfyUI-Distributed's Distributed Collector (the master's videos "
                                                "first, then each worker's)."}),
                **video_file_inputs(),
            },
            "optional": {
                "samples": ("LATENT", {"tooltip": "The sampler's LATENT: a video is as many frames as it decodes to, "
                                                  "so the frames are cut into whole videos, one mp4 each, and frames "
                                                  "that make no whole video (a worker that stopped part-way) are not "
                                                  "saved. Not connected: all the frames are one video."}),
            },
            "hidden": dict(HIDDEN_INPUTS),
        }

    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Writes decoded frames as H.264 mp4s in the output folder, one per whole video: for several "
                   "videos at once, e.g. every participant's video of a ComfyUI-Distributed run.")

    def save(self, images: torch.Tensor, filename_prefix: str, fps: int, crf: int, samples: dict | None = None,
             prompt=None, extra_pnginfo=None) -> dict:
        frames = _checked_frames(images)
        per_video = frames_per_video(samples) if samples is not None else max(1, frames.shape[0])
        count, left_over = whole_videos(frames.shape[0], per_video)
        if left_over:
            log.warning("Save Videos (from frames): %d frames left over after %d whole video(s) of %d frames are not "
                        "saved (a participant that stopped part-way?)", left_over, count, per_video)
        if count == 0:
            log.warning("Save Videos (from frames): no whole video among %d frames: nothing saved", frames.shape[0])
        height, width = frames.shape[1:3]
        files = host.video_output_paths(filename_prefix, width, height, count) if count else []
        metadata = mp4_metadata(prompt, extra_pnginfo)
        bar = host.progress_bar(max(1, count))
        started = time.perf_counter()
        for index, (path, _, _) in enumerate(files):
            host.check_interrupt()
            with VideoWriter(path, width, height, fps=fps, crf=crf, metadata=metadata) as writer:
                writer.write(frames[index * per_video:(index + 1) * per_video])
            bar.update_absolute(index + 1, count)
        log.info("LongLive Save Videos (from frames): %d video(s) of %d frames in %s", count, per_video,
                 clock(time.perf_counter() - started))
        return {"ui": saved_videos_ui(files), "result": ()}
