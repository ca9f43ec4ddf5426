"""Causal chunk-by-chunk generation (LongLive) with VACE reference conditioning.

The latent timeline is `[reference frames | chunk 1 | chunk 2 | ...]` at consecutive RoPE frame
positions. The references form the first causal block and stay in the KV cache for the whole video
as part of the sink. Every block is denoised in a few steps that read the cache; a final clean
pass of its x0 at t = 0 writes the cache for the blocks that follow.

Departures from upstream (bidirectional) VACE are named settings:
- `reference_mode`: "denoise" (default) denoises the reference block from noise like every other
  block, as upstream does; "clean" inserts the references' encoded latents directly and only runs
  the clean pass that caches them.
- `hint_chunks`: "all" (default) computes VACE hints for every block, as upstream does; "first"
  only for the reference block and the first generated chunk (later chunks see the references
  through the KV cache only, at no VACE cost).
- `hints_in_clean_pass`: True (default) keeps hints in the clean pass, so cached keys/values are
  those of the VACE-conditioned model; False caches unconditioned ones (cheaper, as Scope does).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .cache import CacheLayout, KVCache, kv_cache_bytes
from .encoding import SIZE_MULTIPLE, VaceContext, check_size, latent_frames_for, video_frames_for
from .model import CausalWanModel, TextState
from .scheduler import DEFAULT_SHIFT, DEFAULT_STEPS, FewStepSchedule, renoise, x0_from_flow

REFERENCE_MODES = ("denoise", "clean")
HINT_CHUNKS = ("all", "first")
CACHE_MODES = ("kv", "recompute")


@dataclass(frozen=True)
class SamplerSettings:
    chunk_frames: int = 3  # latent frames per causal block (12 video frames)
    window_frames: int = 12  # self-attention window in latent frames, sink included, refs excluded
    sink_frames: int = 3  # first generated frames kept for the whole video
    denoising_steps: tuple[int, ...] = DEFAULT_STEPS
    shift: float = DEFAULT_SHIFT
    warp_steps: bool = True  # False: the steps are the model's timesteps as they are (CausVid)
    reference_mode: str = "denoise"
    hint_chunks: str = "all"
    hints_in_clean_pass: bool = True
    cache_mode: str = "kv"  # "recompute": no cache, attention recomputed over all previous frames

    def validate(self) -> None:
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, got {self.chunk_frames}")
        if self.sink_frames < 0:
            raise ValueError(f"sink_frames must be 0 or more, got {self.sink_frames}")
        if self.window_frames < self.sink_frames + self.chunk_frames:
            raise ValueError(f"window_frames ({self.window_frames}) must hold the sink ({self.sink_frames}) "
                             f"plus one chunk ({self.chunk_frames})")
        for name, value, allowed in (("reference_mode", self.reference_mode, REFERENCE_MODES),
                                     ("hint_chunks", self.hint_chunks, HINT_CHUNKS),
                                     ("cache_mode", self.cache_mode, CACHE_MODES)):
            if value not in allowed:
                raise ValueError(f"{name} {value!r}: expected one of {', '.join(allowed)}")

    @property
    def schedule(self) -> FewStepSchedule:
        return FewStepSchedule(tuple(self.denoising_steps), self.shift, warp=self.warp_steps)


@dataclass(frozen=True)
class VaceScaleRamp:
    """VACE strength moving linearly from `start` (reference block, first chunk) to `end` (last chunk)."""
    start: float
    end: float

    def at(self, chunk_index: int, num_chunks: int) -> float:
        if num_chunks <= 1 or chunk_index <= 0:
            return self.start
        return self.start + (self.end - self.start) * chunk_index / (num_chunks - 1)


@dataclass(frozen=True)
class PromptSegment:
    start_frame: int  # first video frame of this prompt
    context: torch.Tensor  # text conditioning [1, L, text_dim]


@dataclass(frozen=True)
class Block:
    index: int
    start: int  # absolute latent frame (references count)
    frames: int
    chunk_index: int  # among generated chunks; -1 for the reference block

    @property
    def end(self) -> int:
        return self.start + self.frames

    @property
    def is_reference(self) -> bool:
        return self.chunk_index < 0


@dataclass
class StepInfo:
    pass_index: int  # 1-based count of model passes so far
    total_passes: int
    block: Block
    step: int | None  # denoising step index, None for a clean (cache-writing) pass
    x0: torch.Tensor | None  # current clean estimate of the block, normalised [1, 16, f, h, w]


@dataclass
class ChunkInfo:
    block: Block
    latents: torch.Tensor  # final normalised latents of the block [1, 16, f, h, w]


@dataclass
class SampleResult:
    latents: torch.Tensor | None  # normalised [1, 16, ref_frames + latent_frames, h, w] (CPU, float32)
    ref_frames: int
    latent_frames: int
    video_frames: int
    cache_bytes: int = 0
    blocks: list[Block] = field(default_factory=list)


class GenerationCancelled(Exception):
    """Raised between passes when `should_cancel` says so; `blocks_done` blocks were finished."""

    def __init__(self, blocks_done: int) -> None:
        super().__init__(f"generation cancelled after {blocks_done} blocks")
        self.blocks_done = blocks_done


def plan_blocks(ref_frames: int, latent_frames: int, chunk_frames: int) -> list[Block]:
    """The reference block (if any) then chunks of `chunk_frames`; the last chunk may be shorter."""
    blocks = [Block(0, 0, ref_frames, -1)] if ref_frames else []
    for chunk, start in enumerate(range(0, latent_frames, chunk_frames)):
        frames = min(chunk_frames, latent_frames - start)
        blocks.append(Block(len(blocks), ref_frames + start, frames, chunk))
    return blocks


def tokens_per_frame(height: int, width: int) -> int:
    """DiT tokens of one latent frame of a height x width video: VAE stride 8, then 2x2 patches
    (1560 at 480x832)."""
    return (height // SIZE_MULTIPLE) * (width // SIZE_MULTIPLE)


def run_cache_bytes(model: CausalWanModel, *, height: int, width: int, ref_frames: int,
                    settings: SamplerSettings) -> int:
    """Memory of the KV cache `generate` allocates for such a run (what a host must make room for)."""
    return kv_cache_bytes(model.config, tokens_per_frame=tokens_per_frame(height, width), ref_frames=ref_frames,
                          window_frames=settings.window_frames,
                          element_size=model.blocks[0].self_attn.k.weight.element_size())


def switch_latent_frame(video_frame: int) -> int:
    """First latent frame whose video frames all lie at or after `video_frame`: ceil(v / 4)."""
    return -(-video_frame // 4)


def prompt_for_blocks(prompts: Sequence[PromptSegment], blocks: Sequence[Block], ref_frames: int) -> list[int]:
    """Index of the prompt each block runs under. A prompt starting at video frame v takes over at
    the first chunk that starts at or after latent frame ceil(v / 4); references use prompt 0."""
    starts = [switch_latent_frame(p.start_frame) for p in prompts]
    chosen = []
    for block in blocks:
        generated_start = block.start - ref_frames
        index = 0
        if not block.is_reference:
            index = max(i for i, s in enumerate(starts) if s <= generated_start)
        chosen.append(index)
    return chosen


def normalize_prompts(prompts: Sequence[PromptSegment] | torch.Tensor) -> list[PromptSegment]:
    if isinstance(prompts, torch.Tensor):
        return [PromptSegment(0, prompts)]
    segments = sorted(prompts, key=lambda p: p.start_frame)
    if not segments:
        raise ValueError("no prompt given")
    if segments[0].start_frame != 0:
        raise ValueError(f"the first prompt must start at frame 0, not {segments[0].start_frame}")
    starts = [p.start_frame for p in segments]
    if len(set(starts)) != len(starts):
        raise ValueError(f"two prompts start at the same frame: {starts}")
    return segments


class _Run:
    """State of one generation: blocks, prompts, cache, noise stream and finished latents."""

    def __init__(self, model: CausalWanModel, prompts: list[PromptSegment], latent_frames: int, height: int,
                 width: int, seed: int, vace: VaceContext | None,
                 vace_scale: float | Sequence[float] | VaceScaleRamp, settings: SamplerSettings,
                 keep_latents: bool) -> None:
        self.model = model
        self.settings = settings
        self.schedule = settings.schedule
        self.vace = vace
        self._vace_slice: tuple[tuple[int, int], torch.Tensor] | None = None
        self.vace_scale = vace_scale
        self.ref_frames = vace.ref_frames if vace is not None else 0
        self.latent_frames = latent_frames
        self.grid = (height // 8, width // 8)
        self.blocks = plan_blocks(self.ref_frames, latent_frames, settings.chunk_frames)
        self.num_chunks = sum(not b.is_reference for b in self.blocks)
        self.prompt_of_block = prompt_for_blocks(prompts, self.blocks, self.ref_frames)
        self.texts: dict[int, TextState] = {}
        self.prompts = prompts
        self.generator = torch.Generator().manual_seed(seed)
        self.layout = CacheLayout(tokens_per_frame=tokens_per_frame(height, width),
                                  sink_end=self.ref_frames + settings.sink_frames,
                                  rolling_frames=settings.window_frames - settings.sink_frames)
        self.cache = None
        if settings.cache_mode == "kv":
            self.cache = KVCache.for_model(model, batch=1, tokens_per_frame=self.layout.tokens_per_frame,
                                           ref_frames=self.ref_frames, sink_frames=settings.sink_frames,
                                           window_frames=settings.window_frames)
        total = self.ref_frames + latent_frames
        self.latents = torch.zeros(1, 16, total, *self.grid) if keep_latents else None
        # x0 of recent blocks: what a prompt switch re-runs to rebuild the window
        self.recent: deque[tuple[Block, torch.Tensor]] = deque()

    def text(self, block: Block) -> TextState:
        index = self.prompt_of_block[block.index]
        if index not in self.texts:
            context = self.prompts[index].context.to(self.model.device)
            self.texts = {index: self.model.encode_text(context)}  # one prompt's K/V held at a time
        return self.texts[index]

    def vace_frames(self, start: int, stop: int) -> torch.Tensor:
        """The VACE context of frames [start, stop) on the model's device. The whole context stays
        where it was made (a long control video would not fit the GPU); one block's slice moves over
        once and serves all its passes."""
        key = (start, stop)
        if self._vace_slice is None or self._vace_slice[0] != key:
            self._vace_slice = (key, self.vace.frames(start, stop).to(self.model.device))
        return self._vace_slice[1]

    def has_hints(self, block: Block) -> bool:
        if self.vace is None:
            return False
        return self.settings.hint_chunks == "all" or block.chunk_index <= 0

    def scale(self, block: Block) -> float | Sequence[float]:
        if isinstance(self.vace_scale, VaceScaleRamp):
            return self.vace_scale.at(max(block.chunk_index, 0), self.num_chunks)
        return self.vace_scale

    def noise(self, block: Block) -> torch.Tensor:
        # drawn on the CPU in a fixed order, so a seed gives the same video on every device
        return torch.randn((1, 16, block.frames, *self.grid), generator=self.generator)

    def total_passes(self) -> int:
        steps = len(self.schedule)
        total = 0
        for block in self.blocks:
            denoise = 0 if (block.is_reference and self.settings.reference_mode == "clean") else steps
            clean = 1 if block is not self.blocks[-1] and self.cache is not None else 0
            total += denoise + clean
            if block.index > 0 and self.prompt_of_block[block.index] != self.prompt_of_block[block.index - 1]:
                total += len(self.window_blocks_before(block))
        return total

    def window_blocks_before(self, next_block: Block) -> list[Block]:
        """Earlier rolling-window blocks that `next_block` attends to (re-run after a prompt switch)."""
        low = max(self.layout.sink_end, next_block.end - self.layout.rolling_frames)
        return [b for b in self.blocks[:next_block.index] if b.end > low]

    def forward(self, block: Block, x: torch.Tensor, timestep: float, clean_pass: bool) -> torch.Tensor:
        """Flow prediction for `block` at `timestep`, through the cache or by full recompute."""
        hints = self.has_hints(block) and (not clean_pass or self.settings.hints_in_clean_pass)
        text = self.text(block)
        if self.cache is not None:
            context = self.vace_frames(block.start, block.end) if hints else None
            return self.model.forward_block(x, timestep, text, block.start, self.cache, context,
                                            self.scale(block))
        return self._recompute(block, x, timestep, text)

    def _recompute(self, block: Block, x: torch.Tensor, timestep: float, text: TextState) -> torch.Tensor:
        """Naive baseline: run every earlier frame again (clean, at t = 0) with the same
        block-causal window masks the cache implements, and keep the current block's output."""
        history = self.latents[:, :, :block.start].to(x.device)
        sequence = torch.cat([history, x], dim=2)  # [1, 16, block.end, h, w]
        frames = block.end
        timesteps = torch.zeros(1, frames, device=x.device)
        timesteps[:, block.start:] = timestep
        frame_mask = torch.zeros(frames, frames, dtype=torch.bool)
        vace_mask = torch.zeros(frames, frames, dtype=torch.bool)
        hint_weight = torch.zeros(frames)
        # A ramp gives each block its own scale and the cached loop kept every earlier block's K/V
        # at the scale that block ran at, so fold the scale into the per-frame hint weight.
        per_block_scale = isinstance(self.vace_scale, VaceScaleRamp)
        for earlier in self.blocks[:block.index + 1]:
            rows = slice(earlier.start, earlier.end)
            frame_mask[rows, self.layout.visible_frames(earlier.end)] = True
            vace_mask[rows, rows] = True
            current = earlier is block
            with_hints = self.has_hints(earlier) and (current or self.settings.hints_in_clean_pass)
            hint_weight[rows] = float(with_hints) * (self.scale(earlier) if per_block_scale else 1.0)
        context = None
        if self.vace is not None and hint_weight.any():
            context = self.vace_frames(0, frames)
        scale = 1.0 if per_block_scale else self.scale(block)
        flow = self.model.forward_block(sequence, timesteps, text, 0, None, context, scale,
                                        frame_mask=frame_mask, vace_frame_mask=vace_mask,
                                        vace_frame_weight=hint_weight)
        return flow[:, :, block.start:]


