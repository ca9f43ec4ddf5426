"""Minutes-long video at flat memory: decode each finished chunk and append it to an mp4 at once.

The sampler hands every finished block to `on_chunk`; nothing of the video has to stay in memory
when each chunk is decoded and written straight away. The Wan VAE is causal in time, so decoding
chunk by chunk gives exactly the frames of a whole-video decode as long as the decoder carries its
temporal state (the last frames of every causal convolution) from one call to the next:

- a *chunk decoder* is any object with `decode_chunk(raw [1, 16, t, h, w]) -> [T, H, W, 3]` (0..1)
  that does so: the first latent frame of the video gives 1 frame, every later one 4;
- `CausalStandInVAE` is a small causal VAE with real temporal state (tests, self-test);
- `OverlapChunkDecoder` serves any VAE without a streaming decoder (approximate, bounded memory);
- `VideoWriter` appends frames to an H.264 mp4 and leaves a valid file even when interrupted;
- `ChunkVideoSink` / `generate_to_video` / `latents_to_video` wire the sampler or a finished LATENT
  to the writer.

Never imports ComfyUI; the host supplies a streaming decoder for ComfyUI's own Wan VAE.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoding import (LATENT_CHANNELS, VAE_STRIDE_S, VAE_STRIDE_T, VaceContext, as_frames, denormalize_latents,
                       latent_frames_for, strip_reference_frames)
from .model import CausalWanModel
from .sampler import (Block, Boundary, ChunkInfo, PromptSegment, SampleResult, SamplerSettings, StepInfo,
                      VaceScaleRamp, generate)

# ---------------------------------------------------------------------------------------------
# chunk decoders


class ChunkDecoder(Protocol):
    def decode_chunk(self, latents_raw: torch.Tensor) -> torch.Tensor:
        """RAW latents [1, 16, t, h, w], the next t latent frames of one video, -> pixels
        [T, 8h, 8w, 3] in 0..1 (T = 4t, or 4t - 3 for the chunk holding the video's first frame)."""
        ...


def frames_for_chunk(latent_frames: int, first: bool) -> int:
    """Video frames that `latent_frames` consecutive latent frames decode to inside a video."""
    return VAE_STRIDE_T * latent_frames - (VAE_STRIDE_T - 1 if first else 0)


def _check_chunk(latents: torch.Tensor) -> None:
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
        _check_chunk(latents_raw)
        first = self._context is None
        sequence = latents_raw if first else torch.cat([self._context.to(latents_raw), latents_raw], dim=2)
        pixels = as_frames(self.vae.decode(sequence)).float()  # [4 * len - 3, H, W, 3]
        keep = frames_for_chunk(latents_raw.shape[2], first)
        self._context = sequence[:, :, -self.context_frames:].detach().clone()
        return pixels[pixels.shape[0] - keep:]


# ---------------------------------------------------------------------------------------------
# a small causal VAE with real temporal state


class _CausalTimeConv:
    """Helpers for a Conv3d that is causal in time (kernel kt, padding kt-1 frames in front).

    Whole-video mode pads zeros in front; streaming mode keeps the last kt-1 input frames of
    the previous call instead, which starts as the same zeros, so both give identical outputs.
    """

    @staticmethod
    def whole(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        pad_t = conv.kernel_size[0] - 1
        return conv(F.pad(x, (0, 0, 0, 0, pad_t, 0)))

    @staticmethod
    def step(conv: nn.Conv3d, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        pad_t = conv.kernel_size[0] - 1
        if state is None:
            state = x.new_zeros(x.shape[0], x.shape[1], pad_t, *x.shape[3:])
        joined = torch.cat([state, x], dim=2)  # [B, C, pad_t + T, H, W]
        return conv(joined), joined[:, :, joined.shape[2] - pad_t:].clone()


class CausalStandInVAE(nn.Module):
    """A tiny VAE with the Wan 2.1 VAE's interface and causal temporal structure.

    decode: raw latents [1, 16, t, h, w] -> [1, 4t - 3, 8h, 8w, 3] in 0..1 (ComfyUI's [B, T, H, W, C])
      1. causal 3x3x3 conv (carries 2 latent frames) + SiLU
      2. 4x temporal upsample: 4 sub-frames per latent frame; the first latent frame of the video
         keeps only its last one (so t latent frames give 4t - 3 frames, as Wan's)
      3. causal temporal conv (kernel 3, carries 2 video-rate frames, across latent frames) + SiLU
      4. 8x spatial upsample by pixel shuffle, tanh, then (x + 1) / 2 clamped (ComfyUI's process_output)
    encode: pixels [T, H, W, 3] in 0..1 -> raw latents [1, 16, (T-1)//4 + 1, H/8, W/8]
      (first frame alone, then groups of 4 averaged, 8x8 pixel unshuffle, 1x1 projection).

    The random weights are deterministic in `seed`; nothing here approximates the real VAE.
    """

    def __init__(self, hidden: int = 8, seed: int = 0) -> None:
        super().__init__()
        s, c = VAE_STRIDE_S, hidden
        self.conv_in = nn.Conv3d(LATENT_CHANNELS, c, (3, 3, 3), padding=(0, 1, 1))
        self.time_up = nn.Conv3d(c, VAE_STRIDE_T * c, 1)
        self.conv_mid = nn.Conv3d(c, c, (3, 1, 1))
        self.to_pixels = nn.Conv3d(c, 3 * s * s, 1)
        self.encoder = nn.Conv3d(3 * s * s, LATENT_CHANNELS, 1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in sorted(self.named_parameters()):
                fan_in = math.prod(param.shape[1:]) if param.ndim > 1 else 1
                std = 1.0 / math.sqrt(fan_in) if param.ndim > 1 else 0.05
                param.copy_(torch.randn(param.shape, generator=generator) * std)
        self.requires_grad_(False)

    # ---- decoding --------------------------------------------------------------------------

    def _upsample_time(self, x: torch.Tensor, keep_first_only_last: bool) -> torch.Tensor:
        # [B, c, t, h, w] -> [B, c, 4t, h, w] (or 4t - 3 when the chunk starts the video)
        b, c, t, h, w = x.shape
        sub = self.time_up(x).view(b, VAE_STRIDE_T, c, t, h, w)
        sub = sub.permute(0, 2, 3, 1, 4, 5).reshape(b, c, t * VAE_STRIDE_T, h, w)  # frame i*4 + k
        return sub[:, :, VAE_STRIDE_T - 1:] if keep_first_only_last else sub

    def _to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        # [B, c, T, h, w] -> [B, T, 8h, 8w, 3] in 0..1
        b, _, t, h, w = x.shape
        p = self.to_pixels(F.silu(x))  # [B, 3*64, T, h, w]
        p = p.permute(0, 2, 1, 3, 4).reshape(b * t, -1, h, w)
        p = F.pixel_shuffle(p, VAE_STRIDE_S).view(b, t, 3, h * VAE_STRIDE_S, w * VAE_STRIDE_S)
        p = torch.tanh(p).permute(0, 1, 3, 4, 2)
        return ((p + 1) / 2).clamp(0, 1)

    def _dtype_in(self, z: torch.Tensor) -> torch.Tensor:
        _check_chunk(z)
        return z.to(self.conv_in.weight)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Whole video, independent of the streaming path: causal zero padding over all frames."""
        x = F.silu(_CausalTimeConv.whole(self.conv_in, self._dtype_in(z)))
        x = self._upsample_time(x, keep_first_only_last=True)
        x = _CausalTimeConv.whole(self.conv_mid, x)
        return self._to_pixels(x)

    def streaming_decoder(self) -> "StandInStreamingDecoder":
        return StandInStreamingDecoder(self)

    # ---- encoding --------------------------------------------------------------------------

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [T, H, W, 3] (or [1, T, H, W, 3]) in 0..1 -> raw latents [1, 16, (T-1)//4+1, H/8, W/8]."""
        pixels = as_frames(pixels)[..., :3].to(self.encoder.weight)
        t, hh, ww = pixels.shape[:3]
        if hh % VAE_STRIDE_S or ww % VAE_STRIDE_S:
            raise ValueError(f"frame size {ww}x{hh} is not a multiple of {VAE_STRIDE_S}")
        x = pixels * 2 - 1
        groups = latent_frames_for(t) - 1
        rest = x[1:1 + VAE_STRIDE_T * groups].reshape(groups, VAE_STRIDE_T, hh, ww, 3).mean(dim=1)
        x = torch.cat([x[:1], rest], dim=0).permute(0, 3, 1, 2)  # [t, 3, H, W]
        x = F.pixel_unshuffle(x, VAE_STRIDE_S)                   # [t, 192, h, w]
        return self.encoder(x.permute(1, 0, 2, 3).unsqueeze(0))  # [1, 16, t, h, w]


class StandInStreamingDecoder:
    """Chunk-by-chunk decoding of `CausalStandInVAE` carrying the causal state across calls."""

    def __init__(self, vae: CausalStandInVAE) -> None:
        self.vae = vae
        self.started = False
        self._in_state: torch.Tensor | None = None   # last 2 latent-rate frames entering conv_in
        self._mid_state: torch.Tensor | None = None  # last 2 video-rate frames entering conv_mid

    def decode_chunk(self, latents_raw: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        with torch.no_grad():
            x, self._in_state = _CausalTimeConv.step(vae.conv_in, vae._dtype_in(latents_raw), self._in_state)
            x = vae._upsample_time(F.silu(x), keep_first_only_last=not self.started)
            x, self._mid_state = _CausalTimeConv.step(vae.conv_mid, x, self._mid_state)
            self.started = True
            return vae._to_pixels(x)[0]


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


class ChunkVideoSink:
    """`on_chunk` for the sampler: skip reference blocks, denormalise, decode with the streaming
    decoder and append the frames to the writer; nothing is kept, so memory does not grow.

    `on_frames(pixels [T, H, W, 3], block)` is called after each written chunk (previews, progress).
    """

    def __init__(self, decoder: ChunkDecoder, writer: VideoWriter,
                 on_frames: Callable[[torch.Tensor, Block], None] | None = None) -> None:
        self.decoder = decoder
        self.writer = writer
        self.on_frames = on_frames
        self.stats = StreamStats()

    def __call__(self, info: ChunkInfo) -> None:
        if info.block.is_reference:
            return  # references are conditioning only; the causal VAE must not see them
        self.write_raw(denormalize_latents(info.latents.float()), info.block)

    def write_raw(self, raw: torch.Tensor, block: Block | None = None) -> None:
        """Decode and write the next RAW latent frames [1, 16, t, h, w] of the video."""
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


def generate_to_video(model: CausalWanModel, prompts: Sequence[PromptSegment] | torch.Tensor, *,
                      video_frames: int, height: int, width: int, seed: int, decoder: ChunkDecoder,
                      writer: VideoWriter, vace: VaceContext | None = None, vace_scale: float | Sequence[float] | VaceScaleRamp = 1.0,
                      settings: SamplerSettings = SamplerSettings(),
                      callback: Callable[[StepInfo], None] | None = None,
                      should_cancel: Callable[[], bool] | None = None,
                      on_frames: Callable[[torch.Tensor, Block], None] | None = None,
                      start_latents: torch.Tensor | None = None,
                      steer: Callable[[Boundary], Sequence[PromptSegment]] | None = None,
                      ) -> tuple[SampleResult, StreamStats]:
    """Generate with the causal sampler and write every finished chunk to `writer` at once
    (keep_latents=False: no latents are kept, memory stays flat with length).

    The writer is the caller's: open it in a `with` block so that a cancelled or failed run still
    leaves a valid, shorter file (GenerationCancelled propagates after the chunks so far are written).
    """
    sink = ChunkVideoSink(decoder, writer, on_frames)
    result = generate(model, prompts, video_frames=video_frames, height=height, width=width, seed=seed,
                      vace=vace, vace_scale=vace_scale, settings=settings, callback=callback,
                      should_cancel=should_cancel, on_chunk=sink, keep_latents=False,
                      start_latents=start_latents, steer=steer)
    return result, sink.stats


def latents_to_video(raw_latents: torch.Tensor, ref_frames: int, decoder: ChunkDecoder, writer: VideoWriter,
                     chunk_frames: int = 3,
                     on_frames: Callable[[torch.Tensor, Block | None], None] | None = None,
                     before_chunk: Callable[[], None] | None = None) -> StreamStats:
    """Decode a finished RAW latent video [1, 16, ref + t, h, w] chunk by chunk (references dropped)
    and append it to `writer`; only one chunk of pixels exists at a time.

    `before_chunk()` runs before each chunk (e.g. to raise on a user interrupt).
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    latents = strip_reference_frames(raw_latents, ref_frames)
    if latents.shape[0] != 1:
        raise ValueError(f"expected one video, got a batch of {latents.shape[0]}")
    sink = ChunkVideoSink(decoder, writer, on_frames)
    for start in range(0, latents.shape[2], chunk_frames):
        if before_chunk is not None:
            before_chunk()
        sink.write_raw(latents[:, :, start:start + chunk_frames])
    return sink.stats
