"""Minutes-long video at flat memory: decode each finished chunk and append it to an mp4 at once.

The sampler hands every finished block to `on_chunk`; nothing of the video has to stay in memory
when each chunk is decoded and written straight away. The Wan VAE is causal in time, so decoding
chunk by chunk gives exactly the frames of a whole-video decode as long as the decoder carries its
temporal state (the last frames of every causal convolution) from one call to the next:

- a *chunk decoder* is any object with `decode_chunk(raw [1, 16, t, h, w]) -> [T, H, W, 3]` (0..1)
  that does so: the first latent frame of the video gives 1 frame, every later one 4;
- `OverlapChunkDecoder` serves any VAE without a streaming decoder (approximate, bounded memory);
- `VideoWriter` appends frames to an H.264 mp4 and leaves a valid file even when interrupted;
- `ChunkVideoSink` is the sampler's chunk sink (`sample(..., on_chunk=sink)`): it decodes each
  finished chunk and appends it to the writer; `generate_to_video` (the library's form) and
  `latents_to_video` (a finished LATENT) wire it up. `BatchVideoSink` is the sink of a batch: one
  `ChunkVideoSink` per video (each its own decoder state and file), fed from each chunk of the run;
- either runs its chunks on a `DecodeWorker` (vace_core/decode_worker.py) to decode on another
  device while the sampler goes on.

Never imports ComfyUI; the host supplies a streaming decoder for ComfyUI's own Wan VAE.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from .encoding import as_frames, strip_reference_frames
from .latents import LATENT_CHANNELS, denormalize_latents, frames_for_chunk
from .model import CausalWanModel
from .plan import Block, PromptSegment
from .decode_worker import DecodeWorker
from .sampler import ChunkInfo, SampleResult, generate

# ---------------------------------------------------------------------------------------------
# chunk decoders


class ChunkDecoder(Protocol):
    def decode_chunk(self, latents_raw: torch.Tensor) -> torch.Tensor:
        """RAW latents [1, 16, t, h, w], the next t latent frames of one video, -> pixels
        [T, 8h, 8w, 3] in 0..1 (T = 4t, or 4t - 3 for the chunk holding the video's first frame)."""
        ...


def check_chunk(latents: torch.Tensor) -> None:
    if latents.ndim != 5 or latents.shape[0] != 1 or latents.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"expected one chunk of raw latents [1, {LATENT_CHANNELS}, t, h, w], "
                         f"got {tuple(latents.shape)}")
    if latents.shape[2] < 1:
        raise ValueError("a chunk needs at least one latent frame")


class OverlapChunkDecoder:
    """Approximate streaming for a VAE that can only decode whole clips (`vae.decode`).

    Each chunk is decoded together with the `context_frames` latent frames before it and the
    frames of that context are dropped, so every chunk yields the right number of frames and sees
    some causal history; the VAE state beyond the context is lost, so frames may differ slightly
    from a whole-video decode (small seams). Memory stays bounded by context + chunk.
    """

    def __init__(self, vae: Any, context_frames: int = 2) -> None:
        if context_frames < 1:
            raise ValueError(f"context_frames must be at least 1, got {context_frames}")
        self.vae = vae
        self.context_frames = context_frames
        self._context: torch.Tensor | None = None  # last latent frames seen [1, 16, <=c, h, w]

    def decode_chunk(self, latents_raw: torch.Tensor) -> torch.Tensor:
        check_chunk(latents_raw)
        context = self._context
        first = context is None
        sequence = latents_raw if context is None else torch.cat([context.to(latents_raw), latents_raw], dim=2)
        pixels = as_frames(self.vae.decode(sequence)).float()  # [4 * len - 3, H, W, 3]
        keep = frames_for_chunk(latents_raw.shape[2], first)
        self._context = sequence[:, :, -self.context_frames:].detach().clone()
        return pixels[pixels.shape[0] - keep:]


# ---------------------------------------------------------------------------------------------
# mp4 writer


def _to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    # [T, H, W, 3] float 0..1 (or uint8) -> uint8 numpy, rounded
    if isinstance(frames, np.ndarray):
        if frames.dtype == np.uint8:
            return frames
        frames = torch.from_numpy(frames)
    if frames.dtype == torch.uint8:
        return frames.cpu().numpy()
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


