"""The sampler node takes the CONDITIONING that ComfyUI's CLIPTextEncode makes with the umT5 'wan' encoder.

ComfyUI's umT5 tokenizer pads to at least 512 tokens (and never truncates), the encoder zeroes the
padded positions, and the entry's dict carries `pooled_output` None and an `attention_mask`:
`[[tensor [1, max(512, tokens), 4096], {"pooled_output": None, "attention_mask": [1, L]}]]`, in the
text encoder's dtype (fp16/bf16 on a GPU). The real 5.7B encoder cannot run in a test, so these
tensors are built to that description, for a model whose text_dim is the real 4096 (the rest small).

Contract: such a conditioning gives exactly the video of the bare token embeddings [1, tokens, 4096]
(the model zero-pads to 512 itself, so zero rows are what it expects); a prompt longer than 512
tokens keeps every token; a half-precision conditioning is used at its values.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from helpers import load_pack_standalone, video_latent

PACK = "longlive_vace_conditioning_test"
TEXT_LEN = 512
SIZE = 32


pack = load_pack_standalone(PACK)
fx = importlib.import_module(f"{PACK}.vace_core.testing.fixtures")
WanConfig = importlib.import_module(f"{PACK}.vace_core.config").WanConfig
model_ref = importlib.import_module(f"{PACK}.nodes.model_ref")
CONFIG = WanConfig(dim=256, ffn_dim=512, num_layers=2, num_heads=2, text_dim=4096, freq_dim=32)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models_4096")
    (root / "diffusion_models").mkdir()
    fx.write_longlive_pt(root / "diffusion_models" / "longlive_base.pt", fx.make_state_dict(CONFIG, seed=5))
    return root


@pytest.fixture(autouse=True)
def standalone_models(models_dir, monkeypatch):
    monkeypatch.setenv("LONGLIVE_MODELS_DIR", str(models_dir))
    model_ref.clear_cache()
    yield
    model_ref.clear_cache()


def run(name: str, **inputs):
    cls = pack.NODE_CLASS_MAPPINGS[name]
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        return getattr(cls(), cls.FUNCTION)(**inputs)


def model():
    return run("LongLiveModelLoader", base_checkpoint="longlive_base.pt", lora="none", lora_strength=1.0,
               dtype="fp32")[0]


def token_embeddings(tokens: int, seed: int) -> torch.Tensor:
    """What umT5 gives for the prompt's own tokens: [1, tokens, 4096]."""
    return torch.randn(1, tokens, CONFIG.text_dim, generator=torch.Generator().manual_seed(seed))


def comfy_umt5(embeddings: torch.Tensor, dtype: torch.dtype = torch.float32) -> list:
    """CLIPTextEncode's CONDITIONING for those tokens: padded with zero rows to 512, a mask, a dtype."""
    tokens = embeddings.shape[1]
    length = max(TEXT_LEN, tokens)
    cond = torch.zeros(1, length, CONFIG.text_dim)
    cond[:, :tokens] = embeddings
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[:, :tokens] = 1
    return [[cond.to(dtype), {"pooled_output": None, "attention_mask": mask}]]


def sample(positive, length: int = 9, **extra) -> torch.Tensor:
    """The sampler's latents for a video of `length` frames (LongLive preset)."""
    return run("LongLiveSampler", model=model(), positive=positive, latent=video_latent(SIZE, SIZE, length), seed=3,
               vace_scale=1.0, **extra)[0]["samples"]


def test_umt5_shaped_conditioning_is_accepted():
    latents = sample(comfy_umt5(token_embeddings(9, seed=1)))
    assert tuple(latents.shape) == (1, 16, 3, 4, 4)
    assert torch.isfinite(latents).all()


def test_zero_padded_rows_equal_the_bare_tokens():
    words = token_embeddings(9, seed=1)
    assert torch.equal(sample(comfy_umt5(words)), sample([[words, {"pooled_output": None}]]))


def test_the_prompt_matters():
    """Guards the test above: the text reaches the output at all."""
    assert not torch.equal(sample(comfy_umt5(token_embeddings(9, seed=1))),
                           sample(comfy_umt5(token_embeddings(9, seed=2))))


def test_prompt_longer_than_512_tokens_keeps_every_token():
    words = token_embeddings(600, seed=4)
    whole = sample(comfy_umt5(words))
    assert torch.isfinite(whole).all()
    assert not torch.equal(whole, sample(comfy_umt5(words[:, :TEXT_LEN])))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_conditioning_is_used_at_its_values(dtype):
    words = token_embeddings(9, seed=1).to(dtype)
    assert torch.equal(sample(comfy_umt5(words, dtype)), sample(comfy_umt5(words.float())))


def test_prompt_schedule_takes_umt5_shaped_prompts():
    switch = run("LongLivePromptSchedule", conditioning=comfy_umt5(token_embeddings(5, seed=7)), start_frame=12)[0]
    latents = sample(comfy_umt5(token_embeddings(9, seed=1)), prompt_schedule=switch, length=17)
    assert tuple(latents.shape) == (1, 16, 5, 4, 4)


def test_a_non_wan_text_encoder_is_named():
    clip_l = [[torch.zeros(1, 77, 768), {"pooled_output": torch.zeros(1, 768)}]]
    with pytest.raises(ValueError, match="768 channels but the model expects 4096.*CLIPLoader type 'wan'"):
        sample(clip_l)
