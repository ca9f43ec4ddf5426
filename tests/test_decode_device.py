"""The decode_device input of Sampler -> Video and Save Video (issue 26; nodes/host/decode_device.py):
its choices, what a name from another machine does, the VAE copy made for the device, and the nodes
run through the standalone host on a worker thread on the CPU: the same frames bit for bit as the
model device's decode, and a valid mp4 with a message naming the device when the decode fails,
runs out of memory or is cancelled. ComfyUI's own VAE and memory manager: tests/integration/
test_decode_device_server.py.
"""

from __future__ import annotations

import gc
import importlib
from types import SimpleNamespace

import pytest
import torch

from helpers import PACK, request_interrupt, video_latent
from test_streaming import SIZE, InterruptingVAE, keep_written, raw_latents, sampler_args

video_nodes = importlib.import_module(f"{PACK}.nodes.video")
host = importlib.import_module(f"{PACK}.nodes.host")
decode_device = importlib.import_module(f"{PACK}.nodes.host.decode_device")
streaming = importlib.import_module(f"{PACK}.vace_core.streaming")
decode_worker = importlib.import_module(f"{PACK}.vace_core.decode_worker")
stand_in = importlib.import_module(f"{PACK}.vace_core.testing.stand_in_vae")

CHUNKS_6 = 4 * (3 * 6 - 1) + 1  # video frames of 6 chunks of 3 latent frames


@pytest.fixture(autouse=True)
def no_cancel_pending():
    request_interrupt(False)
    yield
    request_interrupt(False)


def frames_of(chunks: int) -> int:
    return 9 + 12 * (chunks - 1)


# ---------------------------------------------------------------------------------------------
# the choices


def two_gpus(monkeypatch, model_on: str = "cuda:0") -> None:
    """A host that lists two CUDA GPUs (ComfyUI 0.33's device list) and samples on `model_on`."""
    listing = SimpleNamespace(get_all_torch_devices=lambda: [torch.device("cuda", 0), torch.device("cuda", 1)])
    monkeypatch.setattr(decode_device, "model_management", listing)
    monkeypatch.setattr(decode_device, "compute_device", lambda: torch.device(model_on))


def test_the_choices_are_the_model_device_the_cpu_and_every_other_gpu(monkeypatch):
    assert host.decode_device_choices() == ["model device", "cpu"]  # this machine: no GPU
    two_gpus(monkeypatch)
    assert host.decode_device_choices() == ["model device", "cpu", "cuda:1"]
    two_gpus(monkeypatch, model_on="cuda:1")
    assert host.decode_device_choices() == ["model device", "cpu", "cuda:0"]
    inputs = video_nodes.LongLiveSampleToVideo.INPUT_TYPES()["optional"]["decode_device"]
    assert inputs[1]["default"] == "model device" and "at most 3 chunks" in inputs[1]["tooltip"]
    assert video_nodes.LongLiveSaveVideo.INPUT_TYPES()["optional"]["decode_device"] == inputs


def test_a_gpu_this_machine_lacks_decodes_on_the_model_device_with_a_warning(monkeypatch, caplog):
    """A workflow saved on a machine with more GPUs: ComfyUI does not refuse the value (the nodes'
    VALIDATE_INPUTS takes decode_device), the run decodes on the model's device and says so."""
    two_gpus(monkeypatch)
    with caplog.at_level("WARNING", logger="longlive_vace"):
        assert decode_device.decode_target("cuda:3") is None
    assert "decode_device cuda:3 is not on this machine (it has cpu, cuda:0, cuda:1)" in caplog.text
    assert decode_device.decode_target("cuda:1") == torch.device("cuda", 1)
    assert decode_device.decode_target("cpu") == torch.device("cpu")
    assert decode_device.decode_target("cuda:0") is None  # the model's own GPU: inline
    for node in (video_nodes.LongLiveSampleToVideo, video_nodes.LongLiveSaveVideo):
        assert node.VALIDATE_INPUTS("cuda:3") is True
        assert node.VALIDATE_INPUTS() is True


