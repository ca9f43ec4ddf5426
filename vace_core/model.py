"""The causal Wan2.1 DiT (LongLive's generator), optionally with grafted VACE blocks.

`forward_block` runs one causal block of latent frames at absolute frame positions, reading and
writing a `KVCache`; `forward_full` is the single-block, cache-free (bidirectional) special case,
which equals upstream Wan / VACE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .cache import KVCache
from .config import VACE_CONTEXT_CHANNELS, WanConfig
from .layers import Head, RotaryEmbedding, WanBlock, linear, sinusoidal_embedding
from .vace import build_vace_modules, compute_hints, layer_scales

# Parameters kept in float32 whatever the compute dtype: they feed the float32 modulation and
# norms (as upstream runs them under float32 autocast) and are small.
FLOAT32_PARAM_MARKERS = ("time_embedding.", "time_projection.", "modulation", "norm")


def param_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """Storage dtype of parameter `name` when the model computes in `dtype`."""
    return torch.float32 if any(m in name for m in FLOAT32_PARAM_MARKERS) else dtype


@dataclass
class TextState:
    """A prompt prepared once: embedded tokens and every block's cross-attention keys/values."""
    tokens: torch.Tensor  # [B, L, dim]
    block_kv: list[tuple[torch.Tensor, torch.Tensor]]
    vace_kv: list[tuple[torch.Tensor, torch.Tensor]]


