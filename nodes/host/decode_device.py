"""The decode device: where the streaming video nodes decode their chunks, and the VAE loaded there.

- `decode_device_choices()`: "model device" (decode between chunks on the sampler's device, inline),
  "cpu", and every other GPU the host sees ("cuda:1", ...): ComfyUI 0.33's device list
  (`model_management.get_all_torch_devices`), else torch's count of the compute device's kind.
- `chunk_decoding(vae, name, chunk_shape)`: the decoders and where they run. For another device, a
  copy of the VAE made for that device: inside ComfyUI a `comfy.sd.VAE` built from the VAE's weights
  with `device=` that device (so ComfyUI picks its dtype for it, as for a VAE loaded there), loaded
  once per run, on the calling thread, through the memory manager (`load_models_gpu`, so ComfyUI
  lists it, evicts it when that device needs the room, and "Unload models" / POST /free releases
  it); otherwise (standalone, the core's stand-in VAE) a deep copy of the VAE module moved there.
  The copy is kept while the VAE it was made from lives (one per device).
- A GPU the machine does not have (a workflow saved on a 2-GPU machine, opened on a 1-GPU one)
  decodes on the model's device with one warning; so does a host VAE other than an exactly
  streamable Wan 2.1 VAE (its chunks would go through `VAE.decode`, which calls the memory manager,
  from the worker thread). A name that is no device at all is refused (`decode_device_problem`).

Only the calling (execution) thread calls the memory manager: the worker thread gets a decoder
that neither loads per chunk nor falls back to the tiled decode (both load models), so an
out-of-memory there stops the run (vace_core/decode_worker.py).
"""

from __future__ import annotations

import copy
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch

from ...vace_core.decode_worker import DecodeWorker
from ...vace_core.streaming import ChunkDecoder
from .comfyui import InterruptProcessingException, log, model_management
from .devices import compute_device
from .vae_stream import (exact_streaming_problem, is_comfy_wan21_vae, is_out_of_memory, prepare_vae_decode,
                         streaming_decoder, streaming_decoder_for)

MODEL_DEVICE = "model device"  # the choice that decodes inline, on the sampler's device (the default)
INPUT_NAME = "decode_device"


def _indexed(device: torch.device) -> torch.device:
    # "cuda" names the current CUDA device: the same one as "cuda:<current>"
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def visible_devices() -> list[torch.device]:
    """The devices the host can compute on, the CPU included."""
    listed = getattr(model_management, "get_all_torch_devices", None)
    if callable(listed):  # ComfyUI 0.33 and later
        try:
            found = [_indexed(torch.device(d)) for d in listed()]
        except Exception as error:  # a host version that lists differently: count them below
            log.warning("LongLive: ComfyUI's device list failed (%s); counting the GPUs with torch", error)
        else:
            return [torch.device("cpu"), *(d for d in found if d.type != "cpu")]
    main = _indexed(compute_device())
    if main.type == "cuda":
        return [torch.device("cpu"), *(torch.device("cuda", i) for i in range(torch.cuda.device_count()))]
    return [torch.device("cpu")] if main.type == "cpu" else [torch.device("cpu"), main]


def decode_device_choices() -> list[str]:
    """The decode_device input's choices: the model's device first (the default), the CPU, then
    every other GPU."""
    model = _indexed(compute_device())
    others = [str(d) for d in visible_devices() if d.type != "cpu" and d != model]
    return [MODEL_DEVICE, "cpu", *others]


def decode_device_problem(name: str) -> str | None:
    """Why `name` cannot be a decode_device value (None when it can; a GPU missing here can)."""
    if name == MODEL_DEVICE:
        return None
    try:
        torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        return (f"{INPUT_NAME}: {name!r} is not a device; expected {MODEL_DEVICE!r}, 'cpu' or a GPU such as "
                f"'cuda:1'")
    return None


def decode_target(name: str) -> torch.device | None:
    """The device `name` decodes on, or None for the model's device (inline). A GPU that this
    machine lacks, or the model's own GPU, means the model's device (a warning, an info line)."""
    problem = decode_device_problem(name)
    if problem is not None:
        raise ValueError(problem)
    if name == MODEL_DEVICE:
        return None
    device = _indexed(torch.device(name))
    if device.type == "cpu":
        return torch.device("cpu")
    present = visible_devices()
    if device not in present:
        log.warning("LongLive: %s %s is not on this machine (it has %s); decoding on the model's device instead",
                    INPUT_NAME, device, ", ".join(map(str, present)))
        return None
    if device == _indexed(compute_device()):
        # a second VAE beside the sampler on its own GPU would only compete with it for memory
        log.info("LongLive: %s %s is the model's device; decoding there between chunks", INPUT_NAME, device)
        return None
    return device


