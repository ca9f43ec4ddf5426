"""Independent reference of the upstream (bidirectional) Wan2.1 / Wan2.1-VACE forward pass.

Written on purpose in a different style from `vace_core.model` so that one shared mistake cannot
make both agree: it is purely functional, reads every weight straight from a state dict in the
original Wan key names, and runs everything in float64 by default. Its numerics follow upstream:

* RoPE: a complex table of 1024 positions per axis (`polar(1, pos * theta^(-2i/d))`) with axis
  widths `d - 4*(d//6)`, `2*(d//6)`, `2*(d//6)`; the complex dimension `c = d/2` is split into
  `[c - 2*(c//3), c//3, c//3]` for (frame, row, column); applied with complex multiplication.
* attention: explicit softmax(Q K^T / sqrt(d)) V.
* time: 1D sinusoid `[cos | sin]` of `t * 10000^(-i/half)`, then time_embedding / time_projection.
* modulation chunk(6) = (shift, scale, gate) for self-attention, then (shift, scale, gate) for the FFN;
  head modulation chunk(2) = (shift, scale); only norm3 has an affine LayerNorm.
* text zero-padded to 512 tokens before text_embedding (longer prompts keep every token).
* VACE: c = vace_patch_embedding(context); block 0 adds before_proj(c) to the embedded latents;
  each VACE block emits after_proj(c); hint k is added after main block vace_layers[k] times its scale.

Extensions beyond upstream, needed to check the causal code paths: per-frame timesteps [B, F],
a frame-level attention mask and a start frame for the RoPE positions.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

Weights = Mapping[str, torch.Tensor]

ROPE_POSITIONS = 1024
TEXT_LEN = 512


# ---------------------------------------------------------------------------------------------
# random weights for comparisons


def random_wan_state(shapes: Mapping[str, Sequence[int]], seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights for a Wan state dict (key -> shape) that keep activations O(1).

    Matrices and conv kernels get std 1/sqrt(fan_in) (0.0625 at width 256: the ~0.02 of a real
    checkpoint would shrink every residual branch and the time conditioning by about 3x per layer,
    making the comparison blind to mistakes there); biases std 0.1; norm weights 1 + N(0, 0.1^2),
    norm biases N(0, 0.1^2); modulation tables N(0, 1/dim) like upstream's initialisation.
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        noise = torch.randn(shape, generator=generator, dtype=torch.float64)
        if key.endswith("modulation"):
            values = noise / math.sqrt(shape[-1])
        elif ".norm" in key and key.endswith(".weight"):
            values = 1.0 + 0.1 * noise
        elif ".norm" in key or key.endswith(".bias"):
            values = 0.1 * noise
        else:
            fan_in = math.prod(shape[1:])
            values = noise / math.sqrt(fan_in)
        state[key] = values.float()
    return state


# ---------------------------------------------------------------------------------------------
# elementary ops


def _dense(w: Weights, name: str, x: torch.Tensor) -> torch.Tensor:
    """y = x W^T + b for the Linear stored as `name.weight` / `name.bias`."""
    return torch.einsum("...i,oi->...o", x, w[f"{name}.weight"]) + w[f"{name}.bias"]


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _silu(x: torch.Tensor) -> torch.Tensor:
    return x / (1.0 + torch.exp(-x))


def _standardise(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without affine: zero mean, unit (biased) variance over the last dim."""
    centred = x - x.mean(dim=-1, keepdim=True)
    return centred / torch.sqrt((centred * centred).mean(dim=-1, keepdim=True) + eps)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """q [B, Sq, n, d], k/v [B, Sk, n, d], allowed [Sq, Sk] bool -> [B, Sq, n, d]."""
    logits = torch.einsum("bqnd,bknd->bnqk", q, k) / math.sqrt(q.shape[-1])
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    weights = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return torch.einsum("bnqk,bknd->bqnd", weights, v)


def _patchify(w: Weights, name: str, video: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """Conv3d with kernel = stride = patch, written as a tensor contraction.
    video [B, C, F, H, W] -> tokens [B, f*h*w, dim] in (f, h, w) order."""
    pt, ph, pw = patch
    b, c, frames, height, width = video.shape
    cells = video.reshape(b, c, frames // pt, pt, height // ph, ph, width // pw, pw)
    tokens = torch.einsum("bcfphqwr,ocpqr->bfhwo", cells, w[f"{name}.weight"]) + w[f"{name}.bias"]
    return tokens.reshape(b, -1, tokens.shape[-1])


def _unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int],
                channels: int) -> torch.Tensor:
    """tokens [B, S, prod(patch)*C] -> [B, C, F, H, W], each token's features ordered (pt, ph, pw, C)."""
    videos = []
    for u in tokens:
        u = u.reshape(*grid, *patch, channels)
        u = torch.einsum("fhwpqrc->cfphqwr", u)
        videos.append(u.reshape(channels, *(g * p for g, p in zip(grid, patch))))
    return torch.stack(videos)


