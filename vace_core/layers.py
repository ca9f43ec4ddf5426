"""Building blocks of the Wan2.1 DiT: norms, 3D RoPE, attention, the transformer block, the head.

Numerics follow the upstream model: norms, modulation and the residual stream run in float32,
Linear layers run in their compute dtype (bf16/fp16 on GPU; their weight dtype, or the dtype an fp8
weight is cast to per call, see vace_core.casting), RoPE angles and the timestep sinusoid
are computed in float64 on the CPU and moved to the compute device as float32 (MPS, Intel Arc and
DirectML have no float64). Parameter names match the original Wan checkpoint keys.

Layers with weights are made from an `operations` namespace (`Linear`, `Conv3d`, `LayerNorm`, with
torch.nn's constructors), plain torch.nn by default. A host may pass its own, e.g. ComfyUI's
`comfy.ops` classes, which can stream weights from another device on every call; the few bare
parameters (RMS norm weights, modulation vectors) are moved to their input's device where used.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .casting import compute_dtype_of
from .config import WanConfig

if TYPE_CHECKING:
    from .cache import BlockCacheAccess


class TorchOps:
    """The default layer operations: plain torch.nn."""
    Linear = nn.Linear
    Conv3d = nn.Conv3d
    LayerNorm = nn.LayerNorm


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Run `layer` in its compute dtype, whatever dtype the residual stream has."""
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


class RotaryEmbedding:
    """3D RoPE over (frame, row, column) at absolute positions.

    Each head's `head_dim / 2` rotation pairs are split between the three axes like upstream Wan:
    time gets `hd/2 - 2*(hd//6)` pairs, rows and columns `hd//6` each. Tables are cached per grid,
    so the passes of one chunk share them; only a few are kept, because every chunk starts at a new
    frame position and a large cache would grow with the video (2.4 MB per chunk at 480x832).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, max_cached: int = 4) -> None:
        third = head_dim // 6
        self.axis_dims = (head_dim - 4 * third, 2 * third, 2 * third)
        self.theta = theta
        self.max_cached = max_cached
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _axis_angles(self, axis: int, positions: torch.Tensor) -> torch.Tensor:
        dim = self.axis_dims[axis]
        inv_freq = 1.0 / torch.pow(self.theta, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        return torch.outer(positions.to(torch.float64), inv_freq)

    def table(self, start_frame: int, frames: int, height: int, width: int,
              device: torch.device) -> torch.Tensor:
        """Rotations e^(i angle) [frames*height*width, 1, head_dim/2] (complex64) for tokens in
        (f, h, w) order; angles in float64 on the CPU, the table moved to `device` once."""
        key = (start_frame, frames, height, width, str(device))
        cached = self._tables.get(key)
        if cached is not None:
            return cached
        # built as normal tensors even under inference mode (the sampler's), so a cached table can
        # later serve a forward that autograd tracks
        with torch.inference_mode(False):
            t = self._axis_angles(0, torch.arange(start_frame, start_frame + frames))
            h = self._axis_angles(1, torch.arange(height))
            w = self._axis_angles(2, torch.arange(width))
            angles = torch.cat([
                t[:, None, None, :].expand(frames, height, width, -1),
                h[None, :, None, :].expand(frames, height, width, -1),
                w[None, None, :, :].expand(frames, height, width, -1),
            ], dim=-1).reshape(frames * height * width, 1, -1)
            rotations = torch.polar(torch.ones_like(angles), angles).to(torch.complex64).to(device)
        if len(self._tables) >= self.max_cached:
            self._tables.clear()
        self._tables[key] = rotations
        return rotations


def apply_rope(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x [B, S, heads, head_dim] by the table's angles: each
    pair is a complex number multiplied by its rotation (one kernel, in float32)."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # [B, S, heads, head_dim/2]
    return torch.view_as_real(pairs * rotations).flatten(-2).to(x.dtype)


class _Projections(nn.Module):
    """q, k, v, o projections with RMS norms on q and k across all heads (Wan's qk-norm)."""

    def __init__(self, dim: int, num_heads: int, eps: float, operations: type = TorchOps) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = operations.Linear(dim, dim)
        self.k = operations.Linear(dim, dim)
        self.v = operations.Linear(dim, dim)
        self.o = operations.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)


