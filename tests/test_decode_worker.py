"""Decoding on a worker thread (vace_core/decode_worker.py, issue 26): the frames equal the inline
decode bit for bit, the chunks in flight stay bounded over a 40-chunk run, the worker's copy of a
chunk is its own, and a decode error, an out-of-memory or a cancel stops the run with a valid mp4
holding every chunk decoded before it and an error naming the device.

The sampler is a real causal Wan network, small enough for 40 chunks in seconds (chunk 3, LongLive's
window and steps, 32x32 pixels); the decoder is the core's causal stand-in VAE, whose later chunks
depend on the state carried from the earlier ones, so a worker that decoded out of order, or twice,
would give other frames. The decode device is the CPU.
"""

from __future__ import annotations

import threading
import weakref

import pytest
import torch

from helpers import MICRO

from vace_core.decode_worker import QUEUED_CHUNKS, DecodeDeviceError, DecodeWorker
from vace_core.latents import frames_for_chunk, video_frames_for
from vace_core.model import CausalWanModel
from vace_core.sampler import generate
from vace_core.streaming import ChunkVideoSink, VideoWriter, latents_to_video, read_video_info
from vace_core.testing import fixtures
from vace_core.testing.stand_in_vae import CausalStandInVAE

SIZE = 32  # pixels
CPU = torch.device("cpu")
GATE_TIMEOUT = 60  # seconds: only a broken worker waits this long


@pytest.fixture(scope="module")
def model() -> CausalWanModel:
    network = CausalWanModel(MICRO)
    network.load_state_dict(fixtures.make_state_dict(MICRO, seed=0))
    return network.eval()


def run(model: CausalWanModel, chunks: int, on_chunk) -> None:
    """A T2V run of `chunks` chunks of 3 latent frames, every chunk handed to `on_chunk`."""
    text = torch.randn(1, 8, MICRO.text_dim, generator=torch.Generator().manual_seed(1))
    generate(model, text, video_frames=video_frames_for(3 * chunks), height=SIZE, width=SIZE, seed=3,
             on_chunk=on_chunk, keep_latents=False)


def chunk_frames(chunks: int) -> int:
    """Video frames of the first `chunks` chunks of 3 latent frames."""
    return sum(frames_for_chunk(3, first=i == 0) for i in range(chunks))


class RecordingWriter:
    """Keeps every frame written (exact comparisons, no H.264 loss)."""

    def __init__(self) -> None:
        self.frames: list[torch.Tensor] = []

    def write(self, frames: torch.Tensor) -> None:
        self.frames.append(frames.clone())


# ---------------------------------------------------------------------------------------------
# the same frames


def test_frames_on_the_worker_equal_the_inline_decode_bit_for_bit(model):
    inline, threaded = RecordingWriter(), RecordingWriter()
    run(model, 5, ChunkVideoSink(CausalStandInVAE(seed=6).streaming_decoder(), inline))
    with DecodeWorker(CPU) as worker:
        run(model, 5, worker.chunk_sink(ChunkVideoSink(CausalStandInVAE(seed=6).streaming_decoder(), threaded)))
    assert [f.shape[0] for f in threaded.frames] == [frames_for_chunk(3, i == 0) for i in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(inline.frames, threaded.frames, strict=True))


def test_a_finished_latent_decoded_on_the_worker_equals_the_inline_decode_bit_for_bit():
    latents = torch.randn(1, 16, 10, 4, 4, generator=torch.Generator().manual_seed(2))  # chunks of 3, 3, 3, 1
    inline, threaded = RecordingWriter(), RecordingWriter()
    latents_to_video(latents, 0, CausalStandInVAE(seed=6).streaming_decoder(), inline, chunk_frames=3)
    with DecodeWorker(CPU) as worker:
        stats = latents_to_video(latents, 0, CausalStandInVAE(seed=6).streaming_decoder(), threaded,
                                 chunk_frames=3, worker=worker)
    assert stats.chunks == 4 and stats.frames == 37
    assert all(torch.equal(a, b) for a, b in zip(inline.frames, threaded.frames, strict=True))


