"""LongLive Sampler: causal chunk-by-chunk generation with optional VACE context and prompt switches."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, ContextManager, Iterator, Sequence

import torch

from ..vace_core.encoding import VaceContext, encode_start_frames
from ..vace_core.latents import denormalize_latents, latent_frames_for, video_frames_for
from ..vace_core.memory import RunMemory, run_memory
from ..vace_core.plan import PromptSegment, RunRequest, check_vace
from ..vace_core.presets import DEFAULT_PRESET, PRESET_NAMES
from ..vace_core.sampler import ChunkSink, GenerationCancelled, SampleResult, Steer, StepInfo, sample
from . import host
from .common import (CATEGORY, MODEL_TYPE, PROMPTS_TYPE, REF_FRAMES_KEY, SETTINGS_TYPE, STEERING_KEY, VACE_TYPE,
                     VideoSize, latent_video_size, source_node)
from .live import live_run
from .model_ref import LongLiveModel
from .prompts import check_clip, check_text_width, conditioning_tensor
from .sampler_settings import SamplerChoices

# what ComfyUI passes every sampler node besides its inputs: the queued graph and the node's id,
# so that an error can name the nodes an input came from
HIDDEN = {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"}


def sampler_inputs() -> dict:
    """The inputs of the LongLive sampler nodes, in the order the editor shows them: what most runs
    change is on the node; the causal options and the preset overrides come from the optional
    'LongLive Sampler Settings' node. The nodes built on it (Sampler -> Video, Continue Video) add
    and remove entries by name, so a new input is added here once."""
    return {
        "required": {
            "model": (MODEL_TYPE, {"tooltip": "The LongLive model (with VACE weights when a vace_context "
                                              "is connected)."}),
            "positive": ("CONDITIONING", {
                "tooltip": "The prompt, from CLIPTextEncode with the umT5 'wan' text encoder. LongLive is "
                           "distilled without CFG, so there is no negative prompt."}),
            "latent": ("LATENT", {
                "tooltip": "The video's width, height and length: an 'Empty HunyuanVideo 1.0 Latent' (the Wan "
                           "2.1 video latent), or the latent output of 'VACE Encode References' when a VACE "
                           "context is connected. Only its shape is used; its batch_size makes that many videos "
                           "in one run."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                             "tooltip": "Seed of the noise; the same seed gives the same video on any device. "
                                        "Video i of a batch is the video of seed + i."}),
            "vace_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                     "tooltip": "Strength of the VACE hints (0 = plain text-to-video). "
                                                "Ignored without a vace_context."}),
            "preset": (list(PRESET_NAMES), {
                "default": DEFAULT_PRESET,
                "tooltip": "The settings the loaded checkpoint was distilled for (chunk, window, sink, steps, "
                           "shift): LongLive, Self-Forcing, CausVid (AR) or Causal Forcing (chunkwise). The "
                           "last three attend globally over 21 latent frames (81 video frames); longer videos "
                           "roll that window. A 'LongLive Sampler Settings' node can override single values."}),
        },
        "optional": {
            "vace_context": (VACE_TYPE, {"tooltip": "Reference / control conditioning from 'VACE Encode "
                                                    "References' (its latent output gives the size)."}),
            "prompt_schedule": (PROMPTS_TYPE, {
                "tooltip": "Prompt switches from 'LongLive Prompt Schedule'; positive runs until the first "
                           "switch (a scheduled prompt at frame 0 replaces it)."}),
            "start_images": ("IMAGE", {
                "tooltip": "Image(s) the video starts from (image-to-video): encoded with the vae, centre-cropped "
                           "to the frame, they become the first output frames as they are and the video "
                           "continues from them. One image = 1 frame; a clip of 4k+1 images = its k+1 latent "
                           "frames."}),
            "vae": ("VAE", {"tooltip": "ComfyUI's Wan 2.1 VAE, to encode start_images (needed only with them)."}),
            "settings": (SETTINGS_TYPE, {
                "tooltip": "Optional 'LongLive Sampler Settings': the causal options, single preset values "
                           "overridden, per-block VACE strength. Not connected = the preset's values and the "
                           "defaults."}),
            "clip": ("CLIP", {
                "tooltip": "Optional, for live steering: the umT5 'wan' CLIP (the one that encodes positive). While "
                           "the node runs, a text typed on the node (or POST /longlive/steer) is encoded with it and "
                           "takes over at the next chunk, as a Prompt Schedule entry there would; the video records "
                           "it (longlive_steering)."}),
        },
        "hidden": dict(HIDDEN),
    }


class LongLiveSampler:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return sampler_inputs()

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("samples",)
    OUTPUT_TOOLTIPS = ("Raw Wan 2.1 latents, reference frames first (a batch: one per video); decode with "
                       "'Decode (strip references)'.",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Generates a video chunk by chunk with LongLive's KV cache (flat cost per chunk), "
                   "following the VACE references and switching prompts on schedule.")

    def sample(self, model: LongLiveModel, positive, latent: dict, seed: int, vace_scale: float,
               preset: str = DEFAULT_PRESET, vace_context: VaceContext | None = None,
               prompt_schedule: Sequence[PromptSegment] | None = None, start_images: torch.Tensor | None = None,
               vae=None, settings: SamplerChoices | None = None, clip=None, prompt: dict | None = None,
               unique_id: str | None = None) -> tuple[dict] | dict:
        inputs = SamplerInputs(positive=positive, seed=seed, vace_scale=vace_scale, preset=preset, settings=settings,
                               vace=vace_context, prompt_schedule=prompt_schedule, start_images=start_images, vae=vae)
        request = prepare_sampling(model, latent, inputs, clip, Origin(prompt, unique_id))
        with live_run(unique_id, request.blocks(), request.ref_frames, clip, model.facts.text_dim) as live:
            result = sample_on_device(model, request, chunk_output=nullcontext(live.on_chunk), steer=live.steer)
        assert result.latents is not None  # kept (keep_latents)
        samples = denormalize_latents(result.latents)  # ComfyUI LATENTs are raw VAE space
        return with_steering({"samples": samples, REF_FRAMES_KEY: result.ref_frames}, live.record)


def with_steering(latent: dict, record: list | None) -> tuple[dict] | dict:
    """The LATENT output; a steerable run also carries its steering record in it (for Save Video's
    metadata) and shows it in the node's UI output."""
    if record is None:
        return (latent,)
    return {"ui": {STEERING_KEY: list(record)}, "result": ({**latent, STEERING_KEY: list(record)},)}


