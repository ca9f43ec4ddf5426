"""Which kind of Wan2.1 DiT a base checkpoint holds, read without loading its weights.

The sampler runs its base model causally, chunk by chunk. A bidirectional model run that way loads
and runs without an error and makes a broken video, so a loader should know what it was given:

- **vace**: the file holds VACE blocks (`vace_*` keys): a Wan2.1-VACE checkpoint, a bidirectional
  model. (A VACE-only module is not a DiT at all; the loader refuses it anyway.)
- **causal**: a safetensors file whose metadata marks it causal in ComfyUI's convention
  (`config` = JSON with `transformer.causal_ar` true, what ComfyUI's native AR nodes load), or a
  checkpoint in a distillation trainer's layout: a torch file's weights under a `generator`,
  `generator_ema` or `model` entry, or keys carrying the trainer's `model.` prefix (or FSDP wrapper
  segments), in a torch file or re-saved as safetensors (scripts/convert_to_safetensors.py).
  LongLive, Self-Forcing, CausVid, Causal Forcing and MemFlow save that way; Wan's own releases
  never do.
- **bidirectional**: anything else: Wan2.1 weights in original, ComfyUI-repackaged
  (`model.diffusion_model.`) or diffusers names without causal metadata, as Wan2.1-T2V-1.3B ships.

What the rule cannot see: a bidirectional model saved by the same trainers (CausVid's
bidirectional teacher is a `generator` entry) reads as causal, and a causal model re-saved as
safetensors under Wan's own key names without the metadata reads as bidirectional.

Cost: a safetensors file is read up to the end of its JSON header (keys and metadata); a torch zip checkpoint is
unpickled memory-mapped, so its tensor data is not read (a legacy non-zip pickle is read whole).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .checkpoint_files import (AUTO_ENTRY_ORDER, TRAINER_ENTRIES, CheckpointError, PathLike, holds_tensors,
                               load_torch_file, sniff_format)
from .key_names import detect_format, is_vace_key, strip_namespaces

KINDS = ("causal", "vace", "bidirectional")


@dataclass(frozen=True)
class BaseKind:
    kind: str  # one of KINDS
    what: str  # what the file is, for a message: "a Wan2.1-VACE checkpoint (15 VACE blocks)"

    @property
    def is_causal(self) -> bool:
        return self.kind == "causal"


def base_kind(path: PathLike) -> BaseKind:
    """The kind of model a base checkpoint holds (see the module docstring for the rule)."""
    path = Path(path)
    if sniff_format(path) == "safetensors":
        keys, metadata = _safetensors_header(path)
        # a trainer's weights re-saved as safetensors (scripts/convert_to_safetensors.py) keep its key names
        trainer_keys = "a trainer checkpoint's weights (keys named 'model.*')" \
            if detect_format(keys) == "longlive-pt" else None
        return _kind_of(keys, causal_reason=_causal_metadata(metadata) or trainer_keys)
    container = load_torch_file(path)
    if not isinstance(container, Mapping):
        raise CheckpointError(f"{path} holds a {type(container).__name__}, expected a dict of tensors")
    entries = [name for name in TRAINER_ENTRIES if holds_tensors(container.get(name))]
    if entries:
        state = container[entries[0]]
        reason: str | None = f"a trainer checkpoint (entries: {', '.join(entries)})"
    else:
        nested = next((container[name] for name in AUTO_ENTRY_ORDER if holds_tensors(container.get(name))), None)
        state = nested if nested is not None else container
        reason = "a trainer checkpoint (keys named 'model.*')" if detect_format(state) == "longlive-pt" else None
    return _kind_of(list(state), causal_reason=reason)


def _safetensors_header(path: Path) -> tuple[list[str], dict[str, str]]:
    """(tensor names, metadata) from a safetensors header: 8 bytes of length, then that much JSON
    (`{name: {dtype, shape, data_offsets}, "__metadata__": {...}}`); no tensor data is read."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise ValueError("__metadata__ is not a mapping")
    except (OSError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path} is truncated or corrupt: its safetensors header cannot be read ({error})") \
            from error
    return list(header), metadata


def _causal_metadata(metadata: Mapping[str, str]) -> str | None:
    """"causal_ar metadata" when ComfyUI's convention marks the file causal, else None."""
    try:
        transformer = json.loads(metadata.get("config", "{}")).get("transformer", {})
    except (ValueError, AttributeError):
        return None
    return "a causal checkpoint (causal_ar metadata)" if transformer.get("causal_ar") is True else None


def _kind_of(keys: Iterable[str], causal_reason: str | None) -> BaseKind:
    keys = list(keys)
    vace_blocks = {k.split(".")[1] for k in map(strip_namespaces, keys) if is_vace_key(k) and k.startswith("vace_blocks.")}
    if any(is_vace_key(strip_namespaces(k)) for k in keys):
        return BaseKind("vace", f"a Wan2.1-VACE checkpoint ({len(vace_blocks)} VACE blocks)")
    if causal_reason is not None:
        return BaseKind("causal", causal_reason)
    return BaseKind("bidirectional", "a plain Wan2.1 checkpoint without causal metadata (such as Wan2.1-T2V-1.3B)")