def test_a_name_that_is_no_device_is_refused_naming_the_input(output_dir, micro_checkpoint):
    expected = "decode_device: 'the second card' is not a device; expected 'model device', 'cpu' or a GPU"
    assert video_nodes.LongLiveSaveVideo.VALIDATE_INPUTS("the second card").startswith(expected)
    with pytest.raises(ValueError, match=expected):
        video_nodes.LongLiveSampleToVideo().generate(**sampler_args(micro_checkpoint), vae=stand_in.CausalStandInVAE(),
                                                     filename_prefix="LongLive", fps=16, crf=19,
                                                     decode_device="the second card")
    assert not output_dir.exists()  # refused before anything was made


# ---------------------------------------------------------------------------------------------
# the VAE on the decode device


def test_the_vae_copy_is_made_once_per_vae_and_device_and_goes_with_the_vae():
    vae = stand_in.CausalStandInVAE(seed=2)
    copy = decode_device.vae_on(vae, torch.device("cpu"))
    assert copy is not vae and decode_device.vae_on(vae, torch.device("cpu")) is copy
    for (name, mine), theirs in zip(vae.state_dict().items(), copy.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs) and mine.data_ptr() != theirs.data_ptr(), name
    alive = [copy]
    del copy, vae
    gc.collect()
    assert len(decode_device._COPIES) == 0 and len(alive) == 1  # the cache let go; our reference keeps it


def test_a_vae_that_cannot_be_copied_decodes_on_the_model_device_with_a_warning(caplog):
    class Plain:
        def decode(self, latents):
            return stand_in.CausalStandInVAE().decode(latents)

    with caplog.at_level("WARNING", logger="longlive_vace"):
        decoding = host.chunk_decoding(Plain(), "cpu", (1, 16, 3, 4, 4))
    assert decoding.device is None and isinstance(decoding.new_decoder(), streaming.OverlapChunkDecoder)
    assert ("decode_device cpu: a Plain cannot be copied to another device; decoding on the model's device"
            in caplog.text)


# ---------------------------------------------------------------------------------------------
# the nodes


def test_sampler_to_video_frames_on_the_cpu_worker_equal_the_model_device_bit_for_bit(output_dir, micro_checkpoint,
                                                                                      monkeypatch):
    written = keep_written(monkeypatch)
    vae = stand_in.CausalStandInVAE(seed=6)
    video = video_nodes.LongLiveSampleToVideo()
    video.generate(**sampler_args(micro_checkpoint), vae=vae, filename_prefix="LongLive", fps=16, crf=19)
    inline = list(written)
    written.clear()
    video.generate(**sampler_args(micro_checkpoint), vae=vae, filename_prefix="LongLive", fps=16, crf=19,
                   decode_device="cpu")
    assert [w.shape[0] for w in written] == [9, 12, 12, 12]
    assert all(torch.equal(a, b) for a, b in zip(inline, written, strict=True))
    assert streaming.read_video_info(output_dir / "LongLive_00002_.mp4") == (45, SIZE, SIZE, 16.0)


def test_save_video_frames_on_the_cpu_worker_equal_the_model_device_bit_for_bit(output_dir, monkeypatch):
    written = keep_written(monkeypatch)
    latent = {"samples": raw_latents(1 + 10), "longlive_ref_frames": 1}
    save = video_nodes.LongLiveSaveVideo()
    save.save(latent, stand_in.CausalStandInVAE(seed=6), "LongLive", 16, 19)
    inline = list(written)
    written.clear()
    save.save(latent, stand_in.CausalStandInVAE(seed=6), "LongLive", 16, 19, decode_device="cpu")
    assert [w.shape[0] for w in written] == [9, 12, 12, 4]
    assert all(torch.equal(a, b) for a, b in zip(inline, written, strict=True))


