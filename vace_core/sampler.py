"""Causal chunk-by-chunk generation (LongLive) with VACE reference conditioning: the run and its loop.

Every block of the plan (vace_core/plan.py) is denoised in a few steps that read the KV caches,
then one clean pass of its x0 at t = 0 writes the caches for the blocks that follow; before a
block whose prompt differs from its predecessor's, recache passes re-encode the window under the
new prompt. The run decides every pass (a `ModelPass`); an executor runs it (`CachedPasses`, or any
object built by the `executor` argument of `sample`).

A run is asked for with one value, a `RunRequest` (plan.py): `sample(model, request, ...)` makes it,
with the hooks that watch it (progress, cancel, the chunk sink, steering); `generate` is the same
with the request's fields as arguments (the library's form).

A batch (`request.batch` = B) makes B videos in one run: every pass carries the B videos' latents
[B, 16, f, h, w] and the KV caches hold B videos, while the prompts, the schedule, steering and the
VACE context (batch 1) are shared. Video i draws the noise of the single run with seed + i and
equals that run: nothing in a pass mixes the videos of a batch.

Prompts arriving during the run (`steer`, LongLive's interactive switching): `sample` consults
the callable at every chunk boundary inside the video (before each block but the video's first);
the segments it returns join the schedule exactly as if they had been scheduled before the run,
so a prompt given at the boundary before a block that starts at video frame v makes the same
frames, recache included, as a `PromptSegment` at frame v in the schedule. They may only change
blocks not yet made.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from .device import FiniteCheck, host_buffer, to_device
from .encoding import VaceContext
from .latents import LATENT_CHANNELS, video_frames_for
from .model import CausalWanModel, TextState
from .noise import block_noise, video_seed
from .passes import CachedPasses, ModelPass, PassExecutor, RunView, vace_attention_plan
from .plan import (Block, Boundary, PromptSegment, RecachePass, RunRequest, SamplerSettings, VaceScale,
                   VaceScaleRamp, normalize_prompts, prompt_for_blocks, recache_passes, steer_boundaries,
                   switches_before, total_passes)
from .scheduler import renoise, x0_from_flow
from .vace import layer_scales


@dataclass
class StepInfo:
    pass_index: int  # 1-based count of model passes so far
    total_passes: int
    block: Block  # the block denoised, or the frames a cache-writing pass covered
    step: int | None  # denoising step index, None for a clean (cache-writing) pass
    x0: torch.Tensor | None  # current clean estimate of the block, normalised [B, 16, f, h, w]


@dataclass
class ChunkInfo:
    block: Block
    latents: torch.Tensor  # final normalised latents of the block [B, 16, f, h, w], video after video


ChunkSink = Callable[[ChunkInfo], None]  # where each finished block goes (previews, a streaming video decoder)
Steer = Callable[[Boundary], Sequence[PromptSegment]]  # the prompts given live at a chunk boundary


@dataclass
class SampleResult:
    latents: torch.Tensor | None  # normalised [B, 16, ref_frames + latent_frames, h, w] (CPU, float32)
    ref_frames: int
    latent_frames: int
    video_frames: int
    cache_bytes: int = 0
    blocks: list[Block] = field(default_factory=list)


class GenerationCancelled(Exception):
    """Raised before a pass when `should_cancel` says so; `blocks_done` blocks were finished."""

    def __init__(self, blocks_done: int) -> None:
        super().__init__(f"generation cancelled after {blocks_done} blocks")
        self.blocks_done = blocks_done


class _Run:
    """State of one generation: the request, the prompts each block runs under, the passes, the
    finished latents and the clean latents a recache re-encodes."""

    def __init__(self, model: CausalWanModel, request: RunRequest, keep_latents: bool,
                 executor: Callable[[RunView], PassExecutor]) -> None:
        self.model = model
        self.request = request
        self.settings = request.settings
        self.schedule = request.settings.schedule
        self.vace = request.vace
        self.vace_scale = request.vace_scale
        self.uses_vace = request.uses_vace
        if self.uses_vace:  # a wrong list of per-block factors fails before any work
            layer_scales(request.layer_scale, model.config.num_vace_blocks)
        self.ref_frames = request.ref_frames
        self.batch = request.batch
        self.grid = request.grid
        self.blocks = request.blocks()
        self.num_chunks = sum(not b.is_reference for b in self.blocks)
        self.prompts = list(request.prompts)
        self.prompt_of_block = prompt_for_blocks(self.prompts, self.blocks, self.ref_frames)
        self.layout = request.layout()
        self._vace_slice: tuple[tuple[int, int], torch.Tensor] | None = None
        self.passes = executor(RunView(model=model, layout=self.layout, ref_frames=self.ref_frames,
                                       settings=self.settings, uses_vace=self.uses_vace,
                                       layer_scale=request.layer_scale, text=self.text,
                                       vace_frames=self.vace_frames, batch=self.batch))
        total = self.ref_frames + request.latent_frames
        # pinned on CUDA: each block's x0 is copied back asynchronously, without a sync per block
        self.latents = (host_buffer((self.batch, LATENT_CHANNELS, total, *self.grid), model.device)
                        if keep_latents else None)
        # x0 of the generated blocks within the last `window_frames` frames (what a recache re-runs)
        self.recent: deque[tuple[Block, torch.Tensor]] = deque()

    def text(self, index: int) -> TextState:
        """The embedded prompt `index` (executors keep what they need of it)."""
        return self.model.encode_text(self.prompts[index].context)  # padding merged on the CPU, then moved

    def vace_frames(self, start: int, stop: int) -> torch.Tensor:
        """The VACE context of frames [start, stop) on the model's device. The whole context stays
        where it was made (a long control video would not fit the GPU); one block's slice moves over
        once, asynchronously, and serves all its passes."""
        key = (start, stop)
        if self._vace_slice is None or self._vace_slice[0] != key:
            assert self.vace is not None  # passes run the VACE stream only with a context
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
        if self.request.is_inserted(block) and self.settings.vace_attention != "block":
            # a block without denoising passes: the stream runs to cache its VACE keys, adding no hints
            return 0.0
        return None

    def inserted_latents(self, block: Block) -> torch.Tensor:
        """The given latents of an inserted block, for every video [B, 16, f, h, w] (latents given
        once serve every video: a view, not a copy)."""
        if block.is_reference:
            latents = self.request.reference_latents
            if latents is None:  # made by this run: the VACE context's references
                assert self.vace is not None  # a reference block comes with references (RunRequest.check)
                latents = self.vace.ref_latents
        else:
            first = block.start - self.ref_frames
            assert self.request.start_latents is not None  # inserted blocks after the references are given
            latents = self.request.start_latents[:, :, first:first + block.frames]
        return to_device(latents, self.model.device, torch.float32).expand(self.batch, -1, -1, -1, -1)

    def noise(self, block: Block, steps: int) -> torch.Tensor:
        """The block's noise [steps, B, 16, f, h, w]: video i's is the single run's with seed + i."""
        draws = [block_noise(video_seed(self.request.seed, i), block, self.ref_frames, steps, self.grid)
                 for i in range(self.batch)]
        return to_device(draws[0] if self.batch == 1 else torch.cat(draws, dim=1), self.model.device)

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

    def recache(self, next_block: Block) -> list[tuple[Block, ModelPass]]:
        """The passes that re-encode the cache under the new prompt before `next_block` (the plan's
        `recache_passes`), made of the clean latents the run kept, each with the frames it covers."""
        prompt = self.prompt_of_block[next_block.index]
        plan = recache_passes(self.settings, self.layout, self.blocks, next_block, self.ref_frames)
        return [(r.covered, self.recache_pass(r, prompt)) for r in plan]

    def recache_pass(self, r: RecachePass, prompt: int) -> ModelPass:
        first, end = r.covered.start, r.covered.end
        parts = [(block, x0[:, :, max(0, first - block.start):end - block.start])
                 for block, x0 in self.recent if block.end > first and block.start < end]
        latents = parts[0][1] if len(parts) == 1 else torch.cat([x0 for _, x0 in parts], dim=2)
        weights = self.hint_weights([(block, x0.shape[2]) for block, x0 in parts], clean=True)
        return self.make_pass(first, latents, 0.0, prompt, r.visible, weights, needs_output=False)

    def remember(self, block: Block, x0: torch.Tensor) -> None:
        if block.is_reference:
            return
        self.recent.append((block, x0))
        while self.recent and self.recent[0][0].end <= block.end - self.settings.window_frames:
            self.recent.popleft()

    def add_prompts(self, new: Sequence[PromptSegment], boundary: Boundary) -> None:
        """Merge prompts given at `boundary` into the schedule, as if scheduled from the start (one at
        the frame of a scheduled prompt replaces it). Blocks already made keep their prompts, and so
        keep the indices their passes (and the executors' text caches) refer to."""
        if not new:
            return
        merged = {p.start_frame: p for p in self.prompts}
        merged.update((p.start_frame, p) for p in new)
        prompts = normalize_prompts(list(merged.values()))
        of_block = prompt_for_blocks(prompts, self.blocks, self.ref_frames)
        done = boundary.block.index
        used = set(self.prompt_of_block[:done])
        if of_block[:done] != self.prompt_of_block[:done] or any(prompts[i] is not self.prompts[i] for i in used):
            frames = sorted(p.start_frame for p in new)
            raise ValueError(f"prompts given at the boundary before video frame {boundary.frame} start at frames "
                             f"{frames}: they would change chunks already made (a prompt takes over at the first "
                             f"chunk starting at or after its frame)")
        self.prompts, self.prompt_of_block = prompts, of_block

    def input_problems(self) -> list[str]:
        """The run's inputs that could make non-finite latents by themselves (read only once a
        block is not finite): a prompt, context or given latents holding NaN or infinity, or a
        prompt far larger than a text encoder makes (an extreme prompt weight)."""
        problems = []
        for prompt in self.prompts:
            context = prompt.context
            largest = float(context.abs().max()) if context.numel() else 0.0
            if not torch.isfinite(context).all():
                problems.append(f"the prompt from frame {prompt.start_frame} holds NaN or infinity")
            elif largest > PROMPT_VALUE_LIMIT:
                problems.append(f"the prompt from frame {prompt.start_frame} holds values as large as {largest:.3g}")
        given = {"the VACE context": self.vace.context if self.vace is not None else None,
                 "the given start latents": self.request.start_latents,
                 "the given reference latents": self.request.reference_latents}
        problems += [f"{name} holds NaN or infinity" for name, tensor in given.items()
                     if tensor is not None and not torch.isfinite(tensor).all()]
        return problems

    def switches_before(self, block: Block) -> bool:
        return switches_before(block, self.prompt_of_block)

    def total_passes(self) -> int:
        """Model passes the run will make (progress bars)."""
        return total_passes(self.request, self.blocks, self.prompt_of_block)


