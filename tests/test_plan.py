"""What a run decides before any model call (vace_core/plan.py): the recache at a prompt switch, and
the passes a run counts and sizes from it.

The recache passes are written out here from LongLive's `_recache_after_switch` (docs/how-it-works.md,
"How the causal R2V works"): at a
switch before the block starting at generated frame g, "longlive" re-runs the last min(window, g)
generated frames in one pass (from frame 0, sink included, while g <= window; else the rolling
frames only) that sees the sink and the re-run frames; "causal" re-runs, block by block, the rolling
frames the switch block will read. Every run goes through `generate` with an executor that records
the passes instead of computing them, so each case costs no model time. For every recache mode,
switch position (inside the first window, at its end, later), references (none, denoised, clean)
and given start frames, the test checks the passes run against these, the count the progress
reports, and the largest pass against the size `vace_core.memory` budgets for.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from helpers import random_text, random_vace_context, randn, tiny_model
from vace_core.latents import video_frames_for
from vace_core.memory import largest_pass_frames
from vace_core.passes import ModelPass
from vace_core.sampler import PromptSegment, SamplerSettings, generate

HEIGHT, WIDTH = 32, 48
LATENT_FRAMES = 12  # generated chunks of 2 start at generated frames 0, 2, ..., 10
CHUNK, WINDOW, SINK = 2, 6, 2
ROLLING = WINDOW - SINK
# generated latent frames where the prompt switches: inside the first window, at its end (LongLive's
# largest recache: every generated frame so far), and later (the rolling frames only)
SWITCHES = (None, 2, 6, 8, 10)
REFERENCES = ((0, "denoise"), (1, "denoise"), (1, "clean"), (3, "denoise"))
GIVEN = (0, 4)  # start frames given (inserted, two chunks)


@pytest.fixture(scope="module")
def model():
    return tiny_model("tiny-vace", seed=0)


class RecordedPasses:
    """An executor that records every pass and predicts zero flow (x0 = x): the run's decisions only."""

    def __init__(self, run) -> None:
        self.passes: list[ModelPass] = []

    def run(self, p: ModelPass) -> torch.Tensor:
        self.passes.append(p)
        return torch.zeros_like(p.latents)

    def nbytes(self) -> int:
        return 0


