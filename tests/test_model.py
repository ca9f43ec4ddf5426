"""Fidelity of the causal Wan / VACE model (docs/how-it-works.md#what-the-tests-prove, 1-3).

* Invariant 1: `forward_full` equals the independent float64 reference in `reference_wan.py`.
* Invariant 2: `forward_block` with a KV cache equals the same block-causal attention recomputed
  without a cache (explicit frame masks built from the window rule).
* Invariant 3: VACE scale 0 is bit-identical to the model without VACE.

Weights are random (seeded) and scaled so activations stay O(1) (outputs have std ~1.2), so the
absolute tolerances below are also relative ones.
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache

import pytest
import torch

from reference_wan import random_wan_state, wan_forward
from vace_core.config import architecture
from vace_core.cache import CacheLayout, KVCache
from vace_core.model import CausalWanModel

# float32 model vs float64 reference: measured max abs error 2-4e-6 on outputs of std ~1.2
# (float32 rounding through 4 blocks + head); 1e-5 leaves ~3x margin. Mistakes planted on purpose
# moved outputs by 1.8e-4 (exact instead of tanh GELU) up to ~3 (sin/cos swapped in the time
# embedding); RoPE axis split, pair layout, text padding and the norm3 bias all gave >2e-2.
FP32_TOL = 1e-5
BATCH = 2


@lru_cache(maxsize=None)
def model_and_state(name: str) -> tuple[CausalWanModel, dict[str, torch.Tensor]]:
    """The preset's model with seeded random weights (shared, never modified) and those weights.
    Keys sort main-before-vace_, so "tiny" and "tiny-vace" share their main weights."""
    model = CausalWanModel(architecture(name))
    state = random_wan_state({k: v.shape for k, v in model.state_dict().items()}, seed=1)
    model.load_state_dict(state, strict=True)
    return model.eval(), state


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def inputs(frames: int, height: int, width: int, text_len: int = 77, seed: int = 0):
    """latents [B,16,F,H,W], timesteps [B], text [B,L,64], VACE context [B,96,F,H,W]."""
    latents = randn(BATCH, 16, frames, height, width, seed=seed)
    timestep = torch.tensor([937.5, 250.0])
    context = randn(BATCH, text_len, 64, seed=seed + 1)
    vace = randn(BATCH, 96, frames, height, width, seed=seed + 2)
    return latents, timestep, context, vace


def max_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape
    return (ours.double() - ref.double()).abs().max().item()


# ---------------------------------------------------------------------------------------------
# invariant 1: bidirectional limit == upstream Wan / VACE


# (latent frames, latent height/width, text tokens): every frame count, both sizes, both text lengths
GRIDS = [(1, (4, 6), 77), (1, (8, 8), 512), (3, (8, 8), 77), (3, (4, 6), 512), (5, (4, 6), 77),
         (5, (8, 8), 512)]


@pytest.mark.parametrize("frames,size,text_len", GRIDS)
@pytest.mark.parametrize("variant", ["tiny", "tiny-vace", "tiny-vace/no-context"])
@torch.no_grad()
def test_forward_full_matches_reference(variant, frames, size, text_len):
    name = variant.split("/")[0]
    model, state = model_and_state(name)
    latents, timestep, context, vace = inputs(frames, *size, text_len=text_len, seed=frames)
    vace = vace if variant == "tiny-vace" else None

    ours = model.forward_full(latents, timestep, context, vace_context=vace)
    ref = wan_forward(state, latents, timestep, context, num_heads=model.config.num_heads,
                      vace_context=vace, vace_layers=model.config.vace_layers)
    assert ours.dtype == torch.float32
    assert max_err(ours, ref) <= FP32_TOL


@torch.no_grad()
def test_vace_hints_change_the_output():
    """Guards the VACE comparisons above against vacuity: the hints must matter."""
    model, _ = model_and_state("tiny-vace")
    latents, timestep, context, vace = inputs(3, 4, 6)
    with_hints = model.forward_full(latents, timestep, context, vace_context=vace)
    without = model.forward_full(latents, timestep, context)
    assert max_err(with_hints, without) > 0.1


@pytest.mark.parametrize("scales", [[0.5, -1.25], [0.0, 2.0]])
@torch.no_grad()
def test_per_layer_vace_scale_matches_reference(scales):
    model, state = model_and_state("tiny-vace")
    latents, timestep, context, vace = inputs(3, 4, 6, seed=7)
    ours = model.forward_full(latents, timestep, context, vace_context=vace, vace_scale=scales)
    ref = wan_forward(state, latents, timestep, context, num_heads=2, vace_context=vace,
                      vace_scale=scales, vace_layers=model.config.vace_layers)
    assert max_err(ours, ref) <= FP32_TOL


@torch.no_grad()
def test_prompt_longer_than_512_tokens_keeps_every_token():
    model, state = model_and_state("tiny")
    latents, timestep, context, _ = inputs(2, 4, 4, text_len=530, seed=11)
    ours = model.forward_full(latents, timestep, context)
    ref = wan_forward(state, latents, timestep, context, num_heads=2)
    truncated = model.forward_full(latents, timestep, context[:, :512])
    assert max_err(ours, ref) <= FP32_TOL
    assert max_err(ours, truncated) > 1e-4


@torch.no_grad()
def test_per_frame_timesteps_mask_and_offset_match_reference():
    """The causal extensions (timestep per frame [B, F], frame mask, RoPE start frame) against the
    reference's own implementation of them."""
    model, state = model_and_state("tiny-vace")
    latents, _, context, vace = inputs(4, 4, 6, seed=5)
    timestep = torch.tensor([[0.0, 0.0, 500.0, 500.0], [0.0, 250.0, 1000.0, 1000.0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.bool)
    text = model.encode_text(context)
    ours = model.forward_block(latents, timestep, text, start_frame=6, vace_context=vace,
                               frame_mask=mask, vace_frame_mask=mask)
    ref = wan_forward(state, latents, timestep, context, num_heads=2, vace_context=vace,
                      vace_layers=model.config.vace_layers, frame_mask=mask, start_frame=6)
    assert max_err(ours, ref) <= FP32_TOL


# ---------------------------------------------------------------------------------------------
# invariant 3: scale 0 == T2V model


@pytest.mark.parametrize("zero", [0.0, 0, [0.0, 0.0]])
@torch.no_grad()
def test_vace_scale_zero_is_bit_identical_to_plain_model(zero):
    vace_model, state = model_and_state("tiny-vace")
    plain = CausalWanModel(architecture("tiny"))
    plain.load_state_dict({k: v for k, v in state.items() if not k.startswith("vace_")}, strict=True)
    latents, timestep, context, vace = inputs(3, 4, 6, seed=3)
    with_vace = vace_model.forward_full(latents, timestep, context, vace_context=vace, vace_scale=zero)
    assert torch.equal(with_vace, plain.forward_full(latents, timestep, context))


# ---------------------------------------------------------------------------------------------
# invariant 2: KV cache == block-causal recompute


def window_frame_mask(blocks: list[tuple[int, int]], sink_end: int, rolling: int) -> torch.Tensor:
    """[F, F] (query frame, key frame): block [s, e) sees frames < min(sink_end, e) and
    [max(sink_end, e - rolling), e)."""
    total = blocks[-1][1]
    mask = torch.zeros(total, total, dtype=torch.bool)
    for start, end in blocks:
        mask[start:end, :min(sink_end, end)] = True
        mask[start:end, max(sink_end, end - rolling):end] = True
    return mask


def same_block_mask(blocks: list[tuple[int, int]]) -> torch.Tensor:
    total = blocks[-1][1]
    mask = torch.zeros(total, total, dtype=torch.bool)
    for start, end in blocks:
        mask[start:end, start:end] = True
    return mask


def causal_blocks(ref_frames: int, chunk: int, chunks: int) -> list[tuple[int, int]]:
    """References form the first block, then `chunks` chunks of `chunk` frames."""
    blocks = [(0, ref_frames)] if ref_frames else []
    start = ref_frames
    for _ in range(chunks):
        blocks.append((start, start + chunk))
        start += chunk
    return blocks


# (ref_frames, sink_frames, window_frames, chunk, chunks)
CACHE_CASES = {
    "unbounded": (1, 2, 12, 2, 4),  # window never fills: plain block-causal attention
    "rolling": (1, 1, 4, 2, 4),  # the last blocks no longer see frames 2..5
    "partial-blocks": (0, 1, 5, 3, 3),  # the window cuts through an earlier chunk
}


@pytest.mark.parametrize("vace_attention", [None, "block", "causal"])
@pytest.mark.parametrize("case", list(CACHE_CASES))
@torch.no_grad()
def test_kv_cache_equals_masked_recompute(case, vace_attention):
    """Per block: a noisy pass (reads the cache, writes its own noisy K/V) then a clean pass at t=0
    (overwrites them), as the sampler does. Each pass equals a cache-free forward over frames
    [0, end) with clean history at t=0, the current block at its t, and the window's frame mask.
    VACE blocks see their own block ("block", no cache) or the main window through a VACE cache of
    the same layout ("causal")."""
    ref_frames, sink_frames, window_frames, chunk, chunks = CACHE_CASES[case]
    model, _ = model_and_state("tiny-vace")
    blocks = causal_blocks(ref_frames, chunk, chunks)
    total, height, width = blocks[-1][1], 4, 4
    sink_end, rolling = ref_frames + sink_frames, window_frames - sink_frames
    mask = window_frame_mask(blocks, sink_end, rolling)
    # the rolling window must really drop frames, or the case is vacuous
    assert (case == "unbounded") == torch.equal(mask, window_frame_mask(blocks, sink_end, total))
    vace_mask = mask if vace_attention == "causal" else same_block_mask(blocks)

    clean = randn(BATCH, 16, total, height, width, seed=20)
    noisy = randn(BATCH, 16, total, height, width, seed=21)
    vace = randn(BATCH, 96, total, height, width, seed=22) if vace_attention else None
    text = model.encode_text(randn(BATCH, 40, 64, seed=23))
    layout = CacheLayout(tokens_per_frame=(height // 2) * (width // 2), sink_end=sink_end, rolling_frames=rolling)
    config = model.config

    def new_cache(layers: int) -> KVCache:
        return KVCache(num_layers=layers, batch=BATCH, num_heads=config.num_heads, head_dim=config.head_dim,
                       layout=layout, dtype=torch.float32, device="cpu")

    cache = new_cache(config.num_layers)
    vace_cache = new_cache(config.num_vace_blocks) if vace_attention == "causal" else None

    errors = []
    for index, (start, end) in enumerate(blocks):
        visible = layout.visible_frames(end)
        for latents, t in ((noisy, 1000.0 - 100.0 * index), (clean, 0.0)):
            access = cache.begin_block(start, end - start, visible)
            vace_access = vace_cache.begin_block(start, end - start, visible) if vace_cache else None
            cached = model.forward_block(latents[:, :, start:end], torch.full((BATCH,), t), text, start, access,
                                         None if vace is None else vace[:, :, start:end], vace_cache=vace_access)
            history = torch.cat([clean[:, :, :start], latents[:, :, start:end]], dim=2)
            per_frame_t = torch.tensor([0.0] * start + [t] * (end - start)).expand(BATCH, -1)
            recomputed = model.forward_block(history, per_frame_t, text, start_frame=0,
                                             vace_context=None if vace is None else vace[:, :, :end],
                                             frame_mask=mask[:end, :end],
                                             vace_frame_mask=vace_mask[:end, :end])
            errors.append(max_err(cached, recomputed[:, :, start:end]))
    assert max(errors) <= FP32_TOL, errors


@torch.no_grad()
def test_rolling_window_changes_the_result():
    """The masked recompute of the rolling case differs from unbounded block-causal attention,
    so the window comparison above actually tests the window."""
    model, _ = model_and_state("tiny")
    blocks = causal_blocks(1, 2, 4)
    latents = randn(1, 16, 9, 4, 4, seed=30)
    text = model.encode_text(randn(1, 20, 64, seed=31))
    rolling = model.forward_block(latents, 0.0, text, frame_mask=window_frame_mask(blocks, 2, 3))
    unbounded = model.forward_block(latents, 0.0, text, frame_mask=window_frame_mask(blocks, 2, 100))
    assert max_err(rolling[:, :, :5], unbounded[:, :, :5]) <= FP32_TOL
    assert max_err(rolling[:, :, 5:], unbounded[:, :, 5:]) > 1e-3


@torch.no_grad()
def test_per_frame_timesteps_equal_per_block_calls():
    """One call with timesteps [B, F] and a block-diagonal mask == one call per block with its own
    scalar timestep at its absolute start frame."""
    model, _ = model_and_state("tiny-vace")
    blocks = [(0, 1), (1, 3), (3, 6)]
    block_t = [0.0, 625.0, 1000.0]
    latents, _, context, vace = inputs(6, 4, 6, seed=40)
    text = model.encode_text(context)
    per_frame = torch.tensor([t for (s, e), t in zip(blocks, block_t) for _ in range(s, e)]).expand(BATCH, -1)
    diagonal = same_block_mask(blocks)
    joint = model.forward_block(latents, per_frame, text, vace_context=vace,
                                frame_mask=diagonal, vace_frame_mask=diagonal)
    separate = torch.cat([
        model.forward_block(latents[:, :, s:e], t, text, start_frame=s, vace_context=vace[:, :, s:e])
        for (s, e), t in zip(blocks, block_t)
    ], dim=2)
    assert max_err(joint, separate) <= FP32_TOL


# ---------------------------------------------------------------------------------------------
# clear errors


def test_vace_context_without_vace_weights_is_a_clear_error():
    model, _ = model_and_state("tiny")
    latents, timestep, context, vace = inputs(1, 4, 4)
    with pytest.raises(ValueError, match="no VACE weights"):
        model.forward_full(latents, timestep, context, vace_context=vace)


@pytest.mark.parametrize("shape", [(BATCH, 96, 2, 4, 4), (BATCH, 96, 1, 8, 4), (BATCH, 32, 1, 4, 4),
                                   (BATCH + 1, 96, 1, 4, 4)])
def test_vace_context_of_wrong_shape_is_a_clear_error(shape):
    model, _ = model_and_state("tiny-vace")
    latents, timestep, context, _ = inputs(1, 4, 4)
    with pytest.raises(ValueError, match=r"VACE context has shape .* expected \(2, 96, 1, 4, 4\) or one context"):
        model.forward_full(latents, timestep, context, vace_context=torch.zeros(shape))


def test_one_vace_context_serves_every_latent_of_a_batch():
    """A context of batch 1 is the same context for each latent (a batch of videos shares one)."""
    model, _ = model_and_state("tiny-vace")
    latents, timestep, context, vace = inputs(1, 4, 4)
    shared = model.forward_full(latents, timestep, context, vace_context=vace[:1])
    each = model.forward_full(latents, timestep, context, vace_context=vace[:1].expand(BATCH, -1, -1, -1, -1))
    # the VACE patch embedding of a batch rounds like any batched convolution (measured 1.5e-6)
    assert (shared - each).abs().max().item() < 1e-5
    assert (shared - model.forward_full(latents, timestep, context, vace_context=vace)).abs().max().item() > 1e-2


def test_text_of_wrong_width_is_a_clear_error():
    model, _ = model_and_state("tiny")
    latents, timestep, _, _ = inputs(1, 4, 4)
    with pytest.raises(ValueError, match="32 channels but the model expects 64"):
        model.forward_full(latents, timestep, torch.zeros(BATCH, 10, 32))


# ---------------------------------------------------------------------------------------------
# bf16


@pytest.mark.parametrize("name", ["tiny", "tiny-vace"])
@torch.no_grad()
def test_bf16_forward_runs_on_cpu_close_to_fp32(name):
    """bf16 keeps 8 mantissa bits (rounding 2^-9 ~ 0.2% per op); over ~30 chained matmuls the
    measured error is ~0.5% RMS of the output and max abs ~0.03 on outputs of std ~1.2 (|max| ~5).
    Tolerances: relative RMS error <= 2%, max abs error <= 0.1, i.e. ~4x the measured error and still
    far below what a real mistake does (the VACE hints alone move the output by O(1))."""
    model, _ = model_and_state(name)
    half = copy.deepcopy(model).set_dtype(torch.bfloat16)
    assert half.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
    latents, timestep, context, vace = inputs(3, 4, 6, seed=50)
    vace = vace if model.has_vace else None
    full = model.forward_full(latents, timestep, context, vace_context=vace)
    low = half.forward_full(latents, timestep, context, vace_context=vace)
    assert torch.isfinite(low).all()
    diff = low.float() - full
    assert diff.abs().max() > 0  # really computed in bf16
    assert diff.norm() / full.norm() <= 0.02
    assert diff.abs().max() <= 0.1


# ---------------------------------------------------------------------------------------------
# the prompt's padding, merged


@torch.no_grad()
def test_merged_padding_equals_attending_to_every_padded_row(monkeypatch):
    """A 7-token prompt is padded to 512 rows; the 505 zero rows embed to one vector, kept once with
    a logit bias of ln(505). That equals attention over all 512 rows (float32 rounding: measured
    ~1e-6); the same merge without the bias (the padding counted once) is far off."""
    from vace_core import model as model_module

    model, _ = model_and_state("tiny-vace")
    latents, timestep, _, vace = inputs(3, 4, 6, seed=60)
    context = randn(BATCH, 7, 64, seed=61)
    merged_state = model.encode_text(context)
    assert merged_state.length == 8 and merged_state.block_kv[0][0].shape[2] == 8
    assert torch.allclose(merged_state.bias.view(-1), torch.tensor([0.0] * 7 + [math.log(505)]))
    merged = model.forward_full(latents, timestep, merged_state, vace_context=vace)

    monkeypatch.setattr(model_module, "_merge_padding", lambda c: (c, None))
    full_state = model.encode_text(context)
    assert full_state.length == 512
    full = model.forward_full(latents, timestep, full_state, vace_context=vace)
    assert max_err(merged, full) <= FP32_TOL

    unbiased = model_module.TextState(merged_state.tokens, merged_state.block_kv, merged_state.vace_kv, None)
    assert max_err(model.forward_full(latents, timestep, unbiased, vace_context=vace), full) > 1e-3
