"""What a run will do, decided before any model call: the run request, the sampler's settings, the
blocks of the latent timeline, the prompt each block runs under, the cache layout, the recache at a
prompt switch, and the checks of the inputs.

The timeline is `[reference frames | chunk 1 | chunk 2 | ...]` at consecutive RoPE frame positions:
the references (if any) form the first causal block, then the video is cut into chunks of
`chunk_frames` latent frames, first the given ones (start frames, or the video a continuation
extends), then the generated ones. docs/how-it-works.md ("How the causal R2V works") explains the design
and the options to users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch

from .cache import CacheLayout
from .encoding import VaceContext
from .latents import (LATENT_CHANNELS, SIZE_MULTIPLE, check_size, first_video_frame_of, latent_frames_for,
                      latent_grid, switch_latent_frame, video_frames_for)
from .scheduler import DEFAULT_SHIFT, DEFAULT_STEPS, FewStepSchedule

# The named options of `SamplerSettings`, each tuple's first entry its default:
REFERENCE_MODES = ("denoise", "clean")  # the reference block is denoised like a chunk, or inserted clean
# what the VACE blocks of a pass attend to: "causal" = what the main blocks see (references + sink +
# rolling window, through a VACE KV cache laid out like the main one; the causal analog of upstream
# VACE, whose blocks run over [references | video] jointly); "references" = the pass's own frames
# plus the reference frames (a cache of the references only); "block" = its own frames only (no cache)
VACE_ATTENTION_MODES = ("causal", "references", "block")
HINT_CHUNKS = ("all", "first")  # which chunks get VACE hints ("first": the reference block and chunk 1)
RECACHE_MODES = ("longlive", "causal")  # a prompt switch re-encodes the window in one pass, or block by block


@dataclass(frozen=True)
class SamplerSettings:
    """How a run is cut into blocks, what each pass attends to, and the named departures from
    upstream VACE / LongLive. The defaults are LongLive 1.0's (its schedule's in scheduler.py), the
    one place they are written: the "LongLive" preset reads them here, and upstream VACE's where it
    defines one."""
    chunk_frames: int = 3  # latent frames per causal block (12 video frames)
    window_frames: int = 12  # self-attention window in latent frames, sink included, refs excluded
    sink_frames: int = 3  # first generated frames kept for the whole video
    denoising_steps: tuple[int, ...] = DEFAULT_STEPS
    shift: float = DEFAULT_SHIFT
    warp_steps: bool = True  # False: the steps are the model's timesteps as they are (CausVid)
    reference_mode: str = "denoise"  # "clean": the reference block is inserted and only its clean pass runs
    vace_attention: str = "causal"  # what the VACE blocks attend to (VACE_ATTENTION_MODES)
    hint_chunks: str = "all"  # "first": VACE runs for the reference block and the first chunk only
    hints_in_clean_pass: bool = True  # False: clean passes of generated chunks run without VACE
    recache: str = "longlive"  # a prompt switch re-encodes the window in one pass; "causal": block by block

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
                                     ("recache", self.recache, RECACHE_MODES)):
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
    """VACE strength moving linearly from `start` (reference block, first chunk) to `end` (last chunk),
    times `layers`: one factor for every VACE block, or one per block."""
    start: float
    end: float
    layers: float | Sequence[float] = 1.0

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


@dataclass(frozen=True)
class Boundary:
    """The chunk boundary before `block`: a prompt given here takes over at `frame`, the block's first
    video frame (as a scheduled `PromptSegment(frame, ...)` would)."""
    block: Block
    frame: int


def first_video_frame(block: Block, ref_frames: int) -> int:
    """The first video frame of a (non-reference) block."""
    return first_video_frame_of(block.start - ref_frames)


def steer_boundaries(blocks: Sequence[Block], ref_frames: int) -> list[Boundary]:
    """The boundaries where `generate` consults its `steer` callable, in order: before every block of
    the video but its first (the reference block and the first chunk run under the prompt at frame 0)."""
    return [Boundary(b, first_video_frame(b, ref_frames)) for b in blocks
            if not b.is_reference and b.start > ref_frames]


def tokens_per_frame(height: int, width: int) -> int:
    """DiT tokens of one latent frame of a height x width video: VAE stride 8, then 2x2 patches
    (1560 at 480x832)."""
    return (height // SIZE_MULTIPLE) * (width // SIZE_MULTIPLE)


def cache_layout(settings: SamplerSettings, ref_frames: int, height: int, width: int) -> CacheLayout:
    return CacheLayout(tokens_per_frame=tokens_per_frame(height, width), sink_end=ref_frames + settings.sink_frames,
                       rolling_frames=settings.rolling_frames)


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


VaceScale = float | Sequence[float] | VaceScaleRamp  # one factor, one per VACE block, or a ramp over chunks


def scales_all_zero(vace_scale: VaceScale) -> bool:
    """Whether the VACE hints count nothing anywhere (the run is then plain text-to-video)."""
    if isinstance(vace_scale, VaceScaleRamp):
        return (vace_scale.start == 0.0 and vace_scale.end == 0.0) or scales_all_zero(vace_scale.layers)
    if isinstance(vace_scale, (int, float)):
        return float(vace_scale) == 0.0
    return all(float(s) == 0.0 for s in vace_scale)


class HasVace(Protocol):
    """A model, or a host's value standing for one, that says whether it has VACE weights."""

    @property
    def has_vace(self) -> bool: ...


