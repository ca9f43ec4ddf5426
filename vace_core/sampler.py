"""Causal chunk-by-chunk generation (LongLive) with VACE reference conditioning.

The latent timeline is `[reference frames | chunk 1 | chunk 2 | ...]` at consecutive RoPE frame
positions. The references form the first causal block and stay in the KV cache for the whole video
as part of the sink. Every block is denoised in a few steps that read the cache; a final clean
pass of its x0 at t = 0 writes the cache for the blocks that follow.

Departures from upstream (bidirectional) VACE are named settings:
- `reference_mode`: "denoise" (default) denoises the reference block from noise like every other
  block, as upstream does; "clean" inserts the references' encoded latents directly and only runs
  the clean pass that caches them.
- `vace_attention`: which frames the VACE blocks attend to (vace_core/passes.py): "causal"
  (default) the main stream's references + sink + window through a VACE KV cache, "references"
  the block plus the reference frames, "block" the block alone.
- `hint_chunks`: "all" (default) runs VACE for every block, as upstream does; "first" only for the
  reference block and the video's first chunk (with start frames, the chunk they start; later
  chunks see the references through the KV caches only, at no VACE cost).
- `hints_in_clean_pass`: True (default) keeps VACE in the clean passes, so the cached keys are those
  of the VACE-conditioned model; False runs the clean passes of generated chunks without VACE
  (cheaper, as Daydream Scope does): their main keys are unconditioned and, in the cached VACE
  modes, their VACE keys stay those of the chunk's last denoising step. The reference block's clean
  pass still runs the VACE stream in those modes (once per video, adding no hints), so the VACE
  cache holds the references' clean keys.

Prompt switches (`recache`): the cross-attention K/V of the new prompt replace the old ones, and
- "longlive" (default) re-encodes the window exactly as LongLive 1.0's interactive pipeline does
  (`_recache_after_switch` with its global sink): ONE pass at t = 0 under the new prompt over the
  last min(window, s) generated frames before the switch frame s, every frame attending to the sink
  and all re-run frames without a mask. Re-run frames whose keys LongLive does not keep (those
  beyond the rolling buffer when s > window) influence nothing, so the pass covers just the frames
  it writes: with s <= window every generated frame so far, sink included (LongLive re-encodes the
  sink then, because its re-run starts at frame 0); later only the rolling frames (the sink keeps
  its keys).
- "causal" rebuilds the window block by block, block-causally, and always keeps the sink.
  The reference frames are never re-encoded: they are conditioning, not generated content, they
  lie outside LongLive's window, and re-encoding them under a prompt that may not describe the
  subject would weaken the identity they anchor. Every re-run frame still attends to them.

Noise: each block draws its noise from its own generator, seeded from (seed, the block's first
generated frame), so a block's noise does not depend on the blocks before it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .cache import CacheLayout
from .device import FiniteCheck, host_buffer, to_device
from .encoding import SIZE_MULTIPLE, VaceContext, check_size, latent_frames_for, video_frames_for
from .model import CausalWanModel, TextState
from .passes import VACE_ATTENTION_MODES, CachedPasses, ModelPass, vace_attention_plan
from .passes import run_cache_bytes as _cache_bytes
from .recompute import RecomputedPasses
from .scheduler import DEFAULT_SHIFT, DEFAULT_STEPS, FewStepSchedule, renoise, x0_from_flow
from .vace import layer_scales

REFERENCE_MODES = ("denoise", "clean")
HINT_CHUNKS = ("all", "first")
CACHE_MODES = ("kv", "recompute")
RECACHE_MODES = ("longlive", "causal")


@dataclass(frozen=True)
class SamplerSettings:
    chunk_frames: int = 3  # latent frames per causal block (12 video frames)
    window_frames: int = 12  # self-attention window in latent frames, sink included, refs excluded
    sink_frames: int = 3  # first generated frames kept for the whole video
    denoising_steps: tuple[int, ...] = DEFAULT_STEPS
    shift: float = DEFAULT_SHIFT
    warp_steps: bool = True  # False: the steps are the model's timesteps as they are (CausVid)
    reference_mode: str = "denoise"
    vace_attention: str = "causal"
    hint_chunks: str = "all"
    hints_in_clean_pass: bool = True
    recache: str = "longlive"
    cache_mode: str = "kv"  # "recompute": no cache, see vace_core/recompute.py

    def validate(self) -> None:
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, got {self.chunk_frames}")
        if self.sink_frames < 0:
            raise ValueError(f"sink_frames must be 0 or more, got {self.sink_frames}")
        if self.window_frames < self.sink_frames + self.chunk_frames:
            raise ValueError(f"window_frames ({self.window_frames}) must hold the sink ({self.sink_frames}) "
                             f"plus one chunk ({self.chunk_frames})")
        for name, value, allowed in (("reference_mode", self.reference_mode, REFERENCE_MODES),
                                     ("vace_attention", self.vace_attention, VACE_ATTENTION_MODES),
                                     ("hint_chunks", self.hint_chunks, HINT_CHUNKS),
                                     ("recache", self.recache, RECACHE_MODES),
                                     ("cache_mode", self.cache_mode, CACHE_MODES)):
            if value not in allowed:
                raise ValueError(f"{name} {value!r}: expected one of {', '.join(allowed)}")

    @property
    def schedule(self) -> FewStepSchedule:
        return FewStepSchedule(tuple(self.denoising_steps), self.shift, warp=self.warp_steps)

    @property
    def rolling_frames(self) -> int:
        return self.window_frames - self.sink_frames


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


BLOCK_KINDS = ("reference", "given", "generated")


@dataclass(frozen=True)
class Block:
    index: int
    start: int  # absolute latent frame (references count)
    frames: int
    chunk_index: int  # among the video's chunks (given and generated); -1 for the reference block
    kind: str = "generated"  # "reference", "given" (start frames / an earlier video) or "generated"

    @property
    def end(self) -> int:
        return self.start + self.frames

    @property
    def is_reference(self) -> bool:
        return self.kind == "reference"

    @property
    def is_given(self) -> bool:
        return self.kind == "given"


@dataclass
class StepInfo:
    pass_index: int  # 1-based count of model passes so far
    total_passes: int
    block: Block  # the block denoised, or the frames a cache-writing pass covered
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


def plan_blocks(ref_frames: int, latent_frames: int, chunk_frames: int, given_frames: int = 0) -> list[Block]:
    """The reference block (if any), then chunks of `chunk_frames` over the video's latent frames:
    first the `given_frames` that are inserted as they are (start frames, or the video a
    continuation extends, chunked as a run from frame 0 would have chunked it), then the generated
    ones. A chunk never straddles the two; the last chunk of each part may be shorter."""
    blocks = [Block(0, 0, ref_frames, -1, "reference")] if ref_frames else []
    for first, last, kind in ((0, given_frames, "given"), (given_frames, latent_frames, "generated")):
        for start in range(first, last, chunk_frames):
            frames = min(chunk_frames, last - start)
            blocks.append(Block(len(blocks), ref_frames + start, frames, len(blocks) - (ref_frames > 0), kind))
    return blocks


def tokens_per_frame(height: int, width: int) -> int:
    """DiT tokens of one latent frame of a height x width video: VAE stride 8, then 2x2 patches
    (1560 at 480x832)."""
    return (height // SIZE_MULTIPLE) * (width // SIZE_MULTIPLE)


def cache_layout(settings: SamplerSettings, ref_frames: int, height: int, width: int) -> CacheLayout:
    return CacheLayout(tokens_per_frame=tokens_per_frame(height, width), sink_end=ref_frames + settings.sink_frames,
                       rolling_frames=settings.rolling_frames)


def run_cache_bytes(model: CausalWanModel, *, height: int, width: int, ref_frames: int,
                    settings: SamplerSettings, uses_vace: bool = False) -> int:
    """Memory of the KV caches `generate` allocates for such a run (what a host must make room
    for): the main blocks' cache, plus the VACE blocks' when VACE is used in a cached mode."""
    return _cache_bytes(model, tokens_per_frame=tokens_per_frame(height, width),
                        layout=cache_layout(settings, ref_frames, height, width), ref_frames=ref_frames,
                        vace_attention=settings.vace_attention, uses_vace=uses_vace)


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


_MASK64 = (1 << 64) - 1


def noise_seed(seed: int, stream: int) -> int:
    """Seed of one noise stream of a run (SplitMix64 of seed and stream), so that neighbouring
    streams are unrelated and a stream can be drawn without drawing the ones before it."""
    z = (seed * 0x9E3779B97F4A7C15 + (stream + 1) * 0xD1B54A32D192ED03) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def block_noise(seed: int, block: Block, ref_frames: int, steps: int, grid: tuple[int, int]) -> torch.Tensor:
    """The noise a block draws: [steps, 1, 16, frames, h, w] on the CPU (the same video on every
    device). Stream -1 is the reference block; generated blocks use their first generated frame."""
    stream = -1 if block.is_reference else block.start - ref_frames
    generator = torch.Generator().manual_seed(noise_seed(seed, stream))
    return torch.randn((steps, 1, 16, block.frames, *grid), generator=generator)


def _scales_all_zero(vace_scale: float | Sequence[float] | VaceScaleRamp) -> bool:
    if isinstance(vace_scale, VaceScaleRamp):
        return vace_scale.start == 0.0 and vace_scale.end == 0.0
    if isinstance(vace_scale, (int, float)):
        return float(vace_scale) == 0.0
    return all(float(s) == 0.0 for s in vace_scale)


class _Run:
    """State of one generation: blocks, prompts, passes, noise and finished latents."""

    def __init__(self, model: CausalWanModel, prompts: list[PromptSegment], latent_frames: int, height: int,
                 width: int, seed: int, vace: VaceContext | None,
                 vace_scale: float | Sequence[float] | VaceScaleRamp, settings: SamplerSettings,
                 keep_latents: bool, start_latents: torch.Tensor | None = None,
                 reference_latents: torch.Tensor | None = None) -> None:
        self.model = model
        self.settings = settings
        self.schedule = settings.schedule
        self.seed = seed
        self.vace = vace
        self.vace_scale = vace_scale
        self.uses_vace = vace is not None and not _scales_all_zero(vace_scale)
        if self.uses_vace and not isinstance(vace_scale, VaceScaleRamp):
            layer_scales(vace_scale, model.config.num_vace_blocks)  # a wrong list fails before any work
        self.ref_frames = vace.ref_frames if vace is not None else 0
        self.latent_frames = latent_frames
        self.grid = (height // 8, width // 8)
        self.start_latents = start_latents
        self.reference_latents = reference_latents
        given = start_latents.shape[2] if start_latents is not None else 0
        self.blocks = plan_blocks(self.ref_frames, latent_frames, settings.chunk_frames, given)
        self.num_chunks = sum(not b.is_reference for b in self.blocks)
        self.prompt_of_block = prompt_for_blocks(prompts, self.blocks, self.ref_frames)
        self.prompts = prompts
        self.layout = cache_layout(settings, self.ref_frames, height, width)
        self._texts: dict[int, TextState] = {}
        self._vace_slice: tuple[tuple[int, int], torch.Tensor] | None = None
        layer_scale = 1.0 if isinstance(vace_scale, VaceScaleRamp) else vace_scale  # a ramp is per frame
        if settings.cache_mode == "kv":
            self.passes = CachedPasses(model, self.layout, self.ref_frames, settings.vace_attention, self.uses_vace,
                                       self.text, self.vace_frames, layer_scale, settings.chunk_frames)
        else:
            self.passes = RecomputedPasses(model, self.text, self.vace_frames, layer_scale)
        total = self.ref_frames + latent_frames
        # pinned on CUDA: each block's x0 is copied back asynchronously, without a sync per block
        self.latents = host_buffer((1, 16, total, *self.grid), model.device) if keep_latents else None
        # x0 of the generated blocks within the last `window_frames` frames (what a recache re-runs)
        self.recent: deque[tuple[Block, torch.Tensor]] = deque()

    @property
    def cached(self) -> bool:
        return self.settings.cache_mode == "kv"

    def text(self, index: int) -> TextState:
        if index not in self._texts:
            context = self.prompts[index].context  # encode_text merges its padding on the CPU, then moves it
            if self.cached:
                self._texts.clear()  # one prompt's K/V held at a time; a switch never goes back
            self._texts[index] = self.model.encode_text(context)
        return self._texts[index]

    def vace_frames(self, start: int, stop: int) -> torch.Tensor:
        """The VACE context of frames [start, stop) on the model's device. The whole context stays
        where it was made (a long control video would not fit the GPU); one block's slice moves over
        once, asynchronously, and serves all its passes."""
        key = (start, stop)
        if self._vace_slice is None or self._vace_slice[0] != key:
            self._vace_slice = (key, to_device(self.vace.frames(start, stop), self.model.device))
        return self._vace_slice[1]

    # ---- which passes run VACE, and how strongly --------------------------------------------

    def has_hints(self, block: Block) -> bool:
        if not self.uses_vace:
            return False
        return self.settings.hint_chunks == "all" or block.chunk_index <= 0

    def block_scale(self, block: Block) -> float:
        """The block's share of a ramp (1.0 for a constant or per-layer scale, applied per layer)."""
        if isinstance(self.vace_scale, VaceScaleRamp):
            return self.vace_scale.at(max(block.chunk_index, 0), self.num_chunks)
        return 1.0

    def frame_hint(self, block: Block, clean: bool) -> float | None:
        """Hint weight of the block's frames in a pass: None when the VACE stream does not run."""
        if not self.has_hints(block):
            return None
        if not clean or self.settings.hints_in_clean_pass:
            return self.block_scale(block)
        if self.is_inserted(block) and self.settings.vace_attention != "block":
            # a block without denoising passes: the stream runs to cache its VACE keys, adding no hints
            return 0.0
        return None

    def is_inserted(self, block: Block) -> bool:
        """Whether the block's latents are given rather than denoised (only its clean pass runs)."""
        if block.is_reference:
            return self.reference_latents is not None or self.settings.reference_mode == "clean"
        return block.is_given

    def inserted_latents(self, block: Block) -> torch.Tensor:
        if block.is_reference:
            latents = self.reference_latents if self.reference_latents is not None else self.vace.ref_latents
        else:
            first = block.start - self.ref_frames
            latents = self.start_latents[:, :, first:first + block.frames]
        return to_device(latents, self.model.device, torch.float32)

    def hint_weights(self, blocks_and_frames: Sequence[tuple[Block, int]], clean: bool) -> torch.Tensor | None:
        weights = [self.frame_hint(block, clean) for block, _ in blocks_and_frames]
        if all(w is None for w in weights):
            return None
        return torch.tensor([0.0 if w is None else w for (_, n), w in zip(blocks_and_frames, weights)
                             for _ in range(n)])

    # ---- passes ---------------------------------------------------------------------------------

    def make_pass(self, start: int, latents: torch.Tensor, timestep: float, prompt: int, visible: list[int],
                  hint_weight: torch.Tensor | None, needs_output: bool) -> ModelPass:
        frames = latents.shape[2]
        vace_visible, vace_writes = vace_attention_plan(self.settings.vace_attention, range(start, start + frames),
                                                        visible, self.ref_frames)
        return ModelPass(start, frames, latents, timestep, prompt, visible, hint_weight, vace_visible,
                         vace_writes, needs_output)

    def block_pass(self, block: Block, x: torch.Tensor, timestep: float, clean: bool) -> ModelPass:
        """A denoising (clean=False) or cache-writing clean pass over one block."""
        return self.make_pass(block.start, x, timestep, self.prompt_of_block[block.index],
                              self.layout.visible_frames(block.end),
                              self.hint_weights([(block, block.frames)], clean),
                              needs_output=not clean)

    def recache_passes(self, next_block: Block) -> list[tuple[Block, ModelPass]]:
        """The passes that re-encode the window under the new prompt before `next_block`."""
        prompt = self.prompt_of_block[next_block.index]
        if self.settings.recache == "longlive":
            return self._longlive_recache(next_block.start, prompt)
        return self._causal_recache(next_block, prompt)

    def _longlive_recache(self, switch: int, prompt: int) -> list[tuple[Block, ModelPass]]:
        generated = switch - self.ref_frames
        if generated <= self.settings.window_frames:
            first = self.ref_frames  # LongLive's re-run starts at frame 0: the sink is re-encoded
        else:
            first = switch - self.settings.rolling_frames  # only the frames LongLive keeps
        parts = [(block, x0[:, :, max(0, first - block.start):]) for block, x0 in self.recent if block.end > first]
        latents = torch.cat([x0 for _, x0 in parts], dim=2)
        weights = self.hint_weights([(block, x0.shape[2]) for block, x0 in parts], clean=True)
        covered = Block(parts[0][0].index, first, switch - first, parts[0][0].chunk_index)
        return [(covered, self.make_pass(first, latents, 0.0, prompt, self.layout.visible_frames(switch),
                                         weights, needs_output=False))]

    def _causal_recache(self, next_block: Block, prompt: int) -> list[tuple[Block, ModelPass]]:
        low = max(self.layout.sink_end, next_block.end - self.layout.rolling_frames)
        passes = []
        for block, x0 in self.recent:
            if block.end <= low:
                continue
            skip = max(0, low - block.start)
            part = Block(block.index, block.start + skip, block.frames - skip, block.chunk_index)
            passes.append((part, self.make_pass(part.start, x0[:, :, skip:], 0.0, prompt,
                                                self.layout.visible_frames(part.end, rolling_start=low),
                                                self.hint_weights([(block, part.frames)], clean=True),
                                                needs_output=False)))
        return passes

    def remember(self, block: Block, x0: torch.Tensor) -> None:
        if block.is_reference:
            return
        self.recent.append((block, x0))
        while self.recent and self.recent[0][0].end <= block.end - self.settings.window_frames:
            self.recent.popleft()

    def switches_before(self, block: Block) -> bool:
        return block.index > 0 and self.prompt_of_block[block.index] != self.prompt_of_block[block.index - 1]

    def total_passes(self) -> int:
        """Model passes the run will make (progress bars): the cache-free recompute evaluates only
        denoising passes; the others just record their inputs."""
        steps = len(self.schedule)
        total = 0
        for block in self.blocks:
            denoise = 0 if self.is_inserted(block) else steps
            total += denoise
            if not self.cached:
                continue
            total += 1 if block is not self.blocks[-1] else 0
            if self.switches_before(block):
                total += 1 if self.settings.recache == "longlive" else self._window_blocks(block)
        return total

    def _window_blocks(self, next_block: Block) -> int:
        low = max(self.layout.sink_end, next_block.end - self.layout.rolling_frames)
        return sum(1 for b in self.blocks[:next_block.index] if b.end > low and not b.is_reference)


