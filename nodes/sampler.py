"""LongLive Sampler: causal chunk-by-chunk generation with optional VACE context and prompt switches."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from ..vace_core.encoding import (VaceContext, check_size, denormalize_latents, encode_start_frames,
                                  latent_frames_for, video_frames_for)
from ..vace_core.memory import run_memory_bytes
from ..vace_core.passes import VACE_ATTENTION_MODES
from ..vace_core.plan import (HINT_CHUNKS, RECACHE_MODES, REFERENCE_MODES, PromptSegment, SamplerSettings,
                              VaceScaleRamp, check_vace)
from ..vace_core.presets import DEFAULT_PRESET, PRESET_NAMES, PRESETS, Preset, resolve_settings
from ..vace_core.sampler import GenerationCancelled, SampleResult, StepInfo, generate
from ..vace_core.scheduler import parse_steps
from . import host
from .common import (CATEGORY, MAX_RESOLUTION, MAX_VIDEO_FRAMES, MODEL_TYPE, PROMPTS_TYPE, REF_FRAMES_KEY,
                     VACE_TYPE)
from .host.model_ref import LongLiveModel
from .prompts import conditioning_tensor

DEFAULTS = SamplerSettings()
NO_RAMP = -1.0
FROM_PRESET = -1  # chunk_frames / window_frames / sink_frames / shift widget value: take the preset's
STEPS_FROM_PRESET = ""


class LongLiveSampler:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The LongLive model (with VACE weights when a vace_context "
                                                  "is connected)."}),
                "positive": ("CONDITIONING", {
                    "tooltip": "The prompt, from CLIPTextEncode with the umT5 'wan' text encoder. LongLive is "
                               "distilled without CFG, so there is no negative prompt."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff,
                                 "control_after_generate": True,
                                 "tooltip": "Seed of the noise; the same seed gives the same video on any device."}),
                "length": ("INT", {"default": 81, "min": 1, "max": MAX_VIDEO_FRAMES, "step": 4,
                                   "tooltip": "Video frames to generate (4k+1: 81 = 21 latent frames, 5 s at "
                                              "16 fps). Must match the VACE context's length."}),
                "width": ("INT", {"default": 832, "min": 16, "max": MAX_RESOLUTION, "step": 16,
                                  "tooltip": "Video width in pixels, a multiple of 16 (LongLive: 832)."}),
                "height": ("INT", {"default": 480, "min": 16, "max": MAX_RESOLUTION, "step": 16,
                                   "tooltip": "Video height in pixels, a multiple of 16 (LongLive: 480)."}),
                "vace_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                         "tooltip": "Strength of the VACE hints (0 = plain text-to-video). "
                                                    "Ignored without a vace_context."}),
                "chunk_frames": ("INT", {"default": FROM_PRESET, "min": FROM_PRESET, "max": 64,
                                         "tooltip": "Latent frames generated per causal chunk (3 = 12 video "
                                                    f"frames). {_from_preset_note('chunk_frames')}"}),
                "window_frames": ("INT", {"default": FROM_PRESET, "min": FROM_PRESET, "max": 1024,
                                          "tooltip": "Self-attention window in latent frames, sink included, "
                                                     "references not counted; must hold sink_frames + "
                                                     f"chunk_frames. {_from_preset_note('window_frames')}"}),
                "sink_frames": ("INT", {"default": FROM_PRESET, "min": FROM_PRESET, "max": 1024,
                                        "tooltip": "First generated latent frames kept in attention for the "
                                                   f"whole video (0 = none). {_from_preset_note('sink_frames')}"}),
                "steps": ("STRING", {"default": STEPS_FROM_PRESET,
                                     "tooltip": "Denoising steps, strictly decreasing in 1..1000, e.g. "
                                                "1000,750,500,250. Empty = the preset's: "
                                                + _by_value(_steps_text) + "."}),
                "shift": ("FLOAT", {"default": float(FROM_PRESET), "min": float(FROM_PRESET), "max": 20.0,
                                    "step": 0.1,
                                    "tooltip": "Timestep shift of the flow-matching schedule (positive). "
                                               f"{_from_preset_note('shift')}"}),
            },
            "optional": {
                "vace_context": (VACE_TYPE, {"tooltip": "Reference / control conditioning from 'VACE Encode "
                                                        "References' (same width, height and length)."}),
                "prompt_schedule": (PROMPTS_TYPE, {
                    "tooltip": "Prompt switches from 'LongLive Prompt Schedule'; positive runs until the first "
                               "switch (a scheduled prompt at frame 0 replaces it)."}),
                **start_image_inputs(),
                "vae": ("VAE", {"tooltip": "ComfyUI's Wan 2.1 VAE, to encode start_images (needed only with "
                                           "them)."}),
                "vace_scale_end": ("FLOAT", {"default": NO_RAMP, "min": NO_RAMP, "max": 2.0, "step": 0.05,
                                             "tooltip": "VACE strength at the last chunk, ramping linearly from "
                                                        "vace_scale at the first; -1 = constant vace_scale."}),
                **causal_option_inputs(),
                **preset_input(),
            },
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("samples",)
    OUTPUT_TOOLTIPS = ("Raw Wan 2.1 latents, reference frames first; decode with 'Decode (strip references)'.",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Generates a video chunk by chunk with LongLive's KV cache (flat cost per chunk), "
                   "following the VACE references and switching prompts on schedule.")

    def sample(self, model: LongLiveModel, positive, seed: int, length: int, width: int, height: int,
               vace_scale: float, chunk_frames: int, window_frames: int, sink_frames: int, steps: str,
               shift: float, vace_context: VaceContext | None = None,
               prompt_schedule: Sequence[PromptSegment] | None = None, start_images: torch.Tensor | None = None,
               vae=None, vace_scale_end: float = NO_RAMP, **causal_options) -> tuple[dict]:
        plan = plan_run(model, positive, length, width, height, vace_scale, chunk_frames, window_frames,
                        sink_frames, steps, shift, vace_context, prompt_schedule, vace_scale_end, causal_options)
        result = sample_on_device(model, plan, video_frames=length, seed=seed, vace=vace_context,
                                  start_latents=encode_start_images(start_images, vae, plan))
        samples = denormalize_latents(result.latents)  # ComfyUI LATENTs are raw VAE space
        return ({"samples": samples, REF_FRAMES_KEY: result.ref_frames},)


# The sampler's named departures from upstream VACE / LongLive (vace_core/sampler.py), shared by both
# sampler nodes: (choices or "BOOLEAN", tooltip); defaults come from SamplerSettings.
CAUSAL_OPTIONS = {
    "reference_mode": (REFERENCE_MODES,
                       "How the reference frames (the first causal block) are made: 'denoise' them from noise "
                       "like upstream VACE, or insert their encoded latents 'clean' and only cache them (one "
                       "pass instead of five)."),
    "vace_attention": (VACE_ATTENTION_MODES,
                       "What the VACE blocks attend to: 'causal' = the references, sink and window like the main "
                       "blocks (through a VACE KV cache; hints of every chunk follow the references), "
                       "'references' = the chunk plus the references (small cache), 'block' = the chunk alone "
                       "(no cache; later chunks' hints do not see the references)."),
    "hint_chunks": (HINT_CHUNKS,
                    "Which chunks run VACE: 'all' (upstream behaviour) or 'first' (the references and the "
                    "first chunk; later chunks follow them through the KV caches at no VACE cost)."),
    "hints_in_clean_pass": ("BOOLEAN",
                            "Keep VACE in each chunk's clean cache-writing pass, so later chunks attend to "
                            "VACE-conditioned keys (off: cheaper, as Daydream Scope does)."),
    "recache": (RECACHE_MODES,
                "What a prompt switch re-encodes under the new prompt: 'longlive' = LongLive's recache (one "
                "pass over the window before the switch; within the first window frames the sink too), "
                "'causal' = the rolling window block by block, keeping the sink."),
}


def start_image_inputs() -> dict:
    return {"start_images": ("IMAGE", {
        "tooltip": "Optional image(s) the video starts from (image-to-video): encoded with the vae, centre-cropped "
                   "to the frame, they become the first output frames as they are and the video continues from "
                   "them. One image = 1 frame; a clip of 4k+1 images = its k+1 latent frames."})}


def encode_start_images(start_images: torch.Tensor | None, vae, plan: "RunPlan") -> torch.Tensor | None:
    """The start images as normalised latents, checked against the run (None without them)."""
    if start_images is None:
        return None
    if vae is None:
        raise ValueError("start_images: connect the vae input too (the Wan 2.1 VAE that encodes them)")
    frames = latent_frames_for(start_images.shape[0]) if start_images.ndim == 4 else 1
    if frames >= plan.latent_frames:
        raise ValueError(f"start_images: {start_images.shape[0]} image(s) make {frames} latent frame(s), leaving "
                         f"nothing to generate in a video of {plan.latent_frames} latent frames: raise length")
    return encode_start_frames(vae, start_images, plan.width, plan.height)


def preset_input() -> dict:
    return {"preset": (list(PRESET_NAMES), {
        "default": DEFAULT_PRESET,
        "tooltip": "Settings the checkpoint was distilled for: fills chunk_frames, window_frames, sink_frames, "
                   "steps and shift wherever they are left at -1 / empty (a value set there wins). Pick the one "
                   "of the loaded checkpoint: LongLive, Self-Forcing, CausVid (AR) or Causal Forcing (chunkwise). "
                   "The last three attend globally over 21 latent frames (81 video frames); longer videos roll "
                   "that window."})}


def causal_option_inputs() -> dict:
    inputs = {}
    for name, (choices, tooltip) in CAUSAL_OPTIONS.items():
        kind = "BOOLEAN" if choices == "BOOLEAN" else list(choices)
        inputs[name] = (kind, {"default": getattr(DEFAULTS, name), "tooltip": tooltip})
    return inputs


@dataclass(frozen=True)
class RunPlan:
    """A sampler run's validated settings, shared by the sampler nodes."""
    settings: SamplerSettings
    prompts: list[PromptSegment]
    vace_scale: float | VaceScaleRamp
    ref_frames: int
    width: int
    height: int
    uses_vace: bool
    latent_frames: int


