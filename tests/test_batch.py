"""A batch of videos in one run (docs/batches.md, DESIGN §13), on the tiny model, CPU, float32.

Video i of a batch of B is exactly the single-video run with seed + i: max abs difference 0. That
holds because nothing in a pass mixes the videos: every per-token operation (linear layers, norms,
attention per video and head) rounds the same whatever the batch, and the two that would not are
kept per video (the patch embedding's convolution picks another kernel for a batch on the CPU, off
by ~1e-6; SDPA broadcasting a prompt's K/V of batch 1 rounds differently, so they are expanded as
views). The planted faults below (one noise stream split across the batch, a cache that mixes the
videos' keys) move the videos by far more than 0, so the exact comparison catches them.

- the sampler (T2V, I2V, R2V, each with a scheduled prompt switch and a steer);
- the nodes: LongLive Sampler, Decode, Sampler -> Video, Save Video, Continue Video on a batch
  against the same nodes on each video alone; VACE Encode References' batch_size; a batch too large
  for a (simulated) device refused before any model work, naming batch_size and the largest that fits.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from helpers import (PACK, load_pack_standalone, random_text, random_vace_context, randn, request_interrupt, run_node,
                     sampler_settings, standalone_host, tiny_model, video_latent, write_node_models)
from vace_core.cache import BlockCacheAccess
from vace_core.latents import denormalize_latents, video_frames_for
from vace_core.noise import noise_seed, video_seed
from vace_core.plan import Block
from vace_core.sampler import ChunkInfo, PromptSegment, SamplerSettings, _Run, generate
from vace_core.streaming import BatchVideoSink, ChunkVideoSink
from vace_core.testing.stand_in_vae import CausalStandInVAE

HEIGHT, WIDTH = 32, 48
BATCH = 3
SEED = 11
LATENT_FRAMES = 9  # chunks of 2 at latent frames 0, 2, 4, 6 and a last one of 1 at 8
SETTINGS = SamplerSettings(chunk_frames=2, window_frames=4, sink_frames=1, denoising_steps=(1000, 500))
SWITCH_FRAME = 9  # scheduled: video frame 9 is latent frame 3, so it takes over at the chunk at 4
STEER_FRAME = 21  # live: the boundary before the chunk at latent frame 6 (video frame 21)
# a planted fault moves a video by more than this (measured max abs differences: 1.1 to 7.2 on
# latents of std ~1.3); the batch itself moves none by anything
FAULT_FLOOR = 1e-2


@pytest.fixture(scope="module")
def model():
    return tiny_model("tiny-vace", seed=4)


def steer_at(frame: int, text: torch.Tensor):
    """A `steer` callable that gives `text` at the boundary of video frame `frame` (a new one per run)."""
    def steer(boundary):
        return [PromptSegment(boundary.frame, text)] if boundary.frame == frame else []
    return steer


def mode_inputs(mode: str) -> dict:
    """What a T2V, I2V (one start latent frame, the same for every video) or R2V run is given."""
    if mode == "i2v":
        return {"start_latents": randn(1, 16, 1, HEIGHT // 8, WIDTH // 8, seed=5)}
    if mode == "r2v":
        return {"vace": random_vace_context(1, LATENT_FRAMES, HEIGHT, WIDTH, seed=6)}
    return {}


def make(model, mode: str, seed: int, batch: int = 1) -> torch.Tensor:
    prompts = [PromptSegment(0, random_text(seed=1)), PromptSegment(SWITCH_FRAME, random_text(seed=2))]
    return generate(model, prompts, video_frames=video_frames_for(LATENT_FRAMES), height=HEIGHT, width=WIDTH,
                    seed=seed, settings=SETTINGS, batch=batch, steer=steer_at(STEER_FRAME, random_text(seed=3)),
                    **mode_inputs(mode)).latents


def max_diff_per_video(model, mode: str, batched: torch.Tensor) -> list[float]:
    return [(batched[i:i + 1] - make(model, mode, SEED + i)).abs().max().item() for i in range(batched.shape[0])]


@pytest.mark.parametrize("mode", ["t2v", "i2v", "r2v"])
def test_video_i_of_a_batch_is_the_single_run_with_seed_plus_i(model, mode):
    batched = make(model, mode, SEED, batch=BATCH)
    assert batched.shape == (BATCH, 16, (mode == "r2v") + LATENT_FRAMES, HEIGHT // 8, WIDTH // 8)
    assert max_diff_per_video(model, mode, batched) == [0.0] * BATCH
    # the videos are different videos (their own noise; measured mean abs differences 1.2 to 1.4),
    # apart from the frames given to all of them
    first = 2 if mode == "r2v" else 1  # the reference (denoised from the seed's own stream) differs too
    generated = batched[:, :, first:]
    assert min((generated[i] - generated[j]).abs().mean().item() for i in range(BATCH) for j in range(i)) > 0.3
    if mode == "i2v":
        assert torch.equal(batched[:, :, :1], mode_inputs("i2v")["start_latents"].expand(BATCH, -1, -1, -1, -1))


def one_stream_split(self, block: Block, steps: int) -> torch.Tensor:
    """Planted fault: the batch draws one stream of the run's seed and splits it across the videos."""
    stream = -1 if block.is_reference else block.start - self.ref_frames
    generator = torch.Generator().manual_seed(noise_seed(self.request.seed, stream))
    return torch.randn((steps, self.batch, 16, block.frames, *self.grid), generator=generator)