# ---------------------------------------------------------------------------------------------
# memory stays flat


class GatedSink:
    """A sink whose work for chunk k waits until the sampler has handed over chunk k + queued + 1
    (the chunk a bounded queue makes it wait with; or the video's last chunk) or `release` is set,
    and then records how many
    chunks are in flight: handed to the worker and not yet finished by it. It also keeps a weak
    reference to every chunk's latents the worker got, to count the copies still alive."""

    def __init__(self, queued: int, chunks: int) -> None:
        self.queued, self.chunks = queued, chunks
        self.handed = 0  # chunks whose on_chunk the sampler entered
        self.accepted = 0  # chunks whose on_chunk returned (the worker took them over)
        self.finished = 0  # chunks whose work finished
        self.in_flight: list[int] = []  # accepted - finished when each work starts
        self.alive_before: list[int] = []  # copies of earlier chunks still alive when each work starts
        self.copies: list[weakref.ref] = []
        self.release = threading.Event()
        self.condition = threading.Condition()

    def on_chunk(self, worker_sink):
        def call(info) -> None:
            with self.condition:
                self.handed += 1
                self.condition.notify_all()
            worker_sink(info)
            self.accepted += 1

        return call

    def __call__(self, info) -> None:  # on the worker
        waits_for = min(self.finished + self.queued + 2, self.chunks)
        with self.condition:
            opened = self.condition.wait_for(lambda: self.release.is_set() or self.handed >= waits_for,
                                             timeout=GATE_TIMEOUT)
        assert opened, "the sampler never got that far"
        self.in_flight.append(self.accepted - self.finished)
        self.alive_before.append(sum(ref() is not None for ref in self.copies))
        self.copies.append(weakref.ref(info.latents))
        self.finished += 1


def test_memory_stays_flat_over_a_40_chunk_run(model):
    """Whenever the worker starts a chunk, the sampler has already made the chunk that the queue
    bound holds it at; still at most QUEUED_CHUNKS + 1 chunks are in flight, and no copy of a
    finished chunk is alive (what the worker holds does not grow with the video)."""
    gate = GatedSink(QUEUED_CHUNKS, chunks=40)
    with DecodeWorker(CPU) as worker:
        run(model, 40, gate.on_chunk(worker.chunk_sink(gate)))
    assert gate.finished == 40
    assert max(gate.in_flight) == QUEUED_CHUNKS + 1  # the gate made the queue fill, the bound held
    assert max(gate.alive_before) == 0


def test_the_in_flight_count_sees_a_queue_that_does_not_bound(model):
    """The measurement above has teeth: with room for the whole video in the queue and the worker
    held until the run ends, all 40 chunks are in flight at once."""
    gate = GatedSink(queued=40, chunks=41)  # opens only when released
    with DecodeWorker(CPU, queued=40) as worker:
        run(model, 40, gate.on_chunk(worker.chunk_sink(gate)))
        assert gate.accepted == 40 and gate.finished == 0
        with gate.condition:
            gate.release.set()
            gate.condition.notify_all()
    assert gate.in_flight[0] == 40


def test_the_worker_decodes_its_own_copy_of_the_chunk():
    """The sampler may reuse or overwrite its tensor once it handed the chunk over."""
    seen, held = [], threading.Event()
    latents = torch.ones(1, 16, 3, 4, 4)
    with DecodeWorker(CPU) as worker:
        worker.submit(lambda copy: (held.wait(GATE_TIMEOUT), seen.append(copy.clone())), latents)
        latents.fill_(7.0)  # while the chunk waits for the worker
        held.set()
    assert torch.equal(seen[0], torch.ones(1, 16, 3, 4, 4))


# ---------------------------------------------------------------------------------------------
# a run that stops