def plan_run(model: LongLiveModel, positive, length: int, width: int, height: int, vace_scale: float,
             chunk_frames: int, window_frames: int, sink_frames: int, steps: str, shift: float,
             vace_context: VaceContext | None, prompt_schedule: Sequence[PromptSegment] | None,
             vace_scale_end: float, causal_options: dict | None = None) -> RunPlan:
    """Every check of the sampler inputs, run before the model moves or anything is computed."""
    check_size(width, height)
    options = dict(causal_options or {})
    preset = options.pop("preset", DEFAULT_PRESET)
    unknown = set(options) - set(CAUSAL_OPTIONS)
    if unknown:
        raise ValueError(f"unknown sampler option(s) {sorted(unknown)}; known: {', '.join(CAUSAL_OPTIONS)}")
    settings = preset_settings(preset, chunk_frames, window_frames, sink_frames, steps, shift, **options)
    prompts = _prompt_segments(model, positive, prompt_schedule, length)
    if vace_context is not None:
        check_vace(model, vace_context, latent_frames_for(length), height, width)
    ref_frames = vace_context.ref_frames if vace_context is not None else 0
    _check_rope(model, ref_frames, length)
    scale = VaceScaleRamp(vace_scale, vace_scale_end) if vace_scale_end >= 0 else vace_scale
    return RunPlan(settings, prompts, scale, ref_frames, width, height, vace_context is not None,
                   latent_frames_for(length))


