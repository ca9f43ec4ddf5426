"""Streaming video output: decode chunk by chunk and append to an mp4, so memory stays flat with length.

- "Save Video (streaming decode)" decodes a finished LATENT a few latent frames at a time.
- "LongLive Sampler -> Video (streaming)" writes every chunk as soon as the sampler finishes it;
  no latents of the video are kept at all.

Both drop the reference frames, use an exact streaming decoder for ComfyUI's Wan 2.1 VAE (the
frames equal a whole decode) and leave a valid, shorter mp4 when interrupted.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Sequence

import torch

from ..vace_core.encoding import VAE_STRIDE_S
from ..vace_core.plan import PromptSegment
from ..vace_core.presets import DEFAULT_PRESET
from ..vace_core.sampler import GenerationCancelled
from ..vace_core.streaming import StreamStats, VideoWriter, generate_to_video, latents_to_video
from . import host
from .common import CATEGORY, STEERING_KEY, video_latents
from .live import live_run, record_json
from .model_files import WAN_VAE_FILE
from .model_ref import LongLiveModel
from .sampler import (Origin, keep_loaded_and_check_interrupt, on_compute_device, prepare_sampling, run_blocks,
                      sampler_inputs)
from .sampler_settings import SamplerChoices

log = logging.getLogger("longlive_vace")

DECODE_CHUNK_FRAMES = 3  # latent frames per decode call in Save Video (12 video frames)


def _video_inputs() -> dict:
    return {
        "filename_prefix": ("STRING", {
            "default": "LongLive",
            "tooltip": "Name of the mp4 in ComfyUI's output folder (a subfolder may be given, e.g. "
                       "'video/LongLive'); a counter is appended and an existing file is never overwritten."}),
        "fps": ("INT", {"default": 16, "min": 1, "max": 120, "step": 1,
                        "tooltip": "Frames per second of the mp4 (Wan 2.1 / LongLive: 16)."}),
        "crf": ("INT", {"default": 19, "min": 0, "max": 51, "step": 1,
                        "tooltip": "H.264 quality: lower is better and bigger (0 = lossless luma, 19 = visually "
                                   "near lossless, 23 = x264's default)."}),
    }


_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def _metadata(prompt: Any, extra_pnginfo: Any, steering: list | None = None) -> dict[str, str]:
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


def _ui(name: str, subfolder: str, steering: list | None = None) -> dict:
    # what ComfyUI's own SaveVideo reports (ui.PreviewVideo): the frontend shows a video player
    ui = {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": (True,)}
    if steering is not None:
        ui[STEERING_KEY] = list(steering)
    return ui


class _ChunkProgress:
    """Progress in chunks on ComfyUI's bar, a preview of the newest decoded frame, and a console
    line per chunk with the speed and the time left."""

    def __init__(self, total_chunks: int, label: str) -> None:
        self.total = total_chunks
        self.label = label
        self.done = 0
        self.bar = host.progress_bar(total_chunks)
        self.preview = host.frame_previewer()
        self.start = time.perf_counter()

    def __call__(self, pixels: torch.Tensor, block=None) -> None:
        self.done += 1
        image = self.preview(pixels[-1]) if self.preview is not None else None
        self.bar.update_absolute(self.done, self.total, image)
        elapsed = time.perf_counter() - self.start
        per_chunk = elapsed / self.done
        left = per_chunk * (self.total - self.done)
        log.info("LongLive %s: chunk %d/%d (%d frames) %.2f s/chunk, elapsed %s, ETA %s", self.label,
                 self.done, self.total, pixels.shape[0], per_chunk, _clock(elapsed), _clock(left))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def _log_done(label: str, path, stats: StreamStats, seconds: float) -> None:
    log.info("LongLive %s: wrote %d frames (%d chunks) to %s in %s (decode %.1f s, encode %.1f s)", label,
             stats.frames, stats.chunks, path, _clock(seconds), stats.decode_seconds, stats.write_seconds)


class LongLiveSaveVideo:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "Wan 2.1 latents, e.g. from the LongLive Sampler (its reference "
                                                  "frames are dropped)."}),
                "vae": ("VAE", {"tooltip": f"ComfyUI's Wan 2.1 VAE ({WAN_VAE_FILE}). Other VAEs decode chunk by chunk "
                                           "with a little overlap and may show seams."}),
                **_video_inputs(),
            },
            "hidden": dict(_HIDDEN),
        }

    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Decodes the latents a few frames at a time and appends them to an H.264 mp4 in the output "
                   "folder, so a minutes-long video never has to fit in memory as images.")

    def save(self, samples: dict, vae, filename_prefix: str, fps: int, crf: int, prompt=None,
             extra_pnginfo=None) -> dict:
        latents, ref_frames = video_latents(samples)
        steering = samples.get(STEERING_KEY)
        height, width = (s * VAE_STRIDE_S for s in latents.shape[-2:])
        path, name, subfolder = host.video_output_path(filename_prefix, width, height)
        decoder = host.streaming_decoder(vae)
        chunks = -(-(latents.shape[2] - ref_frames) // DECODE_CHUNK_FRAMES)
        progress = _ChunkProgress(chunks, "Save Video")
        with VideoWriter(path, width, height, fps=fps, crf=crf,
                         metadata=_metadata(prompt, extra_pnginfo, steering)) as writer:
            stats = latents_to_video(latents, ref_frames, decoder, writer, DECODE_CHUNK_FRAMES,
                                     on_frames=progress, before_chunk=host.check_interrupt)
        _log_done("Save Video", path, stats, time.perf_counter() - progress.start)
        return {"ui": _ui(name, subfolder, steering), "result": ()}


class LongLiveSampleToVideo:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        inputs = sampler_inputs()
        return {
            "required": {
                **inputs["required"],
                "vae": ("VAE", {"tooltip": f"ComfyUI's Wan 2.1 VAE ({WAN_VAE_FILE}) that decodes each chunk as soon as "
                                           "it is generated."}),
                **_video_inputs(),
            },
            "optional": {name: spec for name, spec in inputs["optional"].items() if name != "vae"},
            "hidden": {**inputs["hidden"], **_HIDDEN},
        }

    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "generate"
    CATEGORY = CATEGORY
    DESCRIPTION = ("The LongLive Sampler writing straight to an mp4: every finished chunk is decoded and "
                   "appended at once and nothing else is kept, so memory stays flat however long the video "
                   "(minutes). Cancelling leaves a valid, shorter mp4.")

    def generate(self, model: LongLiveModel, positive, latent: dict, seed: int, vace_scale: float, vae,
                 filename_prefix: str, fps: int, crf: int, preset: str = DEFAULT_PRESET, vace_context=None,
                 prompt_schedule: Sequence[PromptSegment] | None = None, start_images=None,
                 settings: SamplerChoices | None = None, clip=None, prompt=None, extra_pnginfo=None,
                 unique_id: str | None = None) -> dict:
        size, plan, start_latents = prepare_sampling(model, positive, latent, vace_scale, preset, settings,
                                                     vace_context, prompt_schedule, start_images, vae, clip,
                                                     Origin(prompt, unique_id))
        path, name, subfolder = host.video_output_path(filename_prefix, size.width, size.height)
        decoder = host.streaming_decoder(vae)
        blocks = run_blocks(plan, start_latents)
        progress = _ChunkProgress(sum(not b.is_reference for b in blocks), "Sampler -> Video")
        with live_run(unique_id, blocks, plan.ref_frames, clip, model.facts.text_dim, fps=fps,
                      latent_previews=False) as live, \
                on_compute_device(model, plan, steerable=live.steer is not None) as loaded:
            try:
                with VideoWriter(path, size.width, size.height, fps=fps, crf=crf,
                                 metadata=_metadata(prompt, extra_pnginfo, live.record)) as writer:
                    try:
                        # decoding a chunk loads the VAE, which may evict the model on a small GPU: every
                        # pass checks that it is still loaded
                        _, stats = generate_to_video(loaded.network, plan.prompts, video_frames=size.length,
                                                     height=size.height, width=size.width, seed=seed,
                                                     decoder=decoder, writer=writer, vace=vace_context,
                                                     vace_scale=plan.vace_scale, settings=plan.settings,
                                                     should_cancel=lambda: keep_loaded_and_check_interrupt(loaded),
                                                     on_frames=_both(progress, live.on_frames),
                                                     start_latents=start_latents, steer=live.steer)
                    finally:  # a cancelled video records the steering of its chunks too
                        if live.record and host.metadata_enabled():
                            writer.set_metadata(STEERING_KEY, record_json(live.record))
            except GenerationCancelled:
                # the writer is closed by now: the mp4 holds every chunk finished before the cancel
                log.info("LongLive Sampler -> Video: cancelled after %d of %d chunks; %s keeps them",
                         progress.done, progress.total, path)
                host.raise_interrupted()
        _log_done("Sampler -> Video", path, stats, time.perf_counter() - progress.start)
        return {"ui": _ui(name, subfolder, live.record), "result": ()}


def _both(first: Callable, second: Callable) -> Callable:
    def call(*args) -> None:
        first(*args)
        second(*args)

    return call
