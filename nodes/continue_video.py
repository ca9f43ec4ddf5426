"""LongLive Continue Video: generate more frames after an earlier video's latents, exactly.

The earlier LATENT (from a LongLive sampler, or any Wan 2.1 latent) becomes the start of the
timeline: its frames are inserted as they are and cached by their clean passes, chunk by chunk as
the earlier run made them (references too, when it had them), then generation continues at the
next frame position with the noise a single run would have drawn there. With the same model,
settings, seed, prompts and VACE context, "earlier run + continuation" equals one longer run.
A batch of earlier videos is continued in one run, video i from its own latents with seed + i:
each exactly as continuing that video alone.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from typing import Sequence

import torch

from ..vace_core.encoding import VaceContext
from ..vace_core.latents import VAE_STRIDE_S, VAE_STRIDE_T, denormalize_latents, normalize_latents, video_frames_for
from ..vace_core.presets import DEFAULT_PRESET
from ..vace_core.plan import PromptSegment
from .common import CATEGORY, MAX_VIDEO_FRAMES, REF_FRAMES_KEY, STEERING_KEY, VideoSize, video_latents
from .live import live_run
from .model_ref import LongLiveModel
from .sampler import Origin, SamplerInputs, run_request, sample_on_device, sampler_inputs
from .sampler_settings import SamplerChoices

OUTPUTS = ("continuation", "earlier + continuation")
# sampler inputs a continuation does not take: the size comes from the earlier latents, start
# images would replace them, and it is not steerable (the sampler nodes are): no clip
_NOT_TAKEN = ("latent", "start_images", "vae", "clip")


class LongLiveContinue:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        sampler = sampler_inputs()
        required = {name: spec for name, spec in sampler["required"].items() if name not in _NOT_TAKEN}
        optional = {name: spec for name, spec in sampler["optional"].items() if name not in _NOT_TAKEN}
        optional["vace_context"] = (optional["vace_context"][0], {
            "tooltip": "Needed when the earlier video has reference frames: the VACE context it was made with, "
                       "encoded for the WHOLE video (earlier + new frames)."})
        optional["prompt_schedule"] = (optional["prompt_schedule"][0], {
            "tooltip": "Prompt switches on the whole video's timeline (frame 0 = the earlier video's first frame). "
                       "Give the earlier run's schedule too so its switches are replayed exactly."})
        return {
            "required": {
                "model": required.pop("model"),
                "positive": required.pop("positive"),
                "samples": ("LATENT", {"tooltip": "The video to extend: the LATENT of an earlier LongLive run (its "
                                                  "reference frames are kept), or any Wan 2.1 latent. A batch of "
                                                  "videos is continued video by video, in one run."}),
                "seed": ("INT", {**required.pop("seed")[1], "control_after_generate": False,
                                 "tooltip": "The earlier run's seed: the continuation then draws the noise one "
                                            "longer run would have drawn (video i of a batch: seed + i)."}),
                "length": ("INT", {"default": 80, "min": VAE_STRIDE_T, "max": MAX_VIDEO_FRAMES,
                                   "step": VAE_STRIDE_T,
                                   "tooltip": "Video frames to add (a multiple of 4: every latent frame after the "
                                              "first decodes to 4 frames)."}),
                **required,
                "output": (list(OUTPUTS), {
                    "default": OUTPUTS[0],
                    "tooltip": "'continuation' = only the new latent frames (decoded alone, the VAE starts afresh "
                               "at the seam); 'earlier + continuation' = the whole video, references first, "
                               "for a seamless decode."}),
            },
            "optional": optional,
            "hidden": sampler["hidden"],
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("samples",)
    OUTPUT_TOOLTIPS = ("Raw Wan 2.1 latents: the new frames, or the whole video with its reference frames first.",)
    FUNCTION = "extend"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Continues an earlier video: rebuilds the KV caches from its latents (sink and window as the "
                   "earlier run had them) and generates the next frames, exactly as one longer run would.")

    def extend(self, model: LongLiveModel, positive, samples: dict, seed: int, length: int, vace_scale: float,
               output: str, preset: str = DEFAULT_PRESET, vace_context: VaceContext | None = None,
               prompt_schedule: Sequence[PromptSegment] | None = None, settings: SamplerChoices | None = None,
               prompt: dict | None = None, unique_id: str | None = None) -> tuple[dict]:
        if output not in OUTPUTS:
            raise ValueError(f"output {output!r}: expected one of {', '.join(OUTPUTS)}")
        earlier, ref_frames = _earlier_latents(samples, vace_context)
        if length < VAE_STRIDE_T or length % VAE_STRIDE_T:
            raise ValueError(f"length {length}: the frames to add must be a positive multiple of {VAE_STRIDE_T}")
        given = earlier.shape[2] - ref_frames
        height, width = (s * VAE_STRIDE_S for s in earlier.shape[-2:])
        size = VideoSize(width, height, video_frames_for(given + length // VAE_STRIDE_T))
        inputs = SamplerInputs(positive=positive, seed=seed, vace_scale=vace_scale, preset=preset, settings=settings,
                               vace=vace_context, prompt_schedule=prompt_schedule)
        request = replace(run_request(model, size, inputs, Origin(prompt, unique_id), size_from="samples",
                                      batch=earlier.shape[0]),
                          start_latents=earlier[:, :, ref_frames:],
                          reference_latents=earlier[:, :, :ref_frames] if ref_frames else None)
        with live_run(unique_id, request.blocks(), ref_frames) as live:
            result = sample_on_device(model, request, chunk_output=nullcontext(live.on_chunk))
        assert result.latents is not None  # kept (keep_latents)
        latents = denormalize_latents(result.latents)
        if output == OUTPUTS[0]:
            return ({"samples": latents[:, :, ref_frames + given:].contiguous(), REF_FRAMES_KEY: 0},)
        whole = {"samples": latents, REF_FRAMES_KEY: ref_frames}
        if STEERING_KEY in samples:  # the same timeline: the earlier video's steering still applies
            whole[STEERING_KEY] = samples[STEERING_KEY]
        return (whole,)


def _earlier_latents(samples: dict, vace: VaceContext | None) -> tuple[torch.Tensor, int]:
    """The earlier videos as normalised latents [B, 16, refs + frames, h, w] and their reference count."""
    raw, ref_frames = video_latents(samples)
    context_refs = vace.ref_frames if vace is not None else 0
    if ref_frames and context_refs != ref_frames:
        raise ValueError(f"samples: the earlier video has {ref_frames} reference frame(s), so connect the "
                         f"vace_context it was made with (encoded for the whole length); this one has {context_refs}")
    if context_refs and not ref_frames:
        raise ValueError(f"vace_context has {context_refs} reference frame(s) but the earlier video has none: "
                         "a continuation keeps the earlier video's timeline (encode the context without references)")
    return normalize_latents(raw.float()), ref_frames