class SelfAttention(_Projections):
    def forward(self, x: torch.Tensor, rope: torch.Tensor, cache: "BlockCacheAccess | None" = None,
                layer: int = 0, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, dim = x.shape
        heads = (batch, tokens, self.num_heads, dim // self.num_heads)
        x = x.to(compute_dtype_of(self.q))  # cast once for q, k and v
        q = apply_rope(self.norm_q(self.q(x)).view(heads), rope)
        k = apply_rope(self.norm_k(self.k(x)).view(heads), rope)
        v = self.v(x).view(heads)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, S, head_dim]
        if cache is not None:
            k, v = cache.write_and_read(layer, k, v)  # keys of the whole visible window
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return linear(self.o, out.transpose(1, 2).reshape(batch, tokens, dim))


class CrossAttention(_Projections):
    """Attention from video tokens to the (per-prompt cached) text tokens."""

    def project_text(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded text [B, L, dim] -> keys, values [B, heads, L, head_dim]."""
        batch, length, dim = text.shape
        heads = (batch, length, self.num_heads, dim // self.num_heads)
        k = self.norm_k(linear(self.k, text)).view(heads).transpose(1, 2)
        v = linear(self.v, text).view(heads).transpose(1, 2)
        return k, v

    def forward(self, x: torch.Tensor, text_kv: tuple[torch.Tensor, torch.Tensor],
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`text_mask`, added to the logits (broadcast to [B, heads, S, L]), carries the prompt's
        padding bias (TextState) or, in the cache-free recompute, which of several prompts laid
        side by side each token reads (-inf elsewhere)."""
        batch, tokens, dim = x.shape
        q = self.norm_q(linear(self.q, x)).view(batch, tokens, self.num_heads, -1).transpose(1, 2)
        k, v = text_kv
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=text_mask)
        return linear(self.o, out.transpose(1, 2).reshape(batch, tokens, dim))


class WanBlock(nn.Module):
    """One DiT block: modulated self-attention, cross-attention to text, modulated FFN.

    Modulation is per latent frame (the causal model gives every frame its own timestep).
    """

    def __init__(self, config: WanConfig, operations: type = TorchOps) -> None:
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
                rope: torch.Tensor, cache: "BlockCacheAccess | None" = None,
                layer: int = 0, attn_mask: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, S, dim] float32, time_mod [B, F, 6, dim] float32 -> x [B, S, dim] float32."""
        batch, tokens, dim = x.shape
        frames = time_mod.shape[1]
        mod = (self.modulation.to(x.device, torch.float32).unsqueeze(1) + time_mod).unsqueeze(3)  # [B, F, 6, 1, dim]
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.unbind(2)  # each [B, F, 1, dim]

        def per_frame(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, frames, tokens // frames, dim)

        def flat(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, tokens, dim)

        h = modulate(per_frame(layer_norm(x, self.eps)), shift1, scale1)
        y = self.self_attn(flat(h), rope, cache, layer, attn_mask)
        x = flat(torch.addcmul(per_frame(x), per_frame(y.float()), gate1))
        x = x + self.cross_attn(self.norm3(x), text_kv, text_mask).float()
        h = modulate(per_frame(layer_norm(x, self.eps)), shift2, scale2)
        y = linear(self.ffn[2], self.ffn[1](linear(self.ffn[0], flat(h))))
        return flat(torch.addcmul(per_frame(x), per_frame(y.float()), gate2))


class Head(nn.Module):
    def __init__(self, config: WanConfig, operations: type = TorchOps) -> None:
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
