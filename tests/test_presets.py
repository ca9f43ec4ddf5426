"""Presets for the causal Wan2.1-1.3B checkpoints (vace_core/presets.py) and the unwarped schedule.

Each preset is checked against docs/presets.md (values written out below, from that table), a run with
the CausVid preset against a sampler written out here with upstream's table lookup, and the sampler
settings node's "preset = the sampler preset's value" rule.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from helpers import load_pack_standalone, random_text, sampler_settings, tiny_model
from vace_core.latents import video_frames_for
from vace_core.presets import DEFAULT_PRESET, PRESETS, resolve_settings
from vace_core.sampler import Block, SamplerSettings, block_noise, generate
from vace_core.scheduler import FewStepSchedule

# docs/presets.md (chunk, window, sink, steps, shift, warped) and the entry each project's inference loads
DESIGN_9 = {
    "LongLive": dict(chunk_frames=3, window_frames=12, sink_frames=3, denoising_steps=(1000, 750, 500, 250),
                     shift=5.0, warp_steps=True, checkpoint_entry="generator"),
    "Self-Forcing": dict(chunk_frames=3, window_frames=21, sink_frames=0, denoising_steps=(1000, 750, 500, 250),
                         shift=5.0, warp_steps=True, checkpoint_entry="generator_ema"),
    "CausVid (AR)": dict(chunk_frames=3, window_frames=21, sink_frames=0, denoising_steps=(1000, 757, 522),
                         shift=8.0, warp_steps=False, checkpoint_entry="generator"),
    "Causal Forcing (chunkwise)": dict(chunk_frames=3, window_frames=21, sink_frames=0,
                                       denoising_steps=(1000, 750, 500, 250), shift=5.0, warp_steps=True,
                                       checkpoint_entry="generator"),
}
SOURCES = {"LongLive": "NVlabs/LongLive@2462895", "Self-Forcing": "guandeh17/Self-Forcing@33593df",
           "CausVid (AR)": "tianweiy/CausVid@ca21150", "Causal Forcing (chunkwise)": "thu-ml/Causal-Forcing@1fc7bbc"}
WARPED_TIMESTEPS = [1000.0, 937.5, 2500.0 / 3.0, 625.0]  # docs/how-it-works.md#the-schedule: shift-5 warp of 1000..250


def upstream_table(shift: float, n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, sigmas) of upstream's FlowMatchScheduler(shift, sigma_min=0, extra_one_step=True)
    with n steps: sigmas linspace(1, 0, n + 1) without the last, shifted; timesteps = sigmas * n."""
    sigmas = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return sigmas * n, sigmas


def upstream_sigma(timestep: float, shift: float) -> float:
    """What upstream's x0 conversion and add_noise use for a timestep: argmin over the table."""
    timesteps, sigmas = upstream_table(shift)
    return sigmas[torch.argmin((timesteps - timestep).abs())].item()


@pytest.mark.parametrize("name", list(DESIGN_9))
def test_preset_matches_design_section_9(name):
    preset = PRESETS[name]
    expected = DESIGN_9[name]
    assert {key: getattr(preset, key) for key in expected} == expected
    assert preset.source == SOURCES[name]
    settings = resolve_settings(name)
    assert {key: getattr(settings, key) for key in expected if key != "checkpoint_entry"} == \
        {key: value for key, value in expected.items() if key != "checkpoint_entry"}
    schedule = settings.schedule
    if expected["warp_steps"]:
        torch.testing.assert_close(schedule.timesteps, torch.tensor(WARPED_TIMESTEPS, dtype=torch.float64))
        torch.testing.assert_close(schedule.sigmas, schedule.timesteps / 1000)
    else:  # fed as they are; sigmas from the shift table, as upstream looks them up
        assert schedule.timesteps.tolist() == [1000.0, 757.0, 522.0]
        assert schedule.sigmas.tolist() == pytest.approx([upstream_sigma(t, 8.0) for t in (1000, 757, 522)],
                                                         abs=1e-12)


