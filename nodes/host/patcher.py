"""The LongLive network as a memory-managed model: ComfyUI's ModelPatcher, or the patcher the
standalone host uses; its clones with LoRA, VACE and compiler patches.

`LongLiveDiT` wraps a CausalWanModel the way ComfyUI's model classes wrap theirs: the weights sit
under `diffusion_model.`, a ModelPatcher keeps its bookkeeping attributes on the wrapper, and the
`device` it assigns becomes the network's compute device (with --lowvram some weights stay on the
CPU and are streamed by the comfy.ops layers, so the weights' device is not where inputs go).

`StandalonePatcher` gives the standalone host (unit tests, scripts/selftest.py) the part of
ComfyUI's ModelPatcher semantics the pack relies on:

- clones share one model and one record of what is applied to it;
- weight patches (LoRA deltas) and object patches (VACE blocks set as model attributes) belong to a
  clone and are applied when it is loaded, after undoing what another clone applied; the original
  weights are kept aside while patched copies are in use, so nothing upstream ever changes;
- `unpatch` restores the originals and moves the model to the offload device.

Inside ComfyUI the network is a `comfy.model_patcher.ModelPatcher` built from `comfy.ops` layers (the
plain one, in 0.8 and 0.33 alike; 0.33's ModelPatcherDynamic needs layers registered with its own
allocator), so `load_models_gpu` can evict it, load it partially and stream the rest through the
layers' cast path (--lowvram), and list it in `loaded_models()` (memory.py). What this relies on,
checked once below, in both versions:
- ModelPatcher(model, load_device, offload_device, size): `clone()` shares the model and its
  backups; `add_patches({key: patch}, strength)` with `comfy.weight_adapter.LoRAAdapter(keys,
  (up, down, alpha, None, None, None))` patches, which apply `strength * alpha / rank * up @ down`
  on load (or per call for streamed weights); `add_object_patch(name, value)` sets a model
  attribute while the clone is loaded and restores it when it is unpatched; `size` and
  `patches_uuid` attributes (a VACE clone gets its own of both, see `with_vace`);
- the wrapped module (LongLiveDiT) takes a `device` assignment and the plain attributes the
  patcher adds (model_loaded_weight_memory, model_lowvram, current_weight_patches_uuid, ...);
- model_management.load_models_gpu(models, memory_required=...), loaded_models(), unload_all_models().
Anything missing: a warning, and the standalone patcher (the model then sits outside ComfyUI's
manager, which cannot evict or stream it).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from ...vace_core.casting import SCALE_SUFFIX
from ...vace_core.checkpoints import VaceWeights
from ...vace_core.compiled import BlockCompiler
from ...vace_core.lora import LoraDelta, patched_weight
from ...vace_core.model import CausalWanModel
from ...vace_core.operations import LayerOperations
from .comfyui import log, model_management
from .devices import compute_device, offload_device

PREFIX = "diffusion_model."  # where the network's weights sit inside the wrapper
_UNSET = object()  # an object patch on an attribute the model did not have


class LongLiveDiT(nn.Module):
    """The module a patcher manages: the causal Wan network under `diffusion_model`."""

    def __init__(self, network: CausalWanModel) -> None:
        super().__init__()
        self.diffusion_model = network

    @property
    def device(self) -> torch.device:
        return self.diffusion_model.device

    @device.setter
    def device(self, value: torch.device | str | None) -> None:
        # a patcher assigns the device it loaded onto: inputs and caches go there
        self.diffusion_model.compute_device = None if value is None else torch.device(value)

    def get_dtype(self) -> torch.dtype:
        return self.diffusion_model.compute_dtype


def module_bytes(module: nn.Module) -> int:
    """Bytes of every tensor in the module's state dict (what ComfyUI counts as a model's size; a
    quantized weight counts its stored bytes)."""
    return sum(t.nbytes for t in module.state_dict().values())


def _owner(root: nn.Module, key: str) -> tuple[nn.Module, str]:
    *path, name = key.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    return module, name


class _Applied:
    """What is on a shared model right now; one per model, shared by all clones of its patcher."""

    def __init__(self) -> None:
        self.patches_uuid: uuid.UUID | None = None  # the patch set applied, None = the originals
        self.weights: dict[str, torch.Tensor] = {}  # original tensors of patched weights
        self.attributes: dict[str, Any] = {}  # original values of patched attributes


class StandalonePatcher:
    """ComfyUI's ModelPatcher interface, as far as this package uses it, for a host without ComfyUI."""

    def __init__(self, model: LongLiveDiT, load_device: torch.device, offload_device: torch.device,
                 size: int = 0) -> None:
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.size = size or module_bytes(model)
        self.patches: dict[str, list[tuple[float, LoraDelta]]] = {}
        self.object_patches: dict[str, Any] = {}
        self.patches_uuid = uuid.uuid4()
        self._applied = _Applied()

    def model_size(self) -> int:
        return self.size

    def clone(self) -> "StandalonePatcher":
        twin = StandalonePatcher(self.model, self.load_device, self.offload_device, self.size)
        twin.patches = {key: list(entries) for key, entries in self.patches.items()}
        twin.object_patches = dict(self.object_patches)
        twin.patches_uuid = self.patches_uuid
        twin._applied = self._applied
        return twin

    def add_patches(self, patches: dict[str, LoraDelta], strength_patch: float = 1.0) -> list[str]:
        for key, delta in patches.items():
            self.patches.setdefault(key, []).append((strength_patch, delta))
        self.patches_uuid = uuid.uuid4()
        return list(patches)

    def add_object_patch(self, name: str, obj: Any) -> None:
        self.object_patches[name] = obj
        self.patches_uuid = uuid.uuid4()

    @property
    def is_applied(self) -> bool:
        return self._applied.patches_uuid == self.patches_uuid

    def patch_model(self) -> nn.Module:
        """Put this clone's patches on the shared model (undoing another clone's first) and move it
        to the load device; nothing is recomputed when they are on already."""
        if not self.is_applied:
            self.unpatch_model(None)
            self._apply()
        self.model.to(self.load_device)
        self.model.device = self.load_device
        return self.model

    def unpatch_model(self, device_to: torch.device | None) -> None:
        """Restore the original weights and attributes; move the model to `device_to` if given."""
        applied = self._applied
        for key, original in applied.weights.items():
            module, name = _owner(self.model, key)
            setattr(module, name, nn.Parameter(original, requires_grad=False))
        for key, original in applied.attributes.items():
            module, name = _owner(self.model, key)
            if original is _UNSET:
                delattr(module, name)
            else:
                setattr(module, name, original)
        applied.weights, applied.attributes, applied.patches_uuid = {}, {}, None
        if device_to is not None:
            self.model.to(device_to)
            self.model.device = device_to

    def _apply(self) -> None:
        applied = self._applied
        for key, value in self.object_patches.items():
            module, name = _owner(self.model, key)
            applied.attributes[key] = getattr(module, name, _UNSET)
            setattr(module, name, value)
        with torch.no_grad():
            for key, entries in self.patches.items():
                module, name = _owner(self.model, key)
                original = getattr(module, name)
                applied.weights[key] = original.data
                patched = patched_weight(original, entries, getattr(module, SCALE_SUFFIX, None))
                setattr(module, name, nn.Parameter(patched, requires_grad=False))
        applied.patches_uuid = self.patches_uuid