def generate(model: CausalWanModel, prompts: Sequence[PromptSegment] | torch.Tensor, *, video_frames: int,
             height: int, width: int, seed: int, vace: VaceContext | None = None,
             vace_scale: float | Sequence[float] | VaceScaleRamp = 1.0,
             settings: SamplerSettings = SamplerSettings(),
             callback: Callable[[StepInfo], None] | None = None,
             should_cancel: Callable[[], bool] | None = None,
             on_chunk: Callable[[ChunkInfo], None] | None = None,
             keep_latents: bool = True) -> SampleResult:
    """Generate `video_frames` frames (4k+1; others round down like the VAE) causally, chunk by chunk.

    prompts: a text conditioning [1, L, text_dim] or a schedule of `PromptSegment`s (video frames).
    Returns normalised latents including the reference frames (decode drops them).
    """
    settings.validate()
    check_size(width, height)
    segments = normalize_prompts(prompts)
    latent_frames = latent_frames_for(video_frames)
    if vace is not None:
        check_vace(model, vace, latent_frames, height, width)
    if settings.cache_mode == "recompute":
        if len(segments) > 1:
            raise ValueError("prompt switching needs cache_mode='kv'")
        if not keep_latents:
            raise ValueError("cache_mode='recompute' re-reads all earlier latents: keep_latents must be True")
    run = _Run(model, segments, latent_frames, height, width, seed,
               vace, vace_scale, settings, keep_latents)
    device = model.device
    total = run.total_passes()
    passes = 0

    def tick(block: Block, step: int | None, x0: torch.Tensor | None) -> None:
        nonlocal passes
        passes += 1
        if callback is not None:
            callback(StepInfo(passes, total, block, step, x0))

    def check_cancel(done: int) -> None:
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled(done)

    with torch.inference_mode():
        for block in run.blocks:
            if block.index > 0 and run.prompt_of_block[block.index] != run.prompt_of_block[block.index - 1]:
                _rebuild_window(run, block, lambda b: (check_cancel(block.index), tick(b, None, None)))
            noise_draws = [run.noise(block) for _ in run.schedule]
            if block.is_reference and settings.reference_mode == "clean":
                x0 = run.vace.ref_latents.to(device).float()
            else:
                x = noise_draws[0].to(device)
                for step in run.schedule:
                    check_cancel(block.index)
                    flow = run.forward(block, x, step.timestep, clean_pass=False)
                    x0 = x0_from_flow(x, flow.float(), step.sigma)
                    tick(block, step.index, x0)
                    if step.next_sigma > 0:
                        x = renoise(x0, noise_draws[step.index + 1].to(device), step.next_sigma)
            if run.latents is not None:
                run.latents[:, :, block.start:block.end] = x0.cpu()
            if run.cache is not None and block is not run.blocks[-1]:
                check_cancel(block.index)
                run.forward(block, x0, 0.0, clean_pass=True)  # writes the clean K/V
                tick(block, None, None)
            _remember(run, block, x0)
            if on_chunk is not None:
                on_chunk(ChunkInfo(block, x0))

    return SampleResult(latents=run.latents, ref_frames=run.ref_frames, latent_frames=latent_frames,
                        video_frames=video_frames_for(latent_frames),
                        cache_bytes=run.cache.nbytes() if run.cache is not None else 0, blocks=run.blocks)


