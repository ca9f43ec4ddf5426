"""The layer namespace a model is built from: the classes that make its layers with weights.

A namespace holds `Linear`, `Conv3d` and `LayerNorm`, with torch.nn's constructors: plain torch.nn by
default (`TorchOps`), layers that cast fp8 weights per call (vace_core.casting), or a host's own,
e.g. ComfyUI's `comfy.ops` classes, which can stream weights from another device on every call.
Namespaces are classes, passed as they are, never instantiated.
"""

from __future__ import annotations

from typing import Protocol

from torch import nn


class LayerOperations(Protocol):
    """What the model's layers are made with (a class with these three as class attributes)."""
    Linear: type[nn.Linear]
    Conv3d: type[nn.Conv3d]
    LayerNorm: type[nn.LayerNorm]


class TorchOps:
    """The default layer operations: plain torch.nn."""
    Linear = nn.Linear
    Conv3d = nn.Conv3d
    LayerNorm = nn.LayerNorm
