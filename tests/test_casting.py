"""vace_core.casting: fp8 weights with a per-tensor scale, cast per layer to the compute dtype.

The arithmetic is checked against ComfyUI's (quantize: x * (1/scale), clamp to +-448, round;
dequantize: cast, then multiply by the scale in the target dtype) and against an independent
quantizer (vace_core.testing.fixtures.fp8_scaled, written separately for the checkpoint fixtures).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import randn
from vace_core.testing import fixtures
from vace_core.casting import (CastLinear, cast_operations, compute_dtype_of, dequantize, quantize,
                               stored_like)

E4M3 = torch.float8_e4m3fn


def scaled_linear(out_features: int, in_features: int, compute: torch.dtype, fp8_matmul: bool = False,
                  seed: int = 0) -> tuple[CastLinear, torch.Tensor]:
    """A cast Linear holding an fp8 copy of a random weight (std 1/sqrt(in)), and that weight."""
    weight = randn(out_features, in_features, seed=seed) / in_features ** 0.5
    layer = cast_operations(compute, fp8_matmul).Linear(in_features, out_features)
    stored, scale = quantize(weight, E4M3)
    layer.load_state_dict({"weight": stored, "bias": randn(out_features, seed=seed + 1) * 0.1,
                           "weight_scale": scale}, assign=True)
    return layer, weight


def test_quantize_uses_the_whole_range_and_matches_an_independent_quantizer():
    weight = randn(64, 48, seed=1) * 0.02
    stored, scale = quantize(weight, E4M3)
    assert stored.dtype == E4M3 and scale.dtype == torch.float32 and scale.shape == ()
    assert torch.isclose(scale, weight.abs().max() / 448)
    assert stored.float().abs().max() == 448  # the largest weight lands on fp8's largest value
    theirs, their_scale = fixtures.fp8_scaled(weight)
    assert torch.equal(stored.view(torch.uint8), theirs.view(torch.uint8)) and torch.equal(scale, their_scale)
    # e4m3 keeps 3 mantissa bits: each weight within half a step, 2^-4 of its size (or of the
    # smallest normal, 2^-6 * scale, for the few below it)
    error = (dequantize(stored, scale, torch.float32) - weight).abs()
    assert (error <= 2**-4 * torch.maximum(weight.abs(), 2**-6 * scale) + 1e-12).all()


def test_an_all_zero_weight_gets_scale_one():
    stored, scale = quantize(torch.zeros(4, 4), E4M3)
    assert scale == 1 and not stored.float().any()


def test_dequantize_casts_then_multiplies_in_the_target_dtype():
    stored, scale = quantize(randn(8, 8, seed=2), E4M3)
    ours = dequantize(stored, scale, torch.bfloat16)
    assert ours.dtype == torch.bfloat16
    assert torch.equal(ours, stored.to(torch.bfloat16) * scale.to(torch.bfloat16))  # ComfyUI's order
    assert torch.equal(dequantize(stored, None, torch.float32), stored.float())  # unscaled fp8


@pytest.mark.parametrize("compute", [torch.float32, torch.bfloat16])
def test_cast_linear_computes_with_the_dequantized_weight(compute):
    layer, _ = scaled_linear(32, 64, compute)
    assert layer.weight.dtype == E4M3 and compute_dtype_of(layer) == compute
    x = randn(2, 5, 64, seed=3).to(compute)
    expected = F.linear(x, dequantize(layer.weight, layer.weight_scale, compute), layer.bias.to(compute))
    out = layer(x)
    assert out.dtype == compute and torch.equal(out, expected)
    # the scale is what makes it right: without it every output is ~1/scale too large
    assert (F.linear(x, layer.weight.to(compute), layer.bias.to(compute)) - expected).abs().max() > 10


def test_fp8_matmul_rounds_the_input_too():
    """The fp8 matmul (torch._scaled_mm, on the CPU here) rounds the input to e4m3 as well (the
    weight is rounded in both paths): 3 mantissa bits give ~2.4 % RMS relative rounding error, and
    2.7e-2 is measured against the cast path; tolerance 4e-2. Skipping the weight scale (a planted
    fault) is off by orders of magnitude."""
    fast, _ = scaled_linear(32, 64, torch.float32, fp8_matmul=True)
    cast = cast_operations(torch.float32).Linear(64, 32)
    cast.load_state_dict(fast.state_dict(), assign=True)
    x = randn(3, 7, 64, seed=4)
    exact, quick = cast(x), fast(x)
    relative = ((quick - exact).norm() / exact.norm()).item()
    assert 0 < relative <= 4e-2
    with torch.no_grad():
        fast.weight_scale.fill_(1.0)
    assert ((fast(x) - exact).norm() / exact.norm()).item() > 10


def test_fp8_matmul_clamps_large_inputs_like_comfyui():
    fast, _ = scaled_linear(16, 32, torch.float32, fp8_matmul=True)
    x = randn(4, 32, seed=5) * 1000  # beyond e4m3's 448: clamped, not infinite
    clamped = torch.clamp(x, -448, 448).to(E4M3).float()
    expected = F.linear(clamped, dequantize(fast.weight, fast.weight_scale, torch.float32), fast.bias)
    assert torch.allclose(fast(x), expected, rtol=1e-5, atol=1e-3)


def test_plain_layers_compute_in_their_weight_dtype():
    layer = torch.nn.Linear(4, 4).to(torch.float16)
    assert compute_dtype_of(layer) == torch.float16


def test_stored_like_rounds_back_at_the_layer_scale_and_clamps():
    layer, _ = scaled_linear(8, 16, torch.float32, seed=6)
    weight, scale = layer.weight, layer.weight_scale
    merged = dequantize(weight, scale, torch.float32) + 0.01
    again = stored_like(merged, weight, scale)
    assert again.dtype == E4M3
    assert torch.equal(again.view(torch.uint8), quantize(merged, E4M3, scale)[0].view(torch.uint8))
    huge = stored_like(merged * 1e3, weight, scale)
    assert torch.isfinite(huge.float()).all() and huge.float().abs().max() == 448  # clamped, no NaN
    plain = torch.ones(2, dtype=torch.bfloat16)
    assert stored_like(torch.full((2,), 1.5), plain, None).dtype == torch.bfloat16