def mixing_cache(write_and_read):
    """Planted fault: each video reads the cached keys of the video before it."""
    def read(self, layer, k, v):
        keys, values = write_and_read(self, layer, k, v)
        return keys.roll(1, dims=0), values.roll(1, dims=0)
    return read


@pytest.mark.parametrize("fault", ["one noise stream split across the batch", "a cache that mixes videos"])
def test_the_comparison_catches_a_batch_that_shares_noise_or_mixes_videos(model, monkeypatch, fault):
    if fault.startswith("one noise"):
        monkeypatch.setattr(_Run, "noise", one_stream_split)
    else:
        monkeypatch.setattr(BlockCacheAccess, "write_and_read", mixing_cache(BlockCacheAccess.write_and_read))
    batched = make(model, "t2v", SEED, batch=BATCH)
    monkeypatch.undo()
    assert min(max_diff_per_video(model, "t2v", batched)) > FAULT_FLOOR


class KeptFrames:
    """A writer that keeps the frames it is given."""

    def __init__(self) -> None:
        self.frames: list[torch.Tensor] = []

    def write(self, frames: torch.Tensor) -> None:
        self.frames.append(frames)


def test_the_batch_sink_writes_each_video_with_its_own_decoder_and_shows_them_side_by_side():
    vae = CausalStandInVAE(seed=2)
    latents = randn(2, 16, 5, HEIGHT // 8, WIDTH // 8, seed=7)  # normalised, two videos
    writers, shown = [KeptFrames(), KeptFrames()], []
    sink = BatchVideoSink([ChunkVideoSink(vae.streaming_decoder(), w) for w in writers],
                          on_frames=lambda pixels, block: shown.append((pixels, block)))
    sink(ChunkInfo(Block(0, 0, 1, -1, "reference"), randn(2, 16, 1, HEIGHT // 8, WIDTH // 8, seed=8)))  # skipped
    blocks = [Block(1, 1, 3, 0), Block(2, 4, 2, 1)]  # after one reference frame
    for block in blocks:
        sink(ChunkInfo(block, latents[:, :, block.start - 1:block.end - 1]))
    for i, writer in enumerate(writers):  # each video as a whole decode of it alone
        alone = vae.decode(denormalize_latents(latents[i:i + 1]))[0]
        assert torch.equal(torch.cat(writer.frames), alone)
    assert [block for _, block in shown] == blocks
    for (pixels, _), left, right in zip(shown, writers[0].frames, writers[1].frames):
        assert torch.equal(pixels, torch.cat([left, right], dim=2))  # [T, H, 2W, 3], video 0 on the left
    assert sink.stats.chunks == 4 and sink.stats.frames == 2 * 17
    with pytest.raises(ValueError, match="a chunk of 3 videos for a sink of 2 videos"):
        sink(ChunkInfo(Block(3, 6, 1, 2), randn(3, 16, 1, HEIGHT // 8, WIDTH // 8, seed=9)))


def test_video_seeds_wrap_like_the_seed_input():
    assert [video_seed(5, i) for i in range(3)] == [5, 6, 7]
    assert video_seed(2**64 - 1, 1) == 0  # the seed input's maximum is 2**64 - 1: video 1 is seed 0


# ---------------------------------------------------------------------------------------------
# the nodes, through the standalone host

pack = load_pack_standalone()
NODES = pack.NODE_CLASS_MAPPINGS
host = importlib.import_module(f"{PACK}.nodes.host")
host_memory = importlib.import_module(f"{PACK}.nodes.host.memory")
model_ref = importlib.import_module(f"{PACK}.nodes.model_ref")
sampler_node = importlib.import_module(f"{PACK}.nodes.sampler")
streaming = importlib.import_module(f"{PACK}.vace_core.streaming")
stand_in = importlib.import_module(f"{PACK}.vace_core.testing.stand_in_vae")
core_memory = importlib.import_module(f"{PACK}.vace_core.memory")

FRAMES = 25  # 7 latent frames: chunks of 3, 3 and 1 (the LongLive preset)
NODE_SIZE = dict(width=WIDTH, height=HEIGHT)
MP4 = dict(fps=16, crf=19)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return write_node_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(autouse=True)
def standalone(request, monkeypatch, tmp_path):
    if "models_dir" not in request.fixturenames:  # the sampler tests above need no host
        yield
        return
    monkeypatch.setenv("LONGLIVE_OUTPUT_DIR", str(tmp_path / "output"))
    with standalone_host(request.getfixturevalue("models_dir"), monkeypatch):
        yield


class CountingVAE(stand_in.CausalStandInVAE):
    """The core's stand-in Wan VAE, counting the encodes it makes."""

    def __init__(self) -> None:
        super().__init__(seed=6)
        self.encodes = 0

    def encode(self, pixels):
        self.encodes += 1
        return super().encode(pixels)


def node_model(vace: bool = False):
    model = run_node(NODES, "LongLiveModelLoader", base_checkpoint="longlive_base.pt", lora="none", lora_strength=1.0,
                     dtype="fp32")[0]
    return run_node(NODES, "LongLiveVaceGraft", model=model, vace_checkpoint="vace_module.safetensors")[0] if vace \
        else model


def conditioning(seed: int) -> list:
    return [[random_text(seed=seed, length=12), {"pooled_output": None}]]


def batch_latent(latent: dict, batch: int) -> dict:
    """The empty video latent `latent` with batch_size `batch`."""
    return {**latent, "samples": latent["samples"][:1].expand(batch, -1, -1, -1, -1).clone()}


def node_inputs(mode: str, vae, batch: int) -> dict:
    """The sampler node's inputs for a T2V (a scheduled switch), I2V (start images) or R2V (VACE
    Encode References with its batch_size) run of `batch` videos."""
    inputs = dict(model=node_model(vace=mode == "r2v"), positive=conditioning(1), seed=SEED, vace_scale=1.0,
                  settings=sampler_settings(NODES, steps="1000,500"),
                  latent=batch_latent(video_latent(WIDTH, HEIGHT, FRAMES), batch))
    if mode == "t2v":
        inputs["prompt_schedule"] = run_node(NODES, "LongLivePromptSchedule", conditioning=conditioning(2),
                                             start_frame=9)[0]
    elif mode == "i2v":
        start = torch.rand(1, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(8))
        inputs.update(start_images=start, vae=vae)
    else:
        references = torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(9))
        inputs["vace_context"], inputs["latent"] = run_node(NODES, "LongLiveVaceEncode", vae=vae, length=FRAMES,
                                                            reference_fit="pad", reference_images=references,
                                                            batch_size=batch, **NODE_SIZE)
    return inputs


def single(inputs: dict, video: int) -> dict:
    """The inputs of video `video` alone: batch 1, seed + video."""
    return {**inputs, "latent": batch_latent(inputs["latent"], 1), "seed": SEED + video}


@pytest.mark.parametrize("mode", ["t2v", "i2v", "r2v"])
def test_sampler_node_batch_equals_single_runs_and_decodes_video_after_video(models_dir, mode):
    vae = CountingVAE()
    inputs = node_inputs(mode, vae, BATCH)
    encoded = vae.encodes  # R2V: VACE Encode References made the one context of every video
    batched = run_node(NODES, "LongLiveSampler", **inputs)[0]
    assert vae.encodes - encoded == (mode == "i2v")  # I2V: the start image, once for every video
    refs = batched["longlive_ref_frames"]
    assert batched["samples"].shape == (BATCH, 16, refs + 7, HEIGHT // 8, WIDTH // 8) and refs == (mode == "r2v")
    alone = [run_node(NODES, "LongLiveSampler", **single(inputs, i))[0] for i in range(BATCH)]
    for i, video in enumerate(alone):
        assert torch.equal(batched["samples"][i:i + 1], video["samples"]), i
    frames = run_node(NODES, "LongLiveDecode", samples=batched, vae=vae)[0]
    expected = torch.cat([run_node(NODES, "LongLiveDecode", samples=video, vae=vae)[0] for video in alone])
    assert frames.shape == (BATCH * FRAMES, HEIGHT, WIDTH, 3) and torch.equal(frames, expected)


def mp4_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_sampler_to_video_writes_one_mp4_per_video_equal_to_single_runs(models_dir, tmp_path):
    vae = CountingVAE()
    inputs = node_inputs("r2v", vae, 2)
    result = NODES["LongLiveSampleToVideo"]().generate(**inputs, vae=vae, filename_prefix="clips/batch", **MP4)
    names = [f"batch_0000{i}_.mp4" for i in (1, 2)]
    assert result["ui"]["images"] == [{"filename": n, "subfolder": "clips", "type": "output"} for n in names]
    out = tmp_path / "output" / "clips"
    for i, name in enumerate(names):
        NODES["LongLiveSampleToVideo"]().generate(**single(inputs, i), vae=vae, filename_prefix=f"clips/alone{i}",
                                                  **MP4)
        frames = mp4_frames(out / name)
        assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
        assert np.array_equal(frames, mp4_frames(out / f"alone{i}_00001_.mp4")), name


def test_save_video_writes_one_mp4_per_video_with_consecutive_counters(models_dir, tmp_path):
    vae = CountingVAE()
    inputs = node_inputs("r2v", vae, 2)
    batched = run_node(NODES, "LongLiveSampler", **inputs)[0]
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "saved_00002_.mp4").write_bytes(b"not mine")  # a taken name is skipped
    result = NODES["LongLiveSaveVideo"]().save(samples=batched, vae=vae, filename_prefix="saved", **MP4)
    assert [image["filename"] for image in result["ui"]["images"]] == ["saved_00003_.mp4", "saved_00004_.mp4"]
    assert (tmp_path / "output" / "saved_00002_.mp4").read_bytes() == b"not mine"
    for i, name in enumerate(["saved_00003_.mp4", "saved_00004_.mp4"]):
        one = {**batched, "samples": batched["samples"][i:i + 1]}
        alone = NODES["LongLiveSaveVideo"]().save(samples=one, vae=vae, filename_prefix=f"alone{i}", **MP4)
        assert alone["ui"]["images"][0]["filename"] == f"alone{i}_00001_.mp4"
        frames = mp4_frames(tmp_path / "output" / name)
        assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
        assert np.array_equal(frames, mp4_frames(tmp_path / "output" / f"alone{i}_00001_.mp4"))


class InterruptingVAE(stand_in.CausalStandInVAE):
    """A stand-in VAE whose decoders (one per video) press Cancel at decode call `after`, counted
    over all of them."""

    def __init__(self, after: int) -> None:
        super().__init__(seed=6)
        self.after, self.calls = after, 0

    def streaming_decoder(self):
        inner, vae = super().streaming_decoder(), self

        class Decoder:
            def decode_chunk(self, latents):
                vae.calls += 1
                if vae.calls == vae.after:
                    request_interrupt()
                return inner.decode_chunk(latents)

        return Decoder()


def test_an_interrupted_batch_leaves_every_mp4_valid_with_the_chunks_so_far(models_dir, tmp_path):
    vae = InterruptingVAE(after=2 * 2)  # chunk 2 of the second video
    inputs = node_inputs("t2v", vae, 2)
    with pytest.raises(host.InterruptProcessingException):
        NODES["LongLiveSampleToVideo"]().generate(**inputs, vae=vae, filename_prefix="cut", **MP4)
    assert not host.is_interrupted()
    for name in ("cut_00001_.mp4", "cut_00002_.mp4"):  # 9 frames of chunk 1 and 12 of chunk 2 each
        assert streaming.read_video_info(tmp_path / "output" / name)[:3] == (21, WIDTH, HEIGHT)


def test_continue_video_on_a_batch_equals_continuing_each_video_alone(models_dir):
    vae = CountingVAE()
    inputs = node_inputs("r2v", vae, 2)
    earlier = run_node(NODES, "LongLiveSampler", **inputs)[0]
    context = run_node(NODES, "LongLiveVaceEncode", vae=vae, length=FRAMES + 8, reference_fit="pad",
                       reference_images=torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(9)),
                       **NODE_SIZE)[0]
    common = dict(model=inputs["model"], positive=conditioning(1), length=8, vace_scale=1.0, vace_context=context,
                  settings=inputs["settings"], output="earlier + continuation")
    both = run_node(NODES, "LongLiveContinue", samples=earlier, seed=SEED, **common)[0]
    assert both["samples"].shape == (2, 16, 1 + 7 + 2, HEIGHT // 8, WIDTH // 8)
    for i in range(2):
        alone = run_node(NODES, "LongLiveContinue", samples={**earlier, "samples": earlier["samples"][i:i + 1]},
                         seed=SEED + i, **common)[0]
        assert torch.equal(both["samples"][i:i + 1], alone["samples"]), i
    assert torch.allclose(both["samples"][:, :, :8], earlier["samples"], atol=1e-5)  # each kept its own start


def test_vace_encode_latent_carries_the_batch_size_and_the_context_is_one(models_dir):
    vae, references = CountingVAE(), torch.rand(1, 40, 56, 3)
    contexts, encodes = [], []
    for batch_size in (1, 4):
        context, latent = run_node(NODES, "LongLiveVaceEncode", vae=vae, length=FRAMES, reference_fit="pad",
                                   reference_images=references, batch_size=batch_size, **NODE_SIZE)
        assert latent["samples"].shape == (batch_size, 16, 7, HEIGHT // 8, WIDTH // 8)
        assert not latent["samples"].any()
        contexts.append(context.context)
        encodes.append(vae.encodes - sum(encodes))
    assert encodes[0] == encodes[1] and torch.equal(contexts[0], contexts[1]) and contexts[1].shape[0] == 1
    with pytest.raises(ValueError, match="batch_size 0: expected a whole number of videos from 1 to 4096"):
        run_node(NODES, "LongLiveVaceEncode", vae=vae, length=FRAMES, reference_fit="pad",
                 reference_images=torch.rand(1, 40, 56, 3), batch_size=0, **NODE_SIZE)


# ---- a batch too large for the device


def run_memory(inputs: dict, batch: int) -> int:
    request = sampler_node.run_request(inputs["model"], sampler_node.VideoSize(WIDTH, HEIGHT, FRAMES),
                                       sampler_node.SamplerInputs(positive=inputs["positive"], seed=SEED,
                                                                  vace_scale=1.0, settings=inputs["settings"],
                                                                  vace=inputs.get("vace_context"),
                                                                  prompt_schedule=inputs.get("prompt_schedule")))
    return sampler_node.run_memory_of(inputs["model"], request, steerable=False).total(batch)


@pytest.mark.parametrize("mode", ["i2v", "r2v"])
def test_a_batch_too_large_for_the_device_is_refused_before_any_model_work(models_dir, monkeypatch, mode):
    vae = CountingVAE()
    inputs = node_inputs(mode, vae, 5)
    encodes = vae.encodes  # R2V: the VACE context, made before the sampler runs
    # a simulated device with room for the caches and activations of two videos and a half
    limit = (run_memory(inputs, 2) + run_memory(inputs, 3)) // 2
    monkeypatch.setattr(host, "run_memory_limit", lambda: limit)

    def refuse(*args, **kwargs):
        raise AssertionError("model work started")

    monkeypatch.setattr(sampler_node, "sample", refuse)
    monkeypatch.setattr(model_ref.LongLiveModel, "load_for_run", refuse)
    with pytest.raises(ValueError) as refused:
        run_node(NODES, "LongLiveSampler", **inputs)
    message = str(refused.value)
    assert message.startswith("latent: batch_size 5 does not fit the compute device")
    assert "the largest batch_size that fits is 2" in message
    assert vae.encodes == encodes  # I2V: the start image was not encoded either
    with pytest.raises(ValueError, match="batch_size 5 does not fit"):
        NODES["LongLiveSampleToVideo"]().generate(**{**inputs, "vae": vae}, filename_prefix="never", **MP4)
    one_and_a_half = (run_memory(inputs, 1) + run_memory(inputs, 2)) // 2
    monkeypatch.setattr(host, "run_memory_limit", lambda: one_and_a_half)
    with pytest.raises(ValueError, match="not even two videos fit: set batch_size 1"):
        run_node(NODES, "LongLiveSampler", **inputs)
    half_a_video = run_memory(inputs, 1) // 2
    monkeypatch.setattr(host, "run_memory_limit", lambda: half_a_video)
    with pytest.raises(ValueError, match="not even one video fits in full: set batch_size 1"):
        run_node(NODES, "LongLiveSampler", **inputs)


def test_one_video_is_never_refused_and_the_run_asks_the_host_for_its_batch(models_dir, monkeypatch):
    inputs = node_inputs("t2v", None, 1)
    monkeypatch.setattr(host, "run_memory_limit", lambda: 1)
    asked = []
    load_for_run = model_ref.LongLiveModel.load_for_run
    monkeypatch.setattr(model_ref.LongLiveModel, "load_for_run",
                        lambda self, memory: asked.append(memory) or load_for_run(self, memory))
    run_node(NODES, "LongLiveSampler", **inputs)
    monkeypatch.setattr(host, "run_memory_limit", lambda: None)  # standalone on the CPU: no limit known
    run_node(NODES, "LongLiveSampler", **{**inputs, "latent": batch_latent(inputs["latent"], 3)})
    assert asked == [run_memory(inputs, 1), run_memory(inputs, 3)]
    assert asked[1] - asked[0] == 2 * (run_memory(inputs, 2) - run_memory(inputs, 1))


def test_the_device_limit_is_comfyuis_memory_less_its_reserve(monkeypatch):
    class Management:
        @staticmethod
        def get_torch_device():
            return torch.device("cpu")

        @staticmethod
        def get_total_memory(device):
            return 24 * 2**30

        @staticmethod
        def minimum_inference_memory():
            return 2**30

    assert host.run_memory_limit() is None  # standalone, on the CPU
    monkeypatch.setattr(host_memory, "model_management", Management)
    assert host.run_memory_limit() == 23 * 2**30
