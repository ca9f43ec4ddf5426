"""VACE Encode References: reference images (+ optional control video / masks) -> VACE_CONTEXT."""

from __future__ import annotations

from ..vace_core.encoding import REFERENCE_FITS, VaceContext, check_size, encode_vace_context
from .common import CATEGORY, MAX_RESOLUTION, MAX_VIDEO_FRAMES, VACE_TYPE
from .host.files import WAN_VAE_FILE


class LongLiveVaceEncode:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "vae": ("VAE", {"tooltip": f"ComfyUI's Wan 2.1 VAE (VAELoader with {WAN_VAE_FILE})."}),
                "width": ("INT", {"default": 832, "min": 16, "max": MAX_RESOLUTION, "step": 16,
                                  "tooltip": "Video width in pixels (multiple of 16); must equal the sampler's."}),
                "height": ("INT", {"default": 480, "min": 16, "max": MAX_RESOLUTION, "step": 16,
                                   "tooltip": "Video height in pixels (multiple of 16); must equal the sampler's."}),
                "length": ("INT", {"default": 81, "min": 1, "max": MAX_VIDEO_FRAMES, "step": 4,
                                   "tooltip": "Video frames to generate (4k+1, e.g. 81); must equal the "
                                              "sampler's length."}),
                "reference_fit": (list(REFERENCE_FITS), {
                    "default": "pad",
                    "tooltip": "How a reference image is fitted to the frame: pad = whole image on white "
                               "(upstream VACE), crop = centre crop to fill (ComfyUI's WanVaceToVideo), "
                               "stretch = resize ignoring the aspect ratio."}),
            },
            "optional": {
                "reference_images": ("IMAGE", {
                    "tooltip": "Reference image(s) the video should follow (subject, style); every image of "
                               "the batch becomes one reference frame."}),
                "control_video": ("IMAGE", {
                    "tooltip": "Optional control video (depth, pose, frames to keep...), cropped to the "
                               "frame; shorter videos are padded with gray."}),
                "control_masks": ("MASK", {
                    "tooltip": "Optional masks for the control video: 1 = generate, 0 = keep the control "
                               "pixels (inpainting, first/last frame). One mask applies to every frame."}),
            },
        }

    RETURN_TYPES = (VACE_TYPE,)
    RETURN_NAMES = ("vace_context",)
    OUTPUT_TOOLTIPS = ("VACE conditioning for the LongLive Sampler (references first, then the video frames).",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Encodes reference images (and optionally a control video with masks) with the Wan VAE "
                   "into the 96-channel VACE context the grafted VACE blocks read.")

    def encode(self, vae, width: int, height: int, length: int, reference_fit: str,
               reference_images=None, control_video=None, control_masks=None) -> tuple[VaceContext]:
        check_size(width, height)
        if reference_images is None and control_video is None:
            raise ValueError("VACE Encode References: connect reference_images and/or control_video "
                             "(with neither there is nothing to condition on)")
        if control_masks is not None and control_video is None:
            raise ValueError("VACE Encode References: control_masks need a control_video to apply to")
        context = encode_vace_context(vae, width, height, length, reference_images=reference_images,
                                      control_video=control_video, control_masks=control_masks,
                                      reference_fit=reference_fit)
        return (context,)