def generate(model: CausalWanModel, prompts: Sequence[PromptSegment] | torch.Tensor, *, video_frames: int,
             height: int, width: int, seed: int, vace: VaceContext | None = None, vace_scale: VaceScale = 1.0,
             settings: SamplerSettings = SamplerSettings(), start_latents: torch.Tensor | None = None,
             reference_latents: torch.Tensor | None = None, batch: int = 1, **hooks: Any) -> SampleResult:
    """`sample` with the request given field by field (see `RunRequest`): generate `video_frames`
    frames (4k+1; others round down like the VAE) causally, chunk by chunk, for `batch` videos (video
    i with seed + i). `hooks` are `sample`'s keyword arguments (callback, should_cancel, before_pass,
    on_chunk, keep_latents, executor, steer)."""
    request = RunRequest(prompts=prompts, video_frames=video_frames, height=height, width=width, seed=seed, vace=vace,
                         vace_scale=vace_scale, settings=settings, start_latents=start_latents,
                         reference_latents=reference_latents, batch=batch)
    return sample(model, request, **hooks)


def sample(model: CausalWanModel, request: RunRequest, *,
           callback: Callable[[StepInfo], None] | None = None,
           should_cancel: Callable[[], bool] | None = None,
           before_pass: Callable[[], None] | None = None,
           on_chunk: ChunkSink | None = None,
           keep_latents: bool = True,
           executor: Callable[[RunView], PassExecutor] = CachedPasses.for_run,
           steer: Steer | None = None) -> SampleResult:
    """Make the video `request` asks for, causally, chunk by chunk.

    callback(StepInfo) after every model pass (progress, previews of x0); before_pass() before every
    pass (a host that may have unloaded the model reloads it here), then should_cancel() (True stops
    the run with GenerationCancelled); on_chunk(ChunkInfo) with every finished block, references
    included (a video sink decodes and writes it); keep_latents=False keeps no latents (a sink has
    them all), so memory stays flat with length.
    executor(run) builds what runs the passes from the run's `RunView`: by default the KV caches
    (`CachedPasses`); the tests inject the cache-free oracle (vace_core/testing/recompute.py) here.
    steer(boundary) -> prompts given live: consulted at every `steer_boundaries` boundary, just
    before that block is made; what it returns joins the schedule (see the module docstring).
    Returns normalised latents including the reference and given frames (decode drops the references).
    """
    request.check(model)
    run = _Run(model, request, keep_latents, executor)
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

    def start_pass(done: int) -> None:
        if before_pass is not None:
            before_pass()
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled(done)

    def cache_pass(block: Block, p: ModelPass, done: int) -> None:
        start_pass(done)
        run.passes.run(p)
        tick(block, None, None)

    boundaries = {b.block.index: b for b in steer_boundaries(run.blocks, run.ref_frames)} if steer else {}

    with torch.inference_mode():
        for block in run.blocks:
            if steer is not None and block.index in boundaries:
                run.add_prompts(steer(boundaries[block.index]), boundaries[block.index])
                total = run.total_passes()  # a new switch adds its recache passes
            if run.switches_before(block):
                for covered, p in run.recache(block):
                    cache_pass(covered, p, block.index)
            if request.is_inserted(block):
                x0 = run.inserted_latents(block)
            else:
                noise = run.noise(block, steps)
                x = noise[0]
                for step in run.schedule:
                    start_pass(block.index)
                    flow = run.passes.run(run.block_pass(block, x, step.timestep, clean=False))
                    assert flow is not None  # a denoising pass has its output
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
            check_finite(finite, block, model.compute_dtype, run.input_problems)
            run.remember(block, x0)
            if on_chunk is not None:
                on_chunk(ChunkInfo(block, x0))

    if run.latents is not None and device.type == "cuda":
        torch.cuda.synchronize(device)  # the asynchronous copies of x0 have landed
    latent_frames = request.latent_frames
    return SampleResult(latents=run.latents, ref_frames=run.ref_frames, latent_frames=latent_frames,
                        video_frames=video_frames_for(latent_frames), cache_bytes=run.passes.nbytes(),
                        blocks=run.blocks)


