"""What a run needs in memory besides the weights: its KV caches and the activations of its largest pass.

A host's memory manager makes room for this before the run (nodes/host/memory.py). The caches are
exact (`generate` allocates them once, at these sizes); the activations are an estimate for a
memory-efficient attention kernel (no [queries x keys] score matrix, which PyTorch's SDPA picks on
CUDA), so they scale with the queries of one pass, never with the keys it reads.

A batch of B videos needs B times each video's caches and activations, and the prompt's
cross-attention keys and values once (`RunMemory`): the weights and the prompt are shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache import kv_cache_bytes
from .config import WanConfig
from .latents import SIZE_MULTIPLE
from .passes import vace_cache_layout
from .plan import SamplerSettings, cache_layout, plan_blocks, recache_passes, tokens_per_frame


def run_cache_bytes(config: WanConfig, dtype: torch.dtype, *, height: int, width: int, ref_frames: int,
                    settings: SamplerSettings, uses_vace: bool = False) -> int:
    """Bytes of every KV cache `generate` allocates for such a run, per video: the main blocks'
    (references + window), plus the VACE blocks' when the run uses VACE and its `vace_attention`
    mode keeps one. `config` is the model's with its VACE blocks, `dtype` its compute dtype."""
    tokens = tokens_per_frame(height, width)
    layout = cache_layout(settings, ref_frames, height, width)
    element = torch.finfo(dtype).bits // 8
    total = kv_cache_bytes(num_layers=config.num_layers, dim=config.dim, tokens_per_frame=tokens,
                           capacity_frames=layout.capacity_frames, element_size=element)
    vace_layout = vace_cache_layout(settings.vace_attention, layout, ref_frames) if uses_vace else None
    if vace_layout is not None:
        total += kv_cache_bytes(num_layers=config.num_vace_blocks, dim=config.dim, tokens_per_frame=tokens,
                                capacity_frames=vace_layout.capacity_frames, element_size=element)
    return total


def largest_pass_frames(settings: SamplerSettings, ref_frames: int, prompt_switches: bool) -> int:
    """Latent frames of the largest pass a run may make: the reference block or a chunk, and with
    prompt switches the largest recache pass of the plan (`plan.recache_passes`) at any chunk
    boundary: `recache="longlive"` re-encodes up to a whole window in one pass (a switch right after
    the first `window_frames` generated frames), `recache="causal"` re-runs the window block by
    block, so no pass exceeds a chunk."""
    frames = max(settings.chunk_frames, ref_frames)
    if not prompt_switches:
        return frames
    # boundaries inside the first window and past it: a longer run only repeats the later ones
    blocks = plan_blocks(ref_frames, settings.window_frames + 2 * settings.chunk_frames, settings.chunk_frames)
    layout = cache_layout(settings, ref_frames, SIZE_MULTIPLE, SIZE_MULTIPLE)  # the frame size plays no part
    recaches = [r.covered.frames for block in blocks if block.start > ref_frames
                for r in recache_passes(settings, layout, blocks, block, ref_frames)]
    return max([frames, *recaches])


def video_activation_bytes(config: WanConfig, dtype: torch.dtype, tokens: int) -> int:
    """Activations of one video's share of a pass over `tokens` query tokens."""
    element = torch.finfo(dtype).bits // 8
    residual = tokens * config.dim * 4 * 6  # float32 stream, its norm and modulated copies
    projections = tokens * config.dim * element * 4  # q, k, v and the attention output
    ffn = tokens * config.ffn_dim * element * 2  # hidden layer before and after the GELU
    # the VACE blocks run interleaved with the main ones: their stream and one hint at a time
    hints = tokens * config.dim * 4 * 2 if config.num_vace_blocks else 0
    return residual + projections + ffn + hints


def text_kv_bytes(config: WanConfig, dtype: torch.dtype) -> int:
    """The prompt's cross-attention keys and values in every block (one copy for a whole batch)."""
    element = torch.finfo(dtype).bits // 8
    return (config.num_layers + config.num_vace_blocks) * 2 * config.text_len * config.dim * element


@dataclass(frozen=True)
class RunMemory:
    """What a run of a batch of videos needs besides the weights: `per_video` bytes for each video
    (its KV caches and its share of the largest pass) plus `shared` bytes (the prompt's K/V)."""
    per_video: int
    shared: int

    def total(self, batch: int = 1) -> int:
        return self.shared + batch * self.per_video

    def largest_batch(self, budget: int) -> int:
        """The most videos whose run fits in `budget` bytes (0 when not even one does)."""
        return max(0, (budget - self.shared) // self.per_video)


def run_memory(config: WanConfig, dtype: torch.dtype, *, height: int, width: int, ref_frames: int,
               settings: SamplerSettings, uses_vace: bool, prompt_switches: bool) -> RunMemory:
    """What a run needs besides the weights: per video its KV caches plus its share of the
    activations of the largest pass; once, the prompt's cross-attention K/V."""
    frames = largest_pass_frames(settings, ref_frames, prompt_switches)
    caches = run_cache_bytes(config, dtype, height=height, width=width, ref_frames=ref_frames, settings=settings,
                             uses_vace=uses_vace)
    activations = video_activation_bytes(config, dtype, tokens_per_frame(height, width) * frames)
    return RunMemory(per_video=caches + activations, shared=text_kv_bytes(config, dtype))