def test_default_preset_is_the_samplers_default():
    assert DEFAULT_PRESET == "LongLive"
    assert resolve_settings(DEFAULT_PRESET) == SamplerSettings()


def test_causvid_sigmas_are_the_table_entries_not_t_over_1000():
    # 757 and 522 are the shift-8 images of 280 and 120: sigmas 0.756757 and 0.521739
    sigmas = FewStepSchedule((1000, 757, 522), 8.0, warp=False).sigmas.tolist()
    assert sigmas == pytest.approx([1.0, 8 * 0.28 / (1 + 7 * 0.28), 8 * 0.12 / (1 + 7 * 0.12)], abs=1e-12)
    assert abs(sigmas[1] - 0.757) > 2e-4


@pytest.mark.parametrize("shift", [1.0, 5.0, 8.0])
def test_table_lookup_matches_upstream_argmin_for_every_step(shift):
    steps = tuple(range(1000, 0, -1))
    ours = FewStepSchedule(steps, shift, warp=False).sigmas
    timesteps, sigmas = upstream_table(shift)
    nearest = torch.argmin((timesteps[None, :] - torch.tensor(steps, dtype=torch.float64)[:, None]).abs(), dim=1)
    torch.testing.assert_close(ours, sigmas[nearest], rtol=0, atol=1e-12)


def test_explicit_settings_win_over_the_preset():
    settings = resolve_settings("Self-Forcing", window_frames=12, sink_frames=3, shift=3.0,
                                reference_mode="clean")
    assert (settings.chunk_frames, settings.window_frames, settings.sink_frames) == (3, 12, 3)
    assert settings.shift == 3.0 and settings.denoising_steps == (1000, 750, 500, 250)
    assert settings.reference_mode == "clean"
    causvid = resolve_settings("CausVid (AR)", denoising_steps=(1000, 500))
    assert causvid.denoising_steps == (1000, 500) and causvid.warp_steps is False  # the preset's feeding


def test_errors_say_which_values_came_from_the_preset():
    with pytest.raises(ValueError) as error:
        resolve_settings("Self-Forcing", window_frames=2)
    message = str(error.value)
    assert "window_frames (2) must hold the sink (0) plus one chunk (3)" in message
    assert "from preset 'Self-Forcing': chunk_frames 3, sink_frames 0, steps 1000,750,500,250, shift 5" in message
    assert message.endswith("given: window_frames 2)")
    with pytest.raises(ValueError, match="shift 0.0 must be positive .*given: shift 0"):
        resolve_settings("LongLive", shift=0.0)
    with pytest.raises(ValueError, match="preset 'Self Forcing': expected one of LongLive, Self-Forcing, "
                                         r"CausVid \(AR\), Causal Forcing \(chunkwise\)"):
        resolve_settings("Self Forcing")
    with pytest.raises(TypeError, match="unknown sampler settings: window"):
        resolve_settings("LongLive", window=3)


# ---- a run with the CausVid preset ------------------------------------------------------------

HEIGHT, WIDTH = 32, 48
# The hand loop below repeats the sampler's float32 arithmetic in another order: measured max abs
# error 1.2e-6 on latents of std ~1; reading sigma as t/1000 (the lookup left out) moves them 2.7e-3 and
# warping the steps moves them by 4 (both checked below).
TOL = 2e-5


