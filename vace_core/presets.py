"""Sampler presets for the causal Wan2.1-T2V-1.3B checkpoints this runtime runs (LongLive,
Self-Forcing, CausVid, Causal Forcing): the settings each was distilled for, read from its project's
own inference code and configs at the commit in `Preset.source`. docs/presets.md ("Other causal
Wan2.1-1.3B checkpoints") lists the files read and what differs past their 21-frame caches.

`resolve_settings` turns a preset plus the settings given explicitly into `SamplerSettings`: an
explicit value always wins, `None` means "the preset's".
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

from .plan import SamplerSettings

FROM_PRESET_FIELDS = ("chunk_frames", "window_frames", "sink_frames", "denoising_steps", "shift")


@dataclass(frozen=True)
class Preset:
    name: str
    chunk_frames: int  # latent frames per causal block
    window_frames: int  # self-attention window in latent frames, sink included
    sink_frames: int
    denoising_steps: tuple[int, ...]
    shift: float
    warp_steps: bool  # False: the steps are fed to the model as timesteps
    checkpoint_entry: str  # the state dict the project's own inference script loads
    source: str  # project and commit the values were read from

    def values(self) -> dict:
        """The fields a preset fills in `SamplerSettings`."""
        return {name: getattr(self, name) for name in FROM_PRESET_FIELDS + ("warp_steps",)}


LONGLIVE = SamplerSettings()  # the sampler's defaults are LongLive 1.0's settings (plan.py)

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("LongLive", LONGLIVE.chunk_frames, LONGLIVE.window_frames, LONGLIVE.sink_frames, LONGLIVE.denoising_steps,
           LONGLIVE.shift, LONGLIVE.warp_steps, "generator", "NVlabs/LongLive@2462895"),
    Preset("Self-Forcing", 3, 21, 0, (1000, 750, 500, 250), 5.0, True, "generator_ema",
           "guandeh17/Self-Forcing@33593df"),
    Preset("CausVid (AR)", 3, 21, 0, (1000, 757, 522), 8.0, False, "generator", "tianweiy/CausVid@ca21150"),
    Preset("Causal Forcing (chunkwise)", 3, 21, 0, (1000, 750, 500, 250), 5.0, True, "generator",
           "thu-ml/Causal-Forcing@1fc7bbc"),
)}
PRESET_NAMES = tuple(PRESETS)
DEFAULT_PRESET = "LongLive"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"preset {name!r}: expected one of {', '.join(PRESET_NAMES)}")
    return PRESETS[name]


def resolve_settings(preset: str, *, chunk_frames: int | None = None, window_frames: int | None = None,
                     sink_frames: int | None = None, denoising_steps: Sequence[int] | None = None,
                     shift: float | None = None, **other) -> SamplerSettings:
    """`SamplerSettings` from a preset, with every setting given explicitly (not None) replacing the
    preset's. `other` are further `SamplerSettings` fields (reference_mode, ...), passed through.
    Validated here, so a bad combination fails before any work; the message says which values came
    from the preset and which were given."""
    chosen = get_preset(preset)
    given = {"chunk_frames": chunk_frames, "window_frames": window_frames, "sink_frames": sink_frames,
             "denoising_steps": None if denoising_steps is None else tuple(denoising_steps), "shift": shift}
    given = {name: value for name, value in given.items() if value is not None}
    unknown = set(other) - {f.name for f in fields(SamplerSettings)}
    if unknown:
        raise TypeError(f"unknown sampler settings: {', '.join(sorted(unknown))}")
    settings = SamplerSettings(**{**chosen.values(), **given, **other})
    try:
        settings.validate()
        _ = settings.schedule  # building the schedule checks the steps and the shift
    except ValueError as error:
        raise ValueError(f"{error} ({_provenance(chosen, given)})") from None
    return settings


def _provenance(preset: Preset, given: dict) -> str:
    def label(name: str) -> str:
        return "steps" if name == "denoising_steps" else name  # the sampler node's name for it

    from_preset = [f"{label(name)} {_show(getattr(preset, name))}" for name in FROM_PRESET_FIELDS
                   if name not in given]
    parts = []
    if from_preset:
        parts.append(f"from preset {preset.name!r}: {', '.join(from_preset)}")
    if given:
        parts.append("given: " + ", ".join(f"{label(name)} {_show(value)}" for name, value in given.items()))
    return "; ".join(parts)


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
