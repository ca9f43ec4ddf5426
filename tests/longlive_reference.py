"""NVlabs/LongLive 1.0's own inference code, runnable on the CPU in float32 for golden tests.

LongLive is at ../shared/reference/longlive-1.0 (the 1.0 commit, Apache-2.0). Tests import it through
`longlive()`, which
- puts its root on sys.path for the duration of the import, with its package roots (`wan`,
  `wan.modules`, `pipeline`, `utils`) registered as bare packages, so their __init__ files (which
  pull in image-to-video and training pipelines) do not run; some of its modules ask CUDA for the
  current device at import (`utils/memory.py`, a default argument in `wan/modules/t5.py`), so
  `torch.cuda.current_device` answers 0 while they import (nothing here runs on that device);
- replaces its two attention entry points with float32 scaled-dot-product attention: its SDPA
  fallback casts q/k/v to bfloat16 and its cross-attention goes through a flash-attention function
  that asserts CUDA (docs/how-it-works.md). Both compute softmax(qk^T/sqrt(d))v over [B, L, heads, d].

`make_pipeline` builds LongLive's real `CausalInferencePipeline` / `InteractiveCausalInferencePipeline`
around a LongLive `CausalWanModel` carrying our tiny model's weights. Only what is sized for the
1.3B model is replaced: the pipelines hard-code 30 blocks, 1560 tokens per frame and 12 x 128 cache
tensors, so the instance gets the tiny model's counts and cache allocators of the same layout; the
denoising and recache loops that run are LongLive's. Its re-noising draws come from
`torch.randn_like`; `feed_noise` makes those draws return given tensors in order.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
LONGLIVE_DIR = ROOT.parent / "shared" / "reference" / "longlive-1.0"
_PACKAGES = ("wan", "wan.modules", "pipeline", "utils")


def available() -> bool:
    return (LONGLIVE_DIR / "wan" / "modules" / "causal_model.py").is_file()


def _fp32_attention(q, k, v, *args, **kwargs):
    """[B, Lq, heads, d] x [B, Lk, heads, d] -> [B, Lq, heads, d] in the inputs' dtype."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).contiguous()


_MODULES: dict[str, types.ModuleType] = {}


def longlive() -> SimpleNamespace:
    """LongLive's modules (imported once): causal_model, scheduler, causal_inference, interactive."""
    if not _MODULES:
        _import()
    return SimpleNamespace(**_MODULES)


def _import() -> None:
    saved = {name: sys.modules.get(name) for name in _PACKAGES}
    current_device = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0
    sys.path.insert(0, str(LONGLIVE_DIR))
    try:
        for name in _PACKAGES:
            package = types.ModuleType(name)
            package.__path__ = [str(LONGLIVE_DIR / name.replace(".", "/"))]
            sys.modules[name] = package

        causal_model = importlib.import_module("wan.modules.causal_model")
        wan_model = importlib.import_module("wan.modules.model")
        causal_model.attention = _fp32_attention
        wan_model.flash_attention = _fp32_attention
        _MODULES.update(
            causal_model=causal_model,
            scheduler=importlib.import_module("utils.scheduler"),
            wrapper=importlib.import_module("utils.wan_wrapper"),
            causal_inference=importlib.import_module("pipeline.causal_inference"),
            interactive=importlib.import_module("pipeline.interactive_causal_inference"),
            lora_utils=importlib.import_module("utils.lora_utils"),
        )
    finally:
        torch.cuda.current_device = current_device
        sys.path.remove(str(LONGLIVE_DIR))
        # LongLive's generic package names must not shadow anything else in this process; its
        # modules stay importable through the objects kept above
        for name in list(sys.modules):
            if name.split(".")[0] in {p.split(".")[0] for p in _PACKAGES}:
                del sys.modules[name]
        for name, module in saved.items():
            if module is not None:
                sys.modules[name] = module


def causal_wan_model(ours: torch.nn.Module, *, window_frames: int, sink_frames: int) -> torch.nn.Module:
    """A LongLive CausalWanModel with `ours`' architecture and weights (float32, eval)."""
    config = ours.config
    model = longlive().causal_model.CausalWanModel(
        model_type="t2v", patch_size=config.patch_size, text_len=config.text_len, in_dim=config.in_channels,
        dim=config.dim, ffn_dim=config.ffn_dim, freq_dim=config.freq_dim, text_dim=config.text_dim,
        out_dim=config.out_channels, num_heads=config.num_heads, num_layers=config.num_layers,
        local_attn_size=window_frames, sink_size=sink_frames, qk_norm=True, cross_attn_norm=True, eps=config.eps)
    state = {k: v for k, v in ours.state_dict().items() if not k.startswith("vace_")}
    model.load_state_dict(state, strict=True)
    return model.float().eval().requires_grad_(False)


class _TextStandIn:
    """LongLive's text encoder interface: prompt strings -> {"prompt_embeds": [B, L, text_dim]}."""

    def __init__(self, embeddings: dict[str, torch.Tensor]) -> None:
        self.embeddings = embeddings

    def __call__(self, text_prompts: Sequence[str]) -> dict:
        return {"prompt_embeds": torch.cat([self.embeddings[p] for p in text_prompts])}


