"""Streaming video output: decode chunk by chunk and append to an mp4, so memory stays flat with length.

- "Save Video (streaming decode)" decodes a finished LATENT a few latent frames at a time.
- "LongLive Sampler -> Video (streaming)" writes every chunk as soon as the sampler finishes it;
  no latents of the video are kept at all.

Both drop the reference frames, use an exact streaming decoder for ComfyUI's Wan 2.1 VAE (the
frames equal a whole decode) and leave a valid, shorter mp4 when interrupted. A batch of videos
gives one mp4 per video, named with consecutive counters as ComfyUI's savers name a batch. Their
`decode_device` decodes on the model's device between chunks (the default), or on the CPU or another
GPU on a worker thread while the next chunk samples (docs/decode-device.md).
"""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from ..vace_core.decode_worker import QUEUED_CHUNKS, DecodeDeviceError
from ..vace_core.latents import LATENT_CHANNELS, VAE_STRIDE_S
from ..vace_core.plan import Block, PromptSegment, RunRequest
from ..vace_core.logs import log
from ..vace_core.presets import DEFAULT_PRESET
from ..vace_core.sampler import ChunkSink
from ..vace_core.streaming import BatchVideoSink, ChunkVideoSink, StreamStats, VideoWriter, latents_to_video
from . import host
from .common import CATEGORY, STEERING_KEY, video_latents
from .live import live_run, record_json
from .model_files import WAN_VAE_FILE
from .model_ref import LongLiveModel
from .sampler import Origin, SamplerInputs, prepare_sampling, sample_on_device, sampler_inputs
from .sampler_settings import SamplerChoices
from .video_files import HIDDEN_INPUTS, clock, mp4_metadata, saved_videos_ui, video_file_inputs


DECODE_CHUNK_FRAMES = 3  # latent frames per decode call in Save Video (12 video frames)


def _decode_device_input() -> dict:
    return {"decode_device": (host.decode_device_choices(), {
        "default": host.MODEL_DEVICE,
        "tooltip": f"Where the chunks are decoded. '{host.MODEL_DEVICE}': between chunks, on the sampler's device. "
                   "'cpu' or another GPU (e.g. 'cuda:1'): on a worker thread while the next chunk samples, with a "
                   "copy of the VAE loaded there once per run (Unload models frees it); at most "
                   f"{QUEUED_CHUNKS + 1} chunks' latents are in flight ({QUEUED_CHUNKS} queued, 1 decoding). Same "
                   "frames as the model's device on the same kind of device. A GPU this machine lacks decodes on "
                   "the model's device, with a warning."})}


def _check_decode_device(decode_device: str = host.MODEL_DEVICE) -> bool | str:
    # ComfyUI checks a combo value against the list only for inputs its VALIDATE_INPUTS does not take:
    # a GPU of the machine a workflow was saved on may be missing here, and then degrades (host).
    # A prompt without the input (an API workflow from before it) calls this without it.
    return host.decode_device_problem(decode_device) or True


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
                 self.done, self.total, pixels.shape[0], per_chunk, clock(elapsed), clock(left))


def _log_done(label: str, files: list[tuple[Path, str, str]], stats: StreamStats, seconds: float) -> None:
    where = files[0][0] if len(files) == 1 else f"{len(files)} videos ({files[0][0]} ... {files[-1][1]})"
    log.info("LongLive %s: wrote %d frames (%d chunks) to %s in %s (decode %.1f s, encode %.1f s)", label,
             stats.frames, stats.chunks, where, clock(seconds), stats.decode_seconds, stats.write_seconds)


@contextmanager
def _stops_reported(label: str, paths: list[Path], progress: _ChunkProgress,
                    decoding: host.ChunkDecoding) -> Iterator[None]:
    """A run that stops leaves the mp4s at `paths` closed with every chunk decoded before the stop:
    say so (a cancel in the log, a decode failure in its error)."""
    where = str(paths[0]) if len(paths) == 1 else ", ".join(map(str, paths))
    try:
        yield
    except host.InterruptProcessingException:
        log.info("LongLive %s: cancelled after %d of %d chunks (decoded on %s); %s keep%s them", label,
                 progress.done, progress.total, decoding.describe(), where, "s" if len(paths) == 1 else "")
        raise
    except DecodeDeviceError as error:
        raise DecodeDeviceError(f"{error} {where} hold{'s' if len(paths) == 1 else ''} {progress.done} of "
                                f"{progress.total} chunks.", error.device, error.out_of_memory) from error.__cause__


