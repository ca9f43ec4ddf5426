"""LongLive Prompt Schedule: chain (conditioning, start frame) pairs for prompt switching."""

from __future__ import annotations

import json
from typing import Any

import torch

from ..vace_core.plan import PromptSegment
from .common import CATEGORY, MAX_VIDEO_FRAMES, PROMPTS_TYPE, STEERING_KEY


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


def encode_prompt(clip, text: str, input_name: str) -> torch.Tensor:
    """`text` encoded with `clip` exactly as CLIPTextEncode encodes it (`clip.tokenize`, then
    `clip.encode_from_tokens_scheduled`): the text tensor [1, L, dim] of the conditioning."""
    check_clip(clip, input_name)
    return conditioning_tensor(clip.encode_from_tokens_scheduled(clip.tokenize(text)), input_name)


def check_clip(clip, input_name: str) -> None:
    if not all(callable(getattr(clip, name, None)) for name in ("tokenize", "encode_from_tokens_scheduled")):
        raise ValueError(f"{input_name}: expected a CLIP (connect a CLIPLoader with type 'wan', the umT5-XXL text "
                         f"encoder), got {type(clip).__name__}")


def check_text_width(context: torch.Tensor, text_dim: int, input_name: str) -> torch.Tensor:
    """`context` when its channels are the model's text width, else a ValueError naming the input."""
    width = context.shape[-1]
    if width != text_dim:
        raise ValueError(f"{input_name}: the conditioning has {width} channels but the model expects {text_dim}: "
                         "encode the prompt with CLIPLoader type 'wan' (umT5-XXL)")
    return context


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


def parse_steering_record(text: str, what: str = "steering") -> list[dict[str, Any]]:
    """A steering record `[{"frame": int, "text": str}, ...]` from its JSON, checked."""
    try:
        record = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{what}: not JSON ({error}); expected [{{\"frame\": 33, \"text\": \"...\"}}, ...] as "
                         "the video's longlive_steering metadata holds it") from None
    if not isinstance(record, list):
        raise ValueError(f"{what}: expected a JSON list of {{\"frame\", \"text\"}} entries, got {type(record).__name__}")
    for n, entry in enumerate(record):
        if (not isinstance(entry, dict) or not isinstance(entry.get("frame"), int) or isinstance(entry["frame"], bool)
                or entry["frame"] < 0 or not isinstance(entry.get("text"), str) or not entry["text"].strip()):
            raise ValueError(f"{what}: entry {n} is {entry!r}; expected {{\"frame\": a video frame >= 0, "
                             "\"text\": a prompt}")
    frames = [entry["frame"] for entry in record]
    if len(set(frames)) != len(frames):
        raise ValueError(f"{what}: two entries at the same frame ({frames})")
    return record


class LongLiveSteeringSchedule:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The CLIP the steered run encoded its texts with (the umT5 'wan' CLIP)."}),
                "steering": ("STRING", {
                    "multiline": True, "default": "[]",
                    "tooltip": f"The steering record of a run: the video's {STEERING_KEY} metadata, or what the "
                               "sampler node showed, e.g. [{\"frame\": 33, \"text\": \"the fox jumps\"}]."}),
            },
            "optional": {
                "previous": (PROMPTS_TYPE, {"tooltip": "The run's own prompt schedule, if it had one; a steered text "
                                                       "at the frame of a scheduled prompt replaces it, as it did live."}),
            },
        }

    RETURN_TYPES = (PROMPTS_TYPE,)
    RETURN_NAMES = ("prompt_schedule",)
    OUTPUT_TOOLTIPS = ("The schedule that replays the steering: connect it to the sampler's prompt_schedule and keep "
                       "the seed and everything else as they were to get the same frames.",)
    FUNCTION = "schedule"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Turns a steering record into a prompt schedule: each text, encoded as CLIPTextEncode does, takes "
                   "over at its frame, exactly as it did live, so the steered video can be made again.")

    def schedule(self, clip, steering: str, previous=None) -> tuple[tuple[PromptSegment, ...]]:
        record = parse_steering_record(steering)
        check_clip(clip, "clip")
        entries = {p.start_frame: p for p in previous or ()}
        for entry in record:
            name = f"clip (the steering text at frame {entry['frame']})"
            entries[entry["frame"]] = PromptSegment(entry["frame"], encode_prompt(clip, entry["text"], name))
        return (tuple(entries[frame] for frame in sorted(entries)),)