class _VaeStandIn:
    def decode_to_pixel(self, latent: torch.Tensor, use_cache: bool = False) -> torch.Tensor:
        return torch.zeros(latent.shape[0], latent.shape[1], 3, 8, 8)


def make_pipeline(ours: torch.nn.Module, embeddings: dict[str, torch.Tensor], *, tokens_per_frame: int,
                  interactive: bool, chunk_frames: int = 3, window_frames: int = 12, sink_frames: int = 3,
                  steps: Sequence[int] = (1000, 750, 500, 250), shift: float = 5.0) -> torch.nn.Module:
    """LongLive's inference pipeline over the tiny model, configured as configs/longlive_inference.yaml
    (global_sink on, context_noise 0, warped steps) unless told otherwise."""
    modules = longlive()
    wrapper = modules.wrapper.WanDiffusionWrapper.__new__(modules.wrapper.WanDiffusionWrapper)
    torch.nn.Module.__init__(wrapper)
    wrapper.model = causal_wan_model(ours, window_frames=window_frames, sink_frames=sink_frames)
    wrapper.uniform_timestep = False
    wrapper.scheduler = modules.scheduler.FlowMatchScheduler(shift=shift, sigma_min=0.0, extra_one_step=True)
    wrapper.scheduler.set_timesteps(1000, training=True)
    wrapper.seq_len = 32760
    wrapper.post_init()

    args = SimpleNamespace(denoising_step_list=list(steps), warp_denoising_step=True,
                           num_frame_per_block=chunk_frames, context_noise=0, global_sink=True,
                           model_kwargs=SimpleNamespace(local_attn_size=window_frames, timestep_shift=shift,
                                                        sink_size=sink_frames))
    cls = (modules.interactive.InteractiveCausalInferencePipeline if interactive
           else modules.causal_inference.CausalInferencePipeline)
    kwargs = dict(generator=wrapper, text_encoder=_TextStandIn(embeddings), vae=_VaeStandIn())
    pipeline = cls(args, "cpu", **kwargs)
    config = ours.config
    pipeline.num_transformer_blocks = config.num_layers
    pipeline.frame_seq_length = tokens_per_frame

    def init_kv_cache(batch_size, dtype, device, kv_cache_size_override=None):
        pipeline.kv_cache1 = kv_caches(ours, batch_size, kv_cache_size_override, dtype, device)

    def init_crossattn_cache(batch_size, dtype, device):
        pipeline.crossattn_cache = crossattn_caches(ours, batch_size, dtype, device)

    pipeline._initialize_kv_cache = init_kv_cache
    pipeline._initialize_crossattn_cache = init_crossattn_cache
    return pipeline


def kv_caches(ours: torch.nn.Module, batch: int, tokens: int, dtype=torch.float32, device="cpu") -> list[dict]:
    """LongLive's per-block self-attention caches ([B, tokens, heads, head_dim] k and v plus its two
    end indices), sized for the tiny model."""
    config = ours.config
    shape = [batch, tokens, config.num_heads, config.head_dim]
    return [{"k": torch.zeros(shape, dtype=dtype, device=device), "v": torch.zeros(shape, dtype=dtype, device=device),
             "global_end_index": torch.tensor([0], dtype=torch.long, device=device),
             "local_end_index": torch.tensor([0], dtype=torch.long, device=device)}
            for _ in range(config.num_layers)]


def crossattn_caches(ours: torch.nn.Module, batch: int, dtype=torch.float32, device="cpu") -> list[dict]:
    config = ours.config
    shape = [batch, config.text_len, config.num_heads, config.head_dim]
    return [{"k": torch.zeros(shape, dtype=dtype, device=device), "v": torch.zeros(shape, dtype=dtype, device=device),
             "is_init": False} for _ in range(config.num_layers)]


def first_block_flow(longlive_model: torch.nn.Module, ours: torch.nn.Module, latents: torch.Tensor,
                     timestep: float, context: torch.Tensor) -> torch.Tensor:
    """LongLive's flow prediction [B, 16, F, h, w] for a first causal block (an empty cache), through
    its KV-cache inference path; `longlive_model` may be a PEFT-wrapped CausalWanModel."""
    batch, _, frames, height, width = latents.shape
    tokens = frames * (height // ours.config.patch_size[1]) * (width // ours.config.patch_size[2])
    t = torch.full((batch, frames), float(timestep))
    return longlive_model(latents, t=t, context=context, seq_len=tokens, kv_cache=kv_caches(ours, batch, tokens),
                          crossattn_cache=crossattn_caches(ours, batch), current_start=0)


@contextlib.contextmanager
def feed_noise(draws: Sequence[torch.Tensor]) -> Iterator[None]:
    """Inside the block, `torch.randn_like` returns `draws` one after another (shapes checked)."""
    queue = list(draws)
    original = torch.randn_like

    def next_draw(like: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not queue:
            raise AssertionError("LongLive drew more noise than the test provided")
        draw = queue.pop(0)
        if draw.shape != like.shape:
            raise AssertionError(f"LongLive drew noise of shape {tuple(like.shape)}, the test has {tuple(draw.shape)}")
        return draw.to(like)

    torch.randn_like = next_draw
    try:
        yield
    finally:
        torch.randn_like = original
    if queue:
        raise AssertionError(f"LongLive used {len(draws) - len(queue)} of the {len(draws)} noise draws")
