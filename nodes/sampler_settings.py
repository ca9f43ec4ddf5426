"""LongLive Sampler Settings: the options most runs leave alone, in one optional node.

Plugged into a sampler's `settings` input it overrides single values of the sampler's preset
(chunk, window, sink, steps, shift), sets the named departures from upstream VACE / LongLive
(vace_core/sampler.py) and shapes the VACE strength over time and over the VACE blocks. Not
connected, the sampler runs with its preset's values and these defaults. A preset value is
overridden only where a number is typed: the widgets read "preset" until then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..vace_core.passes import VACE_ATTENTION_MODES
from ..vace_core.presets import PRESETS, Preset, resolve_settings
from ..vace_core.plan import HINT_CHUNKS, RECACHE_MODES, REFERENCE_MODES, SamplerSettings, VaceScaleRamp
from ..vace_core.scheduler import parse_steps
from .common import CATEGORY, SETTINGS_TYPE

FROM_PRESET = "preset"  # what an override widget holds until a value is typed
DEFAULTS = SamplerSettings()

# The sampler's named departures from upstream VACE / LongLive: (choices or "BOOLEAN", tooltip);
# defaults come from SamplerSettings.
CAUSAL_OPTIONS = {
    "recache": (RECACHE_MODES,
                "What a prompt switch re-encodes under the new prompt: 'longlive' = LongLive's recache (one "
                "pass over the window before the switch; within the first window frames the sink too), "
                "'causal' = the rolling window block by block, keeping the sink."),
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
}


@dataclass(frozen=True)
class Override:
    """One preset value the settings node can override: how to read the widget text."""
    field: str  # the SamplerSettings / resolve_settings name
    parse: Callable[[str], object]
    about: str  # what the value is, for the tooltip
    expected: str  # what may be typed, for the error message

    def read(self, name: str, text: str):
        """The typed value, or None for "the preset's"."""
        stripped = str(text).strip()
        if stripped.lower() in (FROM_PRESET, ""):
            return None
        try:
            return self.parse(stripped)
        except ValueError as error:
            raise ValueError(f"{name} {text!r}: expected {self.expected}, or '{FROM_PRESET}' for the preset's "
                             f"value ({error})") from None


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError(f"at least {minimum}")
        return value
    return parse


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be positive")
    return value


OVERRIDES = {
    "chunk_frames": Override("chunk_frames", _count(1), "Latent frames generated per causal chunk (3 = 12 video "
                             "frames).", "a whole number of latent frames (1 or more)"),
    "window_frames": Override("window_frames", _count(1), "Self-attention window in latent frames, sink "
                              "included, references not counted; must hold sink_frames + chunk_frames.",
                              "a whole number of latent frames"),
    "sink_frames": Override("sink_frames", _count(0), "First generated latent frames kept in attention for the "
                            "whole video (0 = none).", "a whole number of latent frames (0 or more)"),
    "steps": Override("denoising_steps", parse_steps, "Denoising steps, strictly decreasing in 1..1000, e.g. "
                      "1000,750,500,250.", "comma-separated steps such as 1000,750,500,250"),
    "shift": Override("shift", _positive_float, "Timestep shift of the flow-matching schedule.",
                      "a positive number such as 5.0"),
}


def _by_preset(show: Callable[[Preset], str]) -> str:
    """'LongLive 12; Self-Forcing, CausVid (AR), ... 21' (presets grouped by the value shown)."""
    groups: dict[str, list[str]] = {}
    for p in PRESETS.values():
        groups.setdefault(show(p), []).append(p.name)
    if len(groups) == 1:
        return f"{next(iter(groups))} in every preset"
    return "; ".join(f"{', '.join(names)} {value}" for value, names in groups.items())


def _preset_value(name: str, p: Preset) -> str:
    if name == "steps":
        return ",".join(map(str, p.denoising_steps)) + ("" if p.warp_steps else " fed unwarped")
    return f"{getattr(p, OVERRIDES[name].field):g}"


def parse_block_scales(text: str) -> tuple[float, ...]:
    """"1.0" (every VACE block) or one comma-separated value per VACE block."""
    try:
        values = tuple(float(part) for part in str(text).split(","))
    except ValueError:
        raise ValueError(f"vace_block_scales {text!r}: expected one number for every VACE block, or one per "
                         "block separated by commas (15 for Wan2.1-VACE-1.3B), e.g. 1.0") from None
    if any(v < 0 for v in values):
        raise ValueError(f"vace_block_scales {text!r}: the scales must not be negative")
    return values


@dataclass(frozen=True)
class SamplerChoices:
    """What the settings node hands a sampler (LONGLIVE_SETTINGS); the default is "not connected"."""
    overrides: dict = field(default_factory=dict)  # resolve_settings name -> value typed over the preset's
    options: dict = field(default_factory=dict)  # CAUSAL_OPTIONS name -> value
    vace_scale_at_end: float = 1.0  # x vace_scale at the last chunk, linear from the first
    vace_block_scales: tuple[float, ...] = (1.0,)  # one for all VACE blocks, or one per block

    def resolve(self, preset: str) -> SamplerSettings:
        """The run's settings: the preset, the values typed over it, the causal options."""
        return resolve_settings(preset, **self.overrides, **self.options)

    def vace_scale(self, scale: float, num_blocks: int | None) -> float | list[float] | VaceScaleRamp:
        """The VACE strength the core takes: a number, one per VACE block, or a ramp over the chunks.
        `num_blocks` is the model's VACE block count when a VACE context is used (None: unchecked)."""
        blocks = self.vace_block_scales
        if len(blocks) > 1 and num_blocks is not None and len(blocks) != num_blocks:
            raise ValueError(f"vace_block_scales lists {len(blocks)} values but the model has {num_blocks} VACE "
                             f"blocks: give one value, or {num_blocks}")
        layers: float | list[float] = blocks[0] if len(blocks) == 1 else list(blocks)
        if self.vace_scale_at_end != 1.0:
            return VaceScaleRamp(scale, scale * self.vace_scale_at_end, layers)
        if isinstance(layers, list):
            return [scale * value for value in layers]
        return scale * layers