def hand_sampled_chunk(model, text, steps, sigmas, seed: int) -> torch.Tensor:
    """One chunk covering every frame (3 latent frames, window 21): each pass is one bidirectional
    forward; the noise is the block's documented stream (len(steps) draws)."""
    draws = block_noise(seed, Block(0, 0, 3, 0), 0, len(steps), (HEIGHT // 8, WIDTH // 8))
    x = draws[0]
    with torch.no_grad():
        for i, (t, sigma) in enumerate(zip(steps, sigmas)):
            x0 = x - sigma * model.forward_full(x, torch.tensor([float(t)]), text)
            if i + 1 < len(steps):
                x = (1 - sigmas[i + 1]) * x0 + sigmas[i + 1] * draws[i + 1]
    return x0


def test_causvid_run_feeds_its_steps_unwarped_with_table_sigmas():
    model, text = tiny_model("tiny", seed=0), random_text(seed=11)
    seen: list[float] = []
    forward_block = model.forward_block

    def recording(x, timestep, *args, **kwargs):
        seen.append(float(timestep))
        return forward_block(x, timestep, *args, **kwargs)

    model.forward_block = recording
    result = generate(model, text, video_frames=video_frames_for(3), height=HEIGHT, width=WIDTH, seed=4,
                      settings=resolve_settings("CausVid (AR)"))
    assert seen == [1000.0, 757.0, 522.0]  # one block, no clean pass after the last

    steps = (1000, 757, 522)
    table = [upstream_sigma(t, 8.0) for t in steps]
    err = (result.latents - hand_sampled_chunk(model, text, steps, table, seed=4)).abs().max().item()
    no_lookup = (result.latents - hand_sampled_chunk(model, text, steps, [t / 1000 for t in steps], seed=4)
                 ).abs().max().item()
    warped = [FewStepSchedule(steps, 8.0).timesteps.tolist(), FewStepSchedule(steps, 8.0).sigmas.tolist()]
    if_warped = (result.latents - hand_sampled_chunk(model, text, *warped, seed=4)).abs().max().item()
    print(f"CausVid chunk vs hand loop: {err:.2e}; sigma t/1000: {no_lookup:.2e}; warped: {if_warped:.2e}")
    assert err <= TOL
    assert no_lookup > 10 * TOL and if_warped > 1000 * TOL


# ---- the sampler nodes and the settings node ----------------------------------------------------

pack = load_pack_standalone()
NODES = pack.NODE_CLASS_MAPPINGS


def choices(**widgets):
    return sampler_settings(NODES, **widgets)


def test_settings_left_at_preset_take_the_preset():
    assert asdict(choices().resolve("Causal Forcing (chunkwise)")) == asdict(resolve_settings("Causal Forcing (chunkwise)"))
    mixed = choices(window_frames="9", sink_frames=" 0 ", steps=" 1000, 600 ").resolve("CausVid (AR)")
    assert (mixed.window_frames, mixed.sink_frames, mixed.denoising_steps, mixed.shift) == (9, 0, (1000, 600), 8.0)
    assert choices(shift="3.5").resolve("LongLive").shift == 3.5


def test_every_sampler_node_offers_the_preset_and_the_settings_node_reads_preset():
    for name in ("LongLiveSampler", "LongLiveSampleToVideo", "LongLiveContinue"):
        spec = NODES[name].INPUT_TYPES()
        choices_, options = spec["required"]["preset"]
        assert choices_ == list(DESIGN_9) and options["default"] == "LongLive"
        assert spec["optional"]["settings"][0] == "LONGLIVE_SETTINGS"
    widgets = NODES["LongLiveSamplerSettings"].INPUT_TYPES()["required"]
    for widget in ("chunk_frames", "window_frames", "sink_frames", "steps", "shift"):
        assert widgets[widget][0] == "STRING" and widgets[widget][1]["default"] == "preset"
        assert "'preset' = the sampler preset's value" in widgets[widget][1]["tooltip"]
    assert "LongLive 12; Self-Forcing, CausVid (AR), Causal Forcing (chunkwise) 21" in \
        widgets["window_frames"][1]["tooltip"]
    assert "LongLive, Self-Forcing, Causal Forcing (chunkwise) 1000,750,500,250; CausVid (AR) 1000,757,522 fed " \
           "unwarped" in widgets["steps"][1]["tooltip"]


def test_an_error_names_the_preset_and_the_typed_values():
    with pytest.raises(ValueError, match=r"window_frames \(4\) must hold the sink \(3\) plus one chunk \(3\) "
                                         r"\(from preset 'LongLive': chunk_frames 3, sink_frames 3, steps "
                                         r"1000,750,500,250, shift 5; given: window_frames 4\)"):
        choices(window_frames="4").resolve("LongLive")
    with pytest.raises(ValueError, match="steps 'fast': expected comma-separated steps"):
        choices(steps="fast")
