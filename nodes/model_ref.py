"""LONGLIVE_MODEL: what travels between the loader, LoRA, graft and sampler nodes.

ComfyUI caches every node's output and hands the same object to every node wired to it, so a node
must never change a model that another node produced. Copying a 1.3B model per LoRA/graft node
would double (or triple) its memory. Instead a `LongLiveModel` is an immutable *recipe* — the base
file, then an ordered list of steps (LoRA merges, VACE grafts), each with the file's size and
modification time — and the weights live in a one-entry cache owned by this module:

- `model()` returns the cached model when the recipe matches;
- when the new recipe *extends* the cached one (same base and dtype, cached steps are a prefix),
  the missing steps are applied to the cached model in place and the cache is re-keyed. LoRA
  merges and grafts are deterministic and applied in recipe order, so this gives exactly the
  weights a fresh build would;
- otherwise the cached model is dropped first and the recipe is built from the files.

The recipe of an upstream node never changes, so "Extra LoRA" and "graft" leave it untouched; if
that upstream model is asked for again (a second branch of the graph), it is simply rebuilt.
Only one model is resident at a time, which is what a 1.3B model on a consumer GPU wants; two
branches with different models in one graph rebuild on every switch (correct, only slower).

The loader nodes build eagerly (through `extend`), so a wrong file fails at the node that named it,
and the next node in a chain extends the model in place instead of loading anything again.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace

import torch

from ..vace_core.checkpoints import apply_lora, graft_vace, load_longlive
from ..vace_core.model import CausalWanModel
from . import host

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class FileRef:
    """A model file by its folder name, its path, and a stamp that changes when it is replaced."""
    kind: str  # "diffusion_models" | "loras"
    name: str
    path: str
    stamp: tuple[int, int]  # (size, mtime_ns)
    entry: str | None = None  # the state dict to take from a trainer checkpoint; None = automatic

    @classmethod
    def resolve(cls, kind: str, name: str) -> "FileRef":
        path = host.model_path(kind, name)
        stat = os.stat(path)
        return cls(kind, name, path, (stat.st_size, stat.st_mtime_ns))


@dataclass(frozen=True)
class Step:
    """One change applied to the base model: a LoRA merge or a VACE graft."""
    op: str  # "lora" | "vace"
    file: FileRef
    strength: float = 1.0

    def apply(self, model: CausalWanModel) -> None:
        if self.op == "lora":
            apply_lora(model, self.file.path, self.strength)
        else:
            graft_vace(model, self.file.path)

    def describe(self) -> str:
        return f"LoRA {self.file.name} @ {self.strength:g}" if self.op == "lora" else f"VACE {self.file.name}"


@dataclass(frozen=True)
class ModelFacts:
    """What the nodes check before sampling, read from the built model."""
    has_vace: bool
    num_vace_blocks: int
    text_dim: int
    rope_max_frames: int  # latent frame positions the RoPE table covers (references included)
    param_bytes: int

    @classmethod
    def of(cls, model: CausalWanModel) -> "ModelFacts":
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        config = model.config
        return cls(model.has_vace, config.num_vace_blocks, config.text_dim, config.rope_max_frames, size)


@dataclass(frozen=True)
class LongLiveModel:
    """The LONGLIVE_MODEL value: recipe + facts of the built model. Immutable; see module doc."""
    base: FileRef
    dtype: str
    steps: tuple[Step, ...]
    facts: ModelFacts

    @property
    def has_vace(self) -> bool:
        return self.facts.has_vace

    @property
    def recipe(self) -> tuple:
        return (self.base, self.dtype, self.steps)

    @property
    def loras(self) -> list[tuple[str, float]]:
        return [(s.file.name, s.strength) for s in self.steps if s.op == "lora"]

    @property
    def vace(self) -> str | None:
        grafts = [s.file.name for s in self.steps if s.op == "vace"]
        return grafts[-1] if grafts else None

    def describe(self) -> str:
        parts = [self.base.name, self.dtype] + [s.describe() for s in self.steps]
        return " + ".join(parts)

    def __str__(self) -> str:
        return f"LongLiveModel({self.describe()})"

    def model(self) -> CausalWanModel:
        """The built model for this recipe (cached; may rebuild or extend the cache in place)."""
        return _CACHE.get(self)

    def extend(self, step: Step) -> "LongLiveModel":
        """A new LONGLIVE_MODEL with one more step, built now (in place of this one's cache entry
        when it is resident); this object is not changed."""
        return build(self.base, self.dtype, self.steps + (step,))


def build(base: FileRef, dtype: str, steps: tuple[Step, ...] = ()) -> LongLiveModel:
    """Make the model of a recipe resident and return its LONGLIVE_MODEL value."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    draft = LongLiveModel(base, dtype, tuple(steps), ModelFacts(False, 0, 0, 0, 0))
    model = _CACHE.get(draft)
    return replace(draft, facts=ModelFacts.of(model))


class _ModelCache:
    """One resident model, keyed by its recipe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recipe: tuple | None = None
        self._model: CausalWanModel | None = None

    def get(self, ref: LongLiveModel) -> CausalWanModel:
        with self._lock:
            if self._model is not None and self._recipe == ref.recipe:
                return self._model
            if self._model is None or not self._extends(ref):
                self.clear_locked()  # free the old weights before loading new ones
                model = load_longlive(ref.base.path, dtype=DTYPES[ref.dtype], device=host.offload_device(),
                                      entry=ref.base.entry)
                self._recipe, self._model = (ref.base, ref.dtype, ()), model
            self._apply_missing(ref)
            return self._model

    def _extends(self, ref: LongLiveModel) -> bool:
        base, dtype, steps = self._recipe
        return (base, dtype) == (ref.base, ref.dtype) and ref.steps[:len(steps)] == steps

    def _apply_missing(self, ref: LongLiveModel) -> None:
        done = len(self._recipe[2])
        for index, step in enumerate(ref.steps[done:], start=done):
            # graft_vace / apply_lora leave the model unchanged when they fail, so after an error
            # the cache still describes the resident model truthfully (up to the failed step)
            step.apply(self._model)
            self._recipe = (ref.base, ref.dtype, ref.steps[:index + 1])

    def clear_locked(self) -> None:
        self._recipe, self._model = None, None
        host.soft_empty_cache()

    def clear(self) -> None:
        with self._lock:
            self.clear_locked()

    @property
    def resident(self) -> tuple | None:
        return self._recipe


_CACHE = _ModelCache()


def clear_cache() -> None:
    """Drop the resident model (tests; frees its memory once no run holds it)."""
    _CACHE.clear()


def resident_recipe() -> tuple | None:
    return _CACHE.resident