# ---------------------------------------------------------------------------------------------
# ComfyUI's memory manager


@dataclass(frozen=True)
class ComfyMemory:
    """The parts of ComfyUI's memory manager the model is made of."""
    ModelPatcher: type
    ops: LayerOperations  # comfy.ops.disable_weight_init: layers whose weights it can stream
    LoRAAdapter: type


def _comfy_memory() -> ComfyMemory | None:
    if model_management is None:
        return None
    try:
        import comfy.model_patcher
        import comfy.ops
        from comfy.weight_adapter import LoRAAdapter

        api = ComfyMemory(comfy.model_patcher.ModelPatcher, comfy.ops.disable_weight_init, LoRAAdapter)
        missing = [name for owner, names in (
            (api.ModelPatcher, ("clone", "add_patches", "add_object_patch", "model_size")),
            (api.ops, ("Linear", "Conv3d", "LayerNorm")),
            (model_management, ("load_models_gpu", "loaded_models", "unload_all_models")),
        ) for name in names if not hasattr(owner, name)]
        if missing:
            raise ImportError(f"missing {', '.join(missing)}")
    except ImportError as error:
        log.warning("LongLive: this ComfyUI's memory manager is not the one this pack knows (%s); the "
                    "model is kept outside it: it cannot be evicted, partially loaded or unloaded by "
                    "'Unload models'", error)
        return None
    _warn_if_untested(_comfy_version())
    return api