def preset_settings(preset: str, chunk_frames: int, window_frames: int, sink_frames: int, steps: str,
                    shift: float, **other) -> SamplerSettings:
    """The sampler settings of the node's widgets: -1 (any negative) / empty steps take the preset's
    value, anything else wins over it."""
    def given(value):
        return None if value < 0 else value

    return resolve_settings(preset, chunk_frames=given(chunk_frames), window_frames=given(window_frames),
                            sink_frames=given(sink_frames),
                            denoising_steps=parse_steps(steps) if str(steps).strip() else None,
                            shift=given(shift), **other)


def _from_preset_note(name: str) -> str:
    return f"-1 = the preset's ({_by_value(lambda p: f'{getattr(p, name):g}')})."


def _by_value(show: Callable[[Preset], str]) -> str:
    """'LongLive 12; Self-Forcing, CausVid (AR), ... 21' (presets grouped by the value shown)."""
    groups: dict[str, list[str]] = {}
    for p in PRESETS.values():
        groups.setdefault(show(p), []).append(p.name)
    if len(groups) == 1:
        return f"{next(iter(groups))} in every preset"
    return "; ".join(f"{', '.join(names)} {value}" for value, names in groups.items())


def _steps_text(p: Preset) -> str:
    return ",".join(map(str, p.denoising_steps)) + ("" if p.warp_steps else " fed unwarped")


