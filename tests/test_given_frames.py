"""Given frames: start images (image-to-video) and exact continuation of an earlier video (issue 11).

`generate(start_latents=...)` inserts the video's first latent frames as they are, caches them with
their clean passes chunk by chunk (as a run from frame 0 would have), and generates after them with
the noise a single run draws there (every block's noise comes from its own (seed, frame) stream).
So continuing an earlier run from its latents rebuilds exactly the caches that run had, and
"8 chunks, then 8 more" equals "16 chunks".

Tolerance 1e-5 (fp32, tiny model): the continuation repeats the same computations in the same
order, so it is equal up to float32 rounding of identical operations (measured: bit-identical); a
continuation whose noise streams restarted moves the frames by > 1e-2 (checked below), and one that
replayed the first half under the wrong prompts fails the "switch in the first half" case.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from helpers import random_text, random_vace_context, randn, tiny_model
from vace_core.encoding import VaceContext
from vace_core.latents import video_frames_for
from vace_core.sampler import PromptSegment, SamplerSettings, generate
from vace_core.testing.recompute import RecomputedPasses

HEIGHT, WIDTH = 32, 48
GRID = (HEIGHT // 8, WIDTH // 8)
CHUNK = 2
CONFIG = dict(chunk_frames=CHUNK, window_frames=6, sink_frames=2, denoising_steps=(1000, 500))
TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return tiny_model("tiny-vace", seed=4)


def run(model, prompts, latent_frames, vace=None, **kwargs):
    return generate(model, prompts, video_frames=video_frames_for(latent_frames), height=HEIGHT, width=WIDTH,
                    seed=11, vace=vace, settings=SamplerSettings(**{**CONFIG, **kwargs.pop("settings", {})}),
                    **kwargs)


def shorter(vace: VaceContext | None, latent_frames: int) -> VaceContext | None:
    """The same VACE context for the first `latent_frames` generated frames only."""
    if vace is None:
        return None
    return VaceContext(context=vace.context[:, :, :vace.ref_frames + latent_frames], ref_latents=vace.ref_latents,
                       ref_frames=vace.ref_frames, latent_frames=latent_frames,
                       video_frames=video_frames_for(latent_frames), height=HEIGHT, width=WIDTH)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


# (references, latent frame of a prompt switch or None): the switch at 24 lies in the second half
CONTINUATION_CASES = {
    "t2v": (0, None),
    "t2v, switch in the second half": (0, 24),
    "2 references": (2, None),
    "2 references, switch in the second half": (2, 24),
    "2 references, switch in the first half (replayed)": (2, 6),
}


@pytest.mark.parametrize("case", list(CONTINUATION_CASES))
def test_eight_chunks_then_eight_more_equal_sixteen_chunks(model, case):
    refs, switch = CONTINUATION_CASES[case]
    half, total = 8 * CHUNK, 16 * CHUNK  # the window of 6 rolls over both halves
    text = random_text(seed=1)
    prompts = [PromptSegment(0, text)] + ([PromptSegment(4 * switch, random_text(seed=2))] if switch else [])
    vace = random_vace_context(refs, total, HEIGHT, WIDTH, seed=3) if refs else None
    whole = run(model, prompts, total, vace)
    first_prompts = [p for p in prompts if p.start_frame < video_frames_for(half)]
    first = run(model, first_prompts, half, shorter(vace, half))
    continued = run(model, prompts, total, vace, start_latents=first.latents[:, :, refs:],
                    reference_latents=first.latents[:, :, :refs] if refs else None)
    assert torch.equal(continued.latents[:, :, :refs + half], first.latents)
    err = max_err(continued.latents[:, :, refs + half:], whole.latents[:, :, refs + half:])
    print(f"continuation [{case}]: max abs err {err:.2e}")
    assert err <= TOL
    if switch is None or switch >= half:
        assert max_err(first.latents, whole.latents[:, :, :refs + half]) <= TOL  # the first half is shared


def test_a_continuation_that_restarted_the_noise_stream_would_be_caught(model, monkeypatch):
    """The noise of a block depends on its frame position in the video, not on where a run began:
    a continuation whose noise streams started over (as a per-run generator would) differs."""
    from vace_core import sampler

    half, total = 8 * CHUNK, 16 * CHUNK
    text = random_text(seed=1)
    whole = run(model, text, total)
    first = run(model, text, half)
    draw = sampler.block_noise

    def restarted(seed, block, ref_frames, steps, grid):
        return draw(seed, replace(block, start=block.start - half), ref_frames, steps, grid)

    monkeypatch.setattr(sampler, "block_noise", restarted)
    continued = run(model, text, total, start_latents=first.latents)
    assert max_err(continued.latents[:, :, half:], whole.latents[:, :, half:]) > 1e-2


@pytest.mark.parametrize("refs, switch", [(0, None), (1, None), (1, 4)])
def test_start_frames_are_the_video_start_and_the_cache_equals_recompute(model, refs, switch):
    """Start latents are the first output frames, unchanged; the KV caches after them equal the
    cache-free recompute (so they are cached like finished chunks), with VACE references and a
    prompt switch right after the start frames too."""
    frames, start = 12, 3  # 3 start frames (chunked 2 + 1), then 9 generated
    text = random_text(seed=5)
    prompts = [PromptSegment(0, text)] + ([PromptSegment(4 * switch, random_text(seed=6))] if switch else [])
    vace = random_vace_context(refs, frames, HEIGHT, WIDTH, seed=7) if refs else None
    given = randn(1, 16, start, *GRID, seed=8)
    cached = run(model, prompts, frames, vace, start_latents=given)
    recomputed = run(model, prompts, frames, vace, start_latents=given, executor=RecomputedPasses.for_run)
    assert [(b.kind, b.frames) for b in cached.blocks] == (
        [("reference", refs)] * (refs > 0) + [("given", 2), ("given", 1)] + [("generated", 2)] * 4 + [("generated", 1)])
    assert torch.equal(cached.latents[:, :, refs:refs + start], given)
    assert max_err(cached.latents, recomputed.latents) <= 2e-5


def test_changing_only_the_start_frames_changes_the_next_chunk(model):
    text = random_text(seed=9)
    one = run(model, text, 6, start_latents=randn(1, 16, 1, *GRID, seed=10))
    other = run(model, text, 6, start_latents=randn(1, 16, 1, *GRID, seed=11))
    assert max_err(one.latents[:, :, 1:3], other.latents[:, :, 1:3]) > 1e-2


def test_given_frames_are_checked_before_any_work(model):
    text = random_text(seed=9)
    with pytest.raises(ValueError, match="leave nothing to generate"):
        run(model, text, 3, start_latents=randn(1, 16, 3, *GRID, seed=1))
    with pytest.raises(ValueError, match=r"expected \[1, 16, frames, 4, 6\]"):
        run(model, text, 6, start_latents=randn(1, 16, 2, 8, 8, seed=1))
    with pytest.raises(ValueError, match="VACE context has 0 reference frames"):
        run(model, text, 6, reference_latents=randn(1, 16, 1, *GRID, seed=1))