@dataclass(frozen=True, eq=False)  # holds tensors: compared by identity
class RunRequest:
    """One video to make: everything a run needs besides the model and the hooks that watch it.

    prompts: a text conditioning [1, L, text_dim] or a schedule of `PromptSegment`s (video frames);
    kept as the sorted schedule. video_frames: 4k+1 (others round down like the VAE).
    start_latents [1, 16, S, h, w] (normalised): the video's first S latent frames, given rather
    than generated (encoded start images, or an earlier video to continue); they are inserted as
    they are and cached by their clean passes, chunk by chunk as a run would have made them, and
    generation continues after them with the noise a single run would draw there.
    reference_latents [1, 16, R, h, w]: the reference block as an earlier run made it (a
    continuation), inserted instead of denoised.
    batch: how many videos the run makes at once. Video i is the single run with seed + i
    (`noise.video_seed`); prompts, settings and the VACE context are shared. Given latents of batch
    1 apply to every video (start images), of batch B one to each (the videos a continuation extends).
    """
    prompts: Sequence[PromptSegment] | torch.Tensor
    video_frames: int
    height: int
    width: int
    seed: int
    vace: VaceContext | None = None
    vace_scale: VaceScale = 1.0
    settings: SamplerSettings = field(default_factory=SamplerSettings)
    start_latents: torch.Tensor | None = None
    reference_latents: torch.Tensor | None = None
    batch: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", tuple(normalize_prompts(self.prompts)))

    @property
    def latent_frames(self) -> int:
        return latent_frames_for(self.video_frames)

    @property
    def ref_frames(self) -> int:
        return self.vace.ref_frames if self.vace is not None else 0

    @property
    def given_frames(self) -> int:
        return self.start_latents.shape[2] if self.start_latents is not None else 0

    @property
    def grid(self) -> tuple[int, int]:
        return latent_grid(self.height, self.width)

    @property
    def uses_vace(self) -> bool:
        """Whether the VACE stream runs: a context is given and some hint counts."""
        return self.vace is not None and not scales_all_zero(self.vace_scale)

    @property
    def layer_scale(self) -> float | Sequence[float]:
        """The per-VACE-block factors (a ramp's share of each chunk is a per-frame weight)."""
        return self.vace_scale.layers if isinstance(self.vace_scale, VaceScaleRamp) else self.vace_scale

    def blocks(self) -> list[Block]:
        return plan_blocks(self.ref_frames, self.latent_frames, self.settings.chunk_frames, self.given_frames)

    def layout(self) -> CacheLayout:
        return cache_layout(self.settings, self.ref_frames, self.height, self.width)

    def is_inserted(self, block: Block) -> bool:
        """Whether the block's latents are given rather than denoised (only its clean pass runs)."""
        if block.is_reference:
            return self.reference_latents is not None or self.settings.reference_mode == "clean"
        return block.is_given

    def check(self, model: HasVace) -> None:
        """Every check of the request, before any model work: settings, size, length, the batch, the
        VACE context against the model and the run, the given latents."""
        self.settings.validate()
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"batch {self.batch!r}: expected a whole number of videos, at least 1")
        check_size(self.width, self.height)
        latent_frames = self.latent_frames
        if self.vace is not None:
            check_vace(model, self.vace, latent_frames, self.height, self.width)
        check_given(self.start_latents, self.reference_latents, self.vace, latent_frames, self.height, self.width,
                    self.batch)