@dataclass(frozen=True, eq=False)  # holds tensors: compared by identity
class SamplerInputs:
    """What the LongLive sampler nodes take besides the model, the video's size and the steering clip:
    ComfyUI's inputs of the same names (`vace` is the vace_context input)."""
    positive: Any  # CONDITIONING
    seed: int
    vace_scale: float
    preset: str = DEFAULT_PRESET
    settings: SamplerChoices | None = None
    vace: VaceContext | None = None
    prompt_schedule: Sequence[PromptSegment] | None = None
    start_images: torch.Tensor | None = None
    vae: Any = None  # VAE, to encode the start images


def prepare_sampling(model: LongLiveModel, latent: dict, inputs: SamplerInputs, clip: Any,
                     origin: Origin) -> RunRequest:
    """The checks and inputs Sampler and Sampler -> Video share: the run request, its size and batch
    from `latent`, its start images encoded (once, for every video); the steering clip checked."""
    size, batch = latent_video_size(latent, "latent")
    request = run_request(model, size, inputs, origin, batch=batch, steerable=clip is not None)
    if clip is not None:
        check_clip(clip, "clip")
    return replace(request, start_latents=encode_start_images(inputs.start_images, inputs.vae, request))


def encode_start_images(start_images: torch.Tensor | None, vae, request: RunRequest) -> torch.Tensor | None:
    """The start images as normalised latents, checked against the run (None without them)."""
    if start_images is None:
        return None
    if vae is None:
        raise ValueError("start_images: connect the vae input too (the Wan 2.1 VAE that encodes them)")
    frames = latent_frames_for(start_images.shape[0]) if start_images.ndim == 4 else 1
    if frames >= request.latent_frames:
        raise ValueError(f"start_images: {start_images.shape[0]} image(s) make {frames} latent frame(s), leaving "
                         f"nothing to generate in a video of {request.latent_frames} latent frames: raise the length")
    return encode_start_frames(vae, start_images, request.width, request.height)