class VideoWriter:
    """Appends RGB frames to an H.264 (yuv420p) mp4 as they come.

    `write(frames [T, H, W, 3])` takes floats in 0..1 (ComfyUI IMAGE) or uint8. `close()` flushes
    the encoder and finalises the file; it is idempotent, and the context manager calls it on any
    exit, so an exception or an interrupt leaves a valid mp4 with every frame written before it.
    Width and height must be even (yuv420p halves the chroma planes).

    Container metadata is written with the header, before the first frames; `set_metadata` after
    that (something known only at the end, e.g. the live steering) makes `close()` copy the
    finished streams, without re-encoding, into a file with the new metadata, which then replaces
    the first one.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float = 16, crf: int = 19,
                 preset: str = "medium", metadata: dict[str, str] | None = None) -> None:
        import av  # imported here so the core stays importable without PyAV

        if width < 2 or height < 2 or width % 2 or height % 2:
            raise ValueError(f"video size {width}x{height}: yuv420p needs an even width and height")
        if not 0 <= int(crf) <= 51:
            raise ValueError(f"crf {crf}: must lie in 0..51 (lower = better quality, bigger file)")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.width, self.height = width, height
        self.frames_written = 0
        self._closed = False
        self._metadata = dict(metadata or {})
        self._late_metadata: dict[str, str] = {}
        rate = Fraction(fps).limit_denominator(1001)
        # faststart moves the index to the front at close, so browsers can start playing at once;
        # use_metadata_tags keeps custom keys (ComfyUI stores the workflow there, as its SaveVideo does)
        self._container = av.open(str(self.path), mode="w", options={"movflags": "+faststart+use_metadata_tags"})
        try:
            for key, value in self._metadata.items():
                self._container.metadata[key] = value
            self._stream = self._container.add_stream("libx264", rate=rate)
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = "yuv420p"
            self._stream.time_base = 1 / rate
            self._stream.options = {"crf": str(int(crf)), "preset": preset}
        except BaseException:
            self._container.close()
            raise

    def write(self, frames: torch.Tensor | np.ndarray) -> None:
        import av

        if self._closed:
            raise ValueError(f"{self.path} is already closed")
        data = _to_uint8(frames)
        if data.ndim != 4 or tuple(data.shape[1:]) != (self.height, self.width, 3):
            raise ValueError(f"expected frames [T, {self.height}, {self.width}, 3], got {tuple(data.shape)}")
        for image in data:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames_written
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1

    def set_metadata(self, key: str, value: str) -> None:
        """Container metadata `key` = `value`, written with the header when no frame was written
        yet, else at `close()` by rewriting the file (see the class docstring)."""
        if self._closed:
            raise ValueError(f"{self.path} is already closed")
        if self.frames_written == 0:
            self._metadata[key] = self._container.metadata[key] = value
        else:
            self._late_metadata[key] = value

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._stream.encode(None):  # flush the frames the encoder still holds
                self._container.mux(packet)
        finally:
            self._container.close()
        if self._late_metadata:
            rewrite_metadata(self.path, {**self._metadata, **self._late_metadata})

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def rewrite_metadata(path: str | Path, metadata: dict[str, str]) -> None:
    """Give the mp4 at `path` this container metadata: its streams are copied packet by packet (no
    re-encoding) into a new file beside it, which replaces it only once complete, so a failure
    leaves the original as it was."""
    import av

    path = Path(path)
    rewritten = path.with_name(f".{path.stem}.metadata{path.suffix}")
    try:
        with av.open(str(path)) as source, av.open(str(rewritten), mode="w", format="mp4",
                                                  options={"movflags": "+faststart+use_metadata_tags"}) as target:
            for key, value in metadata.items():
                target.metadata[key] = value
            streams = {s.index: target.add_stream_from_template(s) for s in source.streams}
            for packet in source.demux():
                if packet.dts is None:  # the demuxer's empty end-of-stream packet
                    continue
                packet.stream = streams[packet.stream.index]
                target.mux(packet)
        os.replace(rewritten, path)
    finally:
        rewritten.unlink(missing_ok=True)


def read_video_info(path: str | Path) -> tuple[int, int, int, float]:
    """(frames actually decodable, width, height, fps) of a video file (tests, reports)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.width, stream.height, float(stream.average_rate or 0)


# ---------------------------------------------------------------------------------------------
# wiring


@dataclass
class StreamStats:
    """What one streamed video produced."""
    chunks: int = 0  # generated chunks decoded and written
    latent_frames: int = 0  # generated latent frames decoded (references excluded)
    frames: int = 0  # video frames written
    decode_seconds: float = 0.0
    write_seconds: float = 0.0

    def __add__(self, other: "StreamStats") -> "StreamStats":
        """What two streamed videos produced together (a batch's)."""
        return StreamStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


