"""The model files the nodes name: the ones the README names (the loaders preselect them when they
are present), and a file of a model folder by its name, path and stamp."""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import host

BASE_FILE = "longlive_base.pt"  # models/diffusion_models
LORA_FILE = "lora.pt"  # models/loras
# models/diffusion_models, in order of preference: ComfyUI's repackaged Wan2.1-VACE, kijai's VACE module
VACE_FILES = ("wan2.1_vace_1.3B_fp16.safetensors", "Wan2_1-VACE_module_1_3B_bf16.safetensors")
TEXT_ENCODER_FILE = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"  # models/text_encoders (ComfyUI's CLIPLoader)
WAN_VAE_FILE = "wan_2.1_vae.safetensors"  # models/vae (ComfyUI's VAELoader)


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


def file_stamp(kind: str, name: str) -> str:
    """What a loader node's IS_CHANGED reports: the file's size and mtime, so ComfyUI runs the node
    again (and the file is read again) when a file of the same name is replaced."""
    try:
        stamp = FileRef.resolve(kind, name).stamp
    except (OSError, ValueError):
        return f"{kind}/{name}: missing"  # the node itself reports the error when it runs
    return f"{kind}/{name}: {stamp[0]} bytes, mtime {stamp[1]}"