def recorded_run(model, recache: str, refs: int, reference_mode: str, given: int, switch: int | None,
                 chunk: int = CHUNK, window: int = WINDOW, sink: int = SINK):
    """(every pass of the run, the total passes its progress reported)."""
    executors: list[RecordedPasses] = []
    steps: list = []
    prompts = [PromptSegment(0, random_text(seed=1))]
    if switch is not None:
        prompts.append(PromptSegment(4 * switch, random_text(seed=2)))  # video frame 4g: latent frame g
    settings = SamplerSettings(chunk_frames=chunk, window_frames=window, sink_frames=sink, denoising_steps=(1000,),
                               recache=recache, reference_mode=reference_mode)
    generate(model, prompts, video_frames=video_frames_for(LATENT_FRAMES), height=HEIGHT, width=WIDTH, seed=0,
             vace=random_vace_context(refs, LATENT_FRAMES, HEIGHT, WIDTH, seed=3) if refs else None,
             settings=settings, keep_latents=False, callback=steps.append,
             start_latents=randn(1, 16, given, HEIGHT // 8, WIDTH // 8, seed=4) if given else None,
             executor=lambda run: executors.append(RecordedPasses(run)) or executors[-1])
    assert len({s.total_passes for s in steps}) == 1
    return executors[0].passes, steps[0].total_passes


def sink_frames_before(end: int, refs: int) -> list[int]:
    return list(range(min(refs + SINK, end)))


def expected_recache(recache: str, refs: int, switch: int) -> list[tuple[int, int, list[int]]]:
    """(start, end, visible frames) of each recache pass at a switch at generated frame `switch`."""
    s = refs + switch  # absolute frame of the switch block
    if recache == "longlive":
        first = refs if switch <= WINDOW else s - ROLLING
        rolling = list(range(max(refs + SINK, s - ROLLING), s))
        return [(first, s, sink_frames_before(s, refs) + rolling)]
    low = max(refs + SINK, s + CHUNK - ROLLING)  # the rolling frames the switch block will read
    passes = []
    for start in range(refs, s, CHUNK):
        end = start + CHUNK
        if end > low:
            part = max(start, low)
            passes.append((part, end, sink_frames_before(end, refs) + list(range(max(low, end - ROLLING), end))))
    return passes


def expected_total(refs: int, reference_mode: str, given: int, recache_passes: int) -> int:
    """Denoising passes of every block not given (1 step each), a clean pass after every block
    but the last, and the recache passes."""
    chunks = LATENT_FRAMES // CHUNK
    blocks = chunks + (refs > 0)
    denoised = chunks - given // CHUNK + (refs > 0 and reference_mode == "denoise")
    return denoised + (blocks - 1) + recache_passes


CASES = [(recache, refs, mode, given, switch)
         for recache, (refs, mode), given, switch in itertools.product(("longlive", "causal"), REFERENCES, GIVEN,
                                                                       SWITCHES)
         if switch is None or switch >= given]


@pytest.mark.parametrize("recache, refs, reference_mode, given, switch", CASES)
def test_the_passes_of_a_run_and_their_count(model, recache, refs, reference_mode, given, switch):
    passes, total = recorded_run(model, recache, refs, reference_mode, given, switch)
    assert total == len(passes)
    recache_passes = [] if switch is None else expected_recache(recache, refs, switch)
    assert total == expected_total(refs, reference_mode, given, len(recache_passes))
    if switch is not None:
        # they run right before the switch block's first denoising pass, under the new prompt, at t = 0
        first_step = next(i for i, p in enumerate(passes) if p.start == refs + switch and p.needs_output)
        rebuild = passes[first_step - len(recache_passes):first_step]
        assert [(p.start, p.end, p.visible) for p in rebuild] == recache_passes
        assert all(p.prompt == 1 and p.timestep == 0.0 and not p.needs_output for p in rebuild)
        assert all(p.prompt == 0 for p in passes[:first_step - len(recache_passes)])


@pytest.mark.parametrize("recache", ["longlive", "causal"])
@pytest.mark.parametrize("refs", [0, 1, 3])
def test_the_largest_pass_is_the_largest_any_switch_makes(model, recache, refs):
    """What vace_core.memory budgets for is reached by some switch position and exceeded by none
    ("longlive": a whole window, at a switch right after it; "causal": a chunk or the references)."""
    largest = {switch: max(p.frames for p in recorded_run(model, recache, refs, "denoise", 0, switch)[0])
               for switch in SWITCHES}
    settings = SamplerSettings(chunk_frames=CHUNK, window_frames=WINDOW, sink_frames=SINK, recache=recache)
    assert largest[None] == largest_pass_frames(settings, refs, prompt_switches=False) == max(CHUNK, refs)
    assert max(largest.values()) == largest_pass_frames(settings, refs, prompt_switches=True)
    expected = WINDOW if recache == "longlive" else max(CHUNK, refs)
    assert largest_pass_frames(settings, refs, prompt_switches=True) == expected


def test_the_largest_pass_follows_the_plan_when_the_window_is_no_multiple_of_the_chunk(model):
    """Window 7, chunks of 2, sink 2: LongLive's largest re-run is the 6 generated frames before a
    switch at frame 6 (at 8 it re-runs the 5 rolling frames); no switch re-runs a whole window."""
    largest = max(p.frames for switch in range(CHUNK, LATENT_FRAMES, CHUNK)
                  for p in recorded_run(model, "longlive", 0, "denoise", 0, switch, window=7)[0])
    settings = SamplerSettings(chunk_frames=CHUNK, window_frames=7, sink_frames=SINK)
    assert largest == largest_pass_frames(settings, 0, prompt_switches=True) == 6
