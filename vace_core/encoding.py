"""VACE conditioning: reference images, control video and masks -> the 96-channel VACE context.

Spaces and conventions (ComfyUI's, because the VAE is ComfyUI's own Wan 2.1 VAE; the latent format
is vace_core/latents.py):
- pixels are [T, H, W, 3] floats in 0..1 (ComfyUI IMAGE); masks are [T, H, W] in 0..1 (MASK);
- `vae.encode(pixels)` returns RAW latents; `vae.decode(raw)` returns 4t-3 frames as [T, H, W, 3]
  or [1, T, H, W, 3];
- everything in `VaceContext` is NORMALISED; a ComfyUI LATENT is raw.

The context of one latent frame is 16 channels VAE(inactive) + 16 channels VAE(reactive) + 64
channels of the folded pixel mask. The reference images come first in time, one latent frame each.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .latents import (LATENT_CHANNELS, VAE_STRIDE_S, check_size, denormalize_latents, latent_frames_for,
                      normalize_latents, video_frames_for)

MASK_CHANNELS = VAE_STRIDE_S * VAE_STRIDE_S  # one channel per pixel of an 8x8 patch
CONTEXT_CHANNELS = 2 * LATENT_CHANNELS + MASK_CHANNELS  # 96
REFERENCE_FITS = ("pad", "crop", "stretch")
# Constant latent frames encoded after the informative ones: the Wan 2.1 VAE encoder's causal
# convolutions see about 28 latent frames back (measured: a constant clip's latents are exactly
# constant from latent frame 29 on), so 32 reach its steady state with a margin.
TAIL_PROBE_LATENT_FRAMES = 32


# ---------------------------------------------------------------------------------------------
# pixel geometry


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    # x: [N, C, h, w] -> [N, C, height, width]
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


def _center_crop_to_aspect(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    # x: [N, C, h, w]; trims equal margins (rounded like ComfyUI's "center" crop) so that the
    # remainder has the target aspect ratio.
    h, w = x.shape[-2:]
    src_aspect, dst_aspect = w / h, width / height
    top = left = 0
    if src_aspect > dst_aspect:
        left = round((w - w * dst_aspect / src_aspect) / 2)
    elif src_aspect < dst_aspect:
        top = round((h - h * src_aspect / dst_aspect) / 2)
    return x[..., top:h - top, left:w - left]


def _cover(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    # [N, C, h, w] -> [N, C, height, width]: crop the centre to the aspect, then resize.
    return _resize(_center_crop_to_aspect(x, width, height), height, width)


def _contain_on_white(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    # [N, C, h, w] -> [N, C, height, width]: the whole image, scaled to fit, centred on white.
    h, w = x.shape[-2:]
    scale = min(height / h, width / w)
    # floor like upstream, with a tolerance so an exact fit is not lost to float rounding
    new_h = min(height, max(1, int(h * scale + 1e-6)))
    new_w = min(width, max(1, int(w * scale + 1e-6)))
    canvas = torch.ones(x.shape[0], x.shape[1], height, width, dtype=x.dtype, device=x.device)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[..., top:top + new_h, left:left + new_w] = _resize(x, new_h, new_w)
    return canvas


def prepare_reference(image: torch.Tensor, width: int, height: int, fit: str = "pad") -> torch.Tensor:
    """Bring one reference image [H, W, C] (0..1) to [height, width, 3].

    fit="pad": upstream VACE — scale to fit inside the frame keeping the aspect ratio (bilinear,
    align_corners False) and centre it on a white canvas.
    fit="crop": ComfyUI-native — centre-crop to the frame's aspect ratio, then scale to cover.
    fit="stretch": plain bilinear resize, aspect ratio not kept.
    """
    if fit not in REFERENCE_FITS:
        raise ValueError(f"reference_fit {fit!r}: expected one of {', '.join(REFERENCE_FITS)}")
    if image.ndim != 3 or image.shape[-1] < 3:
        raise ValueError(f"reference image must be [H, W, 3], got {tuple(image.shape)}")
    x = image[..., :3].float().permute(2, 0, 1).unsqueeze(0)  # [1, 3, H, W]
    if fit == "pad":
        x = _contain_on_white(x, width, height)
    elif fit == "crop":
        x = _cover(x, width, height)
    else:
        x = _resize(x, height, width)
    return x[0].permute(1, 2, 0)


# ---------------------------------------------------------------------------------------------
# masks


def mask_sources(video_frames: int, latent_frames: int) -> torch.Tensor:
    """The video frame whose mask each latent frame takes: nearest-exact resampling of the time
    axis (spatial folding does not mix frames, so folding then resampling equals this selection)."""
    positions = torch.arange(video_frames, dtype=torch.float32).view(1, 1, video_frames)
    picked = F.interpolate(positions, size=latent_frames, mode="nearest-exact")
    return picked.view(latent_frames).long()


def fold_patches(mask: torch.Tensor) -> torch.Tensor:
    """Pixel masks [t, H, W] -> VACE mask channels [64, t, H/8, W/8]: binarised at 0.5, pixel
    (dy, dx) of each 8x8 patch to channel dy*8 + dx."""
    t, hh, ww = mask.shape
    if hh % VAE_STRIDE_S or ww % VAE_STRIDE_S:
        raise ValueError(f"mask size {ww}x{hh} is not a multiple of {VAE_STRIDE_S}")
    h, w = hh // VAE_STRIDE_S, ww // VAE_STRIDE_S
    m = (mask > 0.5).float()
    m = m.view(t, h, VAE_STRIDE_S, w, VAE_STRIDE_S)    # [t, h, dy, w, dx]
    return m.permute(2, 4, 0, 1, 3).reshape(MASK_CHANNELS, t, h, w)


# ---------------------------------------------------------------------------------------------
# the context


@dataclass(frozen=True)
class VaceContext:
    """Normalised VACE context for `ref_frames` reference frames followed by `latent_frames`
    generated frames (latent positions 0..ref_frames-1 are the references).

    context:      [1, 96, ref_frames + latent_frames - repeated_tail, h, w]
    ref_latents:  [1, 16, ref_frames, h, w], the references' clean latents (== context[:, :16, :ref])
    repeated_tail: latent frames after the stored ones that equal the last stored frame (a long
                  gray / mask-1 stretch is stored once, so a minutes-long R2V context stays small).
    video_frames is always video_frames_for(latent_frames), the length the frames decode to.
    """

    context: torch.Tensor
    ref_latents: torch.Tensor
    ref_frames: int
    latent_frames: int
    video_frames: int
    height: int
    width: int
    repeated_tail: int = 0

    def __post_init__(self) -> None:
        h, w = self.height // VAE_STRIDE_S, self.width // VAE_STRIDE_S
        if not 0 <= self.repeated_tail < self.latent_frames:
            raise ValueError(f"repeated_tail {self.repeated_tail} must lie in 0..{self.latent_frames - 1}")
        want = (1, CONTEXT_CHANNELS, self.ref_frames + self.latent_frames - self.repeated_tail, h, w)
        if tuple(self.context.shape) != want:
            raise ValueError(f"VACE context has shape {tuple(self.context.shape)}, expected {want}")
        want_ref = (1, LATENT_CHANNELS, self.ref_frames, h, w)
        if tuple(self.ref_latents.shape) != want_ref:
            raise ValueError(f"reference latents have shape {tuple(self.ref_latents.shape)}, "
                             f"expected {want_ref}")
        if self.video_frames != video_frames_for(self.latent_frames):
            raise ValueError(f"video_frames {self.video_frames} does not match "
                             f"{self.latent_frames} latent frames")

    @property
    def total_frames(self) -> int:
        return self.ref_frames + self.latent_frames

    def frames(self, start: int, stop: int) -> torch.Tensor:
        """Context of latent positions start..stop-1 (references included in the numbering):
        [1, 96, stop - start, h, w]."""
        if not 0 <= start < stop <= self.total_frames:
            raise IndexError(f"frame range {start}..{stop} outside the context's "
                             f"{self.total_frames} frames")
        stored = self.context.shape[2]
        if stop <= stored:
            return self.context[:, :, start:stop]
        head = self.context[:, :, min(start, stored):stored]
        tail = self.context[:, :, -1:].expand(-1, -1, stop - max(start, stored), -1, -1)
        return torch.cat([head, tail], dim=2)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> "VaceContext":
        return replace(self, context=self.context.to(device=device, dtype=dtype),
                       ref_latents=self.ref_latents.to(device=device, dtype=dtype))


def _encode(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """pixels [T, H, W, 3] in 0..1 -> normalised latents [1, 16, (T-1)//4+1, H/8, W/8] (float32)."""
    t, hh, ww = pixels.shape[:3]
    raw = vae.encode(pixels)
    want = (1, LATENT_CHANNELS, latent_frames_for(t), hh // VAE_STRIDE_S, ww // VAE_STRIDE_S)
    if tuple(raw.shape) != want:
        raise ValueError(f"the VAE encoded {t} frames of {ww}x{hh} to {tuple(raw.shape)}, expected {want}: "
                         f"is it the Wan 2.1 VAE (16 latent channels)?")
    return normalize_latents(raw.float())


def _reference_list(reference_images: torch.Tensor | Sequence[torch.Tensor] | None) -> list[torch.Tensor]:
    # A ComfyUI IMAGE batch [N, H, W, C], one image [H, W, C], or a list of either.
    if reference_images is None:
        return []
    items = [reference_images] if isinstance(reference_images, torch.Tensor) else list(reference_images)
    out: list[torch.Tensor] = []
    for item in items:
        if item.ndim == 4:
            out.extend(item.unbind(0))
        elif item.ndim == 3:
            out.append(item)
        else:
            raise ValueError(f"reference image must be [H, W, 3] or [N, H, W, 3], got {tuple(item.shape)}")
    for img in out:
        if img.shape[-1] < 3 or min(img.shape[:2]) < 1:
            raise ValueError(f"reference image must be [H, W, 3], got {tuple(img.shape)}")
    return out


def _fit_length(x: torch.Tensor, length: int, fill: float) -> torch.Tensor:
    # [T, ...] -> [length, ...]: cut, or pad at the end with `fill` (ComfyUI's WanVaceToVideo rule)
    if x.shape[0] >= length:
        return x[:length]
    pad = torch.full((length - x.shape[0],) + tuple(x.shape[1:]), fill, dtype=x.dtype, device=x.device)
    return torch.cat([x, pad], dim=0)


def _control_pixels(control_video: torch.Tensor | None, video_frames: int, width: int,
                    height: int) -> torch.Tensor:
    # -> [video_frames, height, width, 3] in 0..1; gray (0.5) where there is no video
    if control_video is None:
        return torch.full((video_frames, height, width, 3), 0.5)
    if control_video.ndim != 4 or control_video.shape[-1] < 3:
        raise ValueError(f"control_video must be [T, H, W, 3], got {tuple(control_video.shape)}")
    v = control_video[:video_frames, ..., :3].float().permute(0, 3, 1, 2)  # [T, 3, H, W]
    v = _cover(v, width, height).permute(0, 2, 3, 1)
    return _fit_length(v, video_frames, 0.5)


def _control_mask(control_masks: torch.Tensor | None, video_frames: int, width: int,
                  height: int) -> torch.Tensor:
    # -> binary [video_frames, height, width]; 1 = generate, 0 = keep the control pixels
    if control_masks is None:
        return torch.ones(video_frames, height, width)
    m = control_masks.float()
    if m.ndim == 2:  # one mask for every frame
        m = m.unsqueeze(0).expand(video_frames, -1, -1)
    if m.ndim != 3:
        raise ValueError(f"control_masks must be [T, H, W] or [H, W], got {tuple(control_masks.shape)}")
    m = _cover(m[:video_frames].unsqueeze(1), width, height).squeeze(1)  # [T, height, width]
    return (_fit_length(m, video_frames, 1.0) > 0.5).float()


def encode_vace_context(
    vae: Any,
    width: int,
    height: int,
    video_frames: int,
    reference_images: torch.Tensor | Sequence[torch.Tensor] | None = None,
    control_video: torch.Tensor | None = None,
    control_masks: torch.Tensor | None = None,
    reference_fit: str = "pad",
    require_references: bool = False,
) -> VaceContext:
    """Build the normalised VACE context.

    References (R2V): each image is fitted to width x height (`prepare_reference`) and encoded
    ALONE into one latent frame; its reactive half and its mask channels are zero; they precede
    the video frames in time. All given references are used (ComfyUI's node uses only the first).

    Video frames follow ComfyUI's WanVaceToVideo (which agrees with upstream VACE):
    - no control video: gray frames (0.5) -> with no mask, mask 1 everywhere (plain R2V/T2V);
    - control video without masks: mask 1 everywhere, so the whole video is the reactive part
      (a depth/pose/... control signal the model regenerates from);
    - control video + masks: mask 0 keeps the pixels (inactive part: inpainting, first/last
      frame), mask 1 is generated. A [H, W] mask applies to every frame.
    Control video and masks are centre-cropped and resized to the frame; a shorter video is padded
    with gray and shorter masks with 1 (generate), a longer one is cut to `video_frames`.
    With x = 2p - 1 and m the mask binarised at 0.5: inactive = x * (1 - m), reactive = x * m,
    each handed to the VAE as (v + 1) / 2 in 0..1 and normalised.
    """
    check_size(width, height)
    latent_frames = latent_frames_for(video_frames)
    refs = _reference_list(reference_images)
    if require_references and not refs:
        raise ValueError("R2V needs at least one reference image: connect reference_images")
    if reference_fit not in REFERENCE_FITS:
        raise ValueError(f"reference_fit {reference_fit!r}: expected one of {', '.join(REFERENCE_FITS)}")
    prepared = [prepare_reference(img, width, height, reference_fit) for img in refs]
    video_ctx, repeated_tail = _encode_video_part(vae, width, height, video_frames, control_video, control_masks)

    h, w = height // VAE_STRIDE_S, width // VAE_STRIDE_S
    ref_latents = torch.cat([_encode(vae, img.unsqueeze(0)) for img in prepared], dim=2) if prepared \
        else video_ctx.new_zeros(1, LATENT_CHANNELS, 0, h, w)  # [1, 16, n_ref, h, w]
    n_ref = ref_latents.shape[2]
    ref_ctx = torch.cat([ref_latents, video_ctx.new_zeros(1, LATENT_CHANNELS + MASK_CHANNELS, n_ref, h, w)],
                        dim=1)
    return VaceContext(
        context=torch.cat([ref_ctx, video_ctx], dim=2),
        ref_latents=ref_latents,
        ref_frames=n_ref,
        latent_frames=latent_frames,
        video_frames=video_frames_for(latent_frames),
        height=height,
        width=width,
        repeated_tail=repeated_tail,
    )


def _encode_video_part(vae: Any, width: int, height: int, video_frames: int, control_video: torch.Tensor | None,
                       control_masks: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """VACE context of the video frames: [1, 96, stored, h, w] and how many latent frames repeat
    the last stored one.

    Frames after the control video / per-frame masks are constant (gray, a fixed mask), and the
    causal Wan VAE maps a constant input to a constant latent once its temporal receptive field
    has passed. So only the informative frames plus `TAIL_PROBE_LATENT_FRAMES` are encoded, and
    the rest repeats the last latent frame; if the probe's last two frames differ (a VAE that
    never settles) the whole length is encoded instead.
    """
    latent_frames = latent_frames_for(video_frames)
    sources = mask_sources(video_frames, latent_frames)
    informative = control_video.shape[0] if control_video is not None else 0
    if control_masks is not None and control_masks.ndim == 3:
        informative = max(informative, control_masks.shape[0])
    stored = min(latent_frames, latent_frames_for(max(informative, 1)) + TAIL_PROBE_LATENT_FRAMES)
    while True:
        encoded_frames = video_frames_for(stored)
        mask_frames = max(encoded_frames, int(sources[stored - 1]) + 1)
        pixels = _control_pixels(control_video, encoded_frames, width, height)   # [T', H, W, 3]
        mask = _control_mask(control_masks, mask_frames, width, height)          # [T'', H, W]
        x = pixels * 2 - 1                               # [-1, 1], VACE's pixel space
        m = mask[:encoded_frames].unsqueeze(-1)
        inactive = _encode(vae, (x * (1 - m) + 1) / 2)  # [1, 16, stored, h, w]
        reactive = _encode(vae, (x * m + 1) / 2)
        del x, pixels
        folded = fold_patches(mask[sources[:stored]]).unsqueeze(0).to(inactive.device)  # [1, 64, stored, h, w]
        video_ctx = torch.cat([inactive, reactive, folded], dim=1)
        if stored == latent_frames:
            return video_ctx, 0
        last, before = video_ctx[:, :, -1], video_ctx[:, :, -2]
        if torch.allclose(last, before, rtol=1e-5, atol=1e-5):
            return video_ctx, latent_frames - stored
        stored = latent_frames


def encode_start_frames(vae: Any, images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Start images [N, H, W, 3] (0..1, one image or a clip) -> normalised latents
    [1, 16, (N-1)//4+1, h, w]: centre-cropped to the frame's aspect and resized (ComfyUI's
    image-to-video convention), then encoded as one clip, so N images become the video's first
    N frames once decoded."""
    check_size(width, height)
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[-1] < 3 or images.shape[0] < 1:
        raise ValueError(f"start_images must be an IMAGE [N, H, W, 3], got {tuple(images.shape)}")
    pixels = _cover(images[..., :3].float().permute(0, 3, 1, 2), width, height).permute(0, 2, 3, 1)
    return _encode(vae, pixels.clamp(0, 1))


# ---------------------------------------------------------------------------------------------
# decoding


def strip_reference_frames(latents: torch.Tensor, ref_frames: int) -> torch.Tensor:
    """Drop the first `ref_frames` latent frames: [B, C, ref+T, h, w] -> [B, C, T, h, w]."""
    if latents.ndim != 5:
        raise ValueError(f"expected latents [B, C, T, h, w], got {tuple(latents.shape)}")
    if not 0 <= ref_frames < latents.shape[2]:
        raise ValueError(f"cannot strip {ref_frames} reference frames from {latents.shape[2]} latent frames")
    return latents[:, :, ref_frames:]


def as_frames(pixels: torch.Tensor) -> torch.Tensor:
    """One video as [T, H, W, 3], from [1, T, H, W, 3] (what ComfyUI's video VAEs decode to) or
    [T, H, W, 3] (other callers)."""
    if pixels.ndim == 5:
        if pixels.shape[0] != 1:
            raise ValueError(f"expected one decoded video, got a batch of {pixels.shape[0]}")
        pixels = pixels[0]
    if pixels.ndim != 4:
        raise ValueError(f"the VAE decoded to shape {tuple(pixels.shape)}, expected [T, H, W, 3]")
    return pixels


def decode_without_references(vae: Any, raw_latents: torch.Tensor, ref_frames: int) -> torch.Tensor:
    """Decode RAW VAE-space latents (a ComfyUI LATENT's samples) [1, 16, ref+T, h, w] to
    [4T-3, H, W, 3] pixels, without the reference frames. They are stripped before decoding:
    the Wan VAE is causal in time, so decoding them would change the frames that follow."""
    return as_frames(vae.decode(strip_reference_frames(raw_latents, ref_frames)))


def decode_normalized_without_references(vae: Any, norm_latents: torch.Tensor,
                                         ref_frames: int) -> torch.Tensor:
    """As `decode_without_references`, for NORMALISED latents (what the sampler produces)."""
    return decode_without_references(vae, denormalize_latents(norm_latents), ref_frames)
