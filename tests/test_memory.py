"""What a run needs in memory (vace_core/memory.py), against what runs on the tiny model actually do.

* The largest pass: for each recache mode, no pass of a run (denoising, clean or recache) covers
  more frames than `largest_pass_frames`, and some switch position reaches it. "longlive" re-encodes
  up to a whole window in one pass; "causal" never more than a chunk (the bound a host used before,
  a window whenever the prompt switches, over-counts it).
* The caches: `run_cache_bytes` is exactly what `generate` allocates, for each VACE attention mode.
* A batch: B videos' caches (what `generate` allocates for them) and activations, the prompt's K/V
  once; the largest batch that fits a budget.
"""

from __future__ import annotations

import pytest

from helpers import random_text, random_vace_context, tiny_model
from vace_core.latents import video_frames_for
from vace_core.memory import largest_pass_frames, run_cache_bytes, run_memory, text_kv_bytes, video_activation_bytes
from vace_core.passes import CachedPasses
from vace_core.plan import SamplerSettings, tokens_per_frame
from vace_core.sampler import PromptSegment, generate

HEIGHT, WIDTH = 32, 48
LATENT_FRAMES = 12
SETTINGS = dict(chunk_frames=2, window_frames=6, sink_frames=2, denoising_steps=(1000,))
# generated latent frames at which a prompt takes over: inside the first window, at its end (the
# largest LongLive recache: every generated frame so far), and later (the rolling frames only)
SWITCHES = (2, 6, 8)


@pytest.fixture(scope="module")
def model():
    return tiny_model("tiny-vace", seed=0)


def pass_sizes(model, settings: SamplerSettings, refs: int, switch: int | None) -> list[int]:
    """Frames of every pass a run makes."""
    sizes: list[int] = []

    def recording(run):
        passes = CachedPasses.for_run(run)
        run_pass = passes.run

        def record(p):
            sizes.append(p.frames)
            return run_pass(p)

        passes.run = record
        return passes

    prompts = [PromptSegment(0, random_text(seed=1))]
    if switch is not None:
        prompts.append(PromptSegment(4 * switch, random_text(seed=2)))  # video frame 4s: latent frame s
    vace = random_vace_context(refs, LATENT_FRAMES, HEIGHT, WIDTH, seed=3)
    generate(model, prompts, video_frames=video_frames_for(LATENT_FRAMES), height=HEIGHT, width=WIDTH, seed=0,
             vace=vace, settings=settings, keep_latents=False, executor=recording)
    return sizes


@pytest.mark.parametrize("refs", [1, 3])
@pytest.mark.parametrize("recache", ["longlive", "causal"])
def test_no_pass_is_larger_than_the_largest_pass_and_one_reaches_it(model, recache, refs):
    settings = SamplerSettings(**SETTINGS, recache=recache)
    bound = largest_pass_frames(settings, refs, prompt_switches=True)
    largest = {switch: max(pass_sizes(model, settings, refs, switch)) for switch in SWITCHES}
    print(f"recache={recache}, {refs} reference(s): largest pass per switch frame {largest}, bound {bound}")
    assert max(largest.values()) == bound
    if recache == "longlive":
        assert bound == settings.window_frames == largest[settings.window_frames]
    else:
        assert bound == max(settings.chunk_frames, refs) < settings.window_frames


@pytest.mark.parametrize("refs", [1, 3])
def test_without_a_switch_the_largest_pass_is_a_chunk_or_the_references(model, refs):
    settings = SamplerSettings(**SETTINGS)
    bound = largest_pass_frames(settings, refs, prompt_switches=False)
    assert bound == max(settings.chunk_frames, refs)
    assert max(pass_sizes(model, settings, refs, None)) == bound


@pytest.mark.parametrize("vace_attention", ["causal", "references", "block"])
@pytest.mark.parametrize("refs", [0, 2])
def test_the_cache_estimate_is_what_the_run_allocates(model, vace_attention, refs):
    """With references the run uses VACE (and keeps a VACE cache in "causal" and "references");
    without, it is plain text-to-video (main cache only)."""
    settings = SamplerSettings(**SETTINGS, vace_attention=vace_attention)
    vace = random_vace_context(refs, LATENT_FRAMES, HEIGHT, WIDTH, seed=3) if refs else None
    prompt = random_text(seed=1)
    allocated = generate(model, prompt, video_frames=video_frames_for(LATENT_FRAMES), height=HEIGHT, width=WIDTH,
                         seed=0, vace=vace, settings=settings, keep_latents=False).cache_bytes
    estimate = run_cache_bytes(model.config, model.compute_dtype, height=HEIGHT, width=WIDTH, ref_frames=refs,
                               settings=settings, uses_vace=vace is not None)
    assert estimate == allocated > 0


def test_the_run_memory_is_the_caches_plus_the_largest_pass(model):
    config, dtype = model.config, model.compute_dtype
    for recache in ("longlive", "causal"):
        settings = SamplerSettings(**SETTINGS, recache=recache)
        frames = largest_pass_frames(settings, 1, prompt_switches=True)
        expected = (run_cache_bytes(config, dtype, height=HEIGHT, width=WIDTH, ref_frames=1, settings=settings,
                                    uses_vace=True)
                    + video_activation_bytes(config, dtype, tokens_per_frame(HEIGHT, WIDTH) * frames)
                    + text_kv_bytes(config, dtype))
        assert run_memory(config, dtype, height=HEIGHT, width=WIDTH, ref_frames=1, settings=settings,
                          uses_vace=True, prompt_switches=True).total() == expected


@pytest.mark.parametrize("refs", [0, 1])
def test_a_batch_needs_each_videos_caches_and_activations_and_the_prompt_once(model, refs):
    """The caches of a batch of 3 are what `generate` allocates for it: 3 times one video's; the run
    memory grows by one video's caches and activations per video, the prompt's K/V counted once."""
    config, dtype, settings = model.config, model.compute_dtype, SamplerSettings(**SETTINGS)
    vace = random_vace_context(refs, LATENT_FRAMES, HEIGHT, WIDTH, seed=3) if refs else None
    allocated = generate(model, random_text(seed=1), video_frames=video_frames_for(LATENT_FRAMES), height=HEIGHT,
                         width=WIDTH, seed=0, vace=vace, settings=settings, keep_latents=False, batch=3).cache_bytes
    one = run_cache_bytes(config, dtype, height=HEIGHT, width=WIDTH, ref_frames=refs, settings=settings,
                          uses_vace=vace is not None)
    assert allocated == 3 * one
    run = dict(height=HEIGHT, width=WIDTH, ref_frames=refs, settings=settings, uses_vace=vace is not None,
               prompt_switches=True)
    memory = run_memory(config, dtype, **run)
    frames = largest_pass_frames(settings, refs, prompt_switches=True)
    assert memory.per_video == one + video_activation_bytes(config, dtype, tokens_per_frame(HEIGHT, WIDTH) * frames)
    assert memory.shared == text_kv_bytes(config, dtype) > 0
    assert [memory.total(b) for b in (1, 2, 3)] == [memory.shared + b * memory.per_video for b in (1, 2, 3)]
    # the largest batch within a budget: exactly at the edge, one byte short of it, and none at all
    for b in (1, 4):
        assert memory.largest_batch(memory.total(b)) == b
        assert memory.largest_batch(memory.total(b) - 1) == b - 1
    assert memory.largest_batch(memory.shared) == 0