class FailingVAE(stand_in.CausalStandInVAE):
    """The stand-in VAE whose streaming decoder raises `error` at its third chunk."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(seed=6)
        self.error = error

    def streaming_decoder(self):
        inner, error = super().streaming_decoder(), self.error

        class Decoder:
            calls = 0

            def decode_chunk(self, latents):
                Decoder.calls += 1
                if Decoder.calls == 3:
                    raise error
                return inner.decode_chunk(latents)

        return Decoder()


@pytest.mark.parametrize("error", [RuntimeError("a broken kernel"), torch.OutOfMemoryError("out of memory")],
                         ids=["decode-error", "out-of-memory"])
def test_a_failed_decode_stops_sampler_to_video_with_a_valid_mp4_and_says_where(output_dir, micro_checkpoint, error):
    with pytest.raises(decode_worker.DecodeDeviceError) as raised:
        video_nodes.LongLiveSampleToVideo().generate(**sampler_args(micro_checkpoint), vae=FailingVAE(error),
                                                     filename_prefix="LongLive", fps=16, crf=19, decode_device="cpu")
    path = output_dir / "LongLive_00001_.mp4"
    message = str(raised.value)
    assert message.startswith("decode_device cpu: decoding a chunk there")
    assert message.endswith(f"{path} holds 2 of 4 chunks.") and f"{type(error).__name__}: {error}" in message
    cause = raised.value.__cause__  # raised by the VAE's copy on the device: a copy of `error`
    assert type(cause) is type(error) and str(cause) == str(error)
    assert streaming.read_video_info(path)[0] == frames_of(2)


def test_a_failed_decode_stops_save_video_with_a_valid_mp4(output_dir):
    latent = {"samples": raw_latents(12)}  # chunks of 3 latent frames
    with pytest.raises(decode_worker.DecodeDeviceError, match="decode_device cpu: .* holds 2 of 4 chunks"):
        video_nodes.LongLiveSaveVideo().save(latent, FailingVAE(RuntimeError("boom")), "LongLive", 16, 19,
                                             decode_device="cpu")
    assert streaming.read_video_info(output_dir / "LongLive_00001_.mp4")[0] == frames_of(2)


def test_a_cancel_stops_sampler_to_video_on_the_worker_with_a_valid_mp4(output_dir, micro_checkpoint, caplog):
    """Cancel pressed while the worker decodes chunk 2: the sampler stops at its next pass; the chunks
    it finished before are all written (up to 3 more than inline: the queue and the chunk after it)."""
    args = sampler_args(micro_checkpoint, latent=video_latent(SIZE, SIZE, CHUNKS_6))
    with caplog.at_level("INFO", logger="longlive_vace"), pytest.raises(host.InterruptProcessingException):
        video_nodes.LongLiveSampleToVideo().generate(**args, vae=InterruptingVAE(after=2), filename_prefix="LongLive",
                                                     fps=16, crf=19, decode_device="cpu")
    assert not host.is_interrupted()
    frames = streaming.read_video_info(output_dir / "LongLive_00001_.mp4")[0]
    done = [r.getMessage() for r in caplog.records if "cancelled after" in r.getMessage()]
    assert len(done) == 1 and "of 6 chunks (decoded on cpu)" in done[0]
    chunks = int(done[0].split("cancelled after ")[1].split()[0])
    assert 2 <= chunks <= 5 and frames == frames_of(chunks)


def test_a_cancel_seen_on_the_worker_stops_the_run_after_that_chunk(output_dir, micro_checkpoint, monkeypatch,
                                                                     caplog):
    """ComfyUI's progress bar raises the interrupt where it is updated, here on the worker once chunk
    2 is written (and clears the flag, so the sampler learns it from the worker)."""
    update = video_nodes._ChunkProgress.__call__

    def interrupting(self, pixels, block=None):
        update(self, pixels, block)
        if self.done == 2:
            raise host.InterruptProcessingException()

    monkeypatch.setattr(video_nodes._ChunkProgress, "__call__", interrupting)
    args = sampler_args(micro_checkpoint, latent=video_latent(SIZE, SIZE, CHUNKS_6))
    with caplog.at_level("INFO", logger="longlive_vace"), pytest.raises(host.InterruptProcessingException):
        video_nodes.LongLiveSampleToVideo().generate(**args, vae=stand_in.CausalStandInVAE(seed=6),
                                                     filename_prefix="LongLive", fps=16, crf=19, decode_device="cpu")
    assert "cancelled after 2 of 6 chunks (decoded on cpu)" in caplog.text
    assert streaming.read_video_info(output_dir / "LongLive_00001_.mp4")[0] == frames_of(2)
