"""Checkpoint files: what kind a file is, reading it safely, and finding the state dict inside it.

Safetensors files, or torch pickles (the content decides, not the extension). Torch pickles load with
``weights_only=True`` (memory-mapped when the file is a zip archive): a file that needs code to
unpickle is refused. Before PyTorch 2.6 ``weights_only=True`` is not safe (CVE-2025-32434), so
there pickles are refused altogether, naming the ways out (upgrade, or convert with
scripts/convert_to_safetensors.py under a safe PyTorch); safetensors load with any PyTorch.
`TensorFile` knows every tensor's shape up front and reads the data one tensor
at a time, so a loader can convert and drop each before the next. Every error is a
``CheckpointError`` naming the file.

A trainer checkpoint holds several state dicts: `entry` names one; without it the first present
of ``AUTO_ENTRY_ORDER`` is taken (and logged), else the top level (a bare state dict). ``critic``
(the score model DMD trains beside the generator) is never taken. docs/presets.md ("Which weights in the
file") explains the order with the projects' own inference scripts.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import torch
from safetensors import safe_open

from .logs import log

PathLike = str | Path
Shape = tuple[int, ...]

# The state dicts the distillation trainers (LongLive, Self-Forcing, CausVid, Causal Forcing) save
# their networks under, the one table of them (the loader node's choices, the causal-base rule).
TRAINER_ENTRIES = ("generator", "generator_ema", "model")
# `auto` takes the EMA weights first (what the projects' demos load), then the others, then the
# state dict of a plain training wrapper
AUTO_ENTRY_ORDER = (*sorted(TRAINER_ENTRIES, key=lambda entry: not entry.endswith("_ema")), "state_dict", "module")
_EXAMPLES = 5



class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and what was expected."""


class TensorFile:
    """The tensors of one checkpoint, with shapes known up front and data read per tensor.

    safetensors files are read lazily, one tensor per `take`; torch pickles are memory-mapped where
    possible and `take` drops the file's reference, so a loader never keeps the file's copy alive.
    """

    shapes: dict[str, Shape]

    def __init__(self, path: PathLike, entries: tuple[str, ...] = AUTO_ENTRY_ORDER,
                 entry: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {self.path}")
        self._handle: safe_open | None = None
        self._tensors: dict[str, torch.Tensor] = {}
        self.metadata: dict[str, str] = {}  # a safetensors header's metadata
        if sniff_format(self.path) == "safetensors":
            if entry is not None:
                raise CheckpointError(f"{self.path} is a safetensors file: it holds one state dict and no "
                                      f"entries, so entry {entry!r} cannot be chosen; use entry 'auto'")
            self._open_safetensors()
        else:
            self._tensors = _find_state_dict(load_torch_file(self.path), entries, entry, self.path)
            self.shapes = {k: tuple(v.shape) for k, v in self._tensors.items()}

    def _open_safetensors(self) -> None:
        try:
            self._handle = safe_open(str(self.path), framework="pt", device="cpu")
            self.shapes = {k: tuple(self._handle.get_slice(k).get_shape()) for k in self._handle.keys()}
            self.metadata = dict(self._handle.metadata() or {})
        except Exception as error:  # safetensors raises its own error type for bad headers/sizes
            raise CheckpointError(f"{self.path} is truncated or corrupt: it cannot be read as a "
                                  f"safetensors file ({error})") from error

    def take(self, key: str) -> torch.Tensor:
        try:
            if self._handle is not None:
                return self._handle.get_tensor(key)
            return self._tensors.pop(key)
        except Exception as error:
            raise CheckpointError(f"{self.path}: reading tensor {key!r} failed; the file is truncated "
                                  f"or corrupt ({error})") from error

    def close(self) -> None:
        self._handle = None
        self._tensors = {}

    def __enter__(self) -> "TensorFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sniff_format(path: Path) -> str:
    """'safetensors' or 'torch' from the first bytes (extensions are often wrong in model folders)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # zip archive / legacy pickle protocol
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":  # 8-byte little-endian header size, then JSON
        return "safetensors"
    raise CheckpointError(f"{path} is truncated or corrupt, or not a checkpoint: it is neither a "
                          "safetensors file nor a PyTorch checkpoint")


SAFE_TORCH_LOAD = (2, 6)  # torch.load(weights_only=True) is safe from this version on (CVE-2025-32434)
CONVERTER = "scripts/convert_to_safetensors.py"


def torch_load_is_safe() -> bool:
    """True when this PyTorch's torch.load(weights_only=True) cannot run code from a file."""
    version = re.match(r"(\d+)\.(\d+)", str(torch.__version__))
    assert version is not None, torch.__version__  # every release is named major.minor...
    major, minor = (int(part) for part in version.groups())
    return (major, minor) >= SAFE_TORCH_LOAD


def _unsafe_torch_message(path: PathLike) -> str:
    safe = ".".join(map(str, SAFE_TORCH_LOAD))
    return (f"{path} is a PyTorch pickle (.pt) checkpoint, and this PyTorch ({torch.__version__}) cannot "
            f"load one safely: before {safe}, torch.load(weights_only=True) can still run code hidden in a "
            f"malicious file (CVE-2025-32434), so it is not opened. Either upgrade PyTorch to {safe} or "
            f"newer, or convert the file to safetensors with this pack's {CONVERTER}, run with a PyTorch >= "
            f"{safe} in an environment of its own (not ComfyUI's): python {CONVERTER} {path}. safetensors "
            "files load with every PyTorch.")


def load_torch_file(path: Path) -> object:
    if not torch_load_is_safe():
        raise CheckpointError(_unsafe_torch_message(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():
            raise CheckpointError(
                f"{path} is not a plain tensor checkpoint: it needs Python code to load (pickled "
                "objects other than tensors and containers), and it will not be unpickled for "
                "safety. Re-save it as a dict of tensors or as safetensors.") from error
        raise CheckpointError(f"{path} is truncated or corrupt ({error})") from error
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is truncated or corrupt: it cannot be read as a PyTorch "
                              f"checkpoint ({error})") from error


def _find_state_dict(container: object, entries: tuple[str, ...], entry: str | None,
                     path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a torch checkpoint: `entry`, the first of `entries`, or the top level."""
    if not isinstance(container, Mapping):
        raise CheckpointError(f"{path} holds a {type(container).__name__}, expected a dict of tensors")
    present = [k for k, v in container.items() if holds_tensors(v)]  # nested state dicts (not optimizer states)
    if entry is not None:
        if entry not in present:
            raise CheckpointError(_missing_entry(path, entry, present))
        chosen = container[entry]
    else:
        entry = next((e for e in entries if e in present), None)
        chosen = container if entry is None else container[entry]
        if entry is not None:
            log.info("%s: loading entry %r (state dicts in the file: %s)", path.name, entry, ", ".join(present))
    tensors = {k: v for k, v in chosen.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} contains no tensors where expected (a dict of tensors, or one "
                              f"under {', '.join(entries)}); its entries: {preview(container)}")
    return tensors


def holds_tensors(value: object) -> bool:
    return isinstance(value, Mapping) and any(isinstance(v, torch.Tensor) for v in value.values())


def _missing_entry(path: Path, entry: str, present: list[str]) -> str:
    if not present:
        return (f"{path} has no {entry!r} entry: it is a plain state dict without entries; use entry "
                "'auto'")
    return (f"{path} has no {entry!r} entry; the state dicts it holds: {', '.join(map(repr, present))}. "
            "Choose one of them, or 'auto'")


def preview(keys: Iterable[str]) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:_EXAMPLES])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _EXAMPLES else "")
