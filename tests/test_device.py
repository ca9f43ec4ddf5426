"""No host sync in a steady-state pass (vace_core.device, issue 16).

On CUDA the host waits for the GPU (a host sync) when it reads a device tensor (`.item()`, `bool`,
`int`, `.tolist()`: aten._local_scalar_dense; `.cpu()`: a device-to-host copy), copies host memory
to the device blocking or from pageable memory (`.to(device)`, `torch.tensor(..., device=)`,
`torch.as_tensor(x, device=)`), copies device memory to the host other than asynchronously into
pinned memory, or runs an op whose output size depends on the data (nonzero, masked_select,
unique, repeat_interleave by a tensor, equal, is_nonzero): the classes of call that
torch.cuda.set_sync_debug_mode("warn") reports.

No GPU here, so it is emulated: the model runs on PyTorch's "meta" device (shapes and dtypes, no
data), which stands for the GPU, and `SyncTripwire` (a dispatch mode, plus wrappers of torch.tensor
and torch.as_tensor, which bypass dispatch) records every such call on a meta tensor. Pinned memory,
which a CPU-only torch cannot allocate, is emulated as well: `stages_in_pinned_memory` answers yes
for meta, pinning returns a copy the tripwire remembers as pinned, and a copy between host and
"device" is asynchronous only with non_blocking=True from or into such memory.

The tripwire is armed after the first chunk (which embeds the run's timesteps and builds the RoPE
tables, once per run). The sampler's one designated read per chunk, `FiniteCheck.finite`, made
between passes, is counted apart: exactly one per chunk.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import random_text, random_vace_context, tiny_model
from vace_core import device as device_module
from vace_core import decode_worker
from vace_core.decode_worker import DecodeWorker
from vace_core.device import FiniteCheck, HostCopy, to_device
from vace_core.latents import video_frames_for
from vace_core.sampler import PromptSegment, SamplerSettings, generate

aten = torch.ops.aten
META = torch.device("meta")
HEIGHT, WIDTH = 32, 48
SCALAR_READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.item.default}
DATA_DEPENDENT = {aten.nonzero.default, aten.masked_select.default, aten._unique2.default, aten.unique_dim.default,
                  aten.unique_consecutive.default, aten.repeat_interleave.Tensor, aten.equal.default,
                  aten.allclose.default}


def on_meta(*values) -> bool:
    return any(isinstance(v, torch.Tensor) and v.device == META for v in values)


class SyncTripwire(TorchDispatchMode):
    """Records the calls that would make the host wait for the device (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.designated = False  # inside the sampler's one designated read per chunk
        self.designated_reads = 0
        self.syncs: list[str] = []
        self._pinned: set[int] = set()  # storages of emulated pinned memory

    def is_pinned(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type == "cpu" and tensor.untyped_storage().data_ptr() in self._pinned

    def record(self, what: str) -> None:
        if self.designated:
            self.designated_reads += self.armed
        elif self.armed:
            self.syncs.append(what)

    def _pin(self, tensor: torch.Tensor) -> torch.Tensor:
        self._pinned.add(tensor.untyped_storage().data_ptr())
        return tensor

    def moved(self, source: torch.Tensor, target: torch.device, asynchronous: bool,
              dtype: torch.dtype | None) -> torch.Tensor | None:
        """Records a copy between host and device that syncs; a stand-in for data leaving meta."""
        if source.device.type == "cpu" and target == META and not (asynchronous and self.is_pinned(source)):
            self.record(f"a host-to-device copy {list(source.shape)} (blocking or from pageable memory)")
        if source.device == META and target.type == "cpu":
            self.record(f"a device-to-host copy {list(source.shape)} into a new host tensor")
            return torch.zeros(source.shape, dtype=dtype or source.dtype)
        return None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (aten._pin_memory.default, aten.pin_memory.default):
            return self._pin(args[0].clone())
        if func is aten.is_pinned.default:
            return self.is_pinned(args[0])
        if kwargs.get("pin_memory"):  # a factory asked for pinned host memory
            return self._pin(func(*args, **{**kwargs, "pin_memory": False}))
        if func in SCALAR_READS and on_meta(args[0]):
            self.record("a device value read by the host (item / bool / int / tolist)")
            return True if args[0].dtype == torch.bool else 0
        if func is aten._to_copy.default:
            moved = self.moved(args[0], torch.device(kwargs.get("device") or args[0].device),
                               bool(kwargs.get("non_blocking")), kwargs.get("dtype"))
            if moved is not None:
                return moved
        if func is aten.copy_.default:
            target, source = args[0], args[1]
            asynchronous = bool(args[2] if len(args) > 2 else kwargs.get("non_blocking"))
            if source.device == META and target.device.type == "cpu":
                if not (asynchronous and self.is_pinned(target)):
                    self.record(f"a device-to-host copy {list(source.shape)} (blocking or into pageable memory)")
                return target  # the meta source holds no data
            if source.device.type == "cpu" and target.device == META and not (asynchronous and self.is_pinned(source)):
                self.record(f"a host-to-device copy {list(source.shape)} (blocking or from pageable memory)")
        if func in DATA_DEPENDENT and on_meta(*args):
            self.record(f"{func}: its output size depends on device data")
        return func(*args, **kwargs)


@pytest.fixture
def tripwire(monkeypatch):
    """An armed-later SyncTripwire over the block, with meta standing for a CUDA device."""
    wire = SyncTripwire()
    monkeypatch.setattr(device_module, "stages_in_pinned_memory", lambda device: device.type in ("cuda", "meta"))
    for name in ("tensor", "as_tensor"):
        factory = getattr(torch, name)

        def recording(data, *args, _factory=factory, _name=name, **kwargs):
            device = kwargs.get("device")
            if device is not None and torch.device(device) == META:
                wire.record(f"torch.{_name}(..., device={device}): a blocking host-to-device copy")
            return _factory(data, *args, **kwargs)

        monkeypatch.setattr(torch, name, recording)
    # Tensor.to / .cpu of an inference tensor can copy below the dispatch mode: watched here too
    tensor_to, tensor_cpu = torch.Tensor.to, torch.Tensor.cpu

    def to(tensor, *args, **kwargs):
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None and device != tensor.device:
            with torch.utils._python_dispatch._disable_current_modes():  # counted once, here
                moved = wire.moved(tensor, device, non_blocking, dtype)
                return moved if moved is not None else tensor_to(tensor, *args, **kwargs)
        return tensor_to(tensor, *args, **kwargs)

    def cpu(tensor, *args, **kwargs):
        moved = wire.moved(tensor, torch.device("cpu"), False, None)
        return moved if moved is not None else tensor_cpu(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    finite = FiniteCheck.finite

    def designated_read(self) -> bool:
        wire.designated = True
        try:
            return finite(self)
        finally:
            wire.designated = False

    monkeypatch.setattr(FiniteCheck, "finite", designated_read)
    with wire:
        yield wire


def test_the_tripwire_sees_each_class_of_sync(tripwire):
    tripwire.armed = True
    x = torch.zeros(4, device=META)
    bool(x.sum())
    x.cpu()
    torch.zeros(4).to(META)
    torch.as_tensor(0.5, device=META)
    torch.zeros(4).pin_memory().to(META)  # pinned, but blocking
    torch.zeros(4).copy_(x)
    with pytest.raises(Exception):  # nonzero on meta has no size to give: recorded first
        x.nonzero()
    assert len(tripwire.syncs) == 7
    torch.zeros(4).pin_memory().to(META, non_blocking=True)  # what to_device does: not a sync
    torch.zeros(4).pin_memory().copy_(x, non_blocking=True)  # the latents' way back: not a sync
    to_device(torch.zeros(4), META)
    assert len(tripwire.syncs) == 7


def sample_on_meta(model, prompts, vace, tripwire, latent_frames: int = 8, on_chunk=None, steer=None,
                   batch: int = 1, **changes) -> int:
    """Run the sampler on meta for `batch` videos, arming `tripwire` after the first chunk; returns the
    chunks after it. `on_chunk` and `steer` are handed to the sampler too (what the live nodes give it)."""
    armed_chunks = []

    def arm(info) -> None:
        if on_chunk is not None:
            on_chunk(info)
        if info.block.chunk_index >= 0:
            armed_chunks.append(info.block.chunk_index)
            tripwire.armed = True

    settings = SamplerSettings(chunk_frames=2, window_frames=4, sink_frames=1, denoising_steps=(1000, 500),
                               **changes)
    result = generate(model, prompts, video_frames=video_frames_for(latent_frames), height=HEIGHT, width=WIDTH,
                      seed=0, vace=vace, settings=settings, on_chunk=arm, steer=steer, batch=batch)
    assert len(result.blocks) == len(armed_chunks) + (vace is not None)  # the whole run happened
    return len(armed_chunks) - 1


@pytest.fixture(scope="module")
def meta_model():
    return tiny_model("tiny-vace", seed=1).to(META)


def test_no_host_sync_after_the_first_chunk_t2v(meta_model, tripwire):
    chunks = sample_on_meta(meta_model, random_text(seed=1), None, tripwire)
    assert tripwire.syncs == []
    assert tripwire.designated_reads == chunks == 3


@pytest.mark.parametrize("vace_attention", ["causal", "references"])  # with a VACE cache that writes / reads only
def test_no_host_sync_after_the_first_chunk_r2v_with_a_prompt_switch(meta_model, tripwire, vace_attention):
    """R2V, the window rolling, and a prompt switch at latent frame 6 (encoding the new prompt,
    LongLive's recache pass) in the armed part."""
    prompts = [PromptSegment(0, random_text(seed=1)), PromptSegment(24, random_text(seed=2))]
    vace = random_vace_context(1, 8, HEIGHT, WIDTH, seed=3)
    chunks = sample_on_meta(meta_model, prompts, vace, tripwire, vace_attention=vace_attention)
    assert tripwire.syncs == []
    assert tripwire.designated_reads == chunks == 3


def test_no_host_sync_after_the_first_chunk_for_a_batch(meta_model, tripwire):
    """A batch of 3 R2V videos with a prompt switch (issue 25): each video's noise, the shared VACE
    context and the prompt's K/V as views of the batch add no sync either."""
    prompts = [PromptSegment(0, random_text(seed=1)), PromptSegment(24, random_text(seed=2))]
    vace = random_vace_context(1, 8, HEIGHT, WIDTH, seed=3)
    chunks = sample_on_meta(meta_model, prompts, vace, tripwire, batch=3)
    assert tripwire.syncs == []
    assert tripwire.designated_reads == chunks == 3


def test_live_preview_and_steering_hooks_add_no_host_sync(meta_model, tripwire):
    """What the live nodes give the sampler (nodes/live.py): a steer callable consulted at every chunk
    boundary (nothing steered here), and an on_chunk that leaves a HostCopy of the chunk's latents
    for the preview worker."""
    copies, boundaries = [], []

    def steer(boundary):
        boundaries.append(boundary.frame)
        return []

    chunks = sample_on_meta(meta_model, random_text(seed=1), None, tripwire, steer=steer,
                            on_chunk=lambda info: copies.append(HostCopy(info.latents)))
    assert tripwire.syncs == []
    assert tripwire.designated_reads == chunks == 3
    assert boundaries == [5, 13, 21] and len(copies) == 4


@pytest.mark.parametrize("decode_on", ["cpu", "meta"], ids=["to-the-cpu", "to-another-gpu"])
def test_handing_chunks_to_a_decode_worker_adds_no_host_sync(meta_model, tripwire, decode_on, monkeypatch):
    """Sampler -> Video with a decode_device (vace_core/decode_worker.py): the sampling thread copies
    each chunk for the worker (into pinned host memory for the CPU, device to device for another GPU)
    and queues it; the worker's wait for that copy is on its own thread."""
    monkeypatch.setattr(decode_worker, "stages_in_pinned_memory", device_module.stages_in_pinned_memory)
    received = []
    with DecodeWorker(torch.device(decode_on)) as worker:
        chunks = sample_on_meta(meta_model, random_text(seed=1), None, tripwire,
                                on_chunk=worker.chunk_sink(lambda info: received.append(info.latents.device)))
    assert tripwire.syncs == []
    assert tripwire.designated_reads == chunks == 3
    assert received == [torch.device(decode_on)] * 4


def test_the_tripwire_catches_a_blocking_copy_for_the_preview(meta_model, tripwire):
    """Planted: the chunk's latents copied to the host the plain way."""
    sample_on_meta(meta_model, random_text(seed=1), None, tripwire, on_chunk=lambda info: info.latents.to("cpu"))
    assert len(tripwire.syncs) == 3 and all("device-to-host" in s for s in tripwire.syncs)


def test_the_tripwire_catches_the_old_sigma_tensor(meta_model, tripwire, monkeypatch):
    """Planted: the scheduler's sigma as torch.as_tensor(sigma, device=...), as before issue 16."""
    from vace_core import sampler, scheduler

    x0_from_flow = scheduler.x0_from_flow
    monkeypatch.setattr(sampler, "x0_from_flow", lambda x, flow, sigma: x0_from_flow(
        x, flow, torch.as_tensor(sigma, device=x.device, dtype=torch.float32)))
    sample_on_meta(meta_model, random_text(seed=1), None, tripwire, latent_frames=6)
    assert tripwire.syncs and all("torch.as_tensor" in s for s in tripwire.syncs)
    assert len(tripwire.syncs) == 2 * 2  # every denoising step of the 2 armed chunks


def test_the_tripwire_catches_a_pageable_copy_and_a_blocking_check(meta_model, tripwire, monkeypatch):
    """Planted: the noise copied without pinning, and the old finiteness check (bool per block)."""
    from vace_core import sampler

    monkeypatch.setattr(sampler, "to_device", lambda tensor, device, dtype=None: tensor.to(device, dtype))
    monkeypatch.setattr(sampler, "check_finite", lambda finite, *_: bool(torch.isfinite(finite._flag).all()))
    sample_on_meta(meta_model, random_text(seed=1), None, tripwire, latent_frames=6)
    copies = [s for s in tripwire.syncs if "host-to-device" in s]
    reads = [s for s in tripwire.syncs if "read by the host" in s]
    assert len(copies) == 2 and len(reads) == 2  # one noise copy and one check per armed chunk


def test_finite_check_reads_the_watched_latents():
    check = FiniteCheck(torch.device("cpu"))
    check.watch(torch.ones(2, 3))
    assert check.finite()
    check.watch(torch.tensor([1.0, float("inf")]))
    assert not check.finite()
    with pytest.raises(RuntimeError, match="before watch"):
        FiniteCheck(torch.device("cpu")).finite()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_no_sync_inside_a_pass_on_cuda(monkeypatch):
    """On a GPU, PyTorch's own sync detector (set_sync_debug_mode("error")) over every pass after
    the first chunk of an R2V run with a prompt switch, in bf16."""
    from vace_core.passes import CachedPasses

    model = tiny_model("tiny-vace", seed=1).set_dtype(torch.bfloat16).to("cuda")
    armed, run = [], CachedPasses.run

    def strict(self, p):
        torch.cuda.set_sync_debug_mode("error" if armed else 0)
        try:
            return run(self, p)
        finally:
            torch.cuda.set_sync_debug_mode(0)

    monkeypatch.setattr(CachedPasses, "run", strict)
    prompts = [PromptSegment(0, random_text(seed=1)), PromptSegment(24, random_text(seed=2))]
    settings = SamplerSettings(chunk_frames=2, window_frames=4, sink_frames=1, denoising_steps=(1000, 500))
    generate(model, prompts, video_frames=video_frames_for(8), height=HEIGHT, width=WIDTH, seed=0,
             vace=random_vace_context(1, 8, HEIGHT, WIDTH, seed=3), settings=settings,
             on_chunk=lambda info: armed.append(info) if info.block.chunk_index >= 0 else None)
    assert len(armed) == 4