class CausalWanModel(nn.Module):
    def __init__(self, config: WanConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.patch_embedding = nn.Conv3d(config.in_channels, dim, kernel_size=config.patch_size,
                                         stride=config.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(WanBlock(config) for _ in range(config.num_layers))
        self.head = Head(config)
        self.rope = RotaryEmbedding(config.head_dim)
        if config.has_vace:
            self.vace_patch_embedding, self.vace_blocks = build_vace_modules(config)

    # ---- VACE grafting -------------------------------------------------------------------------

    @property
    def has_vace(self) -> bool:
        return self.config.has_vace

    def attach_vace(self, num_vace_blocks: int, vace_in_dim: int = VACE_CONTEXT_CHANNELS,
                    device: torch.device | str | None = None) -> None:
        """Create VACE modules in the model's dtype policy, on `device` (default: the model's).

        A loader that assigns real weights right after passes device="meta": no storage, no init.
        """
        config = self.config.with_vace(num_vace_blocks, vace_in_dim)
        reference = self.blocks[0].self_attn.q.weight
        with torch.device(device if device is not None else reference.device):
            patch_embedding, blocks = build_vace_modules(config)
        for name, param in list(patch_embedding.named_parameters()) + list(blocks.named_parameters()):
            param.data = param.data.to(param_dtype(name, reference.dtype))
        self.config = config
        self.vace_patch_embedding, self.vace_blocks = patch_embedding, blocks

    def detach_vace(self) -> None:
        for name in ("vace_patch_embedding", "vace_blocks"):
            if hasattr(self, name):
                delattr(self, name)
        self.config = self.config.without_vace()

    def set_dtype(self, dtype: torch.dtype) -> "CausalWanModel":
        """Cast weights to `dtype`, keeping the float32 parameters of `param_dtype` in float32."""
        for name, param in self.named_parameters():
            param.data = param.data.to(param_dtype(name, dtype))
        return self

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.blocks[0].self_attn.q.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    # ---- conditioning --------------------------------------------------------------------------

    def encode_text(self, context: torch.Tensor) -> TextState:
        """context [B, L, text_dim] -> TextState. Shorter prompts are zero-padded to `text_len`
        BEFORE the embedding (padded rows become text_embedding(0)); longer ones keep all tokens."""
        batch, length, width = context.shape
        if width != self.config.text_dim:
            raise ValueError(f"text conditioning has {width} channels but the model expects "
                             f"{self.config.text_dim} (use the umT5-XXL 'wan' text encoder)")
        if length < self.config.text_len:
            context = torch.cat([context, context.new_zeros(batch, self.config.text_len - length, width)], dim=1)
        first = self.text_embedding[0]
        tokens = self.text_embedding[2](self.text_embedding[1](linear(first, context.to(first.weight.device))))
        block_kv = [block.cross_attn.project_text(tokens) for block in self.blocks]
        vace_kv = [block.cross_attn.project_text(tokens) for block in self.vace_blocks] if self.has_vace else []
        return TextState(tokens=tokens, block_kv=block_kv, vace_kv=vace_kv)

    def time_modulation(self, timestep: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """timestep [B] or [B, F] (0..1000) -> time embedding [B, F, dim], block modulation [B, F, 6, dim]."""
        if timestep.ndim == 1:
            timestep = timestep[:, None].expand(-1, frames)
        batch = timestep.shape[0]
        sinusoid = sinusoidal_embedding(self.config.freq_dim, timestep.reshape(-1)).float()
        emb = self.time_embedding(sinusoid.to(self.time_embedding[0].weight.device))  # [B*F, dim]
        mod = self.time_projection(emb).unflatten(1, (6, self.config.dim))  # [B*F, 6, dim]
        return emb.view(batch, frames, -1), mod.view(batch, frames, 6, -1)

    # ---- forward -------------------------------------------------------------------------------

    def forward_block(self, latents: torch.Tensor, timestep: torch.Tensor | float, text: TextState,
                      start_frame: int = 0, kv_cache: KVCache | None = None,
                      vace_context: torch.Tensor | None = None,
                      vace_scale: float | Sequence[float] = 1.0,
                      frame_mask: torch.Tensor | None = None,
                      vace_frame_mask: torch.Tensor | None = None,
                      vace_frame_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Flow prediction for one causal block.

        latents [B, C, F, H, W] (normalised latent space) at absolute frames
        start_frame .. start_frame+F-1; timestep scalar, [B] or [B, F] on 0..1000.
        With `kv_cache` the block's keys/values are written to the cache and attention reads the
        cache's visible window. Without a cache attention covers the given frames, restricted by
        `frame_mask` [F, F] (query frame, key frame) when given. `vace_frame_mask` restricts the
        VACE blocks the same way; `vace_frame_weight` [F] switches hints on/off per frame.
        """
        batch, _, frames, height, width = latents.shape
        pt, ph, pw = self.config.patch_size
        if frames % pt or height % ph or width % pw:
            raise ValueError(f"latent grid {frames}x{height}x{width} is not divisible by the patch size "
                             f"{self.config.patch_size}")
        grid = (frames // pt, height // ph, width // pw)
        if start_frame + grid[0] > self.config.rope_max_frames:
            raise ValueError(f"frame position {start_frame + grid[0]} exceeds the model's RoPE range of "
                             f"{self.config.rope_max_frames} latent frames")
        device = self.device
        timestep = torch.as_tensor(timestep, dtype=torch.float32, device=device)
        if timestep.ndim == 0:
            timestep = timestep.expand(batch)
        time_emb, time_mod = self.time_modulation(timestep, grid[0])

        x = self.patch_embedding(latents.to(device, self.patch_embedding.weight.dtype))  # [B, dim, f, h, w]
        x = x.flatten(2).transpose(1, 2).float()  # [B, S, dim]
        tokens_per_frame = grid[1] * grid[2]
        rope = self.rope.table(start_frame, *grid, device=device)
        attn_mask = _token_mask(frame_mask, tokens_per_frame, device)

        hints, scales = self._hints(x, vace_context, vace_scale, time_mod, text, rope,
                                    _token_mask(vace_frame_mask, tokens_per_frame, device), latents.shape)
        if hints and vace_frame_weight is not None:
            weight = vace_frame_weight.to(device, torch.float32).repeat_interleave(tokens_per_frame)
            hints = [h * weight[None, :, None] for h in hints]
        hint_after = {layer: k for k, layer in enumerate(self.config.vace_layers)}

        cache = kv_cache.begin_block(start_frame, grid[0]) if kv_cache is not None else None
        for index, block in enumerate(self.blocks):
            x = block(x, time_mod, text.block_kv[index], rope, cache, index, attn_mask)
            k = hint_after.get(index)
            if hints and k is not None and scales[k] != 0.0:
                x = x + hints[k] * scales[k]

        out = self.head(x, time_emb)  # [B, S, C * pt * ph * pw]
        return self._unpatchify(out, grid)

    def forward_full(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor | TextState,
                     vace_context: torch.Tensor | None = None,
                     vace_scale: float | Sequence[float] = 1.0) -> torch.Tensor:
        """Bidirectional, cache-free flow prediction over all frames at once (upstream Wan/VACE).

        latents [B, 16, T, H, W] normalised, timestep [B] on 0..1000, context [B, L, text_dim]
        with L <= 512 (or a prepared TextState), vace_context [B, 96, T, H, W].
        """
        text = context if isinstance(context, TextState) else self.encode_text(context)
        return self.forward_block(latents, timestep, text, start_frame=0, vace_context=vace_context,
                                  vace_scale=vace_scale)

    def _hints(self, x: torch.Tensor, vace_context: torch.Tensor | None, vace_scale: float | Sequence[float],
               time_mod: torch.Tensor, text: TextState, rope: tuple[torch.Tensor, torch.Tensor],
               vace_mask: torch.Tensor | None, latent_shape: torch.Size) -> tuple[list[torch.Tensor], list[float]]:
        """VACE hints [B, S, dim] (one per VACE block) and their scales; no hints without a context
        or when every scale is 0."""
        if vace_context is None:
            return [], []
        if not self.has_vace:
            raise ValueError("a VACE context was given but this model has no VACE weights: "
                             "add a 'Load VACE Weights (graft)' step first")
        expected = (latent_shape[0], self.config.vace_in_dim, *latent_shape[2:])
        if tuple(vace_context.shape) != expected:
            raise ValueError(f"VACE context has shape {tuple(vace_context.shape)}, expected {expected} "
                             "(it was made for another size or length)")
        scales = layer_scales(vace_scale, self.config.num_vace_blocks)
        if all(s == 0.0 for s in scales):
            return [], scales  # scale 0 is exactly the model without VACE
        if len(text.vace_kv) != self.config.num_vace_blocks:
            raise ValueError("the prompt was encoded before VACE was grafted; encode it again")
        hints = compute_hints(self.vace_patch_embedding, self.vace_blocks, x, vace_context.to(self.device),
                              time_mod, text.vace_kv, rope, vace_mask)
        return hints, scales

    def _unpatchify(self, out: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, S, C*pt*ph*pw] -> [B, C, F, H, W]; each patch's features are ordered (pt, ph, pw, C)."""
        frames, height, width = grid
        pt, ph, pw = self.config.patch_size
        channels = self.config.out_channels
        out = out.float().view(out.shape[0], frames, height, width, pt, ph, pw, channels)
        out = out.permute(0, 7, 1, 4, 2, 5, 3, 6)  # [B, C, f, pt, h, ph, w, pw]
        return out.reshape(out.shape[0], channels, frames * pt, height * ph, width * pw)


def _token_mask(frame_mask: torch.Tensor | None, tokens_per_frame: int,
                device: torch.device) -> torch.Tensor | None:
    """Frame-level boolean mask [Fq, Fk] -> token-level [Sq, Sk] (True = may attend)."""
    if frame_mask is None:
        return None
    mask = frame_mask.to(device=device, dtype=torch.bool)
    return mask.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)
