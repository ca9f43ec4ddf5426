"""Causal chunked sampling (vace_core/sampler.py) on the tiny model, CPU, float32.

What is proved here (docs/how-it-works.md, issue 3):
* Invariant 2: the KV-cache loop equals the cache-free recompute (vace_core/testing/recompute.py), over a
  run long enough for the window to roll three times, with references and two prompt switches,
  for every combination of the named options; and the recompute path itself equals a
  block-causal sampler written out in this file, for each VACE attention mode.
* Invariant 1 at the sampler level: one block covering all frames equals bidirectional few-step
  sampling written out here with `forward_full`.
* Invariant 3: VACE scale 0 gives exactly the output of the model without VACE.
* The cache stays the size of references + window, whatever the length.
* Length rule, decoding without references, prompt switching, seeds, errors, progress and
  cancellation.

Frames are 48x32 pixels (latent 6x4, 3x2 = 6 tokens per frame; not square, so a swapped height
and width would show).
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from helpers import LinearFakeVAE, random_text, random_vace_context, randn, tiny_model
from vace_core.cache import KVCache
from vace_core.passes import CachedPasses, ModelPass
from vace_core.encoding import VaceContext, decode_normalized_without_references, encode_vace_context
from vace_core.latents import denormalize_latents, latent_frames_for, video_frames_for
from vace_core.memory import run_cache_bytes
from vace_core.noise import block_noise
from vace_core.plan import Block, VaceScaleRamp, first_video_frame, plan_blocks, steer_boundaries
from vace_core.sampler import GenerationCancelled, PromptSegment, SamplerSettings, generate
from vace_core.testing.probes import cached_frames, detach_vace
from vace_core.testing.recompute import RecomputedPasses

RECOMPUTE = dict(executor=RecomputedPasses.for_run)  # the cache-free oracle instead of the KV caches

HEIGHT, WIDTH = 32, 48
LATENT_H, LATENT_W = HEIGHT // 8, WIDTH // 8
TOKENS_PER_FRAME = (LATENT_H // 2) * (LATENT_W // 2)
# Cache vs recompute differ only by float32 rounding: measured max abs error ~2e-6 on latents of
# std ~1.4, while a window that does not roll moves them by ~0.2 (checked below).
TOL = 2e-5
TWO_STEPS = (1000, 500)  # where the schedule is not the subject, half the passes


@pytest.fixture(scope="module")
def model():
    return tiny_model("tiny-vace", seed=0)


@pytest.fixture(scope="module")
def text():
    return random_text(seed=11)


def settings(**changes) -> SamplerSettings:
    base = dict(chunk_frames=2, window_frames=6, sink_frames=2, denoising_steps=TWO_STEPS)
    base.update(changes)
    return SamplerSettings(**base)


def sample(model, prompts, latent_frames: int, config: SamplerSettings, *, seed: int = 3, vace=None,
           **kwargs):
    return generate(model, prompts, video_frames=video_frames_for(latent_frames), height=HEIGHT,
                    width=WIDTH, seed=seed, vace=vace, settings=config, **kwargs)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.double() - b.double()).abs().max().item()


def longlive_schedule(steps, shift: float = 5.0) -> list[tuple[float, float, float]]:
    """(timestep, sigma, next sigma) per step, from docs/how-it-works.md#the-schedule: step s is fed as
    t = 1000 * k*u / (1 + (k-1)*u) with u = s/1000 and k the shift; sigma = t/1000; 0 after the last."""
    sigmas = [shift * (s / 1000) / (1 + (shift - 1) * (s / 1000)) for s in steps]
    return [(1000 * s, s, n) for s, n in zip(sigmas, sigmas[1:] + [0.0])]


def noise_draws(seed: int, block: Block, ref_frames: int, steps) -> list[torch.Tensor]:
    # the sampler's documented noise: per block, len(steps) draws of [1, 16, f, h, w] from the
    # block's own stream
    return list(block_noise(seed, block, ref_frames, len(steps), (LATENT_H, LATENT_W)))


# ---- invariant 2: KV cache == recompute ------------------------------------------------------

LONG_REFS, LONG_FRAMES = 2, 18  # window 6 of chunks 2, sink 2: the ring of 4 rolling slots wraps 4x
# prompt b takes over at generated frame 4 (inside the first window: LongLive's recache re-encodes
# the sink too) and prompt c at generated frame 12 (only the rolling frames are re-encoded)
LONG_SWITCHES = (16, 48)  # video frames: ceil(16 / 4) = 4, ceil(48 / 4) = 12

OPTIONS = {
    "vace_attention": ("causal", "references", "block"),
    "recache": ("longlive", "causal"),
    "reference_mode": ("denoise", "clean"),
    "hint_chunks": ("all", "first"),
    "hints_in_clean_pass": (True, False),
}
OPTION_CASES = [dict(zip(OPTIONS, values)) for values in itertools.product(*OPTIONS.values())]


@pytest.fixture(scope="module")
def long_vace():
    return random_vace_context(LONG_REFS, LONG_FRAMES, HEIGHT, WIDTH, seed=21)


@pytest.fixture(scope="module")
def long_prompts(text):
    return [PromptSegment(0, text)] + [PromptSegment(v, random_text(seed=30 + i)) for i, v in enumerate(LONG_SWITCHES)]


@pytest.mark.parametrize("changes", OPTION_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_kv_cache_equals_recompute_over_a_rolling_window(model, long_prompts, long_vace, changes):
    cached = sample(model, long_prompts, LONG_FRAMES, settings(**changes), vace=long_vace)
    recomputed = sample(model, long_prompts, LONG_FRAMES, settings(**changes), vace=long_vace, **RECOMPUTE)
    assert cached.latents.shape == (1, 16, LONG_REFS + LONG_FRAMES, LATENT_H, LATENT_W)
    err = max_err(cached.latents, recomputed.latents)
    print(f"kv vs recompute [{changes}]: max abs err {err:.2e}")
    assert err <= TOL
    if changes.get("reference_mode") == "clean":
        # the reference block is the encoded reference latents, inserted as they are
        assert torch.equal(cached.latents[:, :, :LONG_REFS], long_vace.ref_latents)


def test_the_options_change_the_video(model, long_prompts, long_vace):
    """Each option of the product above is a different computation (so each case checks something
    of its own): flipping it alone away from the defaults moves the latents by far more than TOL."""
    base = sample(model, long_prompts, LONG_FRAMES, settings(), vace=long_vace).latents
    for name, values in OPTIONS.items():
        for value in values[1:]:
            other = sample(model, long_prompts, LONG_FRAMES, settings(**{name: value}), vace=long_vace).latents
            assert max_err(base, other) > 100 * TOL, (name, value)


def test_the_tolerance_would_catch_a_window_that_does_not_roll(model, text, long_vace):
    """The comparison above is meaningful: the same run with a window covering every frame (no
    frame ever leaves it) differs from the rolling one by far more than TOL."""
    rolling = sample(model, text, LONG_FRAMES, settings(), vace=long_vace)
    unbounded = sample(model, text, LONG_FRAMES, settings(window_frames=LONG_FRAMES + 2), vace=long_vace)
    assert max_err(rolling.latents, unbounded.latents) > 100 * TOL


def test_kv_cache_equals_recompute_with_ring_wraparound_partial_chunk_and_ramp(model, text):
    """Chunks of 3 in a ring of 5 slots: blocks wrap around the ring (non-contiguous slots), the last
    chunk holds 1 frame, and the VACE scale ramps per chunk (each block's clean K/V keep the scale
    that block ran at)."""
    frames = 19  # 6 chunks of 3 + 1
    vace = random_vace_context(2, frames, HEIGHT, WIDTH, seed=31)
    config = dict(chunk_frames=3, window_frames=6, sink_frames=1)
    ramp = VaceScaleRamp(1.0, 0.0)
    cached = sample(model, text, frames, settings(**config), vace=vace, vace_scale=ramp)
    recomputed = sample(model, text, frames, settings(**config), **RECOMPUTE, vace=vace,
                        vace_scale=ramp)
    assert [b.frames for b in cached.blocks] == [2, 3, 3, 3, 3, 3, 3, 1]
    err = max_err(cached.latents, recomputed.latents)
    print(f"kv vs recompute [ring wraparound, ramp]: max abs err {err:.2e}")
    assert err <= TOL


# Hand-built block-causal sampler: 2 references, sink 1, chunks of 2, window 3 (ring of 2 frames).
# Latent frames 0-1 are the references, then chunks [2,4), [4,6), [6,8).
HAND_BLOCKS = [(0, 2), (2, 4), (4, 6), (6, 8)]
# Which key frames (columns) each query frame (row) sees, from docs/how-it-works.md: every frame of a
# block sees the same keys: the references and the first `sink` generated frame (the permanent sink,
# here frames 0-2) that exist by the block's end, plus the most recent window - sink = 2 frames
# ending at the block's end (the block itself). Frame 3 drops out of the window at chunk [4,6).
HAND_MASK = [
    "11000000",
    "11000000",
    "11110000",
    "11110000",
    "11101100",
    "11101100",
    "11100011",
    "11100011",
]
# What the VACE blocks see, per vace_attention mode: the main mask ("causal"), the references and
# the block ("references"), the block alone ("block").
HAND_VACE_MASK = {
    "causal": HAND_MASK,
    "references": ["11000000", "11000000", "11110000", "11110000",
                   "11001100", "11001100", "11000011", "11000011"],
    "block": ["11000000", "11000000", "00110000", "00110000",
              "00001100", "00001100", "00000011", "00000011"],
}
# Per block: the hint weight of each frame of the recomputed sequence [0, block end).
HAND_HINTS = {
    # hints everywhere: earlier blocks' cached K/V came from clean passes with hints
    "default": [[1, 1], [1, 1, 1, 1], [1] * 6, [1] * 8],
    # hints only on the first chunk; references clean (inserted, never denoised) and none in the
    # clean passes: only the first chunk's own frames get hints. The references' VACE keys come
    # from their clean pass, which runs the VACE stream without adding hints (weight 0), in every
    # mode that keeps VACE keys; later chunks run no VACE at all.
    "departures": [None, [0, 0, 1, 1], None, None],
}
HAND_SETTINGS = {
    "default": dict(),
    "departures": dict(hint_chunks="first", hints_in_clean_pass=False, reference_mode="clean"),
}


def frame_mask(rows: list[str], end: int) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row[:end]] for row in rows[:end]])


@torch.no_grad()
def hand_block_causal_sample(model, text, vace, seed: int, steps, case: str, vace_attention: str) -> torch.Tensor:
    text_state = model.encode_text(text)
    done = torch.zeros(1, 16, 0, LATENT_H, LATENT_W)  # finished clean latents, in time order
    for index, (start, end) in enumerate(HAND_BLOCKS):
        block = Block(index, start, end - start, index - 1, "reference" if index == 0 else "generated")
        draws = noise_draws(seed, block, 2, steps)
        if index == 0 and case == "departures":
            done = torch.cat([done, vace.ref_latents], dim=2)
            continue
        weights = HAND_HINTS[case][index]
        context = weight = None
        if weights is not None:
            context, weight = vace.context[:, :, :end], torch.tensor(weights, dtype=torch.float32)
        x = draws[0]
        for i, (t, sigma, next_sigma) in enumerate(longlive_schedule(steps)):
            sequence = torch.cat([done, x], dim=2)  # [1, 16, end, h, w]
            timesteps = torch.tensor([[0.0] * start + [t] * (end - start)])  # finished frames are clean
            flow = model.forward_block(sequence, timesteps, text_state, 0, None, context, 1.0,
                                       frame_mask=frame_mask(HAND_MASK, end),
                                       vace_frame_mask=frame_mask(HAND_VACE_MASK[vace_attention], end),
                                       vace_frame_weight=weight)[:, :, start:]
            x0 = x - sigma * flow
            if next_sigma > 0:
                x = (1 - next_sigma) * x0 + next_sigma * draws[i + 1]
        done = torch.cat([done, x0], dim=2)
    return done


@pytest.mark.parametrize("vace_attention", list(HAND_VACE_MASK))
@pytest.mark.parametrize("case", list(HAND_HINTS))
def test_recompute_path_equals_a_hand_built_block_causal_sampler(model, text, case, vace_attention):
    steps = (1000, 750, 500, 250)
    vace = random_vace_context(2, 6, HEIGHT, WIDTH, seed=41)
    config = dict(chunk_frames=2, window_frames=3, sink_frames=1, denoising_steps=steps,
                  vace_attention=vace_attention, **HAND_SETTINGS[case])
    expected = hand_block_causal_sample(model, text, vace, 5, steps, case, vace_attention)
    recomputed = sample(model, text, 6, settings(**config), seed=5, vace=vace, **RECOMPUTE)
    cached = sample(model, text, 6, settings(**config), seed=5, vace=vace)
    err_recompute = max_err(recomputed.latents, expected)
    err_cached = max_err(cached.latents, expected)
    print(f"hand block-causal [{case}, {vace_attention}]: recompute err {err_recompute:.2e}, kv err {err_cached:.2e}")
    assert err_recompute <= TOL
    assert err_cached <= TOL


def test_model_still_serves_autograd_after_sampling(text):
    """generate runs under inference mode; tables it leaves in the model's caches (RoPE) must not
    be inference tensors, or a later tracked forward (fine-tuning, a test's reference) fails."""
    fresh = tiny_model("tiny-vace", seed=2)
    sample(fresh, text, 2, settings(), vace=None)
    x = randn(1, 16, 2, LATENT_H, LATENT_W, seed=3)
    fresh.forward_full(x, torch.tensor([500.0]), text).square().mean().backward()
    assert fresh.head.head.weight.grad is not None


# ---- invariant 1: one block = bidirectional sampling -----------------------------------------

# With no reference frames there is exactly one block when chunk_frames covers every latent frame;
# window = sink + chunk makes the cache's visible set every frame of that block, and attention
# inside a block is full, so each denoising pass is one bidirectional forward over all frames
# (VACE hints from the whole context); the last block has no clean pass. References cannot take
# part: they always form their own earlier causal block, while upstream VACE denoises them jointly
# with the video, so a VACE context with 0 references (control-video style) is the VACE case.
BIDIR_FRAMES = 5


@pytest.mark.parametrize("conditioning, scale, vace_attention", [
    ("t2v", 1.0, "causal"), ("vace", 1.0, "causal"), ("vace", [0.5, 1.5], "causal"),
    ("vace", 1.0, "references"), ("vace", 1.0, "block")])
@pytest.mark.parametrize("sink", [0, 2])
def test_one_block_equals_bidirectional_sampling(model, text, conditioning, scale, vace_attention, sink):
    steps = (1000, 750, 500, 250)
    vace = random_vace_context(0, BIDIR_FRAMES, HEIGHT, WIDTH, seed=51) if conditioning == "vace" else None
    config = settings(chunk_frames=BIDIR_FRAMES, window_frames=BIDIR_FRAMES + sink, sink_frames=sink,
                      denoising_steps=steps, vace_attention=vace_attention)
    result = sample(model, text, BIDIR_FRAMES, config, seed=9, vace=vace, vace_scale=scale)

    draws = noise_draws(9, Block(0, 0, BIDIR_FRAMES, 0), 0, steps)
    x = draws[0]
    with torch.no_grad():
        for i, (t, sigma, next_sigma) in enumerate(longlive_schedule(steps)):
            flow = model.forward_full(x, torch.tensor([t]), text,
                                      vace_context=vace.context if vace is not None else None, vace_scale=scale)
            x0 = x - sigma * flow
            if next_sigma > 0:
                x = (1 - next_sigma) * x0 + next_sigma * draws[i + 1]
    err = max_err(result.latents, x0)
    print(f"one block vs bidirectional [{conditioning}, scale {scale}, {vace_attention}, sink {sink}]: "
          f"max abs err {err:.2e}")
    assert len(result.blocks) == 1
    assert err <= 1e-5


# ---- the cache is bounded ----------------------------------------------------------------------


@pytest.mark.parametrize("vace_attention", ["causal", "references", "block"])
def test_cache_memory_is_refs_plus_window_whatever_the_length(model, text, monkeypatch, vace_attention):
    """The main cache holds references + window; the VACE cache as much again for "causal", the
    references only for "references", nothing for "block"; the same after 5 and 40 chunks."""
    refs, sink, window = 2, 1, 4
    runs: list[CachedPasses] = []
    tokens_read: list[int] = []
    original_init, original_begin = CachedPasses.__init__, KVCache.begin_block

    def capturing_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        runs.append(self)

    def counting_begin(self, *args, **kwargs):
        access = original_begin(self, *args, **kwargs)
        original_read = access.write_and_read

        def read(layer, k, v):
            keys, values = original_read(layer, k, v)
            if self is runs[-1].cache:
                tokens_read.append(keys.shape[2])
            return keys, values

        access.write_and_read = read
        return access

    monkeypatch.setattr(CachedPasses, "__init__", capturing_init)
    monkeypatch.setattr(KVCache, "begin_block", counting_begin)

    config = model.config
    main_frames = refs + window  # references + sink + rolling part
    vace_frames = {"causal": main_frames, "references": refs, "block": 0}[vace_attention]
    per_frame = 2 * config.num_heads * config.head_dim * TOKENS_PER_FRAME * 4  # keys and values, float32
    expected_bytes = (config.num_layers * main_frames + config.num_vace_blocks * vace_frames) * per_frame
    config_settings = settings(chunk_frames=1, window_frames=window, sink_frames=sink, denoising_steps=(1000,),
                               vace_attention=vace_attention)
    assert run_cache_bytes(model.config, model.compute_dtype, height=HEIGHT, width=WIDTH, ref_frames=refs,
                           settings=config_settings, uses_vace=True) == expected_bytes
    sizes = {}
    for chunks in (5, 40):
        tokens_read.clear()
        vace = random_vace_context(refs, chunks, HEIGHT, WIDTH, seed=61)
        result = sample(model, text, chunks, config_settings, vace=vace, keep_latents=False)
        passes = runs[-1]
        assert result.latents is None
        assert tuple(passes.cache.buffer.shape) == (config.num_layers, 2, 1, config.num_heads,
                                                    main_frames * TOKENS_PER_FRAME, config.head_dim)
        assert passes.nbytes() == result.cache_bytes == expected_bytes
        # the ring holds the sink (references + first generated frame) and the last 3 frames
        total = refs + chunks
        window_now = list(range(refs + sink)) + list(range(total - (window - sink), total))
        assert cached_frames(passes.cache) == window_now
        if vace_attention == "block":
            assert passes.vace_cache is None
        else:
            assert tuple(passes.vace_cache.buffer.shape) == (config.num_vace_blocks, 2, 1, config.num_heads,
                                                             vace_frames * TOKENS_PER_FRAME, config.head_dim)
            assert cached_frames(passes.vace_cache) == (window_now if vace_attention == "causal" else [0, 1])
        # attention never reads more than the capacity, and reads all of it once the window is full
        assert max(tokens_read) == main_frames * TOKENS_PER_FRAME
        sizes[chunks] = result.cache_bytes
    assert sizes[5] == sizes[40]


# ---- references and decoding -------------------------------------------------------------------


@pytest.mark.parametrize("n_refs", [1, 2, 3])
def test_decode_drops_exactly_the_reference_frames(model, text, n_refs):
    vae = LinearFakeVAE()
    images = [randn(24 + 8 * i, 40, 3, seed=70 + i).sigmoid() for i in range(n_refs)]
    latent_frames = 3
    vace = encode_vace_context(vae, WIDTH, HEIGHT, video_frames_for(latent_frames), reference_images=images)
    assert vace.ref_frames == n_refs
    result = sample(model, text, latent_frames, settings(window_frames=4, sink_frames=1), vace=vace)
    assert result.ref_frames == n_refs
    assert result.latents.shape[2] == n_refs + latent_frames

    pixels = decode_normalized_without_references(vae, result.latents, result.ref_frames)
    assert pixels.shape == (video_frames_for(latent_frames), HEIGHT, WIDTH, 3) == (9, HEIGHT, WIDTH, 3)
    # the VAE saw exactly the generated frames (raw space), none of the references
    assert len(vae.decoded) == 1
    torch.testing.assert_close(vae.decoded[0], denormalize_latents(result.latents[:, :, n_refs:]))


def test_generate_refuses_a_vace_context_without_vace_weights(model, text):
    plain = copy.deepcopy(model)
    detach_vace(plain)
    vace = random_vace_context(1, 3, HEIGHT, WIDTH, seed=81)
    with pytest.raises(ValueError, match="no VACE weights"):
        sample(plain, text, 3, settings(), vace=vace)


# ---- prompt switching --------------------------------------------------------------------------

SWITCH_REFS, SWITCH_FRAMES = 1, 10


@pytest.fixture(scope="module")
def switch_setup(model, text):
    vace = random_vace_context(SWITCH_REFS, SWITCH_FRAMES, HEIGHT, WIDTH, seed=91)
    baseline = sample(model, text, SWITCH_FRAMES, settings(), vace=vace)
    return vace, baseline


# (video frame where prompt B starts, first generated latent frame under B). Chunks start at latent
# frames 0, 2, 4, ...; B takes over at the first chunk starting at or after ceil(v / 4): v = 9 gives
# ceil 3 -> chunk at 4 (flooring would give chunk 2), v = 8 and v = 5 give 2.
@pytest.mark.parametrize("switch_video_frame, switch_latent", [(5, 2), (8, 2), (9, 4)])
def test_prompt_switch_changes_only_frames_from_the_switch_chunk_on(model, text, switch_setup,
                                                                     switch_video_frame, switch_latent):
    vace, baseline = switch_setup
    other = random_text(seed=12)
    schedule = [PromptSegment(0, text), PromptSegment(switch_video_frame, other)]
    switched = sample(model, schedule, SWITCH_FRAMES, settings(), vace=vace)
    first_changed = SWITCH_REFS + switch_latent
    assert torch.equal(switched.latents[:, :, :first_changed], baseline.latents[:, :, :first_changed])
    for frame in range(first_changed, SWITCH_REFS + SWITCH_FRAMES):
        assert max_err(switched.latents[:, :, frame], baseline.latents[:, :, frame]) > 1e-3, frame


# ---- seeds ---------------------------------------------------------------------------------------


def test_same_seed_same_video_other_seed_other_video(model, text):
    vace = random_vace_context(1, 4, HEIGHT, WIDTH, seed=101)
    config = settings()
    first = sample(model, text, 4, config, seed=123, vace=vace)
    again = sample(model, text, 4, config, seed=123, vace=vace)
    other = sample(model, text, 4, config, seed=124, vace=vace)
    assert torch.equal(first.latents, again.latents)
    assert max_err(first.latents, other.latents) > 0.1


# ---- length rule and errors --------------------------------------------------------------------


@pytest.mark.parametrize("video_frames, latent_frames, blocks", [
    (25, 7, [3, 3, 1]), (26, 7, [3, 3, 1]), (28, 7, [3, 3, 1]), (29, 8, [3, 3, 2]), (1, 1, [1]), (9, 3, [3]),
])
def test_length_rule_and_short_last_chunk(model, text, video_frames, latent_frames, blocks):
    """latent frames = (video_frames - 1) // 4 + 1 (the VAE's count, rounding down); chunks of
    chunk_frames from the start, the last one shorter when the count does not divide."""
    assert latent_frames_for(video_frames) == (video_frames - 1) // 4 + 1 == latent_frames
    config = settings(chunk_frames=3, window_frames=5, sink_frames=1, denoising_steps=(1000,))
    result = generate(model, text, video_frames=video_frames, height=HEIGHT, width=WIDTH, seed=0, settings=config)
    assert [b.frames for b in result.blocks] == blocks
    assert result.latent_frames == latent_frames
    assert result.video_frames == 4 * (latent_frames - 1) + 1  # what the frames decode to
    assert result.latents.shape == (1, 16, latent_frames, LATENT_H, LATENT_W)


def test_short_last_chunk_matches_recompute(model, text):
    vace = random_vace_context(1, 7, HEIGHT, WIDTH, seed=111)
    config = dict(chunk_frames=3, window_frames=5, sink_frames=1)
    cached = generate(model, text, video_frames=25, height=HEIGHT, width=WIDTH, seed=2, vace=vace,
                      settings=settings(**config))
    recomputed = generate(model, text, video_frames=25, height=HEIGHT, width=WIDTH, seed=2, vace=vace,
                          settings=settings(**config), **RECOMPUTE)
    assert [b.frames for b in cached.blocks] == [1, 3, 3, 1]
    assert max_err(cached.latents, recomputed.latents) <= TOL


@pytest.mark.parametrize("changes, words", [
    (dict(width=40), ["width 40", "multiple of 16"]),
    (dict(height=20), ["height 20", "multiple of 16"]),
    (dict(width=8), ["width 8", "multiple of 16"]),
    (dict(vace_size=(64, 64)), ["64x64", f"{WIDTH}x{HEIGHT}", "same width and height"]),
    (dict(vace_latent_frames=5), ["17 video frames", "13", "same length"]),
    (dict(settings=dict(window_frames=4, sink_frames=2, chunk_frames=3)),
     ["window_frames (4)", "sink (2)", "chunk (3)"]),
    (dict(settings=dict(reference_mode="noise")), ["reference_mode 'noise'", "denoise", "clean"]),
    (dict(settings=dict(hint_chunks="every")), ["hint_chunks 'every'", "all", "first"]),
    (dict(video_frames=0), ["video_frames", "at least 1"]),
    (dict(settings=dict(chunk_frames=0)), ["chunk_frames", "at least 1"]),
    (dict(settings=dict(sink_frames=-1)), ["sink_frames", "0 or more"]),
    (dict(scale=[1.0, 1.0, 1.0]), ["3 values", "2 VACE blocks"]),
    (dict(prompt_starts=(4,)), ["first prompt must start at frame 0"]),
    (dict(prompt_starts=(0, 5, 5)), ["same frame"]),
    (dict(settings=dict(vace_attention="joint")), ["vace_attention 'joint'", "causal", "references", "block"]),
    (dict(settings=dict(recache="full")), ["recache 'full'", "longlive", "causal"]),
])
def test_clear_errors(model, text, changes, words):
    width, height = changes.get("width", WIDTH), changes.get("height", HEIGHT)
    vace_width, vace_height = changes.get("vace_size", (WIDTH, HEIGHT))
    vace = random_vace_context(1, changes.get("vace_latent_frames", 4), vace_height, vace_width, seed=121)
    prompts = [PromptSegment(start, text) for start in changes.get("prompt_starts", (0,))]
    config = settings(**changes.get("settings", {}))
    with pytest.raises(ValueError) as error:
        generate(model, prompts, video_frames=changes.get("video_frames", 13), height=height, width=width, seed=0, vace=vace,
                 vace_scale=changes.get("scale", 1.0), settings=config)
    message = str(error.value)
    for word in words:
        assert word in message, message


# ---- progress, cancellation, on_chunk -----------------------------------------------------------

# 1 reference, chunks of 2, sink 2, window 8 (ring of 6), 10 latent frames: blocks ref [0,1), then
# [1,3), [3,5), [5,7), [7,9), [9,11). Sink = frames 0-2.
PROGRESS_SETTINGS = dict(chunk_frames=2, window_frames=8, sink_frames=2, denoising_steps=(1000, 750, 500, 250))
PROGRESS_REFS, PROGRESS_FRAMES = 1, 10
# ref: 4 denoising + 1 clean; 4 chunks: 4 + 1 each; last chunk: 4 denoising, no clean pass
PASSES_PLAIN = 5 + 4 * 5 + 4
# A prompt starting at video frame 17 takes over at ceil(17/4) = 5 -> the chunk at generated frame 6,
# i.e. block [7,9). With recache "longlive" the 6 generated frames before it (all within the
# window of 8, sink included) are re-run in one pass: frames [1, 7). With "causal", the rolling
# frames that block sees, [3,5) and [5,7), are re-run block by block: 2 passes.
SWITCH_AT = 17
REBUILDS = {"longlive": [(1, 7, None)], "causal": [(3, 5, None), (5, 7, None)]}


@pytest.fixture(scope="module")
def progress_vace():
    return random_vace_context(PROGRESS_REFS, PROGRESS_FRAMES, HEIGHT, WIDTH, seed=131)


def progress_prompts(text, switch: bool):
    return [PromptSegment(0, text)] + ([PromptSegment(SWITCH_AT, random_text(seed=13))] if switch else [])


@pytest.mark.parametrize("switch, changes, expected_passes", [
    (False, {}, PASSES_PLAIN),
    (True, {}, PASSES_PLAIN + 1),
    (True, dict(recache="causal"), PASSES_PLAIN + 2),
    (False, dict(reference_mode="clean"), PASSES_PLAIN - 4),  # references: only the clean pass
])
def test_callback_counts_every_pass_and_on_chunk_sees_every_block(model, text, progress_vace, switch, changes,
                                                                  expected_passes):
    steps, chunks = [], []
    result = sample(model, progress_prompts(text, switch), PROGRESS_FRAMES,
                    settings(**PROGRESS_SETTINGS, **changes), vace=progress_vace, callback=steps.append,
                    on_chunk=chunks.append)
    assert len(steps) == expected_passes
    assert [s.pass_index for s in steps] == list(range(1, expected_passes + 1))
    assert {s.total_passes for s in steps} == {expected_passes}
    denoising = [s for s in steps if s.step is not None]
    assert all(s.x0.shape == (1, 16, s.block.frames, LATENT_H, LATENT_W) for s in denoising)
    if switch:
        # the rebuild passes (t = 0, no step) come right before the switch block's first step
        expected = REBUILDS[changes.get("recache", "longlive")]
        first_switch_step = next(i for i, s in enumerate(steps) if s.block.start == 7 and s.step == 0)
        rebuild = steps[first_switch_step - len(expected):first_switch_step]
        assert [(s.block.start, s.block.end, s.step) for s in rebuild] == expected

    assert [c.block.index for c in chunks] == list(range(6))
    assert [c.block.is_reference for c in chunks] == [True] + [False] * 5
    assert [c.block.frames for c in chunks] == [1, 2, 2, 2, 2, 2]
    for chunk in chunks:
        assert torch.equal(chunk.latents, result.latents[:, :, chunk.block.start:chunk.block.end])


def test_the_cache_free_oracle_evaluates_only_the_denoising_passes(model, text, progress_vace):
    """Without a cache no clean pass needs evaluating: the oracle records them for the passes that
    depend on them. Progress still counts every pass the run decides."""
    oracles, steps = [], []

    def oracle(run):
        oracles.append(RecomputedPasses.for_run(run))
        return oracles[-1]

    sample(model, progress_prompts(text, False), PROGRESS_FRAMES, settings(**PROGRESS_SETTINGS), vace=progress_vace,
           callback=steps.append, executor=oracle)
    assert oracles[0].evaluations == 6 * 4  # 6 blocks of 4 denoising passes, no clean passes at all
    assert len(steps) == PASSES_PLAIN


# (cancel after k passes, blocks finished): 5 passes per block; cancelling after pass 5 means the
# reference block is complete; pass 21 is the first rebuild pass of the switch (before block 4).
@pytest.mark.parametrize("switch, k, blocks_done", [
    (False, 0, 0), (False, 3, 0), (False, 5, 1), (False, 12, 2), (True, 21, 4), (True, 22, 4),
])
def test_cancellation_stops_after_k_passes(model, text, progress_vace, switch, k, blocks_done):
    passes, chunks = [], []
    with pytest.raises(GenerationCancelled) as cancelled:
        sample(model, progress_prompts(text, switch), PROGRESS_FRAMES, settings(**PROGRESS_SETTINGS),
               vace=progress_vace, callback=passes.append, on_chunk=chunks.append,
               should_cancel=lambda: len(passes) >= k)
    assert len(passes) == k
    assert cancelled.value.blocks_done == blocks_done
    assert str(blocks_done) in str(cancelled.value)
    assert [c.block.index for c in chunks] == list(range(blocks_done))


# ---- VACE scale ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scale_setup(model, text):
    vace = random_vace_context(1, 4, HEIGHT, WIDTH, seed=141)
    one = sample(model, text, 4, settings(), vace=vace, vace_scale=1.0)
    return vace, one


def test_constant_ramp_and_per_layer_ones_equal_scale_one(model, text, scale_setup):
    vace, one = scale_setup
    ramp = sample(model, text, 4, settings(), vace=vace, vace_scale=VaceScaleRamp(1.0, 1.0))
    per_layer = sample(model, text, 4, settings(), vace=vace, vace_scale=[1.0, 1.0])
    assert torch.equal(ramp.latents, one.latents)
    assert torch.equal(per_layer.latents, one.latents)


def test_per_layer_scales_act_per_layer(model, text, scale_setup):
    vace, one = scale_setup
    first_only = sample(model, text, 4, settings(), vace=vace, vace_scale=[1.0, 0.0])
    second_only = sample(model, text, 4, settings(), vace=vace, vace_scale=[0.0, 1.0])
    for partial in (first_only, second_only):
        assert max_err(partial.latents, one.latents) > 1e-3
    assert max_err(first_only.latents, second_only.latents) > 1e-3


def test_ramp_moves_linearly_from_the_first_to_the_last_chunk():
    ramp = VaceScaleRamp(1.0, 0.25)
    assert [ramp.at(i, 4) for i in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert ramp.at(0, 1) == 1.0


@pytest.mark.parametrize("vace_attention", ["causal", "references", "block"])
@pytest.mark.parametrize("scale", [0.0, [0.0, 0.0], VaceScaleRamp(0.0, 0.0)])
def test_scale_zero_is_exactly_the_model_without_vace(model, text, scale, vace_attention):
    """Invariant 3 in the sampler. A context with 0 references keeps the block layout of plain T2V
    (references would add a block and shift every frame), so any difference could only come from
    the hints, which scale 0 must remove exactly."""
    vace = random_vace_context(0, 5, HEIGHT, WIDTH, seed=151)
    zero = sample(model, text, 5, settings(vace_attention=vace_attention), vace=vace, vace_scale=scale)
    without = sample(model, text, 5, settings(), vace=None)
    plain = copy.deepcopy(model)
    detach_vace(plain)
    detached = sample(plain, text, 5, settings(), vace=None)
    assert torch.equal(zero.latents, without.latents)
    assert torch.equal(zero.latents, detached.latents)
    # and the hints do matter at scale 1
    assert max_err(sample(model, text, 5, settings(vace_attention=vace_attention), vace=vace).latents,
                   without.latents) > 1e-3


def test_hand_schedule_gives_the_longlive_timesteps():
    """The schedule written out in this file gives docs/how-it-works.md's numbers: 1000, 937.5, 833.33, 625."""
    timesteps = [t for t, _, _ in longlive_schedule((1000, 750, 500, 250))]
    assert timesteps[0] == 1000.0 and timesteps[1] == 937.5 and timesteps[3] == 625.0
    assert math.isclose(timesteps[2], 2500 / 3)


# ---- the VACE stream sees the references ---------------------------------------------------------


def first_pass_hints(model, text, vace, monkeypatch, **changes) -> dict[int, list[torch.Tensor]]:
    """Every VACE hint of the first denoising pass (t = 1000) of each generated chunk, by chunk index."""
    from vace_core import vace as vace_module

    current: list[ModelPass] = []
    hints: dict[int, list[torch.Tensor]] = {}
    original_run, original_hint = CachedPasses.run, vace_module.VaceStream.hint

    def run(self, p):
        current[:] = [p]
        return original_run(self, p)

    def hint(self, k):
        value = original_hint(self, k)
        p = current[0]
        if p.timestep == 1000.0 and p.start >= vace.ref_frames:
            hints.setdefault((p.start - vace.ref_frames) // 2, []).append(value.clone())
        return value

    monkeypatch.setattr(CachedPasses, "run", run)
    monkeypatch.setattr(vace_module.VaceStream, "hint", hint)
    sample(model, text, 6, settings(chunk_frames=2, window_frames=6, sink_frames=2, **changes), vace=vace)
    monkeypatch.undo()
    return hints


def test_vace_hints_follow_the_references_unless_the_vace_blocks_see_only_their_block(model, text, monkeypatch):
    vace = random_vace_context(1, 6, HEIGHT, WIDTH, seed=161)
    other_refs = randn(*vace.ref_latents.shape, seed=162)
    context = vace.context.clone()
    context[:, :16, :1] = other_refs  # only the reference frame's VACE context changes
    other = VaceContext(context=context, ref_latents=other_refs, ref_frames=1, latent_frames=6,
                        video_frames=vace.video_frames, height=HEIGHT, width=WIDTH)
    for mode in ("causal", "references", "block"):
        changes = {} if mode == "causal" else dict(vace_attention=mode)  # "causal" is the default
        first, second = (first_pass_hints(model, text, v, monkeypatch, **changes) for v in (vace, other))
        for chunk in (0, 2):
            assert len(first[chunk]) == len(second[chunk]) == model.config.num_vace_blocks
            differences = [max_err(a, b) for a, b in zip(first[chunk], second[chunk])]
            print(f"vace_attention={mode}, chunk {chunk}: hint differences {differences}")
            if mode == "block":
                assert all(torch.equal(a, b) for a, b in zip(first[chunk], second[chunk]))
            else:
                assert min(differences) > 1e-3


# ---- prompts given during the run (live steering) ------------------------------------------------

STEER_REFS, STEER_FRAMES = 1, 12  # chunks of 2 start at generated latent frames 0, 2, ..., 10


@pytest.fixture(scope="module")
def steer_vace():
    return random_vace_context(STEER_REFS, STEER_FRAMES, HEIGHT, WIDTH, seed=151)


def test_steering_boundaries_are_every_chunk_start_but_the_first():
    blocks = plan_blocks(STEER_REFS, STEER_FRAMES, 2)
    # latent frame L >= 1 decodes to video frames 4L-3 .. 4L: a chunk starting at latent 2 starts at frame 5
    assert [(b.block.start - STEER_REFS, b.frame) for b in steer_boundaries(blocks, STEER_REFS)] == \
        [(2, 5), (4, 13), (6, 21), (8, 29), (10, 37)]
    assert [first_video_frame(b, STEER_REFS) for b in blocks[1:3]] == [0, 5]


def steer_at(given: dict[int, torch.Tensor], seen: list):
    """A steer callable giving `given[frame]` at the boundary of that frame, recording every call."""
    def steer(boundary):
        seen.append(boundary.frame)
        return [PromptSegment(boundary.frame, given[boundary.frame])] if boundary.frame in given else []
    return steer


# (frames given live, settings): a switch inside the first window (LongLive re-encodes the sink too),
# two later ones past the window, the causal rebuild, and the cache-free recompute.
@pytest.mark.parametrize("frames, changes", [
    ((13,), {}),
    ((29, 37), {}),
    ((13, 29), dict(recache="causal")),
    ((21,), RECOMPUTE),
])
def test_a_prompt_given_at_a_boundary_equals_the_same_prompt_scheduled(model, text, steer_vace, frames, changes):
    executor = {k: v for k, v in changes.items() if k == "executor"}
    config = settings(**{k: v for k, v in changes.items() if k != "executor"})
    given = {frame: random_text(seed=160 + n) for n, frame in enumerate(frames)}
    later = PromptSegment(33, random_text(seed=170))  # a scheduled switch the steering must leave alone
    steps_live, seen = [], []
    live = sample(model, [PromptSegment(0, text), later], STEER_FRAMES, config, vace=steer_vace,
                  callback=steps_live.append, steer=steer_at(given, seen), **executor)
    steps_scheduled = []
    scheduled = sample(model, [PromptSegment(0, text), later] + [PromptSegment(f, c) for f, c in given.items()],
                       STEER_FRAMES, config, vace=steer_vace, callback=steps_scheduled.append, **executor)
    assert seen == [5, 13, 21, 29, 37]
    assert torch.equal(live.latents, scheduled.latents)
    assert len(steps_live) == len(steps_scheduled)  # the same recache passes
    assert steps_live[-1].total_passes == steps_scheduled[-1].total_passes == len(steps_live)
    # the comparison has teeth: the same prompt one chunk later is another video
    late = sample(model, [PromptSegment(0, text), later] + [PromptSegment(f + 8, c) for f, c in given.items()],
                  STEER_FRAMES, config, vace=steer_vace, **executor)
    assert max_err(live.latents, late.latents) > 1e-3


def test_a_boundary_without_prompts_changes_nothing(model, text, steer_vace):
    plain = sample(model, text, STEER_FRAMES, settings(), vace=steer_vace)
    steered = sample(model, text, STEER_FRAMES, settings(), vace=steer_vace, steer=lambda boundary: [])
    assert torch.equal(plain.latents, steered.latents)


def test_a_given_prompt_replaces_a_scheduled_one_at_the_same_frame(model, text, steer_vace):
    scheduled, given = random_text(seed=181), random_text(seed=182)
    live = sample(model, [PromptSegment(0, text), PromptSegment(21, scheduled)], STEER_FRAMES, settings(),
                  vace=steer_vace, steer=steer_at({21: given}, []))
    expected = sample(model, [PromptSegment(0, text), PromptSegment(21, given)], STEER_FRAMES, settings(),
                      vace=steer_vace)
    assert torch.equal(live.latents, expected.latents)


@pytest.mark.parametrize("frame", [0, 4, 5])
def test_a_prompt_that_would_change_chunks_already_made_is_refused(model, text, steer_vace, frame):
    """At the boundary before frame 13 (latent 4), frames 0..4 map to chunks already made; frame 5
    would replace nothing but retime the chunk at latent 2."""
    def steer(boundary):
        return [PromptSegment(frame, random_text(seed=190))] if boundary.frame == 13 else []
    with pytest.raises(ValueError, match="would change chunks already made"):
        sample(model, text, STEER_FRAMES, settings(), vace=steer_vace, steer=steer)
