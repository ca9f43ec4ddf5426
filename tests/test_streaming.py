"""Streaming video output (issue 6): chunked decoding equals whole decoding, the mp4 writer survives
interrupts, the sampler -> decoder -> mp4 pipeline keeps memory flat with length and across runs,
and the two video nodes work through the standalone host.

Memory is measured in fresh subprocesses (VmHWM / VmRSS of /proc/self/status) running a tiny
causal model at 32x32 with the stand-in causal VAE, single-threaded so the timings are stable.
The pack is imported the way ComfyUI imports a custom node folder (see test_nodes.py).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from helpers import MICRO, PACK, load_pack_standalone, request_interrupt, video_latent

ROOT = Path(__file__).resolve().parents[1]
pack = load_pack_standalone()
streaming = importlib.import_module(f"{PACK}.vace_core.streaming")
sampler = importlib.import_module(f"{PACK}.vace_core.sampler")
plan = importlib.import_module(f"{PACK}.vace_core.plan")
encoding = importlib.import_module(f"{PACK}.vace_core.encoding")
fixtures = importlib.import_module(f"{PACK}.vace_core.testing.fixtures")
stand_in = importlib.import_module(f"{PACK}.vace_core.testing.stand_in_vae")
model_mod = importlib.import_module(f"{PACK}.vace_core.model")
host = importlib.import_module(f"{PACK}.nodes.host")
video_nodes = importlib.import_module(f"{PACK}.nodes.video")
vae_stream = importlib.import_module(f"{PACK}.nodes.host.vae_stream")

SIZE = 32  # pixels; sizes are multiples of 16


def micro_model(vace: bool = False, seed: int = 0):
    config = MICRO.with_vace(1) if vace else MICRO
    model = model_mod.CausalWanModel(config)
    model.load_state_dict(fixtures.make_state_dict(config, seed=seed))
    return model.eval()


def text(seed: int, dim: int = MICRO.text_dim) -> torch.Tensor:
    return torch.randn(1, 8, dim, generator=torch.Generator().manual_seed(seed))


def raw_latents(frames: int, h: int = 4, w: int = 4, seed: int = 0) -> torch.Tensor:
    normalised = torch.randn(1, 16, frames, h, w, generator=torch.Generator().manual_seed(seed))
    return encoding.denormalize_latents(normalised)


class RecordingWriter:
    """Writer stand-in that keeps every frame (exact comparisons without H.264 loss)."""

    def __init__(self) -> None:
        self.frames: list[torch.Tensor] = []

    def write(self, frames: torch.Tensor) -> None:
        self.frames.append(frames.clone())

    def video(self) -> torch.Tensor:
        return torch.cat(self.frames)


def decoded_frames(path: Path) -> list:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def stream_decode(decoder, latents: torch.Tensor, split: list[int]) -> list[torch.Tensor]:
    outs, start = [], 0
    for size in split:
        outs.append(decoder.decode_chunk(latents[:, :, start:start + size]))
        start += size
    return outs


# ---------------------------------------------------------------------------------------------
# acceptance 1: chunked decode == whole decode (stand-in VAE; ComfyUI's WanVAE: tests/integration)


@pytest.mark.parametrize("split", [[1] * 7, [3, 3, 1], [1, 3, 3], [2, 5], [7], [1, 6], [4, 2, 1]])
def test_chunked_decode_equals_whole_decode(split):
    vae = stand_in.CausalStandInVAE(seed=3)
    latents = raw_latents(7, 4, 6)
    whole = vae.decode(latents)[0]  # [25, 32, 48, 3]
    outs = stream_decode(vae.streaming_decoder(), latents, split)
    assert [o.shape[0] for o in outs] == [streaming.frames_for_chunk(n, i == 0) for i, n in enumerate(split)]
    chunked = torch.cat(outs)
    assert chunked.shape == whole.shape == (25, 32, 48, 3)
    assert (chunked - whole).abs().max().item() < 1e-4


def test_stand_in_vae_carries_real_temporal_state():
    """Without the carried state a later chunk decodes differently, so the test above has teeth:
    frames after the first chunk depend on earlier latent frames (both causal convolutions)."""
    vae = stand_in.CausalStandInVAE(seed=3)
    latents = raw_latents(6)
    whole = vae.decode(latents)[0]
    fresh_tail = vae.streaming_decoder()
    fresh_tail.started = True  # a decoder that forgot everything but the frame count
    tail = fresh_tail.decode_chunk(latents[:, :, 3:])
    assert (tail - whole[9:]).abs().max().item() > 0.05
    # and the dependence is causal: later latents never change earlier frames
    changed = latents.clone()
    changed[:, :, 4:] += 1.0
    assert torch.equal(vae.decode(changed)[0][:13], whole[:13])


def test_stand_in_vae_follows_comfyui_conventions():
    vae = stand_in.CausalStandInVAE()
    pixels = torch.rand(9, 32, 48, 3)
    latents = vae.encode(pixels)
    assert latents.shape == (1, 16, 3, 4, 6)
    assert torch.equal(vae.encode(pixels.unsqueeze(0)), latents)
    longer = torch.cat([pixels, torch.rand(2, 32, 48, 3)])  # 11 frames: the 2 past 4k+1 are dropped
    assert torch.equal(vae.encode(longer), latents)
    decoded = vae.decode(latents)
    assert decoded.shape == (1, 9, 32, 48, 3) and 0 <= decoded.min() and decoded.max() <= 1
    # the whole core pipeline accepts it as its VAE
    context = encoding.encode_vace_context(vae, 32, 32, 9, reference_images=torch.rand(1, 40, 24, 3))
    assert context.context.shape == (1, 96, 4, 4, 4) and context.ref_frames == 1


def test_overlap_decoder_gives_the_right_frames_and_is_exact_with_enough_context():
    vae = stand_in.CausalStandInVAE(seed=1)
    latents = raw_latents(8)
    whole = vae.decode(latents)[0]
    short = stream_decode(streaming.OverlapChunkDecoder(vae, context_frames=1), latents, [3, 3, 2])
    assert [o.shape[0] for o in short] == [9, 12, 8]
    assert torch.equal(short[0], whole[:9])
    assert (torch.cat(short) - whole).abs().max().item() > 0.01  # history beyond the context is lost
    # the stand-in's kept frames depend on at most 3 earlier latent frames (conv_in's 2, plus the
    # latent frame whose sub-frames feed conv_mid), so 3 frames of context are exact
    full = stream_decode(streaming.OverlapChunkDecoder(vae, context_frames=3), latents, [3, 3, 2])
    assert (torch.cat(full) - whole).abs().max().item() < 1e-4


# ---------------------------------------------------------------------------------------------
# the mp4 writer


def test_video_writer_writes_a_playable_h264_mp4(tmp_path):
    frames = torch.linspace(0, 1, 48 * 32 * 3).view(1, 32, 48, 3).expand(20, -1, -1, -1).clone()
    frames[:, :, :, 0] = torch.linspace(0, 1, 20).view(20, 1, 1)  # red ramps over time
    path = tmp_path / "clip.mp4"
    with streaming.VideoWriter(path, 48, 32, fps=16, crf=0) as writer:
        writer.write(frames[:7])
        writer.write(frames[7:])
        assert writer.frames_written == 20
    assert writer.closed
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 48, 32)
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert float(stream.average_rate) == 16
    back = decoded_frames(path)
    assert len(back) == 20
    error = (torch.from_numpy(back[19]).float() / 255 - frames[19]).abs().mean().item()
    assert error < 0.03  # yuv420p at crf 0: only chroma subsampling and rounding remain
    assert streaming.read_video_info(path) == (20, 48, 32, 16.0)


def test_video_writer_keeps_frames_written_before_an_exception(tmp_path):
    path = tmp_path / "broken.mp4"
    with pytest.raises(KeyboardInterrupt):
        with streaming.VideoWriter(path, 32, 32) as writer:
            writer.write(torch.rand(13, 32, 32, 3))
            raise KeyboardInterrupt
    assert len(decoded_frames(path)) == 13
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        writer.write(torch.rand(1, 32, 32, 3))


def test_metadata_set_after_the_first_frames_is_in_the_closed_file_with_the_same_frames(tmp_path):
    frames = torch.rand(30, 32, 48, 3)
    late, early = tmp_path / "late.mp4", tmp_path / "early.mp4"
    with streaming.VideoWriter(early, 48, 32, metadata={"prompt": "{}"}) as writer:
        writer.set_metadata("longlive_steering", "[1]")
        writer.write(frames)
    with streaming.VideoWriter(late, 48, 32, metadata={"prompt": "{}"}) as writer:
        writer.set_metadata("first", "before any frame")
        writer.write(frames[:20])
        writer.set_metadata("longlive_steering", "[]")
        writer.write(frames[20:])
        writer.set_metadata("longlive_steering", '[{"frame": 9, "text": "a dog"}]')  # the last value wins
    with av.open(str(late)) as container:
        tags = dict(container.metadata)
    assert tags["longlive_steering"] == '[{"frame": 9, "text": "a dog"}]'
    assert (tags["prompt"], tags["first"]) == ("{}", "before any frame")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["early.mp4", "late.mp4"]  # no leftover copy
    # the streams were copied, not re-encoded: the same encoded frames as a file written in one go
    assert streaming.read_video_info(late) == streaming.read_video_info(early) == (30, 48, 32, 16.0)
    assert all(np.array_equal(a, b) for a, b in zip(decoded_frames(late), decoded_frames(early)))


def test_a_failed_metadata_rewrite_leaves_the_video_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "kept.mp4"
    writer = streaming.VideoWriter(path, 32, 32)
    writer.write(torch.rand(5, 32, 32, 3))
    writer.set_metadata("longlive_steering", "[]")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(streaming.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        writer.close()
    assert len(decoded_frames(path)) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.mp4"]


@pytest.mark.parametrize("kwargs, message", [
    ({"width": 33}, "even width and height"),
    ({"crf": 52}, "0..51"),
    ({"fps": 0}, "fps"),
])
def test_video_writer_rejects_bad_settings(tmp_path, kwargs, message):
    args = {"width": 32, "height": 32, "fps": 16, "crf": 19, **kwargs}
    with pytest.raises(ValueError, match=message):
        streaming.VideoWriter(tmp_path / "x.mp4", **args)


def test_video_writer_rejects_frames_of_another_size(tmp_path):
    with streaming.VideoWriter(tmp_path / "x.mp4", 32, 32) as writer:
        with pytest.raises(ValueError, match=r"expected frames \[T, 32, 32, 3\]"):
            writer.write(torch.rand(2, 16, 32, 3))


# ---------------------------------------------------------------------------------------------
# sampler -> streaming decoder -> writer


def whole_pipeline(model, prompts, vae, video_frames: int, vace=None, seed: int = 5, **settings):
    """The reference: keep every latent, then decode the whole video without references."""
    result = sampler.generate(model, prompts, video_frames=video_frames, height=SIZE, width=SIZE, seed=seed,
                              vace=vace, settings=sampler.SamplerSettings(**settings))
    return encoding.decode_normalized_without_references(vae, result.latents, result.ref_frames)


def test_streamed_run_equals_keep_latents_and_whole_decode_with_references():
    model, vae = micro_model(vace=True), stand_in.CausalStandInVAE(seed=2)
    vace = encoding.encode_vace_context(vae, SIZE, SIZE, 41, reference_images=torch.rand(2, 40, 30, 3))
    expected = whole_pipeline(model, text(1), vae, 41, vace=vace)
    writer, seen = RecordingWriter(), []
    result, stats = streaming.generate_to_video(model, text(1), video_frames=41, height=SIZE, width=SIZE, seed=5,
                                                decoder=vae.streaming_decoder(), writer=writer, vace=vace,
                                                on_frames=lambda pixels, block: seen.append(block.chunk_index))
    assert result.latents is None and result.ref_frames == 2
    assert seen == [0, 1, 2, 3]  # the reference block was skipped
    assert (stats.chunks, stats.latent_frames, stats.frames) == (4, 11, 41)
    assert writer.video().shape == expected.shape == (41, SIZE, SIZE, 3)
    assert (writer.video() - expected).abs().max().item() < 1e-4


def test_prompt_schedule_across_a_long_streamed_run():
    model, vae = micro_model(), stand_in.CausalStandInVAE(seed=2)
    schedule = [sampler.PromptSegment(0, text(1)), sampler.PromptSegment(40, text(2)),
                sampler.PromptSegment(90, text(3))]
    frames = 4 * 30 - 3  # 30 latent frames, 10 chunks, two switches
    expected = whole_pipeline(model, schedule, vae, frames)
    single = whole_pipeline(model, text(1), vae, frames)
    writer = RecordingWriter()
    streaming.generate_to_video(model, schedule, video_frames=frames, height=SIZE, width=SIZE, seed=5,
                                decoder=vae.streaming_decoder(), writer=writer)
    assert (writer.video() - expected).abs().max().item() < 1e-4
    switch = 4 * plan.switch_latent_frame(40) - 3  # first video frame after the first switch
    assert torch.equal(expected[:switch], single[:switch])
    assert not torch.allclose(expected[switch:], single[switch:], atol=1e-6)


def test_latents_to_video_drops_references_and_decodes_in_chunks():
    vae = stand_in.CausalStandInVAE(seed=4)
    latents = raw_latents(1 + 8)
    expected = vae.decode(latents[:, :, 1:])[0]
    writer = RecordingWriter()
    stats = streaming.latents_to_video(latents, 1, vae.streaming_decoder(), writer, chunk_frames=3)
    assert [f.shape[0] for f in writer.frames] == [9, 12, 8]
    assert stats.frames == 29 and (writer.video() - expected).abs().max().item() < 1e-4


# acceptance 3: an interrupt leaves a valid mp4 with exactly the frames made so far
def test_cancelled_run_leaves_a_valid_shorter_mp4(tmp_path):
    model, vae = micro_model(), stand_in.CausalStandInVAE()
    path = tmp_path / "cancelled.mp4"
    chunks_done = []
    with pytest.raises(sampler.GenerationCancelled):
        with streaming.VideoWriter(path, SIZE, SIZE, fps=16) as writer:
            streaming.generate_to_video(model, text(1), video_frames=81, height=SIZE, width=SIZE, seed=1,
                                        decoder=vae.streaming_decoder(), writer=writer,
                                        should_cancel=lambda: len(chunks_done) >= 3,
                                        on_frames=lambda pixels, block: chunks_done.append(pixels.shape[0]))
    assert chunks_done == [9, 12, 12]
    assert streaming.read_video_info(path) == (33, SIZE, SIZE, 16.0)


# ---------------------------------------------------------------------------------------------
# acceptance 2 and 4: memory, in fresh processes

CHILD = textwrap.dedent("""
    import gc, json, sys, time
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {root!r})
    from vace_core.config import WanConfig
    from vace_core.testing.fixtures import make_state_dict
    from vace_core.model import CausalWanModel
    from vace_core import streaming
    from vace_core.testing import stand_in_vae as stand_in

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB

    config = WanConfig(**{config!r})
    model = CausalWanModel(config)
    model.load_state_dict(make_state_dict(config))
    model.eval()
    vae = stand_in.CausalStandInVAE()
    prompt = torch.randn(1, 8, config.text_dim, generator=torch.Generator().manual_seed(1))
    mode, latent_frames, runs, out = {mode!r}, {latent_frames}, {runs}, {out!r}
    size = {size}
    report = {{"rss_kb": [], "seconds": []}}
    for run in range(runs):
        start = time.perf_counter()
        if mode == "whole":  # control: what decoding the whole video at once costs
            latents = torch.randn(1, 16, latent_frames, size // 8, size // 8)
            frames = vae.decode(latents)[0].shape[0]
        else:
            with streaming.VideoWriter(out, size, size, fps=16) as writer:
                _, stats = streaming.generate_to_video(
                    model, prompt, video_frames=4 * latent_frames - 3, height=size, width=size, seed=run,
                    decoder=vae.streaming_decoder(), writer=writer)
            frames = stats.frames
        gc.collect()
        report["seconds"].append(time.perf_counter() - start)
        report["rss_kb"].append(status("VmRSS"))
    report["frames"] = frames
    report["peak_kb"] = status("VmHWM")
    print(json.dumps(report))
""")


def run_child(mode: str, latent_frames: int, out: Path, runs: int = 1) -> dict:
    config = {k: getattr(MICRO, k) for k in ("dim", "ffn_dim", "num_layers", "num_heads", "freq_dim", "text_dim")}
    code = CHILD.format(root=str(ROOT), config=config, mode=mode, latent_frames=latent_frames, runs=runs,
                        out=str(out), size=SIZE)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_thousand_latent_frames_stream_at_flat_memory(tmp_path, record_property):
    short = run_child("stream", 100, tmp_path / "short.mp4")
    started = time.perf_counter()
    long = run_child("stream", 1000, tmp_path / "long.mp4")
    long_seconds = time.perf_counter() - started
    whole = run_child("whole", 1000, tmp_path / "unused.mp4")
    ratio = long["peak_kb"] / short["peak_kb"]
    record_property("peak_kb_100", short["peak_kb"])
    record_property("peak_kb_1000", long["peak_kb"])
    record_property("seconds_1000", round(long_seconds, 1))
    print(f"\npeak RSS: 100 latent frames {short['peak_kb']} kB, 1000 latent frames {long['peak_kb']} kB "
          f"(x{ratio:.3f}); whole-video decode control {whole['peak_kb']} kB; "
          f"1000-frame run {long['seconds'][0]:.1f} s ({long_seconds:.1f} s with process start)")
    assert long["frames"] == 4 * 1000 - 3
    assert streaming.read_video_info(tmp_path / "long.mp4") == (3997, SIZE, SIZE, 16.0)
    assert ratio <= 1.1
    # the measurement has teeth: merely decoding those 1000 latent frames at once would show
    assert whole["peak_kb"] > 1.1 * short["peak_kb"]


def test_ten_runs_in_one_process_do_not_grow_memory(tmp_path, record_property):
    report = run_child("stream", 60, tmp_path / "repeat.mp4", runs=10)
    rss = report["rss_kb"]
    record_property("rss_kb", rss)
    print(f"\nVmRSS after each run (kB): {rss}")
    assert rss[9] <= 1.05 * rss[1]
    assert streaming.read_video_info(tmp_path / "repeat.mp4")[0] == 4 * 60 - 3


# ---------------------------------------------------------------------------------------------
# the nodes, through the standalone host


class InterruptingVAE(stand_in.CausalStandInVAE):
    """Stand-in VAE whose streaming decoder presses Cancel after `after` chunks."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def streaming_decoder(self):
        inner = super().streaming_decoder()
        vae = self

        class Decoder:
            calls = 0

            def decode_chunk(self, latents):
                Decoder.calls += 1
                if Decoder.calls == vae.after:
                    request_interrupt()
                return inner.decode_chunk(latents)

        return Decoder()


def save_node(**kwargs):
    args = {"filename_prefix": "LongLive", "fps": 16, "crf": 19, **kwargs}
    return video_nodes.LongLiveSaveVideo().save(**args)


def test_save_video_node_writes_without_references_and_never_overwrites(output_dir):
    latent = {"samples": raw_latents(2 + 7), "longlive_ref_frames": 2}
    (output_dir / "clips").mkdir(parents=True)
    taken = output_dir / "clips" / "LongLive_00001_.mp4"
    taken.write_bytes(b"not mine")
    first = save_node(samples=latent, vae=stand_in.CausalStandInVAE(), filename_prefix="clips/LongLive")
    second = save_node(samples=latent, vae=stand_in.CausalStandInVAE(), filename_prefix="clips/LongLive")
    assert first["ui"] == {"images": [{"filename": "LongLive_00002_.mp4", "subfolder": "clips", "type": "output"}],
                           "animated": (True,)}
    assert second["ui"]["images"][0]["filename"] == "LongLive_00003_.mp4"
    assert taken.read_bytes() == b"not mine"
    assert streaming.read_video_info(output_dir / "clips" / "LongLive_00002_.mp4") == (25, SIZE, SIZE, 16.0)
    assert video_nodes.LongLiveSaveVideo.OUTPUT_NODE is True


def test_save_video_node_interrupt_leaves_the_chunks_so_far(output_dir):
    latent = {"samples": raw_latents(10), "longlive_ref_frames": 1}
    with pytest.raises(host.InterruptProcessingException):
        save_node(samples=latent, vae=InterruptingVAE(after=2))
    assert not host.is_interrupted()
    # chunks of 3 latent frames: the 2nd decode raised the flag, the 3rd chunk was never decoded
    assert streaming.read_video_info(output_dir / "LongLive_00001_.mp4")[0] == 9 + 12


def test_save_video_node_writes_the_workflow_metadata(output_dir):
    save_node(samples={"samples": raw_latents(2)}, vae=stand_in.CausalStandInVAE(),
              prompt={"1": {"class_type": "X"}}, extra_pnginfo={"workflow": {"nodes": []}})
    with av.open(str(output_dir / "LongLive_00001_.mp4")) as container:
        assert json.loads(container.metadata["prompt"]) == {"1": {"class_type": "X"}}
        assert json.loads(container.metadata["workflow"]) == {"nodes": []}


def test_non_wan_vae_falls_back_to_overlap_decoding_with_a_warning(caplog):
    class PlainVAE:
        def __init__(self):
            self.inner = stand_in.CausalStandInVAE()

        def decode(self, latents):
            return self.inner.decode(latents)

    with caplog.at_level("WARNING", logger="longlive_vace"):
        decoder = host.streaming_decoder(PlainVAE())
    assert isinstance(decoder, streaming.OverlapChunkDecoder)
    assert "not a Wan 2.1 VAE" in caplog.text
    assert isinstance(host.streaming_decoder(stand_in.CausalStandInVAE()), stand_in.StandInStreamingDecoder)


# ---- LongLive Sampler -> Video


def keep_written(monkeypatch) -> list[torch.Tensor]:
    """Every frame the video nodes write from now on (exact comparisons without H.264 loss)."""
    written = []

    class KeepingWriter(streaming.VideoWriter):
        def write(self, frames):
            written.append(frames.clone())
            super().write(frames)

    monkeypatch.setattr(video_nodes, "VideoWriter", KeepingWriter)
    return written


def sampler_args(model, **extra):
    # the LongLive preset: chunk 3, window 12, sink 3, steps 1000,750,500,250, shift 5
    return {"model": model, "positive": [[text(1), {}]], "latent": video_latent(SIZE, SIZE, 45), "seed": 3,
            "vace_scale": 1.0, **extra}


def test_sampler_to_video_node_equals_sampler_then_decode(output_dir, micro_checkpoint, monkeypatch, caplog):
    vae = stand_in.CausalStandInVAE(seed=6)
    samples = pack.NODE_CLASS_MAPPINGS["LongLiveSampler"]().sample(**sampler_args(micro_checkpoint))[0]
    expected = pack.NODE_CLASS_MAPPINGS["LongLiveDecode"]().decode(samples, vae)[0]
    written = keep_written(monkeypatch)
    with caplog.at_level("INFO", logger="longlive_vace"):
        result = video_nodes.LongLiveSampleToVideo().generate(**sampler_args(micro_checkpoint), vae=vae,
                                                              filename_prefix="LongLive", fps=16, crf=19)
    eta_lines = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
    assert len(eta_lines) == 4 and eta_lines[-1].startswith("LongLive Sampler -> Video: chunk 4/4 (12 frames)")
    assert (torch.cat(written) - expected).abs().max().item() < 1e-4
    assert result["ui"]["images"][0] == {"filename": "LongLive_00001_.mp4", "subfolder": "", "type": "output"}
    assert streaming.read_video_info(output_dir / "LongLive_00001_.mp4") == (45, SIZE, SIZE, 16.0)


def test_sampler_to_video_node_with_start_images_equals_sampler_then_decode(output_dir, micro_checkpoint,
                                                                          monkeypatch):
    """Image-to-video through the streaming node: the start frames are written first (they are part of
    the video), the chunk count covers them, and the frames equal the sampler node's then a decode."""
    vae = stand_in.CausalStandInVAE(seed=6)
    start = torch.rand(5, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(4))  # 2 latent frames
    args = sampler_args(micro_checkpoint, start_images=start)
    samples = pack.NODE_CLASS_MAPPINGS["LongLiveSampler"]().sample(**args, vae=vae)[0]
    expected = pack.NODE_CLASS_MAPPINGS["LongLiveDecode"]().decode(samples, vae)[0]
    written = keep_written(monkeypatch)
    video_nodes.LongLiveSampleToVideo().generate(**args, vae=vae, filename_prefix="LongLive", fps=16, crf=19)
    # 12 latent frames: the 2 start frames form one chunk, then 10 generated frames in chunks of 3, 3, 3, 1
    assert [w.shape[0] for w in written] == [5, 12, 12, 12, 4]
    assert (torch.cat(written) - expected).abs().max().item() < 1e-4
    assert streaming.read_video_info(output_dir / "LongLive_00001_.mp4")[0] == 45


def test_sampler_to_video_node_interrupt_keeps_a_valid_shorter_file(output_dir, micro_checkpoint):
    with pytest.raises(host.InterruptProcessingException):
        video_nodes.LongLiveSampleToVideo().generate(**sampler_args(micro_checkpoint), vae=InterruptingVAE(after=2),
                                                     filename_prefix="LongLive", fps=16, crf=19)
    assert not host.is_interrupted()
    assert streaming.read_video_info(output_dir / "LongLive_00001_.mp4")[0] == 9 + 12


def test_sampler_to_video_node_inputs_extend_the_sampler_node():
    sampler_inputs = pack.NODE_CLASS_MAPPINGS["LongLiveSampler"].INPUT_TYPES()
    inputs = video_nodes.LongLiveSampleToVideo.INPUT_TYPES()
    assert list(inputs["required"])[:len(sampler_inputs["required"])] == list(sampler_inputs["required"])
    assert list(inputs["required"])[len(sampler_inputs["required"]):] == ["vae", "filename_prefix", "fps", "crf"]
    # the sampler's optional vae (for start_images) is the required vae here; the decode device is
    # last, so a saved workflow's widget values keep their places (docs/decode-device.md)
    assert list(inputs["optional"]) == [name for name in sampler_inputs["optional"] if name != "vae"] + ["decode_device"]
    assert inputs["required"]["crf"][1]["min"] == 0 and inputs["required"]["crf"][1]["max"] == 51
