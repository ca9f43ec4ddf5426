"""The LongLive network as a memory-managed model, and the patcher the standalone host uses.

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

No ComfyUI import here: memory.py picks ComfyUI's ModelPatcher when it runs inside ComfyUI.
"""

from __future__ import annotations

import uuid
from typing import Any

import torch
from torch import nn

from ...vace_core.casting import SCALE_SUFFIX
from ...vace_core.lora import LoraDelta, patched_weight
from ...vace_core.model import CausalWanModel

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
    """ComfyUI's ModelPatcher interface, as far as memory.py uses it, for a host without ComfyUI."""

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
