"""Prompts: the text tensor of a CONDITIONING (checked), encoding a text as CLIPTextEncode does, the
prompt-weight syntax of ComfyUI's tokenizers (read to refuse a text before it is encoded), and the
LongLive Prompt Schedule / Schedule from Steering nodes."""

from __future__ import annotations

import json
import math
import re
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
    return check_finite_prompt(tensor[:1], input_name)


def check_finite_prompt(context: torch.Tensor, input_name: str) -> torch.Tensor:
    """`context` when every value is finite, else a ValueError naming the input and the prompt's
    weights: a text encoder makes NaN or infinity from a weight such as (word:nan), never from a
    plain text, and one such prompt would poison the whole video from its first chunk on."""
    finite = torch.isfinite(context)
    if bool(finite.all()):
        return context
    bad = int((~finite).sum())
    raise ValueError(f"{input_name}: the prompt's conditioning holds {bad} non-finite values (NaN or infinity) of "
                     f"{context.numel()}. The text encoder made them from the prompt: a prompt weight such as "
                     "(word:nan), (word:inf) or (word:1e30), brackets nested so deep that their 1.1 per level "
                     "overflows, or an embedding file (embedding:NAME) that holds them. Fix the prompt's text; nothing "
                     "was generated from it")


def encode_prompt(clip, text: str, input_name: str) -> torch.Tensor:
    """`text` encoded with `clip` exactly as CLIPTextEncode encodes it (`clip.tokenize`, then
    `clip.encode_from_tokens_scheduled`): the text tensor [1, L, dim] of the conditioning."""
    check_clip(clip, input_name)
    return conditioning_tensor(clip.encode_from_tokens_scheduled(clip.tokenize(text)), input_name)


def check_clip(clip, input_name: str) -> None:
    if not all(callable(getattr(clip, name, None)) for name in ("tokenize", "encode_from_tokens_scheduled")):
        raise ValueError(f"{input_name}: expected a CLIP (connect a CLIPLoader with type 'wan', the umT5-XXL text "
                         f"encoder), got {type(clip).__name__}")


# ComfyUI's tokenizers (comfy/sd1_clip.py, 0.8 and 0.33 alike) read emphasis before they tokenize:
# `(words)` multiplies the weight of its words by 1.1 per level of nesting, `(words:w)` sets it to w
# as Python's float() reads w (so "nan", "inf" and "1e30" are taken), `\(` and `\)` are plain
# brackets, and `embedding:name` (at the start of a weighted part or after white space) loads a
# file from the embeddings folder. A steering text is read the same way before it is queued, so
# that what would break the encoding or the video is refused while the user is still there.
EMPHASIS = 1.1
MAX_PROMPT_WEIGHT = 10.0  # a steering text with a weight beyond +-10 is refused (users write 0.5 to 2)
EMBEDDING_PREFIX = "embedding:"
_ESCAPED = {"\\(": "\0\2", "\\)": "\0\1"}  # the tokenizers' stand-ins for escaped brackets


def _top_level_parts(text: str) -> list[str]:
    """`text` cut where the tokenizers cut it: runs of plain text and bracketed groups, each group
    from an opening bracket at depth 0 to the bracket that brings the depth back to 0. A closing
    bracket at depth 0 drives the depth below zero, so what follows is plain text until the depth
    is 0 again (as the tokenizers count); an unclosed group runs to the end of the text."""
    parts, start, depth = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            if depth == 0 and index > start:
                parts.append(text[start:index])
            if depth == 0:
                start = index
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                parts.append(text[start:index + 1])
                start = index + 1
    if start < len(text):
        parts.append(text[start:])
    return parts