@dataclass(frozen=True)
class Origin:
    """Where a sampler node sits in the queued graph (ComfyUI's hidden PROMPT and UNIQUE_ID), to name
    the nodes its inputs come from; both None outside ComfyUI."""
    prompt: dict | None = None
    unique_id: str | None = None

    def source(self, input_name: str) -> str:
        """"node 7 'VACE Encode References'" (or "the <input_name> input" when unknown)."""
        return source_node(self.prompt, self.unique_id, input_name) or f"the {input_name} input"


def run_request(model: LongLiveModel, size: VideoSize, inputs: SamplerInputs, origin: Origin = Origin(),
                size_from: str = "latent", batch: int = 1, steerable: bool = False) -> RunRequest:
    """Every check of the sampler inputs, run before the model moves or anything is computed, and the
    run they ask for (start images not yet encoded): `batch` videos, the run `steerable` or not (a
    steered run may switch prompts). `size_from` names the input the size and batch were read from
    (for messages)."""
    choices = inputs.settings if inputs.settings is not None else SamplerChoices()
    settings = choices.resolve(inputs.preset)
    prompts = _prompt_segments(model, inputs.positive, inputs.prompt_schedule, size.length)
    vace = inputs.vace
    if vace is not None:
        _check_same_size(size, vace, origin, size_from)
        check_vace(model, vace, latent_frames_for(size.length), size.height, size.width)
    _check_rope(model, vace.ref_frames if vace is not None else 0, size.length)
    scale = choices.vace_scale(inputs.vace_scale, model.facts.num_vace_blocks if vace is not None else None)
    request = RunRequest(prompts=prompts, video_frames=size.length, height=size.height, width=size.width,
                         seed=inputs.seed, vace=vace, vace_scale=scale, settings=settings, batch=batch)
    _check_batch_fits(model, request, steerable, size_from)
    return request


def _check_batch_fits(model: LongLiveModel, request: RunRequest, steerable: bool, size_from: str) -> None:
    """A batch whose KV caches and activations cannot fit the compute device is refused, naming the
    largest batch that fits. One video is never refused: its weights and room are the memory
    manager's to find, as before batches."""
    if request.batch == 1:
        return
    limit = host.run_memory_limit()
    if limit is None:
        return
    memory = run_memory_of(model, request, steerable)
    if memory.total(request.batch) <= limit:
        return
    fits = memory.largest_batch(limit)
    advice = (f"the largest batch_size that fits is {fits}" if fits > 1 else
              "not even two videos fit: set batch_size 1" if fits == 1 else
              "not even one video fits in full: set batch_size 1 (the memory manager then streams what it must)")
    raise ValueError(f"{size_from}: batch_size {request.batch} does not fit the compute device: {request.batch} videos "
                     f"of {request.width}x{request.height} need {_gib(memory.total(request.batch))} for their KV caches "
                     f"and activations, and the device has {_gib(limit)} for them; {advice}. Lower batch_size on the "
                     "node that sets the video's size, or queue several prompts (seed + i gives video i).")


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"


def run_memory_of(model: LongLiveModel, request: RunRequest, steerable: bool) -> RunMemory:
    """The memory a run of `request` needs besides the weights (vace_core.memory), for its batch."""
    # a steered run may switch prompts (and re-run the window in one pass) like a scheduled one
    return run_memory(model.facts.config, model.compute_dtype, height=request.height, width=request.width,
                      ref_frames=request.ref_frames, settings=request.settings, uses_vace=request.uses_vace,
                      prompt_switches=len(request.prompts) > 1 or steerable)


