"""Golden tests: the sampler equals NVlabs/LongLive 1.0's own inference code (issue 10).

LongLive's `CausalInferencePipeline` (text-to-video) and `InteractiveCausalInferencePipeline`
(prompt switches, with its `_recache_after_switch`) run on a LongLive `CausalWanModel` carrying the
weights of our tiny model, on the CPU in float32, fed the noise our sampler draws
(tests/longlive_reference.py says what is adapted and why). Our `generate` runs with its defaults,
which are LongLive's settings: chunks of 3, window 12, sink 3, steps 1000/750/500/250 warped with
shift 5, recache "longlive".

Tolerance: the two implementations compute the same thing in a different order (RoPE as complex
float64 products there, real float32 rotations here; cache reads by copy there, by view here), so
they differ by float32 rounding: measured max abs error ~2e-6 on latents of std ~1.3 over 12
chunks. TOL = 1e-4 leaves room for other CPUs' kernels, and every planted difference below (the
block-by-block recache, a window of 9, no sink) moves the result by more than 100 x TOL.
"""

from __future__ import annotations

import pytest
import torch

import longlive_reference as ll
from helpers import random_text, tiny_model
from vace_core.latents import video_frames_for
from vace_core.sampler import Block, PromptSegment, SamplerSettings, block_noise, generate

pytestmark = pytest.mark.skipif(not ll.available(), reason="LongLive 1.0 reference code not found in ../shared")

HEIGHT, WIDTH = 32, 48
GRID = (HEIGHT // 8, WIDTH // 8)
TOKENS_PER_FRAME = (GRID[0] // 2) * (GRID[1] // 2)
CHUNK, STEPS = 3, 4
CHUNKS = 12  # 36 latent frames: the ring of 9 rolling slots wraps 3 times
FRAMES = CHUNK * CHUNKS
SEED = 5
TOL = 1e-4
SWITCHES = (6, 21)  # latent frames: one inside the first 12 (the sink is re-encoded), one later


@pytest.fixture(scope="module")
def model():
    return tiny_model("tiny", seed=3)


@pytest.fixture(scope="module")
def prompts():
    return {name: random_text(seed=40 + i) for i, name in enumerate("abc")}


def our_noise() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The sampler's noise for the run, in LongLive's layout: the initial noise of every block as
    one [1, T, 16, h, w] tensor, and the re-noising draws [frames, 16, h, w] in the order LongLive
    asks for them (block by block, step by step)."""
    initial, renoise = [], []
    for start in range(0, FRAMES, CHUNK):
        draws = block_noise(SEED, Block(0, start, CHUNK, start // CHUNK), 0, STEPS, GRID)  # [steps, 1, 16, f, h, w]
        initial.append(draws[0].permute(0, 2, 1, 3, 4))
        renoise.extend(d[0].permute(1, 0, 2, 3) for d in draws[1:])
    return torch.cat(initial, dim=1), renoise


def longlive_latents(model, prompts, switches: tuple[int, ...]) -> torch.Tensor:
    """LongLive's latents [1, 16, T, h, w] for prompt a (then b, c at `switches`)."""
    pipeline = ll.make_pipeline(model, prompts, tokens_per_frame=TOKENS_PER_FRAME, interactive=bool(switches))
    noise, draws = our_noise()
    with torch.no_grad(), ll.feed_noise(draws):
        if switches:
            names = "abc"[:len(switches) + 1]
            _, latents = pipeline.inference(noise, text_prompts_list=[[n] for n in names],
                                            switch_frame_indices=list(switches), return_latents=True)
        else:
            _, latents = pipeline.inference(noise, text_prompts=["a"], return_latents=True)
    return latents.permute(0, 2, 1, 3, 4)


def our_latents(model, prompts, switches: tuple[int, ...], **changes) -> torch.Tensor:
    schedule = [PromptSegment(0, prompts["a"])]
    schedule += [PromptSegment(4 * s, prompts[name]) for s, name in zip(switches, "bc")]  # ceil(4s / 4) = s
    result = generate(model, schedule, video_frames=video_frames_for(FRAMES), height=HEIGHT, width=WIDTH,
                      seed=SEED, settings=SamplerSettings(**changes))
    return result.latents


def chunk_errors(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    assert a.shape == b.shape == (1, 16, FRAMES, *GRID)
    return [(a[:, :, s:s + CHUNK] - b[:, :, s:s + CHUNK]).abs().max().item() for s in range(0, FRAMES, CHUNK)]


@pytest.fixture(scope="module")
def golden_t2v(model, prompts):
    return longlive_latents(model, prompts, ())


@pytest.fixture(scope="module")
def golden_switch(model, prompts):
    return longlive_latents(model, prompts, SWITCHES)


def test_text_to_video_equals_longlive_chunk_by_chunk(model, prompts, golden_t2v):
    errors = chunk_errors(our_latents(model, prompts, ()), golden_t2v)
    print("T2V vs LongLive, max abs error per chunk:", " ".join(f"{e:.1e}" for e in errors))
    assert max(errors) <= TOL
    assert golden_t2v.std() > 0.5  # a real video of latents, not a degenerate one


def test_prompt_switches_equal_longlive_recache(model, prompts, golden_switch):
    errors = chunk_errors(our_latents(model, prompts, SWITCHES), golden_switch)
    print("switches at 6 and 21 vs LongLive, max abs error per chunk:", " ".join(f"{e:.1e}" for e in errors))
    assert max(errors) <= TOL


def test_the_switches_matter(golden_t2v, golden_switch):
    """Frames before the first switch are the same video; every chunk after it differs."""
    errors = chunk_errors(golden_t2v, golden_switch)
    first = SWITCHES[0] // CHUNK
    assert max(errors[:first]) <= TOL
    assert min(errors[first:]) > 100 * TOL


@pytest.mark.parametrize("changes, golden", [
    (dict(recache="causal"), "switch"),  # the block-by-block rebuild is a different model of the switch
    (dict(window_frames=9), "t2v"),
    (dict(window_frames=9), "switch"),
    (dict(sink_frames=0), "t2v"),
    (dict(sink_frames=0), "switch"),
])
def test_other_settings_are_detected(model, prompts, golden_t2v, golden_switch, changes, golden):
    switches = SWITCHES if golden == "switch" else ()
    reference = golden_switch if golden == "switch" else golden_t2v
    errors = chunk_errors(our_latents(model, prompts, switches, **changes), reference)
    print(f"{changes} vs LongLive ({golden}): max abs error {max(errors):.2e}")
    assert max(errors) > 100 * TOL


def test_keeping_the_sink_at_an_early_switch_would_be_detected(model, prompts, golden_switch, monkeypatch):
    """LongLive re-encodes the sink at a switch within the first `window` frames (its re-run starts
    at frame 0). A recache that kept the sink there, re-running only the rolling frames as it does
    later, differs from LongLive from the first switch on."""
    from vace_core import plan

    def rolling_frames_only(settings, ref_frames, switch):
        return max(ref_frames + settings.sink_frames, switch - settings.rolling_frames)

    monkeypatch.setattr(plan, "longlive_recache_start", rolling_frames_only)
    errors = chunk_errors(our_latents(model, prompts, SWITCHES), golden_switch)
    first = SWITCHES[0] // CHUNK
    print("sink kept at the early switch: max abs error per chunk:", " ".join(f"{e:.1e}" for e in errors))
    assert max(errors[:first]) <= TOL < 100 * TOL < min(errors[first:first + 2])