class LongLiveSamplerSettings:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        overrides = {
            name: ("STRING", {"default": FROM_PRESET,
                              "tooltip": f"{o.about} '{FROM_PRESET}' = the sampler preset's value "
                                         f"({_by_preset(lambda p: _preset_value(name, p))}); a value typed "
                                         "here replaces it."})
            for name, o in OVERRIDES.items()}
        options = {}
        for name, (choices, tooltip) in CAUSAL_OPTIONS.items():
            kind = "BOOLEAN" if choices == "BOOLEAN" else list(choices)
            options[name] = (kind, {"default": getattr(DEFAULTS, name), "tooltip": tooltip})
        return {
            "required": {
                **overrides,
                **options,
                "vace_scale_at_end": ("FLOAT", {
                    "default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                    "tooltip": "VACE strength at the last chunk as a multiple of the sampler's vace_scale, reached "
                               "linearly from the first chunk: 1.0 = constant, 0.5 = half at the end, 0 = fades "
                               "out."}),
                "vace_block_scales": ("STRING", {
                    "default": "1.0",
                    "tooltip": "Strength per VACE block, times vace_scale: one number for all blocks, or one per "
                               "block separated by commas (15 for Wan2.1-VACE-1.3B, first = the block after "
                               "main block 0), e.g. to weaken the late blocks that shape fine detail."}),
            },
        }

    RETURN_TYPES = (SETTINGS_TYPE,)
    RETURN_NAMES = ("settings",)
    OUTPUT_TOOLTIPS = ("For the settings input of a LongLive sampler node.",)
    FUNCTION = "choose"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Optional settings for the LongLive sampler nodes: override single values of the preset, "
                   "choose the causal options, and shape the VACE strength over the chunks and the VACE blocks. "
                   "Without this node the sampler uses its preset and the defaults shown here.")

    def choose(self, vace_scale_at_end: float = 1.0, vace_block_scales: str = "1.0",
               **widgets) -> tuple[SamplerChoices]:
        unknown = set(widgets) - set(OVERRIDES) - set(CAUSAL_OPTIONS)
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}")
        overrides = {}
        for name, override in OVERRIDES.items():
            value = override.read(name, widgets.get(name, FROM_PRESET))
            if value is not None:
                overrides[override.field] = value
        options = {name: widgets[name] for name in CAUSAL_OPTIONS if name in widgets}
        if not vace_scale_at_end >= 0:
            raise ValueError(f"vace_scale_at_end {vace_scale_at_end}: must be 0 or more")
        return (SamplerChoices(overrides, options, float(vace_scale_at_end), parse_block_scales(vace_block_scales)),)
