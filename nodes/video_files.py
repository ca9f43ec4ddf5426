"""The mp4 files the video nodes write: their widgets, the metadata written into them and what the
editor is told about them (one home for Save Video, Sampler -> Video and Save Videos (from frames))."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import host
from .common import STEERING_KEY
from .live import record_json


def video_file_inputs() -> dict:
    """The widgets of every node that writes mp4s: the file name, the frame rate and the quality."""
    return {
        "filename_prefix": ("STRING", {
            "default": "LongLive",
            "tooltip": "Name of the mp4 in ComfyUI's output folder (a subfolder may be given, e.g. "
                       "'video/LongLive'); a counter is appended and an existing file is never overwritten. "
                       "A batch writes one mp4 per video, with consecutive counters."}),
        "fps": ("INT", {"default": 16, "min": 1, "max": 120, "step": 1,
                        "tooltip": "Frames per second of the mp4 (Wan 2.1 / LongLive: 16)."}),
        "crf": ("INT", {"default": 19, "min": 0, "max": 51, "step": 1,
                        "tooltip": "H.264 quality: lower is better and bigger (0 = lossless luma, 19 = visually "
                                   "near lossless, 23 = x264's default)."}),
    }


HIDDEN_INPUTS = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def mp4_metadata(prompt: Any, extra_pnginfo: Any, steering: list | None = None) -> dict[str, str]:
    """The workflow written into the mp4, as ComfyUI's SaveVideo does, and the steering record of a
    steerable run (both unless --disable-metadata)."""
    if not host.metadata_enabled():
        return {}
    data = dict(extra_pnginfo or {})
    if prompt is not None:
        data["prompt"] = prompt
    metadata = {key: json.dumps(value) for key, value in data.items()}
    if steering is not None:
        metadata[STEERING_KEY] = record_json(steering)
    return metadata


def saved_videos_ui(files: list[tuple[Path, str, str]], steering: list | None = None) -> dict:
    """What ComfyUI's own SaveVideo reports (ui.PreviewVideo), so the frontend shows a video player;
    with the steering record of a steerable run."""
    ui = {"images": [{"filename": name, "subfolder": subfolder, "type": "output"} for _, name, subfolder in files],
          "animated": (True,)}
    if steering is not None:
        ui[STEERING_KEY] = list(steering)
    return ui


def clock(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour: the console's durations."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"
