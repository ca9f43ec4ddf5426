"""Decoding on a worker thread: the decode (and the writing) of chunk k runs there, on its own
device, while the sampler makes chunk k+1.

Chunk k+1 needs chunk k's clean keys, so within one video only work that changes no pixel can
overlap the sampling, and the decode is that work. `DecodeWorker` is a context manager around one
thread and one bounded FIFO:

- `submit(work, latents, *args)` (on the sampling thread) copies the chunk's latents for the decode
  device without making that thread wait (`staged`), queues `work(copy, *args)` and returns. The
  copy is the worker's own: whatever the sampler later does with its tensor, the queued chunk does
  not change.
- `chunk_sink(sink)` is a `ChunkSink` whose every chunk runs `sink` on the worker (the streaming
  video sink: decode, write, previews; a sink for several videos alike); `on_worker(write)` does the
  same for a function of a chunk's latents (a finished LATENT decoded chunk by chunk).
- One thread takes the chunks in the order they were submitted, so a streaming decoder carries its
  causal state from chunk to chunk exactly as when it runs inline.
- Memory stays flat: at most `queued` chunks (QUEUED_CHUNKS) wait for the worker and one more is
  being decoded; a sampler that gets ahead of the decode waits in `submit`.
- The run stops cleanly. An error of the work (a decode error, an out-of-memory) makes the worker
  drop the chunks still queued (a decoder's causal state is unknown after it) and is raised on the
  sampling thread at its next `submit`, or when the context is left, as a `DecodeDeviceError` naming
  the device (so is a failure of the copy for the device). A cancel raised by the work (the host's
  interrupt, seen e.g. by its progress bar once the chunk is written) stops the worker the same way
  and is re-raised as it is. Leaving the context otherwise (the run's end, a cancel or an error on
  the sampling thread) waits for the chunks already queued, so the video holds every chunk the
  sampler finished, then for the thread.

Never imports the host; the host passes how it recognises a cancel and an out-of-memory error.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from contextlib import nullcontext
from dataclasses import replace
from typing import Any, Callable, ContextManager

import torch

from .device import HostCopy, stages_in_pinned_memory
from .logs import log
from .sampler import ChunkInfo, ChunkSink

QUEUED_CHUNKS = 2  # chunks that wait for the worker; with the one it decodes, at most 3 in flight

Staged = Callable[[], torch.Tensor]  # the worker's copy of a chunk's latents, once it has landed
_END = object()  # queued last: the worker stops after the chunks before it


class DecodeDeviceError(RuntimeError):
    """The work of a chunk failed on the decode device; the run stopped there."""

    def __init__(self, message: str, device: torch.device, out_of_memory: bool = False) -> None:
        super().__init__(message)
        self.device = device
        self.out_of_memory = out_of_memory


def staged(latents: torch.Tensor, device: torch.device) -> Staged:
    """A copy of `latents` on `device`, queued without a host sync on the calling thread.

    - from a GPU to the host: into pinned memory, asynchronously; the worker's `get()` waits for that
      copy alone (`HostCopy`);
    - from a GPU to another GPU: an asynchronous copy, which PyTorch orders before the work the
      decode device's stream runs after it (the worker's decode);
    - from the host: a plain copy (the sampling thread computes on the host anyway).
    """
    if device.type == "cpu" and stages_in_pinned_memory(latents.device):
        return HostCopy(latents).get
    copy = torch.empty(latents.shape, dtype=latents.dtype, device=device)
    copy.copy_(latents.detach(), non_blocking=True)
    return lambda: copy


def _device_context(device: torch.device) -> ContextManager:
    # the worker's current CUDA device: anything the decoder allocates without naming a device lands there
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


def _is_torch_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError)


class DecodeWorker:
    """One thread that runs the chunks' work on `device`, in order (see the module docstring).

    `is_cancel(error)`: the error is the user's cancel (re-raised as it is, after the queued chunks);
    `is_out_of_memory(error)`: the error is an out-of-memory (named so in the message).
    """

    def __init__(self, device: torch.device, *, queued: int = QUEUED_CHUNKS,
                 is_cancel: Callable[[BaseException], bool] = lambda error: False,
                 is_out_of_memory: Callable[[BaseException], bool] = _is_torch_oom) -> None:
        if queued < 1:
            raise ValueError(f"queued must be at least 1, got {queued}")
        self.device = torch.device(device)
        self.is_cancel = is_cancel
        self.is_out_of_memory = is_out_of_memory
        self._queue: queue.Queue = queue.Queue(maxsize=queued)
        self._thread: threading.Thread | None = None
        self._stop: BaseException | None = None  # the work's error or cancel that stopped the worker
        self._reported = False  # _stop was raised on the sampling thread

    # ---- the sampling thread ------------------------------------------------------------------

    def __enter__(self) -> "DecodeWorker":
        # the worker runs in a copy of the caller's context (a host may keep the running node there)
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), daemon=True,
                                        name=f"longlive-decode-{self.device}")
        self._thread.start()
        return self

    def submit(self, work: Callable[..., object], latents: torch.Tensor, *args: Any) -> None:
        """Queue `work(latents copied to the device, *args)` after the chunks submitted before;
        waits while `queued` chunks are waiting already. Raises what stopped the worker, if anything."""
        if self._thread is None:
            raise RuntimeError("DecodeWorker.submit outside its `with` block")
        self._raise_stop()
        try:
            copy = staged(latents, self.device)
        except Exception as error:  # e.g. no room for the copy on the decode device
            raise self._error_for(error) from error
        self._queue.put((copy, work, args))

    def chunk_sink(self, sink: ChunkSink) -> ChunkSink:
        """`sink` with each chunk's call moved to the worker."""
        return lambda info: self.submit(_with_latents(sink, info), info.latents)

    def on_worker(self, write: Callable[..., object]) -> Callable[..., None]:
        """`write(latents, *args)` with each call moved to the worker."""
        return lambda latents, *args: self.submit(write, latents, *args)

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._queue.put(_END)
        assert self._thread is not None  # started by __enter__
        self._thread.join()
        if exc is None:
            self._raise_stop()
        elif self._stop is not None and not self._reported and not self.is_cancel(self._stop):
            # the run already stops for another reason: say what happened here too
            log.error("LongLive: %s", self._error_for(self._stop))

    def _raise_stop(self) -> None:
        if self._stop is None or self._reported:
            return
        self._reported = True
        if self.is_cancel(self._stop):
            raise self._stop
        raise self._error_for(self._stop) from self._stop

    def _error_for(self, error: BaseException) -> DecodeDeviceError:
        oom = self.is_out_of_memory(error)
        what = "ran out of memory" if oom else "failed"
        hint = f" Free memory on {self.device}, or choose another decode_device." if oom else ""
        return DecodeDeviceError(f"decode_device {self.device}: decoding a chunk there {what} ({type(error).__name__}: "
                                 f"{error}); the run stopped, the video keeps every chunk decoded before it.{hint}",
                                 self.device, oom)

    # ---- the worker thread --------------------------------------------------------------------

    def _loop(self) -> None:
        with torch.inference_mode(), _device_context(self.device):
            while (item := self._queue.get()) is not _END:
                if self._stop is None:  # after a stop the queue is only emptied, so `submit` never waits forever
                    self._run(*item)

    def _run(self, copy: Staged, work: Callable[..., None], args: tuple) -> None:
        try:
            work(copy(), *args)
        except BaseException as error:  # noqa: B036 - every error is handed to the sampling thread
            self._stop = error


def _with_latents(sink: ChunkSink, info: ChunkInfo) -> Callable[[torch.Tensor], None]:
    return lambda latents: sink(replace(info, latents=latents))
