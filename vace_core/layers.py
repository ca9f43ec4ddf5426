"""Building blocks of the Wan2.1 DiT: norms, attention projections, the transformer block, the head.

Numerics follow the upstream model: norms, modulation and the residual stream run in float32,
Linear layers run in their compute dtype (bf16/fp16 on GPU; their weight dtype, or the dtype an fp8
weight is cast to per call, see vace_core.casting), RoPE angles (vace_core.rope) and the timestep
sinusoid are computed in float64 on the CPU and moved to the compute device as float32 (MPS, Intel
Arc and DirectML have no float64). Parameter names match the original Wan checkpoint keys.
The attention kernels are the host's (vace_core.attention), passed in as `kernels`.

Layers with weights are made from an `operations` namespace (vace_core.operations), plain torch.nn
by default. A host may pass its own, e.g. ComfyUI's `comfy.ops` classes, which can stream weights
from another device on every call; the few bare parameters (RMS norm weights, modulation vectors)
are moved to their input's device where used.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import SDPA, AttentionKernels
from .casting import compute_dtype_of
from .config import WanConfig
from .operations import LayerOperations, TorchOps
from .rope import RopeTable, apply_rope

if TYPE_CHECKING:
    from .cache import BlockCacheAccess


def linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run `layer` (a Linear: torch.nn's or the host's) in its compute dtype, whatever dtype the
    residual stream has."""
    return layer(x.to(compute_dtype_of(layer)))


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x.float(), (x.shape[-1],), eps=eps)


def sinusoidal_embedding(freq_dim: int, timesteps: torch.Tensor) -> torch.Tensor:
    """[N] timesteps on the 0..1000 scale -> [N, freq_dim] (cos | sin), computed in float64 on the
    CPU (the caller moves the result to its device as float32)."""
    half = freq_dim // 2
    position = timesteps.detach().to("cpu", torch.float64)
    inv_freq = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64) / half)
    angles = torch.outer(position, inv_freq)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def modulate(normed: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """normed * (1 + scale) + shift in one fused kernel."""
    return torch.addcmul(shift, normed, 1 + scale)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # in float32, like upstream
        return normed.to(x.dtype) * self.weight.to(x.device, x.dtype)


class _Projections(nn.Module):
    """q, k, v, o projections with RMS norms on q and k across all heads (Wan's qk-norm)."""

    def __init__(self, dim: int, num_heads: int, eps: float, operations: LayerOperations = TorchOps) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = operations.Linear(dim, dim)
        self.k = operations.Linear(dim, dim)
        self.v = operations.Linear(dim, dim)
        self.o = operations.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)


class SelfAttention(_Projections):
    def inputs(self, x: torch.Tensor, rope: RopeTable) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, S, dim] -> q, k (rotated) and v [B, heads, S, head_dim] in the compute dtype."""
        batch, tokens, dim = x.shape
        heads = (batch, tokens, self.num_heads, dim // self.num_heads)
        x = x.to(compute_dtype_of(self.q))  # cast once for q, k and v
        q = apply_rope(self.norm_q(self.q(x)).view(heads), rope)
        k = apply_rope(self.norm_k(self.k(x)).view(heads), rope)
        v = self.v(x).view(heads)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


class CrossAttention(_Projections):
    """Attention from video tokens to the (per-prompt cached) text tokens."""

    def project_text(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded text [B, L, dim] -> keys, values [B, heads, L, head_dim]."""
        batch, length, dim = text.shape
        heads = (batch, length, self.num_heads, dim // self.num_heads)
        k = self.norm_k(linear(self.k, text)).view(heads).transpose(1, 2)
        v = linear(self.v, text).view(heads).transpose(1, 2)
        return k, v

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, S, dim] -> q [B, heads, S, head_dim] in the compute dtype."""
        batch, tokens, _ = x.shape
        return self.norm_q(linear(self.q, x)).view(batch, tokens, self.num_heads, -1).transpose(1, 2)


class WanBlock(nn.Module):
    """One DiT block: modulated self-attention, cross-attention to text, modulated FFN.

    Modulation is per latent frame (the causal model gives every frame its own timestep). The
    block runs as three parts around its two attention kernels (`BlockParts`); the parts can be
    compiled (vace_core.compiled), while the KV cache access and the kernels, the host's choice,
    stay outside compiled code.
    """

    # VACE blocks only (vace_core.vace.vace_block): the projections into and out of the VACE stream
    before_proj: nn.Linear
    after_proj: nn.Linear

    def __init__(self, config: WanConfig, operations: LayerOperations = TorchOps) -> None:
        super().__init__()
        dim = config.dim
        self.eps = config.eps
        self.self_attn = SelfAttention(dim, config.num_heads, config.eps, operations)
        self.norm3 = operations.LayerNorm(dim, eps=config.eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(dim, config.num_heads, config.eps, operations)
        self.ffn = nn.Sequential(operations.Linear(dim, config.ffn_dim), nn.GELU(approximate="tanh"),
                                 operations.Linear(config.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / math.sqrt(dim))

    def forward(self, x: torch.Tensor, time_mod: torch.Tensor, text_kv: tuple[torch.Tensor, torch.Tensor],
                rope: RopeTable, cache: "BlockCacheAccess | None" = None,
                layer: int = 0, attn_mask: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None, kernels: AttentionKernels = SDPA,
                parts: "BlockParts | None" = None) -> torch.Tensor:
        """x [B, S, dim] float32, time_mod [B, F, 6, dim] float32 -> x [B, S, dim] float32.

        `attn_mask` (bool [S, S_visible]) restricts self-attention, `text_mask` (added to the
        logits, broadcast to [B, heads, S, L]) carries the prompt's padding bias (TextState) or, in
        the cache-free recompute, which of several prompts laid side by side each token reads."""
        parts = parts or EAGER_PARTS
        q, k, v = parts.self_attention_inputs(self, x, time_mod, rope)
        if cache is not None:
            k, v = cache.write_and_read(layer, k, v)  # keys of the whole visible window
        y = kernels.unmasked(q, k, v) if attn_mask is None else kernels.masked(q, k, v, attn_mask)
        x, q = parts.cross_attention_inputs(self, x, y, time_mod)
        y = kernels.masked(q, *batch_view(text_kv, q.shape[0]), text_mask)
        return parts.feed_forward(self, x, y, time_mod)


def batch_view(kv: tuple[torch.Tensor, torch.Tensor], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A prompt's keys and values [1, heads, L, head_dim], shared by the videos of a batch, as views
    of batch `batch` (no copy): SDPA broadcasting a batch of 1 takes another path, which on the CPU
    rounds differently from a single video's call (and need not be a fused kernel on a GPU)."""
    k, v = kv
    return k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)


