"""bf16 and fp16, what users run on GPUs, against the float32 run of the same weights and noise.

An R2V run with two prompt switches and a rolling window (the attention tests' run), computed by
the same model cast to bf16 / fp16 (norms, modulation and the residual stream stay float32, as
upstream runs them). The difference is measured relative to the float32 video:
    rms = ||half - fp32||_2 / ||fp32||_2,    peak = max |half - fp32| / max |fp32|.

Measured on the CPU (tiny-vace, two weight seeds): rms 3.8-4.2e-3 in bf16 and 4.9-5.2e-4 in fp16,
peak 3.5-6.0e-3 and 6.2-6.6e-4. That is one unit roundoff of each format (u = 2^-8 = 3.9e-3 for
bf16's 8-bit significand, 2^-11 = 4.9e-4 for fp16's 11 bits) and the ratio of the two is the 2^3 of
their significands: the difference is rounding, not a fault. Tolerances: rms <= 2u, peak <= 4u.

Planted faults they catch (measured): the prompt's padding bias lost, what cuDNN reading a float32
bias as bf16 would do (rms 0.32-0.37 in both formats); the timestep rounded to the compute dtype
before its sinusoid, a plausible half-precision slip (rms 1.2e-1 in bf16, 9.4e-3 in fp16: 30u and
19u). Rounding that stays below one unit roundoff (the float32 norms, modulation or RoPE done in the
compute dtype) moves these figures by less than their spread between seeds, so no test can tell it.
The fp16 overflow guard is tested in test_numerics.py.
"""

from __future__ import annotations

import pytest
import torch

from helpers import random_text, random_vace_context, tiny_model
from vace_core import model as model_module
from vace_core.latents import video_frames_for
from vace_core.sampler import PromptSegment, SamplerSettings, generate

HEIGHT, WIDTH = 32, 48
REFS, FRAMES = 1, 10
SWITCHES = (16, 32)  # video frames: latent 4 (inside the first window) and 8 (after it)
UNIT_ROUNDOFF = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
RMS_TOL = {dtype: 2 * u for dtype, u in UNIT_ROUNDOFF.items()}
PEAK_TOL = {dtype: 4 * u for dtype, u in UNIT_ROUNDOFF.items()}
DTYPES = pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])


def r2v_with_switches(dtype: torch.dtype) -> torch.Tensor:
    model = tiny_model("tiny-vace", seed=4).set_dtype(dtype)
    prompts = [PromptSegment(0, random_text(seed=1))] + [PromptSegment(v, random_text(seed=2 + i))
                                                         for i, v in enumerate(SWITCHES)]
    settings = SamplerSettings(chunk_frames=2, window_frames=4, sink_frames=1)
    return generate(model, prompts, video_frames=video_frames_for(FRAMES), height=HEIGHT, width=WIDTH, seed=0,
                    vace=random_vace_context(REFS, FRAMES, HEIGHT, WIDTH, seed=3), settings=settings).latents


def differences(out: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(rms, peak) of out - reference relative to the reference (see the module docstring)."""
    diff = (out.double() - reference.double())
    return (diff.norm().item() / reference.double().norm().item(),
            diff.abs().max().item() / reference.abs().max().item())


@pytest.fixture(scope="module")
def fp32_video() -> torch.Tensor:
    return r2v_with_switches(torch.float32)


@DTYPES
def test_half_precision_equals_float32_within_its_rounding(fp32_video, dtype):
    rms, peak = differences(r2v_with_switches(dtype), fp32_video)
    print(f"{dtype} vs float32: rms {rms:.2e} ({rms / UNIT_ROUNDOFF[dtype]:.2f} u), peak {peak:.2e}")
    assert rms <= RMS_TOL[dtype] and peak <= PEAK_TOL[dtype]
    assert rms > UNIT_ROUNDOFF[dtype] / 4  # it did run in half precision


@DTYPES
def test_the_tolerance_catches_a_lost_padding_bias(fp32_video, dtype, monkeypatch):
    encode_text = model_module.CausalWanModel.encode_text

    def without_bias(self, context):
        text = encode_text(self, context)
        text.bias = None
        return text

    monkeypatch.setattr(model_module.CausalWanModel, "encode_text", without_bias)
    rms, peak = differences(r2v_with_switches(dtype), fp32_video)
    assert rms > 10 * RMS_TOL[dtype] and peak > PEAK_TOL[dtype]


@DTYPES
def test_the_tolerance_catches_a_timestep_rounded_to_the_compute_dtype(fp32_video, dtype, monkeypatch):
    sinusoid = model_module.sinusoidal_embedding
    monkeypatch.setattr(model_module, "sinusoidal_embedding",
                        lambda freq_dim, timesteps: sinusoid(freq_dim, timesteps.to(dtype)))
    rms, peak = differences(r2v_with_switches(dtype), fp32_video)
    assert rms > 5 * RMS_TOL[dtype] and peak > PEAK_TOL[dtype]