# ---------------------------------------------------------------------------------------------
# the VAE on the decode device


_COPIES: "weakref.WeakKeyDictionary[Any, dict[torch.device, Any]]" = weakref.WeakKeyDictionary()


def why_not_on_another_device(vae: Any) -> str | None:
    """Why `vae` cannot decode on another device (None when it can)."""
    if hasattr(vae, "first_stage_model") and hasattr(vae, "patcher"):  # a host VAE: ComfyUI manages it
        if not is_comfy_wan21_vae(vae):
            return "only ComfyUI's Wan 2.1 VAE decodes there (chunk by chunk, exactly)"
        problem = exact_streaming_problem(vae.first_stage_model)
        return None if problem is None else f"this ComfyUI's Wan 2.1 VAE cannot be streamed exactly: {problem}"
    if not isinstance(vae, torch.nn.Module):
        return f"a {type(vae).__name__} cannot be copied to another device"
    return None


def vae_on(vae: Any, device: torch.device) -> Any:
    """The VAE for decoding on `device`, made once per VAE and device (see the module docstring)."""
    try:
        copies = _COPIES.setdefault(vae, {})
    except TypeError:  # an object that cannot be weakly referenced: a copy per run
        copies = {}
    if device not in copies:
        copies[device] = _host_vae_on(vae, device) if hasattr(vae, "patcher") else copy.deepcopy(vae).to(device)
    return copies[device]


def _host_vae_on(vae: Any, device: torch.device) -> Any:
    """ComfyUI's VAE built again from `vae`'s weights for `device` (its dtype chosen for that device)."""
    import comfy.sd

    weights = {key: tensor.detach().to("cpu", copy=True) for key, tensor in vae.get_sd().items()}
    made = comfy.sd.VAE(sd=weights, device=device)
    if type(made.first_stage_model) is not type(vae.first_stage_model):
        raise ValueError(f"{INPUT_NAME} {device}: ComfyUI made a {type(made.first_stage_model).__name__} from this "
                         f"VAE's weights, not a {type(vae.first_stage_model).__name__}; choose {MODEL_DEVICE!r}")
    return made


# ---------------------------------------------------------------------------------------------
# what the nodes use


@dataclass(frozen=True)
class ChunkDecoding:
    """A run's chunk decoders and where they run: inline on the model's device (`device` None), or on
    a `DecodeWorker` thread on `device`. `new_decoder()` makes one per video of a batch (each carries
    its video's causal state)."""
    new_decoder: Callable[[], ChunkDecoder]
    device: torch.device | None = None

    def worker(self) -> ContextManager[DecodeWorker | None]:
        """The worker to run the chunks on (None inline); enter it inside the video writer's block."""
        if self.device is None:
            return nullcontext()
        return DecodeWorker(self.device, is_out_of_memory=is_out_of_memory,
                            is_cancel=lambda error: isinstance(error, InterruptProcessingException))

    def describe(self) -> str:
        return "the model's device" if self.device is None else str(self.device)


def chunk_decoding(vae: Any, name: str, chunk_shape: tuple[int, ...]) -> ChunkDecoding:
    """The decoding of a run asked for by decode_device `name`, for chunks of latents `chunk_shape`
    [1, 16, t, h, w]: for another device, the VAE copy there is loaded now (once per run)."""
    device = decode_target(name)
    problem = None if device is None else why_not_on_another_device(vae)
    if problem is not None:
        log.warning("LongLive: %s %s: %s; decoding on the model's device instead", INPUT_NAME, device, problem)
        device = None
    if device is None:
        return ChunkDecoding(lambda: streaming_decoder(vae))
    own = vae_on(vae, device)
    prepare_vae_decode(own, chunk_shape)  # no-op for a standalone module copy
    return ChunkDecoding(lambda: streaming_decoder_for(own, is_out_of_memory=is_out_of_memory), device)
