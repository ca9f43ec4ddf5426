"""The attention kernels (vace_core.attention): injected into the model like `operations`, and the
mask every call gets.

CUDA's memory-efficient SDPA kernel rejects a float mask whose dtype is not q's ("invalid dtype for
bias") and cuDNN has been reported to read a float32 mask as bf16, which would silently turn the
prompt's padding bias into other numbers. The CPU kernel accepts any float mask, so only a tripwire
sees a wrong one: `MaskTripwire` wraps the kernels the model calls and checks every call (mask None,
boolean, or in q's dtype on q's device) over R2V runs with two prompt switches in bf16 and fp16, in
every `vace_attention` x `recache` mode and on the cache-free recompute path.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from helpers import random_text, random_vace_context, tiny_model
from vace_core import attention, model as model_module
from vace_core.attention import SDPA, AttentionKernels
from vace_core.latents import video_frames_for
from vace_core.passes import VACE_ATTENTION_MODES, CachedPasses
from vace_core.plan import RECACHE_MODES
from vace_core.sampler import PromptSegment, SamplerSettings, generate
from vace_core.testing.recompute import RecomputedPasses

HEIGHT, WIDTH = 32, 48
REFS, FRAMES = 1, 10  # window 4 of chunks 2 with a sink of 1: the window rolls from chunk 3
# prompt b at latent frame 4 (inside the first window: LongLive's recache re-encodes the sink),
# prompt c at latent frame 8 (after it: only the rolling frames are re-encoded)
SWITCHES = (16, 32)


def check_mask(q: torch.Tensor, mask: torch.Tensor | None) -> str | None:
    """What is wrong with `mask` for queries `q`, or None (see the module docstring)."""
    if mask is None:
        return None
    if mask.dtype != torch.bool and mask.dtype != q.dtype:
        return f"a {mask.dtype} mask for {q.dtype} queries"
    if mask.device != q.device:
        return f"a mask on {mask.device} for queries on {q.device}"
    return None


class MaskTripwire:
    """Wraps attention kernels; counts the calls by kind and records every unfit mask."""

    def __init__(self, inner: AttentionKernels = SDPA) -> None:
        self.inner = inner
        self.calls: Counter = Counter()
        self.mismatches: list[str] = []

    def kernels(self) -> AttentionKernels:
        def unmasked(q, k, v):
            self.calls["unmasked"] += 1
            return self.inner.unmasked(q, k, v)

        def masked(q, k, v, mask):
            kind = "no mask" if mask is None else "bool mask" if mask.dtype == torch.bool else "float mask"
            self.calls[kind] += 1
            problem = check_mask(q, mask)
            if problem is not None:
                self.mismatches.append(problem)
            return self.inner.masked(q, k, v, mask)

        return AttentionKernels(unmasked, masked, f"tripwire({self.inner.name})")


def r2v_with_switches(model, executor=CachedPasses.for_run, batch: int = 1, **changes) -> torch.Tensor:
    prompts = [PromptSegment(0, random_text(seed=1))] + [PromptSegment(v, random_text(seed=2 + i))
                                                         for i, v in enumerate(SWITCHES)]
    settings = SamplerSettings(chunk_frames=2, window_frames=4, sink_frames=1, denoising_steps=(1000, 500),
                               **changes)
    return generate(model, prompts, video_frames=video_frames_for(FRAMES), height=HEIGHT, width=WIDTH, seed=0,
                    vace=random_vace_context(REFS, FRAMES, HEIGHT, WIDTH, seed=3), settings=settings,
                    executor=executor, batch=batch).latents


@pytest.fixture(scope="module")
def models() -> dict[torch.dtype, torch.nn.Module]:
    return {dtype: tiny_model("tiny-vace", seed=4).set_dtype(dtype) for dtype in (torch.bfloat16, torch.float16)}


@pytest.mark.parametrize("recache", RECACHE_MODES)
@pytest.mark.parametrize("vace_attention", VACE_ATTENTION_MODES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_every_attention_call_gets_a_mask_fit_for_the_kernels(models, dtype, vace_attention, recache):
    model = models[dtype]
    tripwire = MaskTripwire()
    model.attention = tripwire.kernels()
    r2v_with_switches(model, vace_attention=vace_attention, recache=recache)
    assert tripwire.mismatches == []
    # the padding bias reached the kernels (cross-attention), self-attention went unmasked
    assert tripwire.calls["float mask"] > 0 and tripwire.calls["unmasked"] > 0
    assert tripwire.calls["bool mask"] == 0


def test_a_batch_gives_the_kernels_the_same_masks_and_equal_batches(models):
    """A batch of 2 (issue 25): the prompt's K/V reach cross-attention as views of the batch, so every
    call's q, k and v share their batch (a fused kernel takes no broadcast), with the same masks."""
    model = models[torch.bfloat16]
    tripwire = MaskTripwire()
    batches = []
    kernels = tripwire.kernels()
    model.attention = AttentionKernels(
        lambda q, k, v: batches.append({t.shape[0] for t in (q, k, v)}) or kernels.unmasked(q, k, v),
        lambda q, k, v, mask: batches.append({t.shape[0] for t in (q, k, v)}) or kernels.masked(q, k, v, mask),
        "batch tripwire")
    r2v_with_switches(model, batch=2)
    assert tripwire.mismatches == [] and tripwire.calls["float mask"] > 0 and tripwire.calls["bool mask"] == 0
    assert batches and all(b == {2} for b in batches)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_the_recompute_path_masks_fit_the_kernels_too(models, dtype):
    """No cache: self-attention takes boolean frame masks, cross-attention -inf masks that keep
    each token on its own prompt (three prompts side by side after the switches)."""
    model = models[dtype]
    tripwire = MaskTripwire()
    model.attention = tripwire.kernels()
    r2v_with_switches(model, executor=RecomputedPasses.for_run)
    assert tripwire.mismatches == []
    assert tripwire.calls["bool mask"] > 0 and tripwire.calls["float mask"] > 0