def generate(model: CausalWanModel, prompts: Sequence[PromptSegment] | torch.Tensor, *, video_frames: int,
             height: int, width: int, seed: int, vace: VaceContext | None = None,
             vace_scale: float | Sequence[float] | VaceScaleRamp = 1.0,
             settings: SamplerSettings = SamplerSettings(),
             callback: Callable[[StepInfo], None] | None = None,
             should_cancel: Callable[[], bool] | None = None,
             on_chunk: Callable[[ChunkInfo], None] | None = None,
             keep_latents: bool = True, start_latents: torch.Tensor | None = None,
             reference_latents: torch.Tensor | None = None) -> SampleResult:
    """Generate `video_frames` frames (4k+1; others round down like the VAE) causally, chunk by chunk.

    prompts: a text conditioning [1, L, text_dim] or a schedule of `PromptSegment`s (video frames).
    start_latents [1, 16, S, h, w] (normalised): the video's first S latent frames, given rather
    than generated (encoded start images, or an earlier video to continue). They are inserted as
    they are and cached by their clean passes, chunk by chunk as a run would have made them, and
    generation continues after them at the next frame position with the noise a single run would
    draw there. reference_latents [1, 16, R, h, w]: the reference block as an earlier run made it
    (a continuation), inserted instead of denoised.
    Returns normalised latents including the reference and given frames (decode drops the references).
    """
    settings.validate()
    check_size(width, height)
    segments = normalize_prompts(prompts)
    latent_frames = latent_frames_for(video_frames)
    if vace is not None:
        check_vace(model, vace, latent_frames, height, width)
    check_given(start_latents, reference_latents, vace, latent_frames, height, width)
    run = _Run(model, segments, latent_frames, height, width, seed, vace, vace_scale, settings, keep_latents,
               start_latents, reference_latents)
    device = model.device
    finite = FiniteCheck(device)
    steps = len(run.schedule)
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

    def cache_pass(block: Block, p: ModelPass, done: int) -> None:
        if run.cached:
            check_cancel(done)
            run.passes.run(p)
            tick(block, None, None)
        else:
            run.passes.run(p)  # recorded only: no model call

    with torch.inference_mode():
        for block in run.blocks:
            if run.switches_before(block):
                for covered, p in run.recache_passes(block):
                    cache_pass(covered, p, block.index)
            if run.is_inserted(block):
                x0 = run.inserted_latents(block)
            else:
                noise = to_device(block_noise(seed, block, run.ref_frames, steps, run.grid), device)
                x = noise[0]
                for step in run.schedule:
                    check_cancel(block.index)
                    flow = run.passes.run(run.block_pass(block, x, step.timestep, clean=False))
                    x0 = x0_from_flow(x, flow.float(), step.sigma)
                    tick(block, step.index, x0)
                    if step.next_sigma > 0:
                        x = renoise(x0, noise[step.index + 1], step.next_sigma)
            finite.watch(x0)
            if run.latents is not None:
                run.latents[:, :, block.start:block.end].copy_(x0, non_blocking=True)
            if block is not run.blocks[-1]:
                cache_pass(block, run.block_pass(block, x0, 0.0, clean=True), block.index)
            # The chunk's one host sync, between passes: it waits for x0, while the GPU runs the clean
            # pass queued above. A non-finite chunk stops the run here, before any pass that reads
            # its keys (the next chunk's, a recache's) is queued, and before on_chunk sees it.
            check_finite(finite, block, model.compute_dtype)
            run.remember(block, x0)
            if on_chunk is not None:
                on_chunk(ChunkInfo(block, x0))

    if run.latents is not None and device.type == "cuda":
        torch.cuda.synchronize(device)  # the asynchronous copies of x0 have landed
    return SampleResult(latents=run.latents, ref_frames=run.ref_frames, latent_frames=latent_frames,
                        video_frames=video_frames_for(latent_frames), cache_bytes=run.passes.nbytes(),
                        blocks=run.blocks)