class ChunkVideoSink:
    """`on_chunk` for the sampler: skip reference blocks, denormalise, decode with the streaming
    decoder and append the frames to the writer; nothing is kept, so memory does not grow.

    `on_frames(pixels [T, H, W, 3], block)` is called after each written chunk (previews, progress);
    `block` is None for chunks of a finished latent video (`latents_to_video`).
    """

    def __init__(self, decoder: ChunkDecoder, writer: VideoWriter,
                 on_frames: Callable[[torch.Tensor, Block | None], None] | None = None) -> None:
        self.decoder = decoder
        self.writer = writer
        self.on_frames = on_frames
        self.stats = StreamStats()

    def __call__(self, info: ChunkInfo) -> None:
        if info.block.is_reference:
            return  # references are conditioning only; the causal VAE must not see them
        self.write_raw(denormalize_latents(info.latents.float()), info.block)

    def write_raw(self, raw: torch.Tensor, block: Block | None = None) -> torch.Tensor:
        """Decode and write the next RAW latent frames [1, 16, t, h, w] of the video; returns the
        frames written [T, H, W, 3]."""
        start = time.perf_counter()
        pixels = self.decoder.decode_chunk(raw)
        decoded = time.perf_counter()
        self.writer.write(pixels)
        self.stats.write_seconds += time.perf_counter() - decoded
        self.stats.decode_seconds += decoded - start
        self.stats.chunks += 1
        self.stats.latent_frames += raw.shape[2]
        self.stats.frames += pixels.shape[0]
        if self.on_frames is not None:
            self.on_frames(pixels, block)
        return pixels


class BatchVideoSink:
    """`on_chunk` for a batch of B videos: chunk latents [B, 16, f, h, w] go video after video to one
    `ChunkVideoSink` each (its own decoder, holding that video's causal state, and its own writer).

    `on_frames(pixels [T, H, B * W, 3], block)` is called once per chunk, after every video's frames
    are written, with the B videos' new frames side by side (video 0 leftmost; one video's frames
    as they are). The sink takes the whole chunk in one call, so a wrapper that runs a sink on a
    worker thread serves it as it serves a `ChunkVideoSink`.
    """

    def __init__(self, sinks: Sequence[ChunkVideoSink],
                 on_frames: Callable[[torch.Tensor, Block], None] | None = None) -> None:
        if not sinks:
            raise ValueError("a batch sink needs one video sink per video, got none")
        self.sinks = list(sinks)
        self.on_frames = on_frames

    def __call__(self, info: ChunkInfo) -> None:
        if info.block.is_reference:
            return
        if info.latents.shape[0] != len(self.sinks):
            raise ValueError(f"a chunk of {info.latents.shape[0]} videos for a sink of {len(self.sinks)} videos")
        raw = denormalize_latents(info.latents.float())
        pixels = [sink.write_raw(video, info.block) for sink, video in zip(self.sinks, raw.split(1))]
        if self.on_frames is not None:
            self.on_frames(pixels[0] if len(pixels) == 1 else torch.cat(pixels, dim=2), info.block)

    @property
    def stats(self) -> StreamStats:
        """What the videos produced together."""
        return sum((sink.stats for sink in self.sinks), StreamStats())


def generate_to_video(model: CausalWanModel, prompts: Sequence[PromptSegment] | torch.Tensor, *,
                      decoder: ChunkDecoder, writer: VideoWriter,
                      on_frames: Callable[[torch.Tensor, Block | None], None] | None = None,
                      **run: Any) -> tuple[SampleResult, StreamStats]:
    """`generate` (`run`: its arguments) writing every finished chunk to `writer` at once through a
    `ChunkVideoSink` (keep_latents=False: no latents are kept, memory stays flat with length).

    The writer is the caller's: open it in a `with` block so that a cancelled or failed run still
    leaves a valid, shorter file (GenerationCancelled propagates after the chunks so far are written).
    """
    sink = ChunkVideoSink(decoder, writer, on_frames)
    result = generate(model, prompts, on_chunk=sink, keep_latents=False, **run)
    return result, sink.stats


def latents_to_video(raw_latents: torch.Tensor, ref_frames: int, decoder: ChunkDecoder, writer: VideoWriter,
                     chunk_frames: int = 3,
                     on_frames: Callable[[torch.Tensor, Block | None], None] | None = None,
                     before_chunk: Callable[[], None] | None = None,
                     worker: DecodeWorker | None = None) -> StreamStats:
    """Decode a finished RAW latent video [1, 16, ref + t, h, w] chunk by chunk (references dropped)
    and append it to `writer`; only one chunk of pixels exists at a time.

    `before_chunk()` runs before each chunk (e.g. to raise on a user interrupt). With a `worker` (a
    `DecodeWorker` the caller has entered) each chunk is decoded and written there; the stats are
    complete once the caller has left it.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    latents = strip_reference_frames(raw_latents, ref_frames)
    if latents.shape[0] != 1:
        raise ValueError(f"expected one video, got a batch of {latents.shape[0]}")
    sink = ChunkVideoSink(decoder, writer, on_frames)
    write = sink.write_raw if worker is None else worker.on_worker(sink.write_raw)
    for start in range(0, latents.shape[2], chunk_frames):
        if before_chunk is not None:
            before_chunk()
        write(latents[:, :, start:start + chunk_frames])
    return sink.stats
