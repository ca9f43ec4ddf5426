"""What a run needs in memory (vace_core/memory.py), against what runs on the tiny model actually do.

* The largest pass: for each recache mode, no pass of a run (denoising, clean or recache) covers
  more frames than `largest_pass_frames`, and some switch position reaches it. "longlive" re-encodes
  up to a whole window in one pass; "causal" never more than a chunk (the bound a host used before,
  a window whenever the prompt switches, over-counts it).
* The caches: `run_cache_bytes` is exactly what `generate` allocates, for each VACE attention mode.
"""

from __future__ import annotations

import pytest

from helpers import random_text, random_vace_context, tiny_model
from vace_core.latents import video_frames_for
from vace_core.memory import largest_pass_frames, pass_activation_bytes, run_cache_bytes, run_memory_bytes
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
                    + pass_activation_bytes(config, dtype, tokens_per_frame(HEIGHT, WIDTH) * frames))
        assert run_memory_bytes(config, dtype, height=HEIGHT, width=WIDTH, ref_frames=1, settings=settings,
                                uses_vace=True, prompt_switches=True) == expected