def check_given(start_latents: torch.Tensor | None, reference_latents: torch.Tensor | None,
                vace: VaceContext | None, latent_frames: int, height: int, width: int, batch: int = 1) -> None:
    """Given latents fit the run: normalised Wan latents of the run's size, leaving frames to generate,
    one for every video of the batch or one for each."""
    grid = latent_grid(height, width)
    videos = "1" if batch == 1 else f"1 or {batch}"
    if start_latents is not None:
        if (start_latents.ndim != 5 or start_latents.shape[0] not in (1, batch)
                or start_latents.shape[1] != LATENT_CHANNELS or tuple(start_latents.shape[3:]) != grid):
            raise ValueError(f"start latents have shape {tuple(start_latents.shape)}, expected [{videos}, 16, frames, "
                             f"{grid[0]}, {grid[1]}] for a {width}x{height} video")
        if not 1 <= start_latents.shape[2] < latent_frames:
            raise ValueError(f"{start_latents.shape[2]} given latent frames leave nothing to generate in a video of "
                             f"{latent_frames} latent frames ({video_frames_for(latent_frames)} video frames): "
                             "make the video longer")
    if reference_latents is not None:
        refs = vace.ref_frames if vace is not None else 0
        if (refs == 0 or reference_latents.ndim != 5 or reference_latents.shape[0] not in (1, batch)
                or tuple(reference_latents.shape[1:]) != (LATENT_CHANNELS, refs, *grid)):
            raise ValueError(f"reference latents have shape {tuple(reference_latents.shape)}, but the VACE context "
                             f"has {refs} reference frames of {width}x{height}: pass the VACE context the earlier "
                             "video was made with")


def check_vace(model: HasVace, vace: VaceContext, latent_frames: int, height: int, width: int) -> None:
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


# ---------------------------------------------------------------------------------------------
# the recache at a prompt switch: the one rule the run follows, its progress counts and the memory
# budget sizes


@dataclass(frozen=True)
class RecachePass:
    """A pass that re-encodes the clean latents of the frames `covered` under the new prompt at a
    switch (t = 0, nothing returned); it attends to `visible` (its own frames included)."""
    covered: Block
    visible: list[int]


def longlive_recache_start(settings: SamplerSettings, ref_frames: int, switch: int) -> int:
    """The first frame LongLive's `_recache_after_switch` re-runs before the block starting at
    `switch`: within the first window its re-run starts at the video's first frame (the sink is
    re-encoded under the new prompt), later only the frames it keeps (the rolling ones)."""
    if switch - ref_frames <= settings.window_frames:
        return ref_frames
    return switch - settings.rolling_frames


def recache_passes(settings: SamplerSettings, layout: CacheLayout, blocks: Sequence[Block], next_block: Block,
                   ref_frames: int) -> list[RecachePass]:
    """The passes that re-encode the cache under the prompt of `next_block`, in order: recache
    "longlive" is LongLive's one pass over the window before it; "causal" re-runs, block by block,
    the rolling frames `next_block` will read, each seeing what it saw when it was made. References
    are conditioning, not generated content: neither re-encodes them."""
    made = [b for b in blocks[:next_block.index] if not b.is_reference]
    if settings.recache == "longlive":
        first = longlive_recache_start(settings, ref_frames, next_block.start)
        source = next(b for b in made if b.end > first)
        covered = Block(source.index, first, next_block.start - first, source.chunk_index)
        return [RecachePass(covered, layout.visible_frames(next_block.start))]
    low = max(layout.sink_end, next_block.end - layout.rolling_frames)
    return [RecachePass(Block(b.index, max(b.start, low), b.end - max(b.start, low), b.chunk_index),
                        layout.visible_frames(b.end, rolling_start=low))
            for b in made if b.end > low]


def switches_before(block: Block, prompt_of_block: Sequence[int]) -> bool:
    return block.index > 0 and prompt_of_block[block.index] != prompt_of_block[block.index - 1]


def total_passes(request: RunRequest, blocks: Sequence[Block], prompt_of_block: Sequence[int]) -> int:
    """Model passes a run makes (progress bars): each step of every block not inserted, a clean pass
    after every block but the last, and the recache passes at every prompt switch."""
    steps = len(request.settings.schedule)
    layout = request.layout()
    total = 0
    for block in blocks:
        total += 0 if request.is_inserted(block) else steps
        total += 1 if block is not blocks[-1] else 0
        if switches_before(block, prompt_of_block):
            total += len(recache_passes(request.settings, layout, blocks, block, request.ref_frames))
    return total