class FailingDecoder:
    """The stand-in VAE's streaming decoder that raises `error` at its `at`-th chunk (1-based)."""

    def __init__(self, at: int, error: BaseException) -> None:
        self.inner = CausalStandInVAE(seed=6).streaming_decoder()
        self.at, self.error, self.calls = at, error, 0

    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            raise self.error
        return self.inner.decode_chunk(latents)


@pytest.mark.parametrize("error, says", [
    (RuntimeError("a broken kernel"), "decoding a chunk there failed (RuntimeError: a broken kernel)"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     "decoding a chunk there ran out of memory (OutOfMemoryError: CUDA out of memory"),
], ids=["decode-error", "out-of-memory"])
def test_a_decode_error_stops_the_run_with_a_valid_mp4_and_names_the_device(model, tmp_path, error, says):
    path = tmp_path / "stopped.mp4"
    decoder = FailingDecoder(at=3, error=error)
    with pytest.raises(DecodeDeviceError) as raised:
        with VideoWriter(path, SIZE, SIZE) as writer, DecodeWorker(CPU) as worker:
            run(model, 6, worker.chunk_sink(ChunkVideoSink(decoder, writer)))
    assert str(raised.value).startswith(f"decode_device cpu: {says}")
    assert raised.value.device == CPU and raised.value.__cause__ is error
    assert raised.value.out_of_memory == isinstance(error, torch.OutOfMemoryError)
    assert ("Free memory on cpu" in str(raised.value)) == raised.value.out_of_memory
    assert decoder.calls == 3  # the chunks queued after the failure were dropped
    assert read_video_info(path)[0] == chunk_frames(2)


class Cancelled(Exception):
    """The host's interrupt, as its progress bar raises it once a chunk is written."""


def test_a_cancel_on_the_worker_stops_the_run_after_that_chunk(model, tmp_path):
    path = tmp_path / "cancelled.mp4"
    written = []

    def on_frames(pixels, block) -> None:
        written.append(pixels.shape[0])
        if len(written) == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        with VideoWriter(path, SIZE, SIZE) as writer, \
                DecodeWorker(CPU, is_cancel=lambda error: isinstance(error, Cancelled)) as worker:
            run(model, 6, worker.chunk_sink(ChunkVideoSink(CausalStandInVAE(seed=6).streaming_decoder(), writer,
                                                           on_frames)))
    assert len(written) == 2
    assert read_video_info(path)[0] == chunk_frames(2)


def test_a_stop_on_the_sampling_thread_still_writes_every_chunk_handed_over(model, tmp_path):
    """A cancel (or an error) in the sampler: the chunks it finished before are all in the mp4."""
    path = tmp_path / "interrupted.mp4"
    handed = []

    def stop_after_4(worker_sink):
        def call(info):
            worker_sink(info)
            handed.append(info.block.chunk_index)
            if len(handed) == 4:
                raise KeyboardInterrupt  # what a Cancel becomes, here from the sampling thread

        return call

    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(path, SIZE, SIZE) as writer, DecodeWorker(CPU) as worker:
            sink = ChunkVideoSink(CausalStandInVAE(seed=6).streaming_decoder(), writer)
            run(model, 6, stop_after_4(worker.chunk_sink(sink)))
    assert sink.stats.chunks == 4
    assert read_video_info(path)[0] == chunk_frames(4)


def test_a_copy_that_fails_names_the_device():
    class NoRoom(torch.Tensor):
        """Latents whose copy to the device finds no room there."""

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func is torch.Tensor.copy_:
                raise torch.OutOfMemoryError("no room for the chunk")
            return super().__torch_function__(func, types, args, kwargs or {})

    with DecodeWorker(CPU) as worker:
        with pytest.raises(DecodeDeviceError, match="decode_device cpu: .* ran out of memory"):
            worker.submit(lambda copy: None, torch.zeros(1, 16, 1, 2, 2).as_subclass(NoRoom))
