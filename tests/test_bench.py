"""scripts/bench/ in CI.

ONE smoke run of the budgeted plan (`bench.py --smoke --budget 60`) runs every benchmark script's
code path at tiny sizes on the CPU, passes the checks that do not depend on timing, stops within its
budget and lists what it skipped and why. With ComfyUI's python and checkouts (COMFYUI_PYTHON,
COMFYUI_DIR, as in CI) it adds the sections that run through ComfyUI (the decode, the comparisons
with ComfyUI's models, the low-VRAM path); without, it lists them as skipped.

Cheap in-process tests prove the plan's mechanics (a failed check exits 1, a broken section costs
the others nothing and is listed, the budget skips what no longer fits and stops an overrun, a batch
section stopped part-way keeps what it measured), the batch section (both kinds at B = 1, 2, 4, the
cache per video, a planted shared cache caught) and what the checks and the expected ranges rest on
(the FLOP budget of every chunk of a run equals torch's own count; the batch and decode-gain ranges
flag planted runs; the attention check catches a dropped bias; the kernel report names SDPA's math
fallback; RoPE rebuilt on every pass fails the smoke check). Timings are not asserted (noise on a
shared CPU), only the budget.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from comfy_harness import child_env
from helpers import comfyui_for_scripts, load_script
from vace_core.config import architecture
from vace_core.memory import run_cache_bytes
from vace_core.plan import SamplerSettings

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench" / "bench.py"
BUDGET_S = 60
EXIT_S = 5  # python's own exit after the last line (the plan keeps 5 s of its budget for its files)
COMFYUI_DIR, COMFYUI_PYTHON, WITH_COMFYUI = comfyui_for_scripts("comfy/ldm/wan/ar_model.py")

bench = load_script("bench/bench")
common = sys.modules["bench_common"]
sections = sys.modules["bench_sections"]
expected = sys.modules["bench_expected"]
gpu_smoke = sys.modules["gpu_smoke"]


# ---- the one smoke run ----------------------------------------------------------------------------

def test_one_smoke_run_exercises_every_script_within_its_budget(tmp_path):
    command = [COMFYUI_PYTHON if WITH_COMFYUI else sys.executable, str(SCRIPT), "--smoke", "--budget", str(BUDGET_S),
               "--out", str(tmp_path)] + (["--comfyui", str(COMFYUI_DIR)] if WITH_COMFYUI else [])
    started = time.monotonic()
    run = subprocess.run(command, env=child_env(), check=False,
                         capture_output=True, text=True, timeout=BUDGET_S * 3)
    wall = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert wall <= BUDGET_S + EXIT_S, f"the smoke run took {wall:.0f} s of a {BUDGET_S} s budget"
    results = json.loads((tmp_path / "results-cpu-smoke.json").read_text())
    plan = results["plan"]
    ran, skipped = plan["ran"], plan["skipped"]
    assert results["smoke"] and plan["budget"] == BUDGET_S and plan["order"] == [s.name for s in bench.PLAN]
    assert ran[:1] == ["correctness"]  # the first priority always fits
    assert "| figure | measured | expected | | expected from |" in run.stdout and "Skipped: " in run.stdout
    assert "Sampler benchmark (cpu, smoke sizes)" in (tmp_path / "results-cpu-smoke.md").read_text()
    for name in ran:
        for check, ok in results["sections"][name]["checks"].items():
            assert ok and f"PASS {check}" in run.stdout, (name, check)

    # every section of the plan either ran or is listed with its reason, in the summary too
    assert set(ran) | set(skipped) >= set(plan["order"]) and not set(ran) & set(skipped)
    listed = next(line for line in run.stdout.splitlines() if line.startswith("Skipped: "))
    assert all(f"{name}: {reason}" in listed for name, reason in skipped.items())
    reasons = {"compile": "not in the smoke run", "timing": "not in the smoke run", "vace": "not in the smoke run"}
    if not WITH_COMFYUI:
        reasons.update({name: "needs ComfyUI" for name in ("decode", "native-ar", "preview", "forward", "lowvram")})
    out_of_time = []
    for name in plan["order"]:
        if name in ran:
            SMOKE_CHECKS.get(name, lambda out, figures: None)(tmp_path, results["sections"][name]["figures"])
        elif re.search("of the budget left|the time budget ran out", skipped[name]):
            out_of_time.append(name)
        else:
            assert skipped[name].startswith(reasons[name]), (name, skipped[name])
    if out_of_time:  # a CI machine too busy for the budget shows here, rather than failing the run
        warnings.warn(f"the smoke run's {BUDGET_S} s budget left out: {', '.join(out_of_time)}")
    if "decode" in ran:  # on the CPU the second decode device is the CPU: the worker thread's path
        gain = results["sections"]["decode"]["figures"]["second_device"]
        assert gain["chunks"] == sections.SMOKE_CHUNKS and gain["rounds"] == 1 and gain["overhead_only"]
        assert gain["gain"] > 0 and "decode on cpu: gain" in run.stdout


def check_correctness(out: Path, f: dict) -> None:
    for case in ("self_attention", "cross_attention"):
        for dtype in ("bfloat16", "float16"):
            backends = f["attention"][f"{case}_{dtype}"]["backends"]
            assert set(backends) == {"flash", "cudnn", "efficient", "math", "pack"}
            for name in ("flash", "math", "pack"):  # the CPU has these two, and the pack's kernels run
                row = backends[name]
                assert row["ran"] and 0 < row["relative_rms_vs_fp32"] <= gpu_smoke.ATTENTION_TOLERANCE
            assert not backends["cudnn"]["ran"] and backends["cudnn"]["why"]
    # rounding, not a fault: bf16 / fp16 near 2^3, the ratio of their unit roundoffs (measured 7.9-8.8
    # here); a dropped bias or a misread mask moves both to O(0.1) and the ratio to about 1
    half = f["half_precision"]
    assert half["bfloat16"]["finite"] and half["float16"]["finite"]
    assert 4 < half["bfloat16"]["relative_rms_vs_fp32"] / half["float16"]["relative_rms_vs_fp32"] < 16
    for name in ("t2v", "r2v"):
        r = f["runs"][name]
        assert r["chunks"] == gpu_smoke.CHUNKS and r["finite"] and r["steady_fps"] > 0
        assert any("scaled_dot_product" in kernel for kernel in r["kernels"])  # the profiled steady chunk
        assert r["sync_sites"] == "needs CUDA"
    assert f["matmul"]["tflops"] > 0


def check_smoke_section(out: Path, f: dict) -> None:
    runs = f["runs"]
    assert set(runs) == {"kv", "recompute", "vace_off", "vace_causal", "vace_references", "vace_block", "vace_first"}
    assert all(r["finite"] and r["first_chunk_s"] > 0 for r in runs.values())
    assert runs["recompute"]["chunks"] == common.PLANS["quick"].baseline_chunks  # the whole baseline: every shape
    inst = f["instrumentation"]
    assert inst["steady_state_passes"] > 0 and inst["steady_state_reads_index_select"] == 0


def check_steady(out: Path, f: dict) -> None:
    for name in ("t2v", "r2v"):
        assert f[name]["steady_fps"] > 0 and f[name]["video_frames"] > 0


def check_memory(out: Path, f: dict) -> None:
    assert len(f["memory_runs"]) == len(sections.MEMORY_CONFIGS)


def check_decode(out: Path, f: dict) -> None:
    assert f["decode"]["steady_chunk_s"] > 0 and f["decode"]["flops_per_chunk"] > 0
    assert f["decode"]["vae"].endswith("Wan 2.1 VAE, width 8, random weights")
    if "decode_share" in f:  # the steady section ran before it
        assert 0 < f["decode_share"] < 1 and f["end_to_end_fps"] > 0


def check_batch(out: Path, f: dict) -> None:
    assert list(f["runs"]) == [f"{kind}_batch_{b}" for kind in ("t2v", "r2v") for b in (1, 2, 4)]
    assert f["chunks"] == sections.SMOKE_CHUNKS and f["model"] == "tiny-vace"
    assert "| r2v_batch_4 |" in (out / "results-cpu-smoke.md").read_text()


def check_native_ar(out: Path, result: dict) -> None:
    """Cache bytes, independent of timing: ours holds the window, the native path the whole video."""
    plan = result["plan"]
    short, long = plan["memory_chunks"]
    frame_bytes = 4 * 2 * result["tokens_per_frame"] * 256 * 4  # 4 layers, K and V, dim 256, float32
    assert result["memory"]["native_kv_cache_bytes"] == [3 * short * frame_bytes, 3 * long * frame_bytes]
    assert result["memory"]["ours_kv_cache_bytes"] == [12 * frame_bytes] * 2
    assert result["memory"]["ours_w21_kv_cache_bytes"] == [21 * frame_bytes] * 2
    full = {row["video_frames"]: row for row in result["full_size_cache"]}
    one_frame = 30 * 2 * 1560 * 1536 * 2  # Wan2.1-1.3B, 480x832, bf16
    assert full[81]["native_bytes"] == 21 * one_frame and full[3841]["native_bytes"] == 961 * one_frame
    assert full[3841]["ours_bytes"] == 12 * one_frame
    for name in ("ours", "ours_w21", "native"):
        assert len(result["per_chunk"][name]["wall_s"]) == plan["chunks"]
    assert len(result["memory_runs"]) == 6 and all(r["rss_peak_mib"] > 0 for r in result["memory_runs"])
    assert "## Side by side with ComfyUI's native AR nodes" in (out / "results-native-ar-cpu-quick.md").read_text()


def check_preview(out: Path, result: dict) -> None:
    tiny = result["tiny_run"]
    assert tiny["chunks"] == 3 and tiny["chunk_s_without"] > 0 and tiny["chunk_s_with"] > 0
    part = result["parts"]["tiny"]
    # a chunk of 3 latent frames is 12 video frames: 16x16 Latent2RGB images, or the 128x128 frames
    assert part["latent_clip"] == [12, 16, 16, 3] and part["decoded_clip"] == [12, 128, 128, 3]
    assert "Live chunk previews" in (out / "results-preview-cpu-quick.md").read_text()


def check_forward(out: Path, result: dict) -> None:
    assert set(result["cases"]) == {"tiny_t2v", "tiny_vace"}
    assert all(case["seconds"]["comfy"] > 0 and case["seconds"]["ours"] > 0 for case in result["cases"].values())


def check_lowvram(out: Path, result: dict) -> None:
    [mode] = result["modes"]  # on the CPU both modes are the same run: the smoke run makes one
    assert mode["mode"] == "full" and mode["flags"] == ["--cpu"] and mode["vram_state"] == "DISABLED"
    # ComfyUI's manager loaded the whole VACE clone (base + VACE blocks) built from comfy.ops layers
    assert mode["loaded_bytes"] == mode["model_bytes"] > 0
    assert mode["layers"] > 0 and mode["streamed_layers"] == 0 and not mode["lowvram"]


SMOKE_CHECKS = {"correctness": check_correctness, "smoke": check_smoke_section, "steady": check_steady,
                "memory": check_memory, "decode": check_decode, "batch": check_batch, "native-ar": check_native_ar,
                "preview": check_preview, "forward": check_forward, "lowvram": check_lowvram}


# ---- the plan's mechanics, with stand-in sections ---------------------------------------------------

def batch_outcome(per_hour: float = 3600.0, ok: bool = True) -> dict:
    """What the batch section returns, with made-up figures (its markdown renders them)."""
    run = {"seconds": 1.0, "seconds_per_video": 1.0, "videos_per_hour": per_hour, "fps_per_video": 21.0,
           "fps_total": 21.0, "peak_bytes": None, "cache_bytes": 2**20, "estimate_bytes": 2**30, "finite": ok}
    figures = {"device": "cpu", "model": "tiny-vace", "size": "32x32", "dtype": "float32", "chunks": 2,
               "video_frames": 21, "weights_bytes": 2**20, "runs": {"t2v_batch_1": run}}
    return {"plan": None, "bench": None, "figures": figures, "checks": {"batch_outputs_finite": ok}}


@pytest.fixture
def stand_ins(monkeypatch):
    """The plan with its section runners replaced (set them with monkeypatch.setitem), its clock
    starting now (the process is pytest's, long started)."""
    monkeypatch.setattr(bench, "process_age_s", lambda: 0.0)
    return monkeypatch


def test_a_failed_check_fails_the_run(tmp_path, stand_ins):
    stand_ins.setitem(bench.SECTION_RUNNERS, "batch", lambda ctx: batch_outcome(ok=False))
    assert bench.main(["--device", "cpu", "--sections", "batch", "--out", str(tmp_path)]) == 1
    results = json.loads((tmp_path / "results-cpu.json").read_text())
    assert results["sections"]["batch"]["checks"] == {"batch_outputs_finite": False}
    assert "Checks: 0 passed, 1 failed (batch_outputs_finite)." in (tmp_path / "results-cpu.md").read_text()


def test_each_section_is_saved_and_a_broken_one_costs_the_others_nothing(tmp_path, stand_ins):
    stand_ins.setitem(bench.SECTION_RUNNERS, "batch", lambda ctx: batch_outcome(per_hour=7.0))

    def out_of_memory(ctx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.48 GiB")

    stand_ins.setitem(bench.SECTION_RUNNERS, "steady", out_of_memory)
    assert bench.main(["--device", "cpu", "--sections", "batch", "--out", str(tmp_path)]) == 0
    assert bench.main(["--device", "cpu", "--sections", "steady", "--out", str(tmp_path)]) == 2
    entries = json.loads((tmp_path / "results-cpu.json").read_text())["sections"]
    assert entries["batch"]["figures"]["runs"]["t2v_batch_1"]["videos_per_hour"] == 7.0  # kept from the earlier run
    assert entries["steady"]["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 3.48 GiB"
    markdown = (tmp_path / "results-cpu.md").read_text()
    assert "| t2v_batch_1 | 1.0 | 7.0 |" in markdown and "Did not finish: OutOfMemoryError: CUDA out of memory" in markdown
    # the broken section is listed in the summary, not left out
    assert "Skipped: steady: did not finish: OutOfMemoryError: CUDA out of memory" in markdown


def test_the_budget_skips_what_no_longer_fits_and_stops_an_overrun(tmp_path, stand_ins):
    """Budget 3 s, 1 s of it kept for the files: batch (estimated 1 s) runs; compile (estimated 30 s)
    no longer fits; steady (estimated 1 s) overruns and is stopped by the alarm; the run exits 0."""
    stand_ins.setattr(bench, "RESERVE_S", 1.0)
    for name, estimate in (("batch", 1), ("compile", 30), ("steady", 1)):
        stand_ins.setitem(bench.SECTIONS, name, replace(bench.SECTIONS[name], seconds=(estimate,) * 3))

    def overrun(ctx):
        time.sleep(30)
        raise AssertionError("the alarm did not stop the section")

    stand_ins.setitem(bench.SECTION_RUNNERS, "batch", lambda ctx: batch_outcome())
    stand_ins.setitem(bench.SECTION_RUNNERS, "steady", overrun)
    started = time.monotonic()
    assert bench.main(["--device", "cpu", "--sections", "batch,compile,steady", "--budget", "3",
                       "--out", str(tmp_path)]) == 0
    assert time.monotonic() - started < 3
    plan = json.loads((tmp_path / "results-cpu.json").read_text())["plan"]
    assert plan["ran"] == ["batch"]
    # batch took less than its estimate, so the plan's pace halves compile's estimate: still too long
    assert re.fullmatch(r"needs ~15 s, [0-2] s of the budget left", plan["skipped"]["compile"])
    assert plan["skipped"]["steady"].startswith("the time budget ran out after ")


def test_the_batch_section_measures_every_kind_at_batch_1_2_4_and_checks_the_cache_per_video(tmp_path, monkeypatch):
    """The smoke run's batch section (the tiny model, 2-chunk videos): T2V and R2V at B = 1, 2, 4,
    each run's figures handed to keep_figures as it is measured; a batch's KV caches are B times one
    video's as the cache layout counts them (vace_core.memory.run_cache_bytes, not the run's own
    count). Planted fault: a sampler that keeps one video's caches for the whole batch fails the check."""
    ctx = sections.Context(bench.parse_args(["--smoke", "--out", str(tmp_path)]), torch.device("cpu"))
    handed = []
    ctx.keep_figures = lambda figures: handed.append(list(figures["runs"]))
    outcome = sections.section_batch(ctx)
    names = [f"{kind}_batch_{b}" for kind in ("t2v", "r2v") for b in (1, 2, 4)]
    assert handed == [names[:i] for i in range(1, len(names) + 1)]  # saved after every measurement
    figures = outcome["figures"]
    assert list(figures["runs"]) == names and figures["chunks"] == sections.SMOKE_CHUNKS == 2
    assert figures["video_frames"] == 21  # 2 chunks of 3 latent frames: 4 * 5 + 1 video frames
    for name, run in figures["runs"].items():
        kind, batch = name.split("_batch_")
        one_video = run_cache_bytes(architecture("tiny-vace"), torch.float32, height=32, width=32,
                                    ref_frames=int(kind == "r2v"), settings=SamplerSettings(), uses_vace=kind == "r2v")
        assert run["cache_bytes"] == int(batch) * one_video
        assert run["videos_per_hour"] == pytest.approx(3600 * int(batch) / run["seconds"], rel=0.01)  # 3-digit seconds
        assert run["finite"] and run["peak_bytes"] is None  # no CUDA: no peak VRAM
        assert run["estimate_bytes"] > figures["weights_bytes"] + run["cache_bytes"]  # + activations, the prompt
    assert outcome["checks"] == {"batch_outputs_finite": True, "batch_cache_per_video": True}

    run_once = sections.bench_batch.run_once
    monkeypatch.setattr(sections.bench_batch, "run_once",
                        lambda bench_model, kind, batch, chunks: run_once(bench_model, kind, 1, chunks))
    assert not sections.section_batch(ctx)["checks"]["batch_cache_per_video"]


def test_a_batch_section_stopped_part_way_keeps_what_it_measured(tmp_path, stand_ins, capsys):
    """The budget runs out (OutOfTime, as the plan's alarm raises it) at T2V B=4's warm-up: the two
    runs measured before are kept in the results, the markdown and the summary, and the section is
    listed as stopped; the run exits 0."""
    run_once, calls = sections.bench_batch.run_once, []

    def out_of_time_at_the_fifth_run(*args):
        calls.append(args)
        if len(calls) == 5:  # a warm-up and a timed run each for B = 1 and 2, then B = 4's warm-up
            raise sections.OutOfTime("the time budget ran out")
        return run_once(*args)

    stand_ins.setattr(sections.bench_batch, "run_once", out_of_time_at_the_fifth_run)
    assert bench.main(["--device", "cpu", "--smoke", "--sections", "batch", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results-cpu-smoke.json").read_text())
    plan, entry = results["plan"], results["sections"]["batch"]
    assert plan["ran"] == [] and plan["partial"] == ["batch"]
    assert re.fullmatch(r"the time budget ran out after \d+ s; the figures it had measured are kept",
                        plan["skipped"]["batch"])
    assert list(entry["figures"]["runs"]) == ["t2v_batch_1", "t2v_batch_2"] and "running" not in entry
    markdown = (tmp_path / "results-cpu-smoke.md").read_text()
    assert "What it had measured:" in markdown and "| t2v_batch_2 |" in markdown and "| t2v_batch_4 |" not in markdown
    printed = capsys.readouterr().out
    assert "| T2V B=2: s per video / B=1's |" in printed and "T2V B=4" not in printed


def test_sections_that_need_comfyui_say_so():
    with pytest.raises(SystemExit, match="--comfyui"):
        bench.main(["--device", "cpu", "--sections", "lowvram"])


# ---- what the checks and the expected ranges rest on --------------------------------------------------

def counted_flops_per_chunk(bench_model, chunks: int, vace: bool, first: int = 0) -> dict[int, int]:
    """What torch's FlopCounterMode counts in a real run of `chunks` generated chunks, from one chunk's
    callback to the next, for the chunks from index `first` on (chunk 0's count is from the start:
    what a run does once is in it; nothing runs after the last); attention through SDPA's math
    kernel, whose matrix products the counter sees (the CPU's fused kernel it does not). Counting
    is slow: the chunks before `first` run uncounted."""
    counts: dict[int, int] = {}
    counter = FlopCounterMode(display=False)

    def on_chunk(info) -> None:
        nonlocal counter
        if info.block.is_reference:
            return
        index = info.block.chunk_index
        if index >= first:
            counter.__exit__(None, None, None)
            counts[index] = counter.get_total_flops()
        if index + 1 >= first:
            counter = FlopCounterMode(display=False)
            counter.__enter__()

    with sdpa_kernel([SDPBackend.MATH]):
        if first == 0:
            counter.__enter__()
        common.timed_generate(bench_model, chunks, SamplerSettings(), vace, extra=on_chunk)
    return counts


@pytest.mark.parametrize("size, first", [(32, 0), (48, 3)])
def test_the_flop_budget_is_what_torch_counts_in_every_chunk(size, first):
    """The expected ranges' FLOPs per chunk equal the count in the chunks of a real 5-chunk run: a
    steady chunk (chunk 4, index 3: the 12-frame window full, not the last) and the last, without a
    clean pass, at two sizes (attention grows faster than the projections); at 32x32 every chunk
    after the first too (the window filling), and a video's FLOPs (`video_flops`, the batch section's
    expected videos per hour) are the run's whole count but for what a run does once besides its
    chunks (the prompt's keys and values; R2V's reference block and VACE context: under a chunk's
    FLOPs). T2V and R2V with its reference. At 480x832 the steady chunk is the budget
    docs/benchmarks.md states."""
    model = common.Bench(replace(common.PLANS["quick"], height=size, width=size), torch.device("cpu"))
    config = model.model.config
    for vace in (False, True):
        counted = counted_flops_per_chunk(model, 5, vace, first)
        budget = {i: expected.chunk_flops(config, size, size, ref_frames=int(vace), vace=vace, index=i, last=i == 4)
                  for i in range(5)}
        assert list(counted) == list(range(first, 5))
        assert all(counted[i] == budget[i] for i in counted if i > 0)
        assert counted[3] == expected.chunk_flops(config, size, size, ref_frames=int(vace), vace=vace)  # steady
        if first == 0:
            once = sum(counted.values()) - expected.video_flops(config, size, size, 5, ref_frames=int(vace), vace=vace)
            assert once == counted[0] - budget[0] and 0 < once < budget[3]
    config = architecture("wan2.1-vace-1.3B")
    assert round(expected.chunk_flops(config, 480, 832) / 1e12) == 139
    assert round(expected.chunk_flops(config, 480, 832, ref_frames=1, vace=True) / 1e12) == 221


def test_batch_and_decode_gain_ranges_flag_what_cannot_be():
    """Planted runs at 480x832: the expected videos per hour is the FLOP budget of a 7-chunk video
    (between 7 first chunks and 7 steady ones); a batch dearer per video than
    one video, or a peak above the memory request, is flagged HIGH; a decode gain past full overlap
    of DiT and decode (share 0.25: at most 1 / 0.75) HIGH, one well under 1 LOW."""
    config = architecture("wan2.1-vace-1.3B")
    run = {"seconds": 10.0, "seconds_per_video": 10.0, "videos_per_hour": 360.0, "peak_bytes": 20 * 2**30,
           "cache_bytes": 7 * 2**30, "estimate_bytes": 16 * 2**30, "finite": True}
    figures = {"model": "wan2.1-vace-1.3B", "size": "832x480", "chunks": 7, "video_frames": 81,
               "weights_bytes": 4 * 2**30, "runs": {"t2v_batch_1": run, "t2v_batch_2": run}}
    ranges = expected.batch_ranges(figures, "cuda", 800e12)
    video = expected.video_flops(config, 480, 832, 7)
    # between 7 first chunks without their clean pass and 7 steady chunks (the window fills, the last has none)
    assert 7 * expected.chunk_flops(config, 480, 832, index=0, last=True) < video < 7 * expected.chunk_flops(
        config, 480, 832)
    assert ranges["t2v_batch_1_videos_per_hour"].high == pytest.approx(3600 * 800e12 * 0.75 / video)
    ratio = ranges["t2v_batch_2_per_video_ratio"]
    assert (ratio.low, ratio.verdict(0.6), ratio.verdict(1.5)) == (0.5, "ok", "HIGH")
    peak = ranges["t2v_batch_2_peak_gib"]
    assert (peak.low, peak.high, peak.verdict(20.0), peak.verdict(12.0)) == (11.0, 16.0, "HIGH", "ok")
    gain = expected.decode_gain_range(0.25)
    assert gain.high == pytest.approx(1 / 0.75 * 1.1)
    assert (gain.verdict(1.3), gain.verdict(1.6), gain.verdict(0.5)) == ("ok", "HIGH", "LOW")


def test_expected_ranges_follow_the_flop_budget_and_flag_a_run_outside():
    """An H100-like run: 800 TFLOP/s matmul; T2V's 139.4 TFLOP per chunk then takes 0.232 s at 0.75
    of it and 1.16 s at 0.15 (worked out here by hand); a math-attention run at 5 s per chunk is
    flagged HIGH, one faster than the matmul rate allows LOW."""
    results = {"device": "cuda", "plan": {"ran": ["correctness"]},
               "sections": {"correctness": {"sizes": {"preset": "wan2.1-vace-1.3B", "height": 480, "width": 832,
                                                      "chunk_frames": 3, "dtype": "bfloat16"},
                                            "figures": {"matmul": {"tflops": 800.0}}}}}
    ranges = expected.expected_ranges(results, {})
    t2v = ranges["t2v_steady_chunk_s"]
    assert t2v.low == pytest.approx(139.447e12 / (800e12 * 0.75), rel=1e-4)
    assert t2v.high == pytest.approx(139.447e12 / (800e12 * 0.15), rel=1e-4)
    assert (t2v.verdict(0.5), t2v.verdict(5.0), t2v.verdict(0.1)) == ("ok", "HIGH", "LOW")
    # peak memory: weights 4.01 + KV cache 3.48 + VACE cache 1.74 GiB at 480x832 bf16, one reference
    assert ranges["r2v_peak_gib"].low == pytest.approx(4.01 + 3.48 + 1.74, abs=0.01)


def test_the_attention_check_catches_a_kernel_that_drops_the_bias(monkeypatch):
    """Planted fault: SDPA on half-precision inputs ignores the mask (how a kernel misreading the
    bias shows); float32 math (the reference) still applies it."""
    sdpa = F.scaled_dot_product_attention

    def dropping(q, k, v, attn_mask=None, **kwargs):
        return sdpa(q, k, v, attn_mask=None if q.dtype != torch.float32 else attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", dropping)
    figures, checks = gpu_smoke.part_attention(common.Bench(common.PLANS["quick"], torch.device("cpu")))
    assert checks["attention_self_attention_bfloat16_math_within_tolerance"]  # no mask there: unaffected
    assert not checks["attention_cross_attention_bfloat16_math_within_tolerance"]
    assert not checks["attention_cross_attention_float16_math_within_tolerance"]
    error = figures["cross_attention_bfloat16"]["backends"]["math"]["relative_rms_vs_fp32"]
    assert error > gpu_smoke.ATTENTION_TOLERANCE


def test_the_kernel_report_names_sdpas_math_fallback():
    """The GPU check "no math attention" reads the SDPA op names the profiler records (the math
    fallback's own kernels are plain matmuls): a math call shows up, a flash call does not."""
    q = torch.randn(1, 2, 8, 16)
    for backend, math_seen in ((SDPBackend.MATH, True), (SDPBackend.FLASH_ATTENTION, False)):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with sdpa_kernel([backend]):
                F.scaled_dot_product_attention(q, q, q)
        names = gpu_smoke.attention_kernels(prof, on_gpu=False)
        assert any(name.startswith("aten::_scaled_dot_product") for name in names)
        assert any("math" in name for name in names) is math_seen


def test_a_planted_regression_fails_the_smoke_check(monkeypatch):
    """RoPE tables no longer cached (rebuilt on every pass): the instrumented run's check fails."""
    table = sections.RotaryEmbedding.table

    def rebuilding(self, *args, **kwargs):
        self._tables.clear()
        return table(self, *args, **kwargs)

    plan = common.PLANS["quick"]
    model = common.Bench(plan, torch.device("cpu"))
    assert sections.run_instrumented(model, plan, with_profiler=False)[0]["ok"]
    monkeypatch.setattr(sections.RotaryEmbedding, "table", rebuilding)
    instrumentation, _ = sections.run_instrumented(model, plan, with_profiler=False)
    assert not instrumentation["ok"] and instrumentation["rope_tables_built"] > instrumentation["blocks"]