def check_vace(model, vace: VaceContext, latent_frames: int, height: int, width: int) -> None:
    """A VACE context fits the run: the model has VACE weights (`model.has_vace`), same size, same length."""
    if not model.has_vace:
        raise ValueError("a VACE context was given but the model has no VACE weights: put a 'Load VACE "
                         "Weights (graft)' node between the model loader and the sampler (or disconnect "
                         "vace_context for plain text-to-video)")
    if (vace.width, vace.height) != (width, height):
        raise ValueError(f"the VACE context was encoded at {vace.width}x{vace.height} but the sampler "
                         f"generates {width}x{height}: set the same width and height on 'VACE Encode References'")
    if vace.latent_frames != latent_frames:
        raise ValueError(f"the VACE context covers {vace.video_frames} video frames but the sampler was "
                         f"asked for {video_frames_for(latent_frames)}: set the same length on 'VACE Encode "
                         "References' and the sampler")


def _remember(run: _Run, block: Block, x0: torch.Tensor) -> None:
    """Keep the x0 of the blocks still inside the rolling window (for prompt switches)."""
    if block.end <= run.layout.sink_end:
        return
    run.recent.append((block, x0))
    while run.recent and run.recent[0][0].end <= block.end - run.layout.rolling_frames:
        run.recent.popleft()


def _rebuild_window(run: _Run, next_block: Block, on_pass: Callable[[Block], None]) -> None:
    """After a prompt switch, re-run the rolling frames the next block will see under the new prompt
    at t = 0 (the sink keeps its keys), like LongLive's recache. The cross-attention K/V of the new
    prompt replace the old ones through `run.text`."""
    if run.cache is None:
        return
    low = max(run.layout.sink_end, next_block.end - run.layout.rolling_frames)
    run.cache.reset_rolling(low)
    for block, x0 in run.recent:
        if block.end <= low:
            continue
        skip = max(0, low - block.start)
        part = Block(block.index, block.start + skip, block.frames - skip, block.chunk_index)
        on_pass(part)
        text = run.text(next_block)  # the prompt that takes over at the switch
        hints = run.has_hints(block) and run.settings.hints_in_clean_pass
        context = run.vace_frames(part.start, part.end) if hints else None
        run.model.forward_block(x0[:, :, skip:], 0.0, text, part.start, run.cache, context,
                                run.scale(block))
