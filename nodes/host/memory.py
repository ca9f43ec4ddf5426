"""The memory manager: the network loaded for a run and kept loaded between runs, and unloading.

Inside ComfyUI that is `comfy.model_management` (`load_models_gpu` evicts other models or loads ours
partially, applies exactly this clone's patches and keeps it loaded until the memory is needed
elsewhere or the user frees it); standalone, one model is loaded at a time, on the patcher's load
device (patcher.py).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ...vace_core.model import CausalWanModel
from .comfyui import model_management
from .devices import compute_device
from .patcher import MEMORY, StandalonePatcher

STANDALONE_RESERVE = 1 << 30  # bytes of a CUDA device a standalone run leaves to everything else


@dataclass
class LoadedNetwork:
    """A network loaded for one run, with the check the sampler makes before every pass."""
    network: CausalWanModel
    patcher: Any
    memory_required: int

    def keep_loaded(self) -> None:
        """Load the model again if ComfyUI unloaded it since (another model's load may evict it,
        e.g. a VAE between chunks on a small GPU), so no pass runs without its patches."""
        if MEMORY is not None and not _is_current(self.patcher):
            _load(self.patcher, self.memory_required)


def run_memory_limit() -> int | None:
    """The most bytes a run's KV caches and activations can take on the compute device: its memory
    less what the memory manager keeps for everything else (ComfyUI's `minimum_inference_memory`;
    weights that do not fit too are streamed). None where no limit is known (standalone on the CPU)."""
    device = compute_device()
    if model_management is not None:
        return int(model_management.get_total_memory(device) - model_management.minimum_inference_memory())
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory - STANDALONE_RESERVE
    return None


def load_for_run(patcher: Any, memory_required: int) -> LoadedNetwork:
    """Load the model for a run that needs `memory_required` bytes besides the weights (KV cache and
    activations) and return its network, on the compute device or streamed from the offload device.
    It stays loaded afterwards, until the memory manager needs the room or the user frees it."""
    _load(patcher, memory_required)
    return LoadedNetwork(patcher.model.diffusion_model, patcher, memory_required)


_standalone_resident: Callable[[], StandalonePatcher | None] = lambda: None


def _load(patcher: Any, memory_required: int) -> None:
    global _standalone_resident
    if isinstance(patcher, StandalonePatcher):
        resident = _standalone_resident()
        if resident is not None and resident.model is not patcher.model:
            resident.unpatch_model(resident.offload_device)  # one model at a time, as before
        patcher.patch_model()
        _standalone_resident = weakref.ref(patcher)
        return
    model_management.load_models_gpu([patcher], memory_required=memory_required)


def _is_current(patcher: Any) -> bool:
    # ComfyUI records which patch set is on the model; unloading it resets that to None
    return getattr(patcher.model, "current_weight_patches_uuid", patcher.patches_uuid) == patcher.patches_uuid


def is_loaded(patcher: Any) -> bool:
    """True while `patcher`'s model is loaded with its patches (ComfyUI: listed by loaded_models())."""
    if isinstance(patcher, StandalonePatcher):
        return _standalone_resident() is not None and patcher.is_applied
    return any(m is patcher for m in model_management.loaded_models()) and _is_current(patcher)


def unload_models() -> None:
    """Unload every model, as ComfyUI's 'Unload models' does (tests; standalone: the resident one)."""
    global _standalone_resident
    if model_management is not None:
        model_management.unload_all_models()
    resident = _standalone_resident()
    if resident is not None:
        resident.unpatch_model(resident.offload_device)
    _standalone_resident = lambda: None