def test_the_tripwire_catches_a_float32_padding_bias(models, monkeypatch):
    """Planted: the prompt's bias left in float32, as before issue 16."""
    encode_text = model_module.CausalWanModel.encode_text

    def float32_bias(self, context):
        text = encode_text(self, context)
        text.bias = text.bias.float()
        return text

    monkeypatch.setattr(model_module.CausalWanModel, "encode_text", float32_bias)
    model = models[torch.bfloat16]
    tripwire = MaskTripwire()
    model.attention = tripwire.kernels()
    r2v_with_switches(model)
    assert tripwire.mismatches and set(tripwire.mismatches) == {"a torch.float32 mask for torch.bfloat16 queries"}


def math_kernels() -> AttentionKernels:
    """Attention written out in float64 (softmax of scaled scores, boolean masks as -inf), an
    independent stand-in for a host's kernel."""
    def masked(q, k, v, mask):
        scores = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.double()
        out = scores.softmax(dim=-1) @ v.double()
        return out.to(q.dtype).transpose(1, 2).flatten(2)

    return AttentionKernels(lambda q, k, v: masked(q, k, v, None), masked, "float64 math")


# float32 SDPA against the float64 kernel: measured max abs error 1.4e-6 on latents of std ~1.3
# (float32 rounding inside the kernel, accumulated over the run); a masked kernel that ignores its
# mask (the padding bias lost) moves them by > 1e-1.
INJECTED_TOL = 2e-5


def test_injected_kernels_serve_the_model_and_equal_sdpa():
    model = tiny_model("tiny-vace", seed=4)
    reference = r2v_with_switches(model)
    tripwire = MaskTripwire(math_kernels())
    model.attention = tripwire.kernels()
    injected = r2v_with_switches(model)
    err = (injected - reference).abs().max().item()
    print(f"float64 math kernels vs SDPA: max abs err {err:.2e}")
    assert err <= INJECTED_TOL
    # every self-attention call of the cached passes went to `unmasked`, cross-attention to `masked`
    assert tripwire.calls["unmasked"] == tripwire.calls["float mask"] > 0

    ignoring = math_kernels()
    model.attention = AttentionKernels(ignoring.unmasked, lambda q, k, v, mask: ignoring.masked(q, k, v, None),
                                       "mask ignored")
    assert (r2v_with_switches(model) - reference).abs().max().item() > 1e-1


def test_cuda_priority_is_flash_cudnn_efficient_never_math():
    backends = [b.name for b in attention.CUDA_BACKENDS]
    assert backends == ["FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_cuda_kernels_take_the_bias_in_the_queries_dtype(dtype):
    """On a GPU: the padding bias in q's dtype runs on a fast kernel and matches float32 math."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 12, n, 128, device="cuda", generator=g, dtype=dtype) for n in (4680, 41, 41))
    bias = torch.zeros(1, 1, 1, 41, device="cuda")
    bias[..., -1] = math.log(472)
    out = attention.sdpa(q, k, v, bias.to(dtype))
    expected = math_kernels().masked(q.float(), k.float(), v.float(), bias)
    assert (out.float() - expected).abs().max().item() <= 2e-2  # bf16 output rounding at |x| <= 4