def _modulation(modulation: torch.Tensor, time_mod: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Block modulation [1, 6, dim] + time_mod [B, F, 6, dim] -> shift1, scale1, gate1, shift2,
    scale2, gate2, each [B, F, 1, dim] float32."""
    mod = (modulation.to(time_mod.device, torch.float32).unsqueeze(1) + time_mod).unsqueeze(3)
    return mod.unbind(2)


def _per_frame(t: torch.Tensor, frames: int) -> torch.Tensor:
    batch, tokens, dim = t.shape
    return t.view(batch, frames, tokens // frames, dim)


def _gated(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """x + y * gate per frame: x [B, S, dim] float32, y [B, S, dim], gate [B, F, 1, dim]."""
    frames = gate.shape[1]
    return torch.addcmul(_per_frame(x, frames), _per_frame(y.float(), frames), gate).flatten(1, 2)


def self_attention_inputs(block: "WanBlock", x: torch.Tensor, time_mod: torch.Tensor,
                          rope: RopeTable) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Part 1: modulated norm of x [B, S, dim], then q, k, v [B, heads, S, head_dim] (RoPE on q, k)."""
    shift, scale = _modulation(block.modulation, time_mod)[:2]
    h = modulate(_per_frame(layer_norm(x, block.eps), time_mod.shape[1]), shift, scale).flatten(1, 2)
    return block.self_attn.inputs(h, rope)


def cross_attention_inputs(block: "WanBlock", x: torch.Tensor, y: torch.Tensor,
                           time_mod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Part 2: y, the self-attention output [B, S, dim], through `o` and its gate into x; then the
    cross-attention query of norm3(x). Returns x [B, S, dim] float32 and q [B, heads, S, head_dim]."""
    gate = _modulation(block.modulation, time_mod)[2]
    x = _gated(x, linear(block.self_attn.o, y), gate)
    return x, block.cross_attn.query(block.norm3(x))


def feed_forward(block: "WanBlock", x: torch.Tensor, y: torch.Tensor, time_mod: torch.Tensor) -> torch.Tensor:
    """Part 3: y, the cross-attention output [B, S, dim], through `o` into x; then the modulated,
    gated FFN. Returns x [B, S, dim] float32."""
    _, _, _, shift, scale, gate = _modulation(block.modulation, time_mod)
    x = x + linear(block.cross_attn.o, y).float()
    h = modulate(_per_frame(layer_norm(x, block.eps), time_mod.shape[1]), shift, scale).flatten(1, 2)
    ffn = block.ffn
    return _gated(x, linear(ffn[2], ffn[1](linear(ffn[0], h))), gate)


class BlockParts(NamedTuple):
    """The three parts of a block's forward between its attention kernels (eager or compiled)."""
    self_attention_inputs: Callable
    cross_attention_inputs: Callable
    feed_forward: Callable


EAGER_PARTS = BlockParts(self_attention_inputs, cross_attention_inputs, feed_forward)


class Head(nn.Module):
    def __init__(self, config: WanConfig, operations: LayerOperations = TorchOps) -> None:
        super().__init__()
        self.eps = config.eps
        self.head = operations.Linear(config.dim, config.out_channels * math.prod(config.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, config.dim) / math.sqrt(config.dim))

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        """x [B, S, dim], time_emb [B, F, dim] -> patch outputs [B, S, out_ch * prod(patch)]."""
        batch, tokens, dim = x.shape
        frames = time_emb.shape[1]
        modulation = self.modulation.to(x.device, torch.float32)
        shift, scale = (modulation.unsqueeze(1) + time_emb.unsqueeze(2)).unsqueeze(3).unbind(2)
        h = modulate(layer_norm(x, self.eps).view(batch, frames, tokens // frames, dim), shift, scale)
        return linear(self.head, h.reshape(batch, tokens, dim))
