"""VACE Encode References: reference images (+ optional control video / masks) -> VACE_CONTEXT, and
the empty video LATENT of the same size for the sampler (as core WanVaceToVideo hands its sampler a
latent), so the video's width, height and length are set on this node only; its batch_size (as core
EmptyHunyuanLatentVideo's) asks the sampler for that many videos, all following the one context."""

from __future__ import annotations

import torch

from ..vace_core.encoding import REFERENCE_FITS, VaceContext, encode_vace_context
from ..vace_core.latents import LATENT_CHANNELS, VAE_STRIDE_S, check_size
from .common import CATEGORY, MAX_BATCH_SIZE, MAX_RESOLUTION, MAX_VIDEO_FRAMES, VACE_TYPE
from .model_files import WAN_VAE_FILE


class LongLiveVaceEncode:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "vae": ("VAE", {"tooltip": f"ComfyUI's Wan 2.1 VAE (VAELoader with {WAN_VAE_FILE})."}),
                "width": ("INT", {"default": 832, "min": 16, "max": MAX_RESOLUTION, "step": 16,
                                  "tooltip": "Video width in pixels (multiple of 16; LongLive: 832)."}),
                "height": ("INT", {"default": 480, "min": 16, "max": MAX_RESOLUTION, "step": 16,
                                   "tooltip": "Video height in pixels (multiple of 16; LongLive: 480)."}),
                "length": ("INT", {"default": 81, "min": 1, "max": MAX_VIDEO_FRAMES, "step": 4,
                                   "tooltip": "Video frames to generate (4k+1: 81 = 21 latent frames, 5 s at "
                                              "16 fps)."}),
                "reference_fit": (list(REFERENCE_FITS), {
                    "default": "pad",
                    "tooltip": "How a reference image is fitted to the frame: pad = whole image on white "
                               "(upstream VACE), crop = centre crop to fill (ComfyUI's WanVaceToVideo), "
                               "stretch = resize ignoring the aspect ratio."}),
            },
            "optional": {
                "reference_images": ("IMAGE", {
                    "tooltip": "Reference image(s) the video should follow (subject, style); every image of "
                               "the batch becomes one reference frame, in batch order."}),
                "more_reference_images": ("IMAGE", {
                    "tooltip": "More reference images, of another size than reference_images (a scene, an "
                               "object...): each is fitted to the frame on its own and follows them in order."}),
                "control_video": ("IMAGE", {
                    "tooltip": "Optional control video (depth, pose, frames to keep...), cropped to the "
                               "frame; shorter videos are padded with gray."}),
                "control_masks": ("MASK", {
                    "tooltip": "Optional masks for the control video: 1 = generate, 0 = keep the control "
                               "pixels (inpainting, first/last frame). One mask applies to every frame."}),
                "batch_size": ("INT", {
                    "default": 1, "min": 1, "max": MAX_BATCH_SIZE,
                    "tooltip": "Videos the sampler makes in one run from this latent, all following these "
                               "references (video i with seed + i), as batch_size on 'Empty HunyuanVideo 1.0 "
                               "Latent'. The context is encoded once."}),
            },
        }

    RETURN_TYPES = (VACE_TYPE, "LATENT")
    RETURN_NAMES = ("vace_context", "latent")
    OUTPUT_TOOLTIPS = ("VACE conditioning for the LongLive Sampler (references first, then the video frames).",
                       "An empty video latent of this width, height, length and batch_size, for the sampler's "
                       "latent input.")
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Encodes reference images (and optionally a control video with masks) with the Wan VAE "
                   "into the 96-channel VACE context the grafted VACE blocks read.")

    def encode(self, vae, width: int, height: int, length: int, reference_fit: str,
               reference_images=None, more_reference_images=None, control_video=None,
               control_masks=None, batch_size: int = 1) -> tuple[VaceContext, dict]:
        check_size(width, height)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size {batch_size!r}: expected a whole number of videos from 1 to {MAX_BATCH_SIZE}")
        references = [images for images in (reference_images, more_reference_images) if images is not None]
        if not references and control_video is None:
            raise ValueError("VACE Encode References: connect reference_images and/or control_video "
                             "(with neither there is nothing to condition on)")
        if control_masks is not None and control_video is None:
            raise ValueError("VACE Encode References: control_masks need a control_video to apply to")
        context = encode_vace_context(vae, width, height, length, reference_images=references,
                                      control_video=control_video, control_masks=control_masks,
                                      reference_fit=reference_fit)
        # what core's EmptyHunyuanLatentVideo gives for this size: [batch_size, 16, latent frames, h, w]
        latent = torch.zeros(batch_size, LATENT_CHANNELS, context.latent_frames, height // VAE_STRIDE_S,
                             width // VAE_STRIDE_S)
        return (context, {"samples": latent})