TESTED_VERSIONS = ((0, 8), (0, 33))  # oldest and newest ComfyUI minor versions the integration was tested with


def _comfy_version() -> tuple[int, ...] | None:
    try:
        from comfyui_version import __version__
    except ImportError:
        return None
    try:
        return tuple(int(part) for part in __version__.split(".")[:3])
    except ValueError:
        return None


def _warn_if_untested(version: tuple[int, ...] | None) -> None:
    if version is None or not TESTED_VERSIONS[0] <= version[:2] <= TESTED_VERSIONS[-1]:
        shown = ".".join(map(str, version)) if version else "of unknown version"
        log.warning("LongLive: ComfyUI %s: the model uses ComfyUI's memory manager through interfaces "
                    "tested with ComfyUI 0.8 to 0.33 only; they were all found, but if loading, LoRAs or "
                    "'Unload models' misbehave, report it with this version", shown)


MEMORY = _comfy_memory()  # None: the standalone patcher and torch.nn layers


# ---------------------------------------------------------------------------------------------
# patchers and their clones


def make_patcher(network: CausalWanModel) -> Any:
    """A root patcher for a freshly loaded network: clones of it share the network's weights."""
    model = LongLiveDiT(network)
    if MEMORY is not None:
        return MEMORY.ModelPatcher(model, load_device=compute_device(), offload_device=offload_device(),
                                   size=module_bytes(model))
    return StandalonePatcher(model, compute_device(), offload_device())


def with_lora(patcher: Any, deltas: Iterable[LoraDelta], strength: float) -> Any:
    """A clone of `patcher` that also applies these LoRA layers at `strength`."""
    clone = patcher.clone()
    if isinstance(clone, StandalonePatcher):
        patches = {PREFIX + d.target: d for d in deltas}
    else:
        assert MEMORY is not None  # a patcher other than the standalone one is ComfyUI's
        # alpha is given so that ComfyUI's alpha / rank is the delta's scale
        patches = {PREFIX + d.target: MEMORY.LoRAAdapter(set(), (d.up, d.down, d.scale * d.down.shape[0],
                                                                 None, None, None)) for d in deltas}
    taken = clone.add_patches(patches, strength)
    if len(taken) != len(patches):
        raise RuntimeError(f"the model patcher took {len(taken)} of {len(patches)} LoRA layers")
    return clone


def with_vace(patcher: Any, weights: VaceWeights) -> Any:
    """A clone of `patcher` whose network carries these VACE blocks while it is loaded."""
    clone = patcher.clone()
    for name, value in weights.attributes().items():
        clone.add_object_patch(PREFIX + name, value)
    clone.size = patcher.model_size() + weights.nbytes()
    # A clone loaded after another unpatches the model only when their patch sets differ; a VACE
    # clone must always count as different, or its blocks could be left on the GPU by a base clone.
    clone.patches_uuid = uuid.uuid4()
    return clone


def with_compiler(patcher: Any, compiler: BlockCompiler) -> Any:
    """A clone of `patcher` whose network runs its full-chunk passes through `compiler`'s parts
    while it is loaded (an object patch, as ComfyUI's own TorchCompileModel patches its models)."""
    clone = patcher.clone()
    clone.add_object_patch(PREFIX + "compiler", compiler)
    clone.patches_uuid = uuid.uuid4()  # as for VACE: never taken for an already loaded uncompiled clone
    return clone