class LongLiveSaveVideo:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "Wan 2.1 latents, e.g. from the LongLive Sampler (its reference "
                                                  "frames are dropped); a batch gives one mp4 per video."}),
                "vae": ("VAE", {"tooltip": f"ComfyUI's Wan 2.1 VAE ({WAN_VAE_FILE}). Other VAEs decode chunk by chunk "
                                           "with a little overlap and may show seams."}),
                **video_file_inputs(),
            },
            "optional": _decode_device_input(),
            "hidden": dict(HIDDEN_INPUTS),
        }

    VALIDATE_INPUTS = staticmethod(_check_decode_device)

    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Decodes the latents a few frames at a time and appends them to an H.264 mp4 in the output "
                   "folder, so a minutes-long video never has to fit in memory as images.")

    def save(self, samples: dict, vae, filename_prefix: str, fps: int, crf: int,
             decode_device: str = host.MODEL_DEVICE, prompt=None, extra_pnginfo=None) -> dict:
        latents, ref_frames = video_latents(samples)
        steering = samples.get(STEERING_KEY)
        height, width = (s * VAE_STRIDE_S for s in latents.shape[-2:])
        files = host.video_output_paths(filename_prefix, width, height, latents.shape[0])
        chunk_shape = (1, LATENT_CHANNELS, DECODE_CHUNK_FRAMES, *latents.shape[-2:])
        decoding = host.chunk_decoding(vae, decode_device, chunk_shape)
        chunks = -(-(latents.shape[2] - ref_frames) // DECODE_CHUNK_FRAMES)
        progress = _ChunkProgress(chunks * len(files), "Save Video")
        metadata = mp4_metadata(prompt, extra_pnginfo, steering)
        stats = StreamStats()
        for (path, _, _), video in zip(files, latents.split(1)):  # one after another, each whole when done
            with _stops_reported("Save Video", [path], progress, decoding), \
                    VideoWriter(path, width, height, fps=fps, crf=crf, metadata=metadata) as writer, \
                    decoding.worker() as worker:
                stats += latents_to_video(video, ref_frames, decoding.new_decoder(), writer, DECODE_CHUNK_FRAMES,
                                          on_frames=progress, before_chunk=host.check_interrupt, worker=worker)
        _log_done("Save Video", files, stats, time.perf_counter() - progress.start)
        return {"ui": saved_videos_ui(files, steering), "result": ()}


class LongLiveSampleToVideo:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        inputs = sampler_inputs()
        return {
            "required": {
                **inputs["required"],
                "vae": ("VAE", {"tooltip": f"ComfyUI's Wan 2.1 VAE ({WAN_VAE_FILE}) that decodes each chunk as soon as "
                                           "it is generated."}),
                **video_file_inputs(),
            },
            "optional": {**{name: spec for name, spec in inputs["optional"].items() if name != "vae"},
                         **_decode_device_input()},
            "hidden": {**inputs["hidden"], **HIDDEN_INPUTS},
        }

    VALIDATE_INPUTS = staticmethod(_check_decode_device)

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
                 settings: SamplerChoices | None = None, clip=None, decode_device: str = host.MODEL_DEVICE,
                 prompt=None, extra_pnginfo=None, unique_id: str | None = None) -> dict:
        if (problem := host.decode_device_problem(decode_device)) is not None:
            raise ValueError(problem)
        inputs = SamplerInputs(positive=positive, seed=seed, vace_scale=vace_scale, preset=preset, settings=settings,
                               vace=vace_context, prompt_schedule=prompt_schedule, start_images=start_images, vae=vae)
        request = prepare_sampling(model, latent, inputs, clip, Origin(prompt, unique_id))
        files = host.video_output_paths(filename_prefix, request.width, request.height, request.batch)
        chunk_shape = (1, LATENT_CHANNELS, request.settings.chunk_frames, *(s // VAE_STRIDE_S for s in
                                                                              (request.height, request.width)))
        decoding = host.chunk_decoding(vae, decode_device, chunk_shape)
        blocks = request.blocks()
        progress = _ChunkProgress(sum(not b.is_reference for b in blocks), "Sampler -> Video")
        with live_run(unique_id, blocks, request.ref_frames, clip, model.facts.text_dim, fps=fps,
                      latent_previews=False) as live:
            mp4 = _Mp4Output(paths=[path for path, _, _ in files], request=request, decoding=decoding, fps=fps,
                             crf=crf,
                             metadata=mp4_metadata(prompt, extra_pnginfo, live.record),
                             on_frames=_both(progress, live.on_frames), steering=live.record)
            # the writer is closed when the run stops: the mp4 holds every chunk decoded before the stop
            with _stops_reported("Sampler -> Video", mp4.paths, progress, decoding):
                sample_on_device(model, request, chunk_output=mp4.sink(), steer=live.steer, keep_latents=False,
                                 pass_progress=False)
        _log_done("Sampler -> Video", files, mp4.stats, time.perf_counter() - progress.start)
        return {"ui": saved_videos_ui(files, live.record), "result": ()}


@dataclass
class _Mp4Output:
    """The streaming node's chunk output: an mp4 per video of the batch written chunk by chunk
    (`sink`), opened once the model is loaded, the chunks decoded inline or on the decode device's
    worker (which has finished when the sink's block is left); the steering record is added to each
    when they are closed (a cancelled run's too)."""
    paths: list[Path]
    request: RunRequest
    decoding: host.ChunkDecoding
    fps: int
    crf: int
    metadata: dict[str, str]
    on_frames: Callable[[torch.Tensor, Block], None]  # once per chunk, the videos side by side
    steering: list | None
    stats: StreamStats = field(default_factory=StreamStats)

    @contextmanager
    def sink(self) -> Iterator[ChunkSink]:
        with ExitStack() as videos:
            writers = [videos.enter_context(VideoWriter(path, self.request.width, self.request.height, fps=self.fps,
                                                        crf=self.crf, metadata=self.metadata))
                       for path in self.paths]
            # one decoder per video: each carries its video's causal state
            sink = BatchVideoSink([ChunkVideoSink(self.decoding.new_decoder(), writer) for writer in writers],
                                  self.on_frames)
            try:
                with self.decoding.worker() as worker:
                    yield sink if worker is None else worker.chunk_sink(sink)
            finally:
                self.stats = sink.stats
                if self.steering and host.metadata_enabled():
                    for writer in writers:
                        writer.set_metadata(STEERING_KEY, record_json(self.steering))


def _both(first: Callable, second: Callable) -> Callable:
    def call(*args) -> None:
        first(*args)
        second(*args)

    return call
