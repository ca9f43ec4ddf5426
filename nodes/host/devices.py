"""Devices: where the network computes and where it waits between runs, and the compute device as the
dtype decision sees it (vace_core.precision).

Inside ComfyUI these are ComfyUI's choices (`comfy.model_management`); standalone, CUDA when
available, else the CPU, and torch's report of the device.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ...vace_core.precision import DeviceCapabilities, capabilities_of
from .comfyui import log, model_management

COMPUTE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)  # what the model can compute in


def compute_device() -> torch.device:
    """Where sampling runs: ComfyUI's torch device, or CUDA when available, else the CPU."""
    if model_management is not None:
        return model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where the model waits between runs: ComfyUI's choice for diffusion models (the GPU itself
    in --highvram mode, else the CPU), or the CPU."""
    if model_management is not None:
        return model_management.unet_offload_device()
    return torch.device("cpu")


def soft_empty_cache() -> None:
    """Return cached allocator blocks to the driver (after sampling, once the model is offloaded)."""
    if model_management is not None:
        model_management.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def device_capabilities(device: torch.device | None = None) -> DeviceCapabilities:
    """The compute device (or `device`) as the dtype decision sees it: torch's report of it, and
    inside ComfyUI its choice for a diffusion model there (bf16 where supported, else fp16, fp32 on
    the CPU; --bf16-unet / --fp16-unet / --fp32-unet decide when given) and whether it runs fp8
    matmuls there."""
    device = device or compute_device()
    found = capabilities_of(device)
    if model_management is None:
        return found
    supports_fp8 = getattr(model_management, "supports_fp8_compute", None)
    fp8_matmul = bool(supports_fp8(device)) if callable(supports_fp8) else found.fp8_matmul
    return replace(found, host_dtype=_comfy_dtype(device), fp8_matmul=fp8_matmul)


def _comfy_dtype(device: torch.device) -> torch.dtype | None:
    try:
        chosen = model_management.unet_dtype(device=device, supported_dtypes=list(COMPUTE_DTYPES))
    except Exception as error:  # an unknown device or ComfyUI version: choose without it
        chosen = f"nothing ({error})"
    if chosen in COMPUTE_DTYPES:
        return chosen
    log.warning("LongLive: ComfyUI chose %s for diffusion models, which this model cannot compute in; "
                "dtype 'auto' uses the device's default instead", chosen)
    return None