def prompt_weights(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """(part of the text, its weight) as ComfyUI's tokenizers weight a prompt; escaped brackets stay
    as the tokenizers' stand-ins (see `plain_text`)."""
    for escaped, stand_in in _ESCAPED.items():
        text = text.replace(escaped, stand_in)
    return _weighted(text, weight)


def _weighted(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for part in _top_level_parts(text):
        if not (len(part) >= 2 and part[0] == "(" and part[-1] == ")"):
            out.append((part, weight))
            continue
        inner, inner_weight = part[1:-1], weight * EMPHASIS
        colon = inner.rfind(":")
        if colon > 0:  # `(words:w)`: w replaces the weight when float() reads it
            try:
                inner, inner_weight = inner[:colon], float(inner[colon + 1:])
            except ValueError:
                pass
        out.extend(_weighted(inner, inner_weight))
    return out


def plain_text(part: str) -> str:
    """A part of `prompt_weights` with its escaped brackets back as brackets."""
    for escaped, stand_in in _ESCAPED.items():
        part = part.replace(stand_in, escaped[1])
    return part


def embedding_names(part: str) -> list[str]:
    """The embedding file names a weighted part asks for: the part is cut before every
    `embedding:` that follows white space; a piece starting with it names the first word after it,
    up to a `<` or `[` ("" when no word follows, which the tokenizers cannot read)."""
    names = []
    for piece in re.split(rf"(?<=\s)(?={re.escape(EMBEDDING_PREFIX)})", plain_text(part)):
        if piece.startswith(EMBEDDING_PREFIX):
            words = piece[len(EMBEDDING_PREFIX):].strip("\n").split()
            names.append(re.split(r"[<\[]", words[0], maxsplit=1)[0] if words else "")
    return names


def _escapes_folder(name: str) -> bool:
    """Whether an embedding name points outside the embeddings folder (an absolute path or a `..`)."""
    return bool(re.match(r"^([\\/]|[A-Za-z]:)", name)) or ".." in re.split(r"[\\/]", name)


def check_prompt_text(text: str, input_name: str) -> None:
    """Refuse (ValueError naming `input_name`) a text that cannot be encoded as it is: not valid
    Unicode (a lone surrogate, which JSON can carry), a control character, a prompt weight that is
    not finite or beyond +-MAX_PROMPT_WEIGHT (brackets nested so deep count too), or an embedding
    named outside the embeddings folder."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{input_name}: not valid Unicode text (character {error.start + 1} is a lone surrogate, "
                         f"U+{ord(text[error.start]):04X}); send the text as UTF-8") from None
    control = re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text)
    if control:
        raise ValueError(f"{input_name}: character {control.start() + 1} is the control character "
                         f"U+{ord(control.group()):04X}; a prompt is plain text")
    for part, weight in prompt_weights(text):
        shown = plain_text(part).strip() or part
        if not math.isfinite(weight):
            raise ValueError(f"{input_name}: the prompt weight of {shown!r} is {weight}; ComfyUI reads (text:weight) "
                             f"as a weight, and it must be a finite number between {-MAX_PROMPT_WEIGHT:g} and "
                             f"{MAX_PROMPT_WEIGHT:g}")
        if abs(weight) > MAX_PROMPT_WEIGHT:
            raise ValueError(f"{input_name}: the prompt weight of {shown!r} is {weight:g}, beyond the "
                             f"{-MAX_PROMPT_WEIGHT:g} to {MAX_PROMPT_WEIGHT:g} taken (ComfyUI reads (text:weight) as "
                             f"a weight, and every plain pair of brackets around it multiplies it by {EMPHASIS:g})")
        for name in embedding_names(part):
            if not name:
                raise ValueError(f"{input_name}: {EMBEDDING_PREFIX} is followed by no name; write "
                                 f"{EMBEDDING_PREFIX}NAME for a file in ComfyUI's embeddings folder")
            if _escapes_folder(name):
                raise ValueError(f"{input_name}: {EMBEDDING_PREFIX}{name} names a file outside ComfyUI's embeddings "
                                 "folder; give the name of a file inside it")


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
        entry = PromptSegment(int(start_frame), conditioning_tensor(
            conditioning, f"conditioning (the prompt schedule's entry at frame {int(start_frame)})"))
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