class NonFiniteError(FloatingPointError):
    """A block's latents hold inf or NaN: an input was not finite (or far out of range), the compute
    dtype overflowed (fp16), or the model is broken."""


# A text encoder's outputs stay far below this (umT5's are normalised); larger ones come from an
# extreme prompt weight, e.g. (word:1e30), and overflow the model's first layers.
PROMPT_VALUE_LIMIT = 1e4


def check_finite(finite: FiniteCheck, block: Block, compute_dtype: torch.dtype,
                 input_problems: Callable[[], list[str]] = list) -> None:
    """Stop on a block whose latents (watched by `finite`) are not all finite: a single overflow would
    poison the KV cache for the rest of the video. The message blames the inputs when
    `input_problems()` names any, the model files only when it names none."""
    if finite.finite():
        return
    what = "the reference block" if block.is_reference else f"chunk {block.chunk_index + 1}"
    where = f"non-finite values (inf/NaN) in {what} (latent frames {block.start}-{block.end - 1})"
    problems = input_problems()
    if problems:
        raise NonFiniteError(f"{where}, made from broken inputs: {'; '.join(problems)}. A prompt gets such values "
                             "from its prompt weights, e.g. (word:nan) or (word:1e30): fix the input")
    if compute_dtype == torch.float16:
        raise NonFiniteError(f"fp16 overflow: {where}. float16 overflows on some prompts: choose bf16 or fp32 "
                             "as the dtype of 'Load LongLive Model'")
    raise NonFiniteError(f"{where} although the model computes in {str(compute_dtype).replace('torch.', '')}: "
                         "the weights are broken (check the base checkpoint, LoRA and VACE files; the inputs are "
                         "finite)")
