"""Numerics on the compute device (issue 12): an fp16 overflow stops the run with a clear error
before anything reads the broken chunk's keys, and nothing is computed in float64 on the compute device (MPS, Intel
Arc and DirectML have no float64).

The float64 tripwire runs the whole sampler with the model on PyTorch's "meta" device (shapes and
dtypes, no data): every operation goes through a dispatch mode that records any float64 result on
a device other than the CPU. The CPU is where angles and sinusoids are meant to be computed in
float64 before they move as float32; on a machine without a GPU, "meta" stands in for the GPU.
"""

from __future__ import annotations


import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import random_text, random_vace_context, tiny_model
from vace_core import sampler
from vace_core.latents import video_frames_for
from vace_core.passes import CachedPasses
from vace_core.sampler import NonFiniteError, PromptSegment, SamplerSettings, generate

HEIGHT, WIDTH = 32, 48


class Float64Tripwire(TorchDispatchMode):
    """Records every op whose result is a float64 tensor on a non-CPU device."""

    def __init__(self) -> None:
        super().__init__()
        self.offending: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float64 and tensor.device.type != "cpu":
                self.offending.append(f"{func} -> {tensor.device}")
        return out


def test_the_tripwire_catches_float64_on_the_device():
    with Float64Tripwire() as tripwire:
        torch.zeros(3, device="meta").double()
    assert tripwire.offending


@pytest.mark.parametrize("vace_attention", ["causal", "block"])
def test_no_float64_on_the_compute_device(monkeypatch, vace_attention):
    model = tiny_model("tiny-vace", seed=1).to("meta")
    monkeypatch.setattr(sampler, "check_finite", lambda *args: None)  # meta tensors hold no values
    prompts = [PromptSegment(0, random_text(seed=1)), PromptSegment(9, random_text(seed=2))]
    vace = random_vace_context(1, 6, HEIGHT, WIDTH, seed=3)
    with Float64Tripwire() as tripwire:
        result = generate(model, prompts, video_frames=video_frames_for(6), height=HEIGHT, width=WIDTH, seed=0,
                          vace=vace, settings=SamplerSettings(chunk_frames=2, window_frames=4, sink_frames=1,
                                                              vace_attention=vace_attention),
                          keep_latents=False)
    assert len(result.blocks) == 4  # the whole run happened, on meta
    assert tripwire.offending == []


def test_fp16_overflow_stops_before_the_next_chunk_reads_its_keys(monkeypatch):
    """Weights that overflow float16 (one FFN output layer scaled by 1e5, what a bad prompt can do to
    activations): chunk 1's latents are non-finite and the run stops with the fp16 advice. The
    finiteness flag is read once per chunk, after the chunk's clean pass was queued (a GPU runs that
    pass while the host waits for the flag): so chunk 1's clean pass ran, but no pass of chunk 2,
    the first to read chunk 1's keys, and on_chunk never saw the chunk."""
    model = tiny_model("tiny", seed=2).set_dtype(torch.float16)
    with torch.no_grad():
        model.blocks[1].ffn[2].weight.mul_(1e5)
    passes, chunks = [], []
    original = CachedPasses.run

    def spying(self, p):
        passes.append((p.start, p.frames, p.timestep))
        return original(self, p)

    monkeypatch.setattr(CachedPasses, "run", spying)
    settings = SamplerSettings(chunk_frames=2, window_frames=4, sink_frames=1)
    with pytest.raises(NonFiniteError) as error:
        generate(model, random_text(seed=4), video_frames=video_frames_for(6), height=HEIGHT, width=WIDTH,
                 seed=0, settings=settings, on_chunk=chunks.append)
    message = str(error.value)
    assert "fp16 overflow" in message and "chunk 1" in message and "choose bf16 or fp32" in message
    denoising = [(0, 2, step.timestep) for step in settings.schedule]
    assert passes == denoising + [(0, 2, 0.0)]  # chunk 1's passes and its clean pass, nothing after
    assert chunks == []


@pytest.mark.parametrize("poison, blamed", [
    (float("nan"), "the prompt from frame 5 holds NaN or infinity"),
    (1e30, "the prompt from frame 5 holds values as large as 1e+30"),  # what (word:1e30) makes
])
def test_broken_prompts_are_blamed_not_the_weights(poison, blamed):
    """A prompt the nodes would refuse (non-finite) or that an extreme weight inflated, given to the
    library directly: the guard names that input and the prompt weights, and says nothing of the
    model files (whose message, below, says the inputs were finite)."""
    text = random_text(seed=5)
    text[0, 1] = poison
    prompts = [PromptSegment(0, random_text(seed=4)), PromptSegment(5, text)]
    with pytest.raises(NonFiniteError) as error:
        generate(tiny_model("tiny", seed=2), prompts, video_frames=video_frames_for(4), height=HEIGHT, width=WIDTH,
                 seed=0, settings=SamplerSettings(chunk_frames=2, window_frames=4, sink_frames=1))
    message = str(error.value)
    assert "chunk 2" in message and blamed in message and "prompt weights" in message, message
    assert "weights are broken" not in message and "checkpoint" not in message


def test_bf16_nan_names_the_weights():
    model = tiny_model("tiny", seed=2).set_dtype(torch.bfloat16)
    with torch.no_grad():
        model.blocks[0].ffn[0].bias.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"computes in bfloat16: the weights are broken .*the inputs are finite"):
        generate(model, random_text(seed=4), video_frames=video_frames_for(2), height=HEIGHT, width=WIDTH,
                 seed=0, settings=SamplerSettings(chunk_frames=2, window_frames=4, sink_frames=1))
