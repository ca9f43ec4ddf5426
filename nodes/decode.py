"""Decode (strip references): LATENT -> IMAGE without the leading reference frames."""

from __future__ import annotations

import torch

from ..vace_core.encoding import decode_without_references
from .common import CATEGORY, video_latents


class LongLiveDecode:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "Latents from the LongLive Sampler (any Wan 2.1 LATENT works; "
                                                  "one without reference frames decodes whole)."}),
                "vae": ("VAE", {"tooltip": "ComfyUI's Wan 2.1 VAE (the one used to encode the references)."}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The video frames [frames, height, width, 3], reference frames removed; a batch of videos "
                       "gives video 0's frames, then video 1's, and so on (what 'Image Batch Divider' splits).",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Decodes the sampler's latents with the Wan VAE, dropping the reference frames first "
                   "(the VAE is causal in time, so they must not be decoded with the video).")

    def decode(self, samples: dict, vae) -> tuple[torch.Tensor]:
        latents, ref_frames = video_latents(samples)
        # video by video: the causal VAE must see each video alone, from its first frame
        videos = [decode_without_references(vae, video, ref_frames).float() for video in latents.split(1)]
        return (videos[0] if len(videos) == 1 else torch.cat(videos),)
