"""Traffic between the host and the compute device without making the host wait.

On CUDA these make the host wait for the GPU (a host sync): a copy from pageable host memory,
`torch.as_tensor(x, device=cuda)` / `torch.tensor(..., device=cuda)`, and reading a device tensor
(`.item()`, `bool(t)`, `.cpu()`, `.tolist()`). While the host waits, the GPU's queue runs dry, and
CUDA graphs become impossible. The sampler's steady state makes none of them inside its passes:
host data reaches the device through `to_device` (staged in pinned memory, copied asynchronously),
and whether a chunk's latents are finite is read once per chunk, between passes (`FiniteCheck`).
"""

from __future__ import annotations

import torch


def stages_in_pinned_memory(device: torch.device) -> bool:
    """Whether host data bound for `device` goes through pinned memory (asynchronous copies)."""
    return device.type == "cuda"


def to_device(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`tensor` on `device` (in `dtype` if given). A host tensor bound for a CUDA device is converted
    on the host (a copy converting dtypes would stage through pageable memory), staged in pinned
    memory and copied asynchronously: the host does not wait, and the copy is ordered before the
    work queued after it (PyTorch keeps the pinned buffer until the copy is done)."""
    if tensor.device.type == "cpu" and stages_in_pinned_memory(device):
        return tensor.to(dtype).pin_memory().to(device, non_blocking=True)
    return tensor.to(device, dtype)


def host_buffer(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A zeroed float32 host tensor that results computed on `device` are copied back into,
    asynchronously where that device stages through pinned memory."""
    buffer = torch.zeros(shape)
    return buffer.pin_memory() if stages_in_pinned_memory(device) else buffer


class FiniteCheck:
    """Whether a chunk's latents are all finite, learnt without a host sync inside any pass.

    `watch(x0)` queues the test on the device (and, on CUDA, an asynchronous copy of its one-element
    result into pinned host memory, followed by an event); `finite()` is the read: on CUDA it waits
    for that event, i.e. for the passes that computed x0, not for the work queued after `watch`.
    """

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._device = device
        self._flag: torch.Tensor | None = None
        if self._cuda:
            self._host = torch.zeros((), dtype=torch.bool).pin_memory()
            self._event = torch.cuda.Event()

    def watch(self, x0: torch.Tensor) -> None:
        self._flag = torch.isfinite(x0).all()
        if self._cuda:
            self._host.copy_(self._flag, non_blocking=True)
            self._event.record(torch.cuda.current_stream(self._device))

    def finite(self) -> bool:
        if self._flag is None:
            raise RuntimeError("FiniteCheck.finite() before watch()")
        if self._cuda:
            self._event.synchronize()
            return bool(self._host)
        return bool(self._flag)


class HostCopy:
    """A device tensor's values on the host, copied without making the queuing thread wait: on CUDA
    the copy into pinned memory is queued after the work already queued, with an event after it;
    `get()` waits for that event alone (call it on another thread to keep this one free)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self._event = None
        if stages_in_pinned_memory(tensor.device):
            self._host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self._host.copy_(tensor, non_blocking=True)
            if tensor.device.type == "cuda":
                self._event = torch.cuda.Event()
                self._event.record(torch.cuda.current_stream(tensor.device))
        else:
            self._host = tensor.detach()

    def get(self) -> torch.Tensor:
        if self._event is not None:
            self._event.synchronize()
        return self._host
