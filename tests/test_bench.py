"""scripts/bench/ in CI.

ONE smoke run of the budgeted plan (`bench.py --smoke --budget 60`) runs every benchmark script's
code path at tiny sizes on the CPU, passes the checks that do not depend on timing, stops within its
budget and lists what it skipped and why. With ComfyUI's python and checkouts (COMFYUI_PYTHON,
COMFYUI_DIR, as in CI) it adds the sections that run through ComfyUI (the decode, the comparisons
with ComfyUI's models, the low-VRAM path); without, it lists them as skipped.

Cheap in-process tests prove the plan's mechanics (a failed check exits 1, a broken section costs
the others nothing, the budget skips what no longer fits and stops an overrun) and what the checks
and the expected ranges rest on (the FLOP budget equals torch's own count; the attention check
catches a dropped bias; the kernel report names SDPA's math fallback; RoPE rebuilt on every pass
fails the smoke check). Timings are not asserted (noise on a shared CPU), only the budget.
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

    reasons = {"compile": "not in the smoke run", "timing": "not in the smoke run", "vace": "not in the smoke run",
               "batch": "needs batches"}
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
    if "decode" in ran:
        assert "second_device" in results["sections"]["decode"]["figures"] or skipped[
            "decode, decode on a second device"]


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
                "memory": check_memory, "decode": check_decode, "native-ar": check_native_ar,
                "preview": check_preview, "forward": check_forward, "lowvram": check_lowvram}


# ---- the plan's mechanics, with stand-in sections ---------------------------------------------------

def batch_outcome(fps: float = 1.0, ok: bool = True) -> dict:
    """What the batch section returns, with made-up figures (its markdown renders them)."""
    return {"plan": None, "bench": None, "figures": {"batch_1": {"seconds": 1.0, "chunks": 2, "fps": fps}},
            "checks": {"batch_outputs_finite": ok}}


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
    stand_ins.setitem(bench.SECTION_RUNNERS, "batch", lambda ctx: batch_outcome(fps=7.0))

    def out_of_memory(ctx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.48 GiB")

    stand_ins.setitem(bench.SECTION_RUNNERS, "steady", out_of_memory)
    assert bench.main(["--device", "cpu", "--sections", "batch", "--out", str(tmp_path)]) == 0
    assert bench.main(["--device", "cpu", "--sections", "steady", "--out", str(tmp_path)]) == 2
    entries = json.loads((tmp_path / "results-cpu.json").read_text())["sections"]
    assert entries["batch"]["figures"]["batch_1"]["fps"] == 7.0  # kept from the earlier run
    assert entries["steady"]["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 3.48 GiB"
    markdown = (tmp_path / "results-cpu.md").read_text()
    assert "| 1 | 1.0 | 2 | 7.0 |" in markdown and "Did not finish: OutOfMemoryError: CUDA out of memory" in markdown


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


def test_the_batch_section_measures_once_the_sampler_takes_a_batch(tmp_path, monkeypatch):
    """Today the sampler refuses a LATENT batch and the section is skipped ("needs batches"); with a
    stand-in sampler that takes one (one video per seed), it times batch 1, 2 and 4."""
    args = bench.parse_args(["--smoke", "--out", str(tmp_path)])
    ctx = sections.Context(args, torch.device("cpu"))
    with pytest.raises(sections.SectionSkipped, match="^needs batches: .*batch of 2"):
        sections.section_batch(ctx)
    seen = []

    class BatchSampler:
        def sample(self, model, positive, latent, seed, vace_scale):
            seen.append(latent["samples"].shape[0])
            return ({"samples": torch.zeros_like(latent["samples"])},)

    nodes = sys.modules[sections.STANDALONE_PACKAGE].NODE_CLASS_MAPPINGS
    monkeypatch.setitem(nodes, "LongLiveSampler", BatchSampler)
    outcome = sections.section_batch(ctx)
    assert seen == [2, 1, 1, 2, 2, 4, 4]  # the probe, then each batch size warmed up and timed
    assert list(outcome["figures"]) == ["batch_1", "batch_2", "batch_4"] and outcome["checks"]["batch_outputs_finite"]
    assert all(r["fps"] > 0 and r["chunks"] == common.PLANS["quick"].early_chunk + 2
               for r in outcome["figures"].values())


def test_sections_that_need_comfyui_say_so():
    with pytest.raises(SystemExit, match="--comfyui"):
        bench.main(["--device", "cpu", "--sections", "lowvram"])


# ---- what the checks and the expected ranges rest on --------------------------------------------------

def counted_chunk_flops(bench_model, chunk: int, vace: bool) -> int:
    """What torch's FlopCounterMode counts in generated chunk `chunk` of a real run (attention through
    SDPA's math kernel, whose matrix products the counter sees; the CPU's fused kernel it does not)."""
    counter, math_only = FlopCounterMode(display=False), sdpa_kernel([SDPBackend.MATH])

    def on_chunk(info) -> None:
        number = info.block.chunk_index + 1
        if not info.block.is_reference and number == chunk - 1:
            math_only.__enter__()
            counter.__enter__()
        elif not info.block.is_reference and number == chunk:
            counter.__exit__(None, None, None)
            math_only.__exit__(None, None, None)

    common.timed_generate(bench_model, chunk + 1, SamplerSettings(), vace, extra=on_chunk)
    return counter.get_total_flops()


@pytest.mark.parametrize("size", [32, 48])
def test_the_flop_budget_is_what_torch_counts_in_a_steady_chunk(size):
    """The expected ranges' FLOPs per chunk equal the count in a real steady chunk (chunk 4: the
    12-frame window full, not the last), T2V and R2V with its reference, at two sizes (attention
    grows faster than the projections); at 480x832 they are the budget docs/benchmarks.md states."""
    model = common.Bench(replace(common.PLANS["quick"], height=size, width=size), torch.device("cpu"))
    for vace in (False, True):
        budget = expected.chunk_flops(model.model.config, size, size, ref_frames=int(vace), vace=vace)
        assert budget == counted_chunk_flops(model, 4, vace)
    config = architecture("wan2.1-vace-1.3B")
    assert round(expected.chunk_flops(config, 480, 832) / 1e12) == 139
    assert round(expected.chunk_flops(config, 480, 832, ref_frames=1, vace=True) / 1e12) == 221


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
