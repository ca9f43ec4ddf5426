"""A small causal VAE with the Wan 2.1 VAE's interface and real temporal state (tests, self-test,
benchmarks): its chunk-by-chunk decoder must carry that state to equal a whole decode, as the real
VAE's must.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..encoding import as_frames
from ..latents import LATENT_CHANNELS, VAE_STRIDE_S, VAE_STRIDE_T, latent_frames_for
from ..streaming import check_chunk


class _CausalTimeConv:
    """Helpers for a Conv3d that is causal in time (kernel kt, padding kt-1 frames in front).

    Whole-video mode pads zeros in front; streaming mode keeps the last kt-1 input frames of
    the previous call instead, which starts as the same zeros, so both give identical outputs.
    """

    @staticmethod
    def whole(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        pad_t = conv.kernel_size[0] - 1
        return conv(F.pad(x, (0, 0, 0, 0, pad_t, 0)))

    @staticmethod
    def step(conv: nn.Conv3d, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        pad_t = conv.kernel_size[0] - 1
        if state is None:
            state = x.new_zeros(x.shape[0], x.shape[1], pad_t, *x.shape[3:])
        joined = torch.cat([state, x], dim=2)  # [B, C, pad_t + T, H, W]
        return conv(joined), joined[:, :, joined.shape[2] - pad_t:].clone()


class CausalStandInVAE(nn.Module):
    """A tiny VAE with the Wan 2.1 VAE's interface and causal temporal structure.

    decode: raw latents [1, 16, t, h, w] -> [1, 4t - 3, 8h, 8w, 3] in 0..1 (ComfyUI's [B, T, H, W, C])
      1. causal 3x3x3 conv (carries 2 latent frames) + SiLU
      2. 4x temporal upsample: 4 sub-frames per latent frame; the first latent frame of the video
         keeps only its last one (so t latent frames give 4t - 3 frames, as Wan's)
      3. causal temporal conv (kernel 3, carries 2 video-rate frames, across latent frames) + SiLU
      4. 8x spatial upsample by pixel shuffle, tanh, then (x + 1) / 2 clamped (ComfyUI's process_output)
    encode: pixels [T, H, W, 3] in 0..1 -> raw latents [1, 16, (T-1)//4 + 1, H/8, W/8]
      (first frame alone, then groups of 4 averaged, 8x8 pixel unshuffle, 1x1 projection).

    The random weights are deterministic in `seed`; nothing here approximates the real VAE.
    """

    def __init__(self, hidden: int = 8, seed: int = 0) -> None:
        super().__init__()
        s, c = VAE_STRIDE_S, hidden
        self.conv_in = nn.Conv3d(LATENT_CHANNELS, c, (3, 3, 3), padding=(0, 1, 1))
        self.time_up = nn.Conv3d(c, VAE_STRIDE_T * c, 1)
        self.conv_mid = nn.Conv3d(c, c, (3, 1, 1))
        self.to_pixels = nn.Conv3d(c, 3 * s * s, 1)
        self.encoder = nn.Conv3d(3 * s * s, LATENT_CHANNELS, 1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in sorted(self.named_parameters()):
                fan_in = math.prod(param.shape[1:]) if param.ndim > 1 else 1
                std = 1.0 / math.sqrt(fan_in) if param.ndim > 1 else 0.05
                param.copy_(torch.randn(param.shape, generator=generator) * std)
        self.requires_grad_(False)

    # ---- decoding --------------------------------------------------------------------------

    def _upsample_time(self, x: torch.Tensor, keep_first_only_last: bool) -> torch.Tensor:
        # [B, c, t, h, w] -> [B, c, 4t, h, w] (or 4t - 3 when the chunk starts the video)
        b, c, t, h, w = x.shape
        sub = self.time_up(x).view(b, VAE_STRIDE_T, c, t, h, w)
        sub = sub.permute(0, 2, 3, 1, 4, 5).reshape(b, c, t * VAE_STRIDE_T, h, w)  # frame i*4 + k
        return sub[:, :, VAE_STRIDE_T - 1:] if keep_first_only_last else sub

    def _to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        # [B, c, T, h, w] -> [B, T, 8h, 8w, 3] in 0..1
        b, _, t, h, w = x.shape
        p = self.to_pixels(F.silu(x))  # [B, 3*64, T, h, w]
        p = p.permute(0, 2, 1, 3, 4).reshape(b * t, -1, h, w)
        p = F.pixel_shuffle(p, VAE_STRIDE_S).view(b, t, 3, h * VAE_STRIDE_S, w * VAE_STRIDE_S)
        p = torch.tanh(p).permute(0, 1, 3, 4, 2)
        return ((p + 1) / 2).clamp(0, 1)

    def _dtype_in(self, z: torch.Tensor) -> torch.Tensor:
        check_chunk(z)
        return z.to(self.conv_in.weight)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Whole video, independent of the streaming path: causal zero padding over all frames."""
        x = F.silu(_CausalTimeConv.whole(self.conv_in, self._dtype_in(z)))
        x = self._upsample_time(x, keep_first_only_last=True)
        x = _CausalTimeConv.whole(self.conv_mid, x)
        return self._to_pixels(x)

    def streaming_decoder(self) -> "StandInStreamingDecoder":
        return StandInStreamingDecoder(self)

    # ---- encoding --------------------------------------------------------------------------

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [T, H, W, 3] (or [1, T, H, W, 3]) in 0..1 -> raw latents [1, 16, (T-1)//4+1, H/8, W/8]."""
        pixels = as_frames(pixels)[..., :3].to(self.encoder.weight)
        t, hh, ww = pixels.shape[:3]
        if hh % VAE_STRIDE_S or ww % VAE_STRIDE_S:
            raise ValueError(f"frame size {ww}x{hh} is not a multiple of {VAE_STRIDE_S}")
        x = pixels * 2 - 1
        groups = latent_frames_for(t) - 1
        rest = x[1:1 + VAE_STRIDE_T * groups].reshape(groups, VAE_STRIDE_T, hh, ww, 3).mean(dim=1)
        x = torch.cat([x[:1], rest], dim=0).permute(0, 3, 1, 2)  # [t, 3, H, W]
        x = F.pixel_unshuffle(x, VAE_STRIDE_S)                   # [t, 192, h, w]
        return self.encoder(x.permute(1, 0, 2, 3).unsqueeze(0))  # [1, 16, t, h, w]


class StandInStreamingDecoder:
    """Chunk-by-chunk decoding of `CausalStandInVAE` carrying the causal state across calls."""

    def __init__(self, vae: CausalStandInVAE) -> None:
        self.vae = vae
        self.started = False
        self._in_state: torch.Tensor | None = None   # last 2 latent-rate frames entering conv_in
        self._mid_state: torch.Tensor | None = None  # last 2 video-rate frames entering conv_mid

    def decode_chunk(self, latents_raw: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        with torch.no_grad():
            x, self._in_state = _CausalTimeConv.step(vae.conv_in, vae._dtype_in(latents_raw), self._in_state)
            x = vae._upsample_time(F.silu(x), keep_first_only_last=not self.started)
            x, self._mid_state = _CausalTimeConv.step(vae.conv_mid, x, self._mid_state)
            self.started = True
            return vae._to_pixels(x)[0]