def _check_same_size(size: VideoSize, vace: VaceContext, origin: Origin, size_from: str) -> None:
    """The LATENT and the VACE context describe one video; a second copy of the size that disagrees
    is refused naming both nodes, before any model work."""
    theirs = VideoSize(vace.width, vace.height, vace.video_frames)
    if theirs != size:
        raise ValueError(
            f"{size_from} and vace_context describe different videos: {size_from} (from {origin.source(size_from)}) "
            f"is {size.describe()}, vace_context (from {origin.source('vace_context')}) was encoded for "
            f"{theirs.describe()}. Connect the latent output of 'VACE Encode References' to the sampler's "
            f"{size_from}, so the size is set on that node only.")


@contextmanager
def on_compute_device(model: LongLiveModel, request: RunRequest,
                      steerable: bool = False) -> Iterator[host.LoadedNetwork]:
    """The network loaded by the host's memory manager for the run, with room made for the KV caches
    and activations of its videos (ComfyUI evicts other models, or loads ours partially and streams the rest).
    It stays loaded afterwards; only the allocator's cache is handed back."""
    memory = run_memory_of(model, request, steerable).total(request.batch)
    try:
        yield model.load_for_run(memory)
    finally:
        host.soft_empty_cache()


def sample_on_device(model: LongLiveModel, request: RunRequest, *,
                     chunk_output: ContextManager[ChunkSink | None] = nullcontext(), steer: Steer | None = None,
                     keep_latents: bool = True, pass_progress: bool = True) -> SampleResult:
    """The one way from a sampler node to the sampler: the network loaded by the host's memory
    manager (`on_compute_device`), `sample` on it with a progress tick per pass (`pass_progress`),
    and Cancel as ComfyUI's interrupt. Before every pass the model is loaded again if the memory
    manager unloaded it meanwhile (decoding a chunk loads the VAE, which may evict it on a small GPU).
    `chunk_output` gives the sink every finished chunk goes to: it is entered once the model is
    loaded and left when the run ends, however it ends (the streaming node's mp4 is closed there)."""
    with on_compute_device(model, request, steerable=steer is not None) as loaded, chunk_output as on_chunk:
        try:
            return sample(loaded.network, request, callback=PassProgress() if pass_progress else None,
                          before_pass=loaded.keep_loaded, should_cancel=host.is_interrupted, on_chunk=on_chunk,
                          keep_latents=keep_latents, steer=steer)
        except GenerationCancelled:
            host.raise_interrupted()


class PassProgress:
    """One progress tick per model pass, with a latent preview of each denoising pass."""

    def __init__(self) -> None:
        self.bar: host.ProgressBar | None = None
        self.preview = host.make_previewer()

    def __call__(self, info: StepInfo) -> None:
        if self.bar is None:
            self.bar = host.progress_bar(info.total_passes)
        image = None
        if self.preview is not None and info.x0 is not None:
            image = self.preview(info.x0)
        self.bar.update_absolute(info.pass_index, max(info.total_passes, info.pass_index), image)


def _prompt_segments(model: LongLiveModel, positive, schedule, length: int) -> list[PromptSegment]:
    first = conditioning_tensor(positive, "positive")
    segments = {0: PromptSegment(0, first)}
    for entry in schedule or ():
        if entry.start_frame >= length:
            raise ValueError(f"prompt_schedule: a prompt starts at frame {entry.start_frame}, at or after the "
                             f"end of the video (length {length}); shorten the schedule or raise the video's length")
        segments[entry.start_frame] = entry  # a scheduled prompt at frame 0 replaces positive
    for segment in segments.values():
        name = "positive" if segment.context is first else f"prompt_schedule (frame {segment.start_frame})"
        check_text_width(segment.context, model.facts.text_dim, name)
    return [segments[start] for start in sorted(segments)]


def _check_rope(model: LongLiveModel, ref_frames: int, length: int) -> None:
    limit = model.facts.rope_max_frames
    total = ref_frames + latent_frames_for(length)
    if total > limit:
        raise ValueError(f"length {length} with {ref_frames} reference frames needs {total} latent frame "
                         f"positions; the model's RoPE table has {limit}: generate at most "
                         f"{video_frames_for(limit - ref_frames)} frames")