@contextmanager
def on_compute_device(model: LongLiveModel, plan: RunPlan) -> Iterator[host.LoadedNetwork]:
    """The network loaded by the host's memory manager for the run, with room made for the KV cache
    and activations (ComfyUI evicts other models, or loads ours partially and streams the rest).
    It stays loaded afterwards; only the allocator's cache is handed back."""
    memory = run_memory_bytes(model.facts.config, model.compute_dtype, height=plan.height, width=plan.width,
                              ref_frames=plan.ref_frames, settings=plan.settings, uses_vace=plan.uses_vace,
                              prompt_switches=len(plan.prompts) > 1)
    try:
        yield model.load_for_run(memory)
    finally:
        host.soft_empty_cache()


def sample_on_device(model: LongLiveModel, plan: RunPlan, **inputs) -> SampleResult:
    """`generate` with the plan's settings on the network the memory manager loaded, a progress
    tick per pass, and Cancel honoured before every pass (`inputs`: generate's per-run arguments)."""
    with on_compute_device(model, plan) as loaded:
        try:
            return generate(loaded.network, plan.prompts, height=plan.height, width=plan.width,
                            vace_scale=plan.vace_scale, settings=plan.settings, callback=PassProgress(),
                            should_cancel=lambda: keep_loaded_and_check_interrupt(loaded), **inputs)
        except GenerationCancelled:
            host.raise_interrupted()


def keep_loaded_and_check_interrupt(loaded: host.LoadedNetwork) -> bool:
    """The sampler's check before every pass: the model is loaded again if the memory manager
    unloaded it meanwhile, then True when the user cancelled."""
    loaded.keep_loaded()
    return host.is_interrupted()


class PassProgress:
    """One progress tick per model pass, with a latent preview of each denoising pass."""

    def __init__(self) -> None:
        self.bar = None
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
                             f"end of the video (length {length}); shorten the schedule or raise length")
        segments[entry.start_frame] = entry  # a scheduled prompt at frame 0 replaces positive
    for segment in segments.values():
        width = segment.context.shape[-1]
        if width != model.facts.text_dim:
            name = "positive" if segment.context is first else f"prompt_schedule (frame {segment.start_frame})"
            raise ValueError(f"{name}: the conditioning has {width} channels but the model expects "
                             f"{model.facts.text_dim}: encode the prompt with CLIPLoader type 'wan' (umT5-XXL)")
    return [segments[start] for start in sorted(segments)]


def _check_rope(model: LongLiveModel, ref_frames: int, length: int) -> None:
    limit = model.facts.rope_max_frames
    total = ref_frames + latent_frames_for(length)
    if total > limit:
        raise ValueError(f"length {length} with {ref_frames} reference frames needs {total} latent frame "
                         f"positions; the model's RoPE table has {limit}: generate at most "
                         f"{video_frames_for(limit - ref_frames)} frames")
