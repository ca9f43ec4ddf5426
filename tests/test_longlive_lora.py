"""A LoRA file written the way LongLive writes it loads, and merges to what PEFT computes (issue 10).

LongLive's trainer wraps its `CausalWanModel` with PEFT through `utils/lora_utils.py`
(`configure_lora_for_model`: every Linear inside the `CausalWanAttentionBlock`s), takes
`get_peft_model_state_dict` and saves `{"generator_lora": ..., "critic_lora": ..., "step": ...}`
with torch.save. Here that code runs on a tiny LongLive model carrying our tiny model's weights,
the LoRA factors get random values (PEFT starts B at zero, which would test nothing), and the
file is loaded by `load_longlive(..., lora_path=...)`. The merged model's flow must equal the
PEFT-wrapped LongLive model's own forward on the same input.

Tolerance 1e-5: both sides compute in float32; the merge adds s * B @ A into W once, while PEFT
adds s * B(A x) per call. Measured max abs error ~1e-6 on flows of std ~1; the LoRA itself moves
the flow by ~0.5 (asserted), and a merge at the wrong scale (alpha 16 taken as the rank 4)
misses PEFT's output by far more than the tolerance (asserted).
"""

from __future__ import annotations

import pytest
import torch

import longlive_reference as ll
from helpers import randn, random_text, tiny_model
from vace_core.checkpoints import load_longlive
from vace_core.testing.fixtures import write_longlive_pt

pytestmark = pytest.mark.skipif(not ll.available(), reason="LongLive 1.0 reference code not found in ../shared")
peft = pytest.importorskip("peft")

TOL = 1e-5


def longlive_lora(ours, rank: int, alpha: int, seed: int):
    """(PEFT-wrapped LongLive model, the LoRA state dict LongLive would save)."""
    transformer = ll.causal_wan_model(ours, window_frames=12, sink_frames=3)
    config = {"type": "lora", "rank": rank, "alpha": alpha, "dropout": 0.0}
    wrapped = ll.longlive().lora_utils.configure_lora_for_model(transformer, "generator", config,
                                                                 is_main_process=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return wrapped.eval(), peft.get_peft_model_state_dict(wrapped)


@pytest.fixture(scope="module")
def ours():
    return tiny_model("tiny", seed=8)


@pytest.fixture(scope="module")
def base_file(ours, tmp_path_factory):
    path = tmp_path_factory.mktemp("longlive") / "longlive_base.pt"
    write_longlive_pt(path, ours.state_dict())
    return path


@pytest.mark.parametrize("rank, alpha", [(8, 8), (4, 16)])
def test_longlive_written_lora_merges_to_pefts_forward(ours, base_file, tmp_path, rank, alpha):
    wrapped, lora_state = longlive_lora(ours, rank, alpha, seed=rank)
    assert len(lora_state) == 2 * 10 * ours.config.num_layers  # A and B of 10 Linears per block
    assert all(key.startswith("base_model.model.blocks.") for key in lora_state)
    lora_path = tmp_path / "lora.pt"
    torch.save({"generator_lora": lora_state, "critic_lora": {k: v.clone() for k, v in lora_state.items()},
                "step": 1000}, lora_path)

    # a PEFT file stores no alpha: LongLive's own (alpha = rank) is the default, another is given
    merged = load_longlive(base_file, lora_path=lora_path, dtype=torch.float32,
                           lora_alpha=None if alpha == rank else alpha)
    latents = randn(1, 16, 3, 4, 6, seed=1)
    context = random_text(seed=2)
    with torch.no_grad():
        expected = ll.first_block_flow(wrapped, ours, latents, 937.5, context)
        got = merged.forward_full(latents, torch.tensor([937.5]), context)
        without = ours.forward_full(latents, torch.tensor([937.5]), context)
    err = (got - expected).abs().max().item()
    print(f"rank {rank}, alpha {alpha}: merged vs PEFT max abs err {err:.2e}, "
          f"LoRA effect {(expected - without).abs().max().item():.2e}")
    assert err <= TOL
    assert (expected - without).abs().max().item() > 1e4 * TOL
    if alpha != rank:
        wrong_scale = load_longlive(base_file, lora_path=lora_path, dtype=torch.float32)
        with torch.no_grad():
            wrong = wrong_scale.forward_full(latents, torch.tensor([937.5]), context)
        assert (wrong - expected).abs().max().item() > 1e4 * TOL
