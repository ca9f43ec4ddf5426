"""LongLive Prompt Schedule: chain (conditioning, start frame) pairs for prompt switching."""

from __future__ import annotations

import torch

from ..vace_core.plan import PromptSegment
from .common import CATEGORY, MAX_VIDEO_FRAMES, PROMPTS_TYPE


def conditioning_tensor(conditioning, input_name: str) -> torch.Tensor:
    """The text tensor [1, L, dim] of a ComfyUI CONDITIONING ([[tensor, {...}], ...]); the first entry
    is used (LongLive has no notion of combined or area conditioning)."""
    try:
        tensor = conditioning[0][0]
        shape = tuple(tensor.shape)
    except (TypeError, IndexError, KeyError, AttributeError):
        raise ValueError(f"{input_name}: expected a CONDITIONING (connect a CLIPTextEncode output)") from None
    if len(shape) != 3:
        raise ValueError(f"{input_name}: the conditioning tensor has shape {shape}, expected [1, tokens, 4096] "
                         "from the umT5 'wan' text encoder")
    return tensor[:1]


class LongLivePromptSchedule:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "conditioning": ("CONDITIONING", {
                    "tooltip": "The prompt that takes over at start_frame (CLIPTextEncode with the umT5 "
                               "'wan' text encoder)."}),
                "start_frame": ("INT", {
                    "default": 0, "min": 0, "max": MAX_VIDEO_FRAMES, "step": 1,
                    "tooltip": "Video frame where this prompt starts. It takes over at the first chunk "
                               "starting at or after this frame. A prompt at frame 0 replaces the "
                               "sampler's positive prompt."}),
            },
            "optional": {
                "previous": (PROMPTS_TYPE, {"tooltip": "Earlier entries of the schedule to extend (left "
                                                       "unchanged; a new schedule is returned)."}),
            },
        }

    RETURN_TYPES = (PROMPTS_TYPE,)
    RETURN_NAMES = ("prompt_schedule",)
    OUTPUT_TOOLTIPS = ("The prompt schedule for the LongLive Sampler's prompt_schedule input.",)
    FUNCTION = "schedule"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Adds a prompt switch to a schedule. On a switch LongLive resets the text cache and "
                   "re-caches its recent frames under the new prompt, so the video changes smoothly.")

    def schedule(self, conditioning, start_frame: int, previous=None) -> tuple[tuple[PromptSegment, ...]]:
        entry = PromptSegment(int(start_frame), conditioning_tensor(conditioning, "conditioning"))
        earlier = tuple(previous or ())
        taken = [p.start_frame for p in earlier]
        if entry.start_frame in taken:
            raise ValueError(f"LongLive Prompt Schedule: the schedule already has a prompt starting at frame "
                             f"{entry.start_frame}; give each prompt its own start_frame")
        return (tuple(sorted(earlier + (entry,), key=lambda p: p.start_frame)),)
