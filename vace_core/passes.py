"""One model pass of the causal sampler, and running it through the KV caches.

The sampler (vace_core/sampler.py) decides every pass: which frames it computes, at which timestep
and under which prompt, which frames its main blocks and its VACE blocks attend to, and how
strongly its VACE hints count. A `ModelPass` holds that decision; an executor (`PassExecutor`),
built from a `RunView` of the run, runs it. `CachedPasses` (this module) keeps the main blocks'
`KVCache` and, for the VACE attention modes that need one (plan.VACE_ATTENTION_MODES), a VACE
`KVCache`; a pass writes its K/V into them and reads the frames it sees. (The tests check it against
a cache-free executor, vace_core/testing/recompute.py.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from .cache import CacheLayout, KVCache
from .model import CausalWanModel, TextState
from .plan import VACE_ATTENTION_MODES, SamplerSettings


@dataclass
class ModelPass:
    """Everything one forward of the model needs; frames are absolute latent positions."""
    start: int
    frames: int
    latents: torch.Tensor  # [B, 16, frames, h, w] normalised, on the compute device (B videos of a batch)
    timestep: float  # 0..1000, shared by the pass's frames
    prompt: int  # index into the run's prompts
    visible: list[int]  # frames the main blocks attend to (own frames included)
    # VACE: None = the VACE stream does not run; else the weight of each frame's hints [frames]
    hint_weight: torch.Tensor | None = None
    vace_visible: list[int] | None = None  # frames the VACE blocks attend to (own included)
    vace_writes: bool = False  # whether the pass's VACE keys replace the frames' cached ones
    needs_output: bool = True  # False for cache-writing passes whose prediction is discarded

    @property
    def end(self) -> int:
        return self.start + self.frames

    @property
    def own(self) -> range:
        return range(self.start, self.end)


def vace_cache_layout(mode: str, main: CacheLayout, ref_frames: int) -> CacheLayout | None:
    """Layout of the VACE blocks' cache for `mode`: the main layout ("causal"), the references
    only ("references"; none without references), or no cache ("block")."""
    if mode not in VACE_ATTENTION_MODES:
        raise ValueError(f"vace_attention {mode!r}: expected one of {', '.join(VACE_ATTENTION_MODES)}")
    if mode == "causal":
        return main
    if mode == "references" and ref_frames > 0:
        return CacheLayout(tokens_per_frame=main.tokens_per_frame, sink_end=ref_frames, rolling_frames=0)
    return None


def vace_attention_plan(mode: str, own: range, visible: Sequence[int], ref_frames: int) -> tuple[list[int], bool]:
    """(frames the VACE blocks of a pass over `own` attend to, whether it writes the VACE cache)."""
    if mode == "causal":
        return list(visible), True
    if mode == "references":
        refs = [f for f in range(ref_frames) if f not in own]
        return refs + list(own), own.start < ref_frames
    return list(own), False


@dataclass(frozen=True)
class RunView:
    """What an executor sees of a run: the model, the cache layout and the settings, whether the VACE
    stream runs and its per-block factors, the run's prompts and VACE frames, read through functions
    because steering adds prompts while the run goes, and how many videos the passes carry."""
    model: CausalWanModel
    layout: CacheLayout
    ref_frames: int
    settings: SamplerSettings
    uses_vace: bool
    layer_scale: float | Sequence[float]
    text: Callable[[int], TextState]  # prompt index -> the embedded prompt
    vace_frames: Callable[[int, int], torch.Tensor]  # [start, stop) -> VACE context frames on the device
    batch: int = 1  # videos in every pass (the caches hold each one's keys)


class PassExecutor(Protocol):
    """What a run needs from whatever runs its passes, in the order the run decides them."""

    def run(self, p: ModelPass) -> torch.Tensor | None:
        """The flow prediction [B, 16, frames, h, w] of the pass (what a pass with `needs_output`
        returns), after recording what later passes may attend to."""

    def nbytes(self) -> int:
        """Bytes of the caches it holds."""


def _new_cache(model: CausalWanModel, num_layers: int, layout: CacheLayout, batch: int) -> KVCache:
    return KVCache(num_layers=num_layers, batch=batch, num_heads=model.config.num_heads,
                   head_dim=model.config.head_dim, layout=layout, dtype=model.compute_dtype, device=model.device)


class CachedPasses:
    """Runs passes through preallocated KV caches (the sampler's path). `text(index)` embeds prompt
    `index`; one prompt's K/V are held at a time (a run never returns to an earlier prompt, and the
    caches keep what earlier passes computed under it). The caches hold `batch` videos; a prompt's
    K/V and the timestep embeddings are computed once for all of them."""

    def __init__(self, model: CausalWanModel, layout: CacheLayout, ref_frames: int, vace_attention: str,
                 uses_vace: bool, text: Callable[[int], TextState],
                 vace_frames: Callable[[int, int], torch.Tensor], layer_scale: float | Sequence[float],
                 chunk_frames: int = 0, batch: int = 1) -> None:
        self.model = model
        self.chunk_frames = chunk_frames  # passes over this many frames run compiled, if the model is
        self.text = text
        self._prompt: tuple[int, TextState] | None = None
        self.vace_frames = vace_frames
        self.layer_scale = layer_scale
        self.cache = _new_cache(model, model.config.num_layers, layout, batch)
        vace_layout = vace_cache_layout(vace_attention, layout, ref_frames) if uses_vace else None
        self.vace_cache = _new_cache(model, model.config.num_vace_blocks, vace_layout, batch) if vace_layout else None
        # every block runs the same few timesteps: embed each once per run
        self._time: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def for_run(cls, run: RunView) -> "CachedPasses":
        return cls(run.model, run.layout, run.ref_frames, run.settings.vace_attention, run.uses_vace, run.text,
                   run.vace_frames, run.layer_scale, run.settings.chunk_frames, run.batch)

    def prompt(self, index: int) -> TextState:
        if self._prompt is None or self._prompt[0] != index:
            self._prompt = None  # the old prompt's K/V are freed before the new ones are made
            self._prompt = (index, self.text(index))
        return self._prompt[1]

    def time(self, timestep: float) -> tuple[torch.Tensor, torch.Tensor]:
        if timestep not in self._time:
            self._time[timestep] = self.model.time_modulation(timestep, 1)
        return self._time[timestep]

    def nbytes(self) -> int:
        return self.cache.nbytes() + (self.vace_cache.nbytes() if self.vace_cache is not None else 0)

    def run(self, p: ModelPass) -> torch.Tensor:
        """Flow prediction [B, 16, frames, h, w] of the pass; its K/V are written on the way."""
        access = self.cache.begin_block(p.start, p.frames, p.visible)
        context = vace_access = weight = None
        if p.hint_weight is not None:
            context = self.vace_frames(p.start, p.end)
            if self.vace_cache is not None:
                assert p.vace_visible is not None  # set with hint_weight (ModelPass)
                vace_access = self.vace_cache.begin_block(p.start, p.frames, p.vace_visible, write=p.vace_writes)
            weight = None if bool((p.hint_weight == 1).all()) else p.hint_weight
        return self.model.forward_block(p.latents, p.timestep, self.prompt(p.prompt), p.start, access, context,
                                        self.layer_scale, vace_cache=vace_access, vace_frame_weight=weight,
                                        time=self.time(p.timestep), compiled=p.frames == self.chunk_frames)