# ---------------------------------------------------------------------------------------------
# conditioning


def sinusoid(freq_dim: int, t: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """t [N] -> [N, freq_dim] = [cos | sin] (t * 10000^(-i/half)), computed in `dtype` (upstream:
    float64; ComfyUI: float32, which rounds angles of up to 1000 rad by ~3e-5)."""
    half = freq_dim // 2
    exponent = -torch.arange(half, dtype=dtype) / half
    angle = t.to(dtype)[:, None] * torch.pow(torch.tensor(10000.0, dtype=dtype), exponent)[None]
    return torch.cat([torch.cos(angle), torch.sin(angle)], dim=1).to(torch.float64)


def _rope_axis_table(dim: int) -> torch.Tensor:
    """[1024, dim/2] complex128 unit phasors exp(i * pos * 10000^(-2j/dim))."""
    inv = 1.0 / torch.pow(torch.tensor(10000.0, dtype=torch.float64),
                          torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = torch.arange(ROPE_POSITIONS, dtype=torch.float64)[:, None] * inv[None]
    return torch.polar(torch.ones_like(angle), angle)


def rope_table(head_dim: int) -> torch.Tensor:
    """The upstream [1024, head_dim/2] complex table: frame, row and column parts concatenated."""
    sixth = head_dim // 6
    return torch.cat([_rope_axis_table(head_dim - 4 * sixth), _rope_axis_table(2 * sixth),
                      _rope_axis_table(2 * sixth)], dim=1)


def _rope_phasors(table: torch.Tensor, grid: tuple[int, int, int], start_frame: int) -> torch.Tensor:
    """Per-token phasors [f*h*w, 1, c] for a grid whose frames sit at start_frame.."""
    c = table.shape[1]
    part_f, part_h, part_w = table.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    f, h, w = grid
    phasors = torch.cat([
        part_f[start_frame:start_frame + f].view(f, 1, 1, -1).expand(f, h, w, -1),
        part_h[:h].view(1, h, 1, -1).expand(f, h, w, -1),
        part_w[:w].view(1, 1, w, -1).expand(f, h, w, -1),
    ], dim=-1)
    return phasors.reshape(f * h * w, 1, c)


def _rotate(x: torch.Tensor, phasors: torch.Tensor) -> torch.Tensor:
    """x [B, S, n, d] real -> rotated, consecutive channel pairs read as complex numbers."""
    as_complex = torch.view_as_complex(x.to(torch.float64).reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(as_complex * phasors).flatten(-2).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# blocks


def _block(w: Weights, p: str, x: torch.Tensor, e0: torch.Tensor, text: torch.Tensor, phasors: torch.Tensor,
           heads: int, eps: float, allowed: torch.Tensor | None) -> torch.Tensor:
    """One Wan attention block. x [B, S, dim]; e0 [B, S, 6, dim] per-token time projection."""
    b, s, dim = x.shape
    d = dim // heads
    mod = w[f"{p}.modulation"][0] + e0  # [B, S, 6, dim]
    shift_a, scale_a, gate_a = mod[:, :, 0], mod[:, :, 1], mod[:, :, 2]
    shift_f, scale_f, gate_f = mod[:, :, 3], mod[:, :, 4], mod[:, :, 5]

    h = _standardise(x, eps) * (1 + scale_a) + shift_a
    sa = f"{p}.self_attn"
    q = _rms(_dense(w, f"{sa}.q", h), w[f"{sa}.norm_q.weight"], eps).reshape(b, s, heads, d)
    k = _rms(_dense(w, f"{sa}.k", h), w[f"{sa}.norm_k.weight"], eps).reshape(b, s, heads, d)
    v = _dense(w, f"{sa}.v", h).reshape(b, s, heads, d)
    y = _attend(_rotate(q, phasors), _rotate(k, phasors), v, allowed).reshape(b, s, dim)
    x = x + _dense(w, f"{sa}.o", y) * gate_a

    ca = f"{p}.cross_attn"
    h = _standardise(x, eps) * w[f"{p}.norm3.weight"] + w[f"{p}.norm3.bias"]
    length = text.shape[1]
    q = _rms(_dense(w, f"{ca}.q", h), w[f"{ca}.norm_q.weight"], eps).reshape(b, s, heads, d)
    k = _rms(_dense(w, f"{ca}.k", text), w[f"{ca}.norm_k.weight"], eps).reshape(b, length, heads, d)
    v = _dense(w, f"{ca}.v", text).reshape(b, length, heads, d)
    x = x + _dense(w, f"{ca}.o", _attend(q, k, v, None).reshape(b, s, dim))

    h = _standardise(x, eps) * (1 + scale_f) + shift_f
    y = _dense(w, f"{p}.ffn.2", _gelu_tanh(_dense(w, f"{p}.ffn.0", h)))
    return x + y * gate_f


def _count(w: Weights, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in w if k.startswith(prefix)})


def wan_forward(weights: Weights, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, *,
                num_heads: int, vace_context: torch.Tensor | None = None,
                vace_scale: float | Sequence[float] = 1.0, vace_layers: Sequence[int] | None = None,
                frame_mask: torch.Tensor | None = None, start_frame: int = 0, eps: float = 1e-6,
                dtype: torch.dtype = torch.float64, time_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Upstream Wan2.1(-VACE) flow prediction computed from a raw state dict.

    latents [B, C, F, H, W]; timestep [B] (upstream) or [B, F] (one per latent frame) on 0..1000;
    context [B, L, text_dim]; vace_context [B, vace_in, F, H, W]; vace_layers defaults to upstream's
    every-second main block; frame_mask [F, F] bool (query frame, key frame) restricts self-attention
    of the main AND the VACE blocks; `time_dtype` is the precision of the timestep sinusoid.
    Returns float64 (or `dtype`) [B, C_out, F, H, W].
    """
    w = {k: v.to(dtype) for k, v in weights.items()}
    patch = tuple(w["patch_embedding.weight"].shape[2:])
    dim = w["patch_embedding.weight"].shape[0]
    freq_dim = w["time_embedding.0.weight"].shape[1]
    out_channels = w["head.head.weight"].shape[0] // math.prod(patch)
    num_layers = _count(w, "blocks.")
    batch, _, frames, height, width = latents.shape
    grid = (frames // patch[0], height // patch[1], width // patch[2])
    per_frame = grid[1] * grid[2]

    x = _patchify(w, "patch_embedding", latents.to(dtype), patch)  # [B, S, dim]

    t = timestep.to(torch.float64)
    t = t[:, None].expand(batch, grid[0]) if t.ndim == 1 else t  # [B, f]
    freqs = sinusoid(freq_dim, t.reshape(-1), time_dtype).to(dtype)  # [B*f, freq_dim]
    e = _dense(w, "time_embedding.2", _silu(_dense(w, "time_embedding.0", freqs)))
    e0 = _dense(w, "time_projection.1", _silu(e)).reshape(batch, grid[0], 6, dim)
    e0 = e0.repeat_interleave(per_frame, dim=1)  # [B, S, 6, dim]
    e = e.reshape(batch, grid[0], dim).repeat_interleave(per_frame, dim=1)  # [B, S, dim]

    text = context.to(dtype)
    if text.shape[1] < TEXT_LEN:
        text = torch.cat([text, text.new_zeros(batch, TEXT_LEN - text.shape[1], text.shape[2])], dim=1)
    text = _dense(w, "text_embedding.2", _gelu_tanh(_dense(w, "text_embedding.0", text)))

    phasors = _rope_phasors(rope_table(dim // num_heads), grid, start_frame)
    allowed = None
    if frame_mask is not None:
        allowed = frame_mask.bool().repeat_interleave(per_frame, 0).repeat_interleave(per_frame, 1)

    hints: list[torch.Tensor] = []
    if vace_context is not None:
        num_vace = _count(w, "vace_blocks.")
        layers = list(vace_layers) if vace_layers is not None else list(range(0, num_layers, 2))[:num_vace]
        scales = [float(vace_scale)] * num_vace if isinstance(vace_scale, (int, float)) else list(vace_scale)
        c = _patchify(w, "vace_patch_embedding", vace_context.to(dtype), patch)
        c = _dense(w, "vace_blocks.0.before_proj", c) + x
        for k in range(num_vace):
            c = _block(w, f"vace_blocks.{k}", c, e0, text, phasors, num_heads, eps, allowed)
            hints.append(_dense(w, f"vace_blocks.{k}.after_proj", c))
        hint_after = {layer: k for k, layer in enumerate(layers)}
    else:
        hint_after = {}

    for n in range(num_layers):
        x = _block(w, f"blocks.{n}", x, e0, text, phasors, num_heads, eps, allowed)
        if n in hint_after:
            k = hint_after[n]
            x = x + hints[k] * scales[k]

    mod = w["head.modulation"][0] + e[:, :, None]  # [B, S, 2, dim]
    out = _dense(w, "head.head", _standardise(x, eps) * (1 + mod[:, :, 1]) + mod[:, :, 0])
    return _unpatchify(out, grid, patch, out_channels)
