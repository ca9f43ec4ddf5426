"""LONGLIVE_MODEL: what travels between the loader, LoRA, graft and sampler nodes.

ComfyUI caches every node's output and hands the same object to every node wired to it, so a node
must never change a model that another node produced, and copying a 1.3B model per LoRA or graft
node would multiply its memory. A `LongLiveModel` therefore works like ComfyUI's own MODEL: it holds
a model patcher (ComfyUI's ModelPatcher inside ComfyUI, the standalone one of host/patcher.py
outside), and the clones of a patcher share one network while each carries its own patches:

- Load LongLive Model reads the base file into a network with a root patcher. The root is shared
  by every value made from the same file (same size and mtime) in the same dtype while any of them
  is alive, so a new LoRA strength on the loader does not read the base again. Its LoRA becomes a
  weight patch on a clone.
- LongLive Extra LoRA clones the patcher and adds the LoRA's factors as patches: only the LoRA file
  is read, and the upstream value keeps its own patches.
- Load VACE Weights reads the VACE blocks into modules of their own and sets them as object patches
  on a clone: the base weights stay shared between the base and base + VACE.
- The loader's `compile` choice sets the process's block compiler (vace_core.compiled) as an object
  patch on a clone, which LoRA and VACE clones made from it keep.
- The sampler asks the host to load the value's patcher for the run (`load_for_run`): inside
  ComfyUI that is `load_models_gpu`, which evicts other models or loads ours partially, applies
  exactly this clone's patches and keeps the model loaded between runs, until the memory is needed
  elsewhere or the user frees it ("Unload models", POST /free).

Nothing here holds a model strongly: ComfyUI's node cache owns the values (the shared-base table is
weak), so when it drops them, on /free for instance, the weights are freed.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..vace_core.checkpoints import load_longlive, read_vace
from ..vace_core.compiled import shared_compiler
from ..vace_core.config import WanConfig
from ..vace_core.lora import read_lora
from ..vace_core.model import CausalWanModel
from ..vace_core.precision import AUTO, DTYPE_CHOICES, auto_dtype, dtype_name
from . import host
from .heap import release_when_freed
from .model_files import FileRef

log = logging.getLogger("longlive_vace")

# the loader's dtype choices (vace_core.precision's table): fp8 weights compute in the auto dtype,
# with fp8 matmuls for the _fast one where the GPU has them and the file does not decline them
DTYPES = tuple(DTYPE_CHOICES)


@dataclass(frozen=True)
class Step:
    """One change on top of the base model: a LoRA or a VACE graft."""
    op: str  # "lora" | "vace"
    file: FileRef
    strength: float = 1.0

    def describe(self) -> str:
        return f"LoRA {self.file.name} @ {self.strength:g}" if self.op == "lora" else f"VACE {self.file.name}"


@dataclass(frozen=True)
class ModelFacts:
    """What the nodes check and plan before sampling, known without loading the model: the
    architecture with the value's VACE blocks (the shared network's own config has none while a
    VACE clone is not loaded) and the size of the weights."""
    config: WanConfig
    param_bytes: int

    @property
    def has_vace(self) -> bool:
        return self.config.has_vace

    @property
    def num_vace_blocks(self) -> int:
        return self.config.num_vace_blocks

    @property
    def text_dim(self) -> int:
        return self.config.text_dim

    @property
    def rope_max_frames(self) -> int:
        """Latent frame positions the RoPE table covers (references included)."""
        return self.config.rope_max_frames


class SharedBase:
    """A base network read from one file in one dtype, with the root patcher all its values clone."""

    def __init__(self, network: CausalWanModel) -> None:
        self.config = network.config
        self.network = network
        self.root = host.make_patcher(network)
        release_when_freed(network)


_SHARED: "weakref.WeakValueDictionary[tuple, SharedBase]" = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def shared_base(base: FileRef, dtype: str) -> SharedBase:
    """The live SharedBase of this file (same stamp and entry) and dtype, or a new one read from it."""
    key = (base.path, base.stamp, base.entry, dtype)
    with _SHARED_LOCK:
        shared = _SHARED.get(key)
        if shared is None:
            network = load_longlive(base.path, dtype=dtype, device=host.offload_device(), entry=base.entry,
                                    capabilities=host.device_capabilities(), operations_for=host.layer_operations,
                                    attention=host.attention_kernels())
            shared = SharedBase(network)
            _SHARED[key] = shared
        return shared


@dataclass(frozen=True, eq=False)
class LongLiveModel:
    """The LONGLIVE_MODEL value: the recipe (for messages), facts of the model, its patcher. Immutable;
    see the module docstring. `patcher` is also what ComfyUI's RAM cache looks for to recognise a
    model among node outputs."""
    base: FileRef
    dtype: str  # the loader's dtype choice, resolved ("bf16", "fp16", "fp32", "fp8_e4m3fn", "fp8_e4m3fn_fast")
    steps: tuple[Step, ...]
    facts: ModelFacts
    patcher: Any
    shared: SharedBase
    compiled: bool = False  # full-chunk passes through torch.compile'd block parts

    @property
    def has_vace(self) -> bool:
        return self.facts.has_vace

    @property
    def compute_dtype(self) -> torch.dtype:
        """What activations and the KV cache run in (fp8 weights are cast per layer to it)."""
        return self.shared.network.compute_dtype

    @property
    def loras(self) -> list[tuple[str, float]]:
        return [(s.file.name, s.strength) for s in self.steps if s.op == "lora"]

    @property
    def vace(self) -> str | None:
        grafts = [s.file.name for s in self.steps if s.op == "vace"]
        return grafts[-1] if grafts else None

    def describe(self) -> str:
        parts = [self.base.name, self.dtype] + [s.describe() for s in self.steps] + (["compiled"] if self.compiled else [])
        return " + ".join(parts)

    def __str__(self) -> str:
        return f"LongLiveModel({self.describe()})"

    def with_lora(self, lora: FileRef, strength: float) -> "LongLiveModel":
        """A new value that also applies this LoRA (only the LoRA file is read); this one is unchanged."""
        deltas = read_lora(self.shared.network, lora.path)
        return replace(self, steps=self.steps + (Step("lora", lora, strength),),
                       patcher=host.with_lora(self.patcher, deltas, strength))

    def with_vace(self, vace: FileRef) -> "LongLiveModel":
        """A new value with these VACE blocks (only the VACE file is read); this one is unchanged."""
        weights = read_vace(self.shared.network, vace.path, device=host.offload_device())
        patcher = host.with_vace(self.patcher, weights)
        return replace(self, steps=self.steps + (Step("vace", vace),), patcher=patcher,
                       facts=ModelFacts(weights.config, patcher.model_size()))

    def load_for_run(self, memory_required: int = 0) -> host.LoadedNetwork:
        """The network with this value's patches, loaded by the host for a run needing
        `memory_required` bytes besides the weights."""
        return host.load_for_run(self.patcher, memory_required)


def load_model(base: FileRef, dtype: str, lora: FileRef | None = None, lora_strength: float = 1.0,
               compile: bool = False) -> LongLiveModel:
    """The LONGLIVE_MODEL of a base file (read unless a live value already shares it) and a LoRA;
    `compile`: its full-chunk passes run through torch.compile'd block parts (vace_core.compiled)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    resolved = dtype_name(auto_dtype(host.device_capabilities())) if dtype == AUTO else dtype
    shared = shared_base(base, resolved)
    model = LongLiveModel(base, resolved, (), ModelFacts(shared.config, shared.root.model_size()),
                          shared.root.clone(), shared)
    if lora is not None and lora_strength != 0:
        model = model.with_lora(lora, lora_strength)
    if compile:
        compiler = shared_compiler()
        model = replace(model, patcher=host.with_compiler(model.patcher, compiler), compiled=True)
        log.info("LongLive: %s: %s", model.describe(), compiler.describe())
    return model


def clear_cache() -> None:
    """Unload every model and forget the shared bases (tests); values still held keep their own."""
    host.unload_models()
    with _SHARED_LOCK:
        _SHARED.clear()