class NonFiniteError(FloatingPointError):
    """A block's latents hold inf or NaN: the compute dtype overflowed (fp16) or the model is broken."""


def check_finite(finite: FiniteCheck, block: Block, compute_dtype: torch.dtype) -> None:
    """Stop on a block whose latents (watched by `finite`) are not all finite: a single overflow would
    poison the KV cache for the rest of the video."""
    if finite.finite():
        return
    what = "the reference block" if block.is_reference else f"chunk {block.chunk_index + 1}"
    where = f"non-finite values (inf/NaN) in {what} (latent frames {block.start}-{block.end - 1})"
    if compute_dtype == torch.float16:
        raise NonFiniteError(f"fp16 overflow: {where}. float16 overflows on some prompts: choose bf16 or fp32 "
                             "as the dtype of 'Load LongLive Model'")
    raise NonFiniteError(f"{where} although the model computes in {str(compute_dtype).replace('torch.', '')}: "
                         "the weights are broken (check the base checkpoint, LoRA and VACE files)")


def check_given(start_latents: torch.Tensor | None, reference_latents: torch.Tensor | None,
                vace: VaceContext | None, latent_frames: int, height: int, width: int) -> None:
    """Given latents fit the run: normalised Wan latents of the run's size, leaving frames to generate."""
    grid = (height // 8, width // 8)
    if start_latents is not None:
        if start_latents.ndim != 5 or start_latents.shape[:2] != (1, 16) or tuple(start_latents.shape[3:]) != grid:
            raise ValueError(f"start latents have shape {tuple(start_latents.shape)}, expected [1, 16, frames, "
                             f"{grid[0]}, {grid[1]}] for a {width}x{height} video")
        if not 1 <= start_latents.shape[2] < latent_frames:
            raise ValueError(f"{start_latents.shape[2]} given latent frames leave nothing to generate in a video of "
                             f"{latent_frames} latent frames ({video_frames_for(latent_frames)} video frames): "
                             "make the video longer")
    if reference_latents is not None:
        refs = vace.ref_frames if vace is not None else 0
        if refs == 0 or tuple(reference_latents.shape) != (1, 16, refs, *grid):
            raise ValueError(f"reference latents have shape {tuple(reference_latents.shape)}, but the VACE context "
                             f"has {refs} reference frames of {width}x{height}: pass the VACE context the earlier "
                             "video was made with")


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
