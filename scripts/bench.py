#!/usr/bin/env python3
"""Benchmark of the causal LongLive + VACE sampler: per-chunk cost, memory, VACE cost, throughput.

What it measures (issue 5), with random weights (timing does not depend on their values):
1. Per-chunk wall time against chunk index for a long run with the KV cache (window rolling)
   and for the naive baseline, the cache-free recompute (vace_core/testing/recompute.py), which
   runs attention over every earlier frame again for each chunk (quadratic, so it stops after
   fewer chunks).
2. Peak memory for a short and a long video, each in a fresh subprocess so peaks do not mix:
   process RSS high-water mark (VmHWM) and, on CUDA, torch.cuda.max_memory_allocated; with
   keep_latents=False (latents aside) and True, and with VACE on (an R2V context).
3. VACE cost: per-chunk time with hints on every chunk (hint_chunks "all") in each VACE attention
   mode (causal, references, block), or only on the first ("first"), against VACE off, over the
   chunks after the first.
4. Throughput: video frames / wall time, first-chunk latency, and which attention kernel runs.
5. Instrumentation of one run: the KV cache is read as a contiguous view (no index_select) in
   steady state, the prompt is embedded once per run, RoPE tables are built once per block (not
   per pass); a torch.profiler table of the hottest ops over steady-state chunks.

Method: per-chunk time = time between consecutive `on_chunk` callbacks (4 denoising passes plus
the clean pass that writes the cache; the last chunk has no clean pass, so the "late" chunk of
the KV run is never the last one). Configurations are interleaved (A B C .. then .. C B A) and
every figure is a median over repeats per chunk index (the checks use it; the minimum over
repeats is reported beside it, since other processes' load only ever adds time). On the CPU torch
runs one thread (torch.set_num_threads(1)) for stable figures, and both wall time and process CPU
time are recorded (CPU time is less inflated by other processes on a shared machine). CPU figures
are meant to be read as ratios within one run.

Usage (from the repository root):
    python3 scripts/bench.py                  # CPU: tiny preset, 128x128, float32 (3-7 min, 2 cores)
        -> bench/results-cpu.json, bench/results-cpu.md
    python3 scripts/bench.py --device cuda    # GPU: full-size wan2.1-vace-1.3B, random weights
        built on the GPU in bf16, 480x832; CUDA-synchronised timing, torch.cuda peak memory
        -> bench/results-cuda.json, bench/results-cuda.md
    python3 scripts/bench.py --device cuda --comfyui DIR   # + the low-VRAM path through that
        ComfyUI's memory manager (scripts/bench_lowvram.py; this python must run ComfyUI)
    python3 scripts/bench.py --quick --out /tmp/bench   # smoke run, a few chunks (the unit test)
It prints PASS/FAIL for the acceptance checks and exits 1 when one fails. A --quick smoke run judges
only the checks that do not depend on timing (SKIP for the others): a few chunks of a tiny model
time noise, not the cache.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: vace_core

from bench_common import (FLAT_LIMIT, MEMORY_LIMIT, PLANS, SERIES, Bench, Plan, RunTimes, check_comfyui,  # noqa: E402
                          curve_summary, fresh_process_reports, log, machine_info, mean_ratio, ratio,
                          rss_now_mib, rss_peak_mib, sdpa_flags, timed_generate, verdict, write_markdown)
from vace_core.cache import KVCache  # noqa: E402
from vace_core.model import CausalWanModel  # noqa: E402
from vace_core.passes import VACE_ATTENTION_MODES, CachedPasses  # noqa: E402
from vace_core.plan import SamplerSettings  # noqa: E402
from vace_core.rope import RotaryEmbedding  # noqa: E402
from vace_core.sampler import ChunkInfo  # noqa: E402
from vace_core.testing.recompute import RecomputedPasses  # noqa: E402

GROWTH_MIN = 1.5  # acceptance 1: the baseline's ratio must clearly grow
VACE_FIRST_LIMIT = 1.10  # acceptance 3: hint_chunks="first" / VACE off
# VACE attention modes, each timed with hints on every chunk ("vace_<mode>"); hint_chunks="first" is
# timed in the default mode ("vace_first")
VACE_MODES = VACE_ATTENTION_MODES


# ---- timing section: cache vs baseline, VACE cost (interleaved) -------------------------------

def run_timings(bench: Bench, plan: Plan) -> dict[str, list[RunTimes]]:
    s = bench.settings
    configs: dict[str, tuple[int, SamplerSettings, bool, int]] = {
        "kv": (plan.long_chunks, s, False, plan.repeats),
        "recompute": (plan.baseline_chunks, s, False, plan.baseline_repeats),
        "vace_off": (plan.vace_chunks, s, False, plan.repeats),
        **{f"vace_{mode}": (plan.vace_chunks, replace(s, vace_attention=mode, hint_chunks="all"), True, plan.repeats)
           for mode in VACE_MODES},
        "vace_first": (plan.vace_chunks, replace(s, hint_chunks="first"), True, plan.repeats),
    }
    timed_generate(bench, 2, s, vace=True)  # warm-up: allocator, kernels, lazy init
    results: dict[str, list[RunTimes]] = {name: [] for name in configs}
    for repeat in range(plan.repeats):
        order = list(configs) if repeat % 2 == 0 else list(reversed(configs))  # A B C .. C B A
        for name in order:
            chunks, settings, vace, repeats = configs[name]
            executor = RecomputedPasses.for_run if name == "recompute" else CachedPasses.for_run
            if repeat < repeats:
                results[name].append(timed_generate(bench, chunks, settings, vace, executor=executor))
                log(f"repeat {repeat + 1}/{plan.repeats} {name}: {results[name][-1].total_wall:.1f} s")
    return results


def cache_figures(curves: dict, plan: Plan) -> dict:
    kv, base = curves["kv"], curves["recompute"]
    early, late, base_late = plan.early_chunk, plan.late_chunk, plan.baseline_chunks
    base_early = plan.baseline_early_chunk
    figures = {"early_chunk": early, "late_chunk": late, "baseline_early_chunk": base_early,
               "baseline_late_chunk": base_late}
    for series in SERIES:
        kv_curve, base_curve = kv[f"{series}_s"], base[f"{series}_s"]
        figures[f"kv_late_over_early_{series}"] = round(ratio(kv_curve, late, early), 4)
        figures[f"kv_at_baseline_late_over_early_{series}"] = round(ratio(kv_curve, base_late, base_early), 4)
        figures[f"baseline_late_over_early_{series}"] = round(ratio(base_curve, base_late, base_early), 4)
        figures[f"baseline_over_kv_at_baseline_late_{series}"] = round(
            base_curve[base_late - 1] / kv_curve[base_late - 1], 4)
    return figures


def vace_figures(curves: dict, plan: Plan) -> dict:
    """VACE on / off per-chunk time over chunks 2 .. n-1 (after the first; the last has no clean pass)."""
    first, last = 2, plan.vace_chunks - 1
    figures = {"chunks_compared": [first, last]}
    for option in VACE_MODES + ("first",):
        for series in SERIES:
            on, off = curves[f"vace_{option}"][f"{series}_s"], curves["vace_off"][f"{series}_s"]
            figures[f"{option}_over_off_{series}"] = round(mean_ratio(on, off, first, last), 4)
        figures[f"{option}_first_chunk_over_off_wall"] = round(
            curves[f"vace_{option}"]["wall_s"][0] / curves["vace_off"]["wall_s"][0], 4)
    return figures


# ---- memory: one fresh subprocess per configuration -------------------------------------------

MEMORY_CONFIGS = [  # (length, keep_latents, vace, VACE attention mode)
    ("short", False, False, None), ("long", False, False, None),
    ("short", True, False, None), ("long", True, False, None),
    ("short", False, True, "causal"), ("long", False, True, "causal"),
    ("long", False, True, "references"), ("long", False, True, "block"),
]


def child_memory(plan: Plan, device: torch.device, spec: dict) -> dict:
    """Runs in a fresh process: build, generate once, report this process's peaks."""
    bench = Bench(plan, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        allocated_before = torch.cuda.memory_allocated(device)
    before = rss_now_mib()
    settings = bench.settings
    if spec["vace_attention"] is not None:  # the peak of a real R2V run: VACE on every chunk
        settings = replace(settings, vace_attention=spec["vace_attention"], hint_chunks="all")
    times = timed_generate(bench, spec["chunks"], settings, vace=spec["vace"], keep_latents=spec["keep_latents"])
    report = dict(spec, rss_before_mib=before, rss_peak_mib=round(rss_peak_mib(), 2),
                  total_wall_s=round(times.total_wall, 3))
    if device.type == "cuda":
        report["cuda_before_mib"] = round(allocated_before / 2**20, 2)  # the weights
        report["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 2)
        report["cuda_peak_reserved_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 2)
    return report


def run_memory(plan: Plan, device: torch.device) -> list[dict]:
    specs = [{"length": length, "chunks": plan.memory_chunks[length == "long"], "keep_latents": keep,
              "vace": vace, "vace_attention": mode} for length, keep, vace, mode in MEMORY_CONFIGS]
    return fresh_process_reports(functools.partial(child_memory, plan), specs, device)


def memory_figures(reports: list[dict], device: torch.device) -> dict:
    """long / short peak ratios, and the peaks minus what was held before generating (model, torch)."""
    key, before_key = (("cuda_peak_allocated_mib", "cuda_before_mib") if device.type == "cuda"
                       else ("rss_peak_mib", "rss_before_mib"))

    def find(length: str, keep: bool, vace: bool, mode: str | None = None) -> dict:
        mode = mode or ("causal" if vace else None)
        return next(r for r in reports
                    if (r["length"], r["keep_latents"], r["vace"], r["vace_attention"]) == (length, keep, vace, mode))

    figures = {"measure": key}
    for label, keep, vace in (("latents_aside", False, False), ("keep_latents", True, False),
                              ("vace_latents_aside", False, True)):
        short, long = find("short", keep, vace), find("long", keep, vace)
        figures[f"long_over_short_{label}"] = round(long[key] / short[key], 4)
        if short[before_key] is not None:
            figures[f"generation_increment_mib_{label}"] = [round(r[key] - r[before_key], 2) for r in (short, long)]
    return figures


# ---- instrumentation and profile ------------------------------------------------------------------

@contextmanager
def instrumented() -> Iterator[dict]:
    """Count cache reads/writes by kind, prompt embeddings and RoPE table builds (wrappers, restored)."""
    counts: dict = {"passes": [], "encode_text": 0, "rope_tables_built": 0}
    last_table: dict[tuple, torch.Tensor] = {}
    begin_block, encode_text, table = KVCache.begin_block, CausalWanModel.encode_text, RotaryEmbedding.table

    def counting_begin_block(self, start_frame, num_frames, *args, **kwargs):
        access = begin_block(self, start_frame, num_frames, *args, **kwargs)
        counts["passes"].append((start_frame, isinstance(access._read, slice),
                                 not access.writes or isinstance(access._write, slice)))
        return access

    def counting_encode_text(self, context):
        counts["encode_text"] += 1
        return encode_text(self, context)

    def counting_table(self, *args, **kwargs):
        result = table(self, *args, **kwargs)
        key = tuple(map(str, args)) + tuple(f"{k}={v}" for k, v in sorted(kwargs.items()))
        if last_table.get(key) is not result:  # a cached table comes back as the same object
            last_table[key] = result
            counts["rope_tables_built"] += 1
        return result

    KVCache.begin_block, CausalWanModel.encode_text = counting_begin_block, counting_encode_text
    RotaryEmbedding.table = counting_table
    try:
        yield counts
    finally:
        KVCache.begin_block, CausalWanModel.encode_text, RotaryEmbedding.table = begin_block, encode_text, table


def run_instrumented(bench: Bench, plan: Plan, with_profiler: bool) -> tuple[dict, dict]:
    """A VACE ("all") run with counters on every pass and the profiler over steady-state chunks
    (the profiler is skipped in quick mode: importing and starting it alone takes seconds)."""
    s = bench.settings
    chunks = plan.profile_chunks[1] + 2
    ref_frames = 1
    first, last = plan.profile_chunks
    prof = None
    toggle_profiler: Callable[[ChunkInfo], None] | None = None  # on_chunk hook: profile chunks first..last
    if with_profiler:
        from torch.profiler import ProfilerActivity, profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if bench.device.type == "cuda" else [])
        prof = profile(activities=activities)

        def start_or_stop(info: ChunkInfo) -> None:
            number = info.block.chunk_index + 1
            if number == first - 1:
                prof.start()
            elif number == last:
                prof.stop()

        toggle_profiler = start_or_stop

    with instrumented() as counts:
        timed_generate(bench, chunks, s, vace=True, extra=toggle_profiler)
    steady = [p for p in counts["passes"] if p[0] + s.chunk_frames - ref_frames >= s.window_frames]
    blocks = chunks + 1  # the reference block, then the chunks
    instrumentation = {
        "chunks": chunks, "passes": len(counts["passes"]), "blocks": blocks,
        "steady_state_passes": len(steady),
        "steady_state_reads_slice": sum(p[1] for p in steady),
        "steady_state_reads_index_select": sum(not p[1] for p in steady),
        "steady_state_writes_slice": sum(p[2] for p in steady),
        "steady_state_writes_index_copy": sum(not p[2] for p in steady),
        "all_reads_index_select": sum(not p[1] for p in counts["passes"]),
        "encode_text_calls": counts["encode_text"],
        "rope_tables_built": counts["rope_tables_built"],
    }
    instrumentation["ok"] = (instrumentation["steady_state_passes"] > 0
                             and instrumentation["steady_state_reads_index_select"] == 0
                             and instrumentation["encode_text_calls"] == 1
                             and instrumentation["rope_tables_built"] == blocks)
    summary = profile_summary(prof, bench.device, last - first + 1) if prof else {"skipped": "quick mode"}
    return instrumentation, summary


def profile_summary(prof, device: torch.device, chunks: int, top: int = 10) -> dict:
    events = prof.key_averages()
    on_gpu = device.type == "cuda"

    def self_time(e) -> float:  # microseconds
        if on_gpu:
            return getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))
        return e.self_cpu_time_total

    total = sum(self_time(e) for e in events) or 1.0
    ranked = sorted(events, key=self_time, reverse=True)[:top]
    calls = {e.key: e.count for e in events}
    return {"chunks_profiled": chunks, "clock": "device" if on_gpu else "cpu",
            "top_ops": [{"name": e.key, "share": round(self_time(e) / total, 4),
                         "calls_per_chunk": round(e.count / chunks, 1)} for e in ranked],
            "attention_ops": {k: v for k, v in calls.items() if k.startswith("aten::_scaled_dot_product")},
            "index_select_calls": calls.get("aten::index_select", 0),
            "index_copy_calls": calls.get("aten::index_copy_", 0)}


# ---- report -----------------------------------------------------------------------------------------

def checks(cache: dict, memory: dict, vace: dict, instrumentation: dict, timed: bool) -> dict[str, bool | None]:
    """Each acceptance check: passed, failed, or None (not judged) for the timing checks when `timed`
    is False."""
    def timing(ok: bool) -> bool | None:
        return ok if timed else None

    return {
        "1_kv_flat": timing(cache["kv_late_over_early_wall"] <= FLAT_LIMIT),
        "1_baseline_grows": timing(cache["baseline_late_over_early_wall"] >= GROWTH_MIN),
        "2_memory_flat": memory["long_over_short_latents_aside"] <= MEMORY_LIMIT,
        "3_vace_first_cheap": timing(vace["first_over_off_wall"] <= VACE_FIRST_LIMIT),
        "5_no_cache_copy_no_reembedding": instrumentation["ok"],
    }


def exit_status(results: dict[str, bool | None]) -> int:
    """1 when a judged check failed, else 0."""
    return 1 if any(ok is False for ok in results.values()) else 0


def markdown(result: dict) -> str:
    m, z, c, mem, v = result["machine"], result["sizes"], result["cache"], result["memory"], result["vace"]
    ok = result["checks"]
    machine = m["gpu"] or f"{m['cpu']} ({m['cpu_count']} cores)"
    e, late, be, bl = c["early_chunk"], c["late_chunk"], c["baseline_early_chunk"], c["baseline_late_chunk"]
    shown = SERIES if result["device"] == "cpu" else ("wall", "wall_min")  # CPU time means nothing on a GPU
    blank = " |" * (len(shown) - 1)

    def row(label: str, figures: dict, key: str, target: str = "", check: str | None = None) -> str:
        values = " | ".join(f"{figures[f'{key}_{series}']:.3f}" for series in shown)
        return f"| {label} | {values} | {target} | {verdict(ok[check]) if check else ''} |"

    compared = f"chunks {v['chunks_compared'][0]}-{v['chunks_compared'][1]}"
    lines = [
        f"# Sampler benchmark ({result['device']}{', quick' if result['quick'] else ''})",
        "",
        (f"Machine: {machine}; torch {m['torch']}, {m['torch_threads']} thread(s); {z['dtype']}; "
         f"preset {z['preset']} ({z['params_m']} M params) at {z['width']}x{z['height']} "
         f"({z['tokens_per_frame']} tokens/frame); chunk {z['chunk_frames']}, window {z['window_frames']}, "
         f"sink {z['sink_frames']}, {len(z['denoising_steps'])} steps. {result['repeats']['main']} repeats "
         f"(baseline {result['repeats']['baseline']}), configurations interleaved. Ratios of per-chunk times; "
         "wall/cpu = wall-clock/process CPU time, median (checked) or min over repeats."),
        "",
        "| figure | " + " | ".join(s.replace("_min", " min") for s in shown) + " | target | result |",
        "|---|" + "---|" * (len(shown) + 2),
        row(f"KV cache: chunk {late} / chunk {e}", c, "kv_late_over_early", f"<= {FLAT_LIMIT}", "1_kv_flat"),
        row(f"naive recompute: chunk {bl} / chunk {be}", c, "baseline_late_over_early", f"grows (>= {GROWTH_MIN})",
            "1_baseline_grows"),
        row(f"KV cache: chunk {bl} / chunk {be} (same indices)", c, "kv_at_baseline_late_over_early"),
        row(f"recompute / KV at chunk {bl}", c, "baseline_over_kv_at_baseline_late"),
        *(row(f"VACE on every chunk / off, vace_attention={mode}, {compared}", v, f"{mode}_over_off", "stated")
          for mode in VACE_MODES),
        row(f"VACE on the first chunk only / off, {compared}", v, "first_over_off", f"<= {VACE_FIRST_LIMIT}",
            "3_vace_first_cheap"),
        (f"| peak memory {result['memory_chunks'][1]} / {result['memory_chunks'][0]} chunks, latents aside "
         f"({mem['measure']}) | {mem['long_over_short_latents_aside']:.4f}{blank} | <= {MEMORY_LIMIT} | "
         f"{verdict(ok['2_memory_flat'])} |"),
        f"| same, keep_latents=True | {mem['long_over_short_keep_latents']:.4f}{blank} | reported | |",
        (f"| same, VACE on (R2V context) | {mem['long_over_short_vace_latents_aside']:.4f}"
         f"{blank} | reported | |"),
        (f"| steady state: cache read as a view, prompt embedded once, RoPE once per block | "
         f"{'yes' if ok['5_no_cache_copy_no_reembedding'] else 'no'}{blank} | yes | "
         f"{verdict(ok['5_no_cache_copy_no_reembedding'])} |"),
        "",
        f"Per-chunk wall time (median) relative to the KV cache's chunk {e}:",
        "",
        "| chunk | " + " | ".join(str(i) for i in result["curve_points"]) + " |",
        "|---|" + "---|" * len(result["curve_points"]),
    ]
    reference = result["per_chunk"]["kv"]["wall_s"][e - 1]
    for name in ("kv", "recompute"):
        curve = result["per_chunk"][name]["wall_s"]
        cells = [f"{curve[i - 1] / reference:.2f}" if i <= len(curve) else "-" for i in result["curve_points"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result["device"] == "cuda":
        lines += throughput_lines(result)
    return "\n".join(lines) + "\n"


def throughput_lines(result: dict) -> list[str]:
    pc, mem = result["per_chunk"], result["memory_runs"]
    vram = {(r["length"], r["vace_attention"]): r.get("cuda_peak_allocated_mib") for r in mem if not r["keep_latents"]}
    lines = ["", (f"Throughput ({result['machine']['gpu']}, attention: {result['attention']['ops']}, "
              f"enabled: {result['attention']['flags']}):"), "",
             "| run | video frames | FPS | steady FPS | first-chunk latency s | peak VRAM MiB (long run) |",
             "|---|---|---|---|---|---|"]
    runs = [("kv", "VACE off (T2V)", None)] + [(f"vace_{mode}", f"R2V, vace_attention={mode}", mode)
                                                for mode in VACE_MODES]
    for name, label, mode in runs + [("vace_first", "R2V, VACE on the first chunk only", "first")]:
        curve = pc[name]
        lines.append(f"| {label} | {curve['video_frames']} | {curve['fps']:.2f} | {curve['steady_fps']:.2f} | "
                     f"{curve['first_chunk_latency_s']:.3f} | {vram.get(('long', mode), '-')} |")
    return lines


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    plan = PLANS["quick" if args.quick else args.device]
    if args.repeats:
        plan = replace(plan, repeats=args.repeats, baseline_repeats=min(args.repeats, plan.baseline_repeats))
    plan = replace(plan, compile=args.compile)
    started = time.perf_counter()
    log(f"memory: {len(MEMORY_CONFIGS)} configurations, one new process each")
    memory_runs = run_memory(plan, device)
    log("memory done")
    bench = Bench(plan, device)
    log("model built; timing runs (interleaved)")
    timings = run_timings(bench, plan)
    log("instrumented + profiled run")
    instrumentation, prof = run_instrumented(bench, plan, with_profiler=not args.quick)
    curves = {name: curve_summary(runs) for name, runs in timings.items()}
    for curve in curves.values():  # video frames per second of steady-state chunks (4 per latent frame)
        steady = curve["wall_s"][plan.early_chunk - 1:-1] or curve["wall_s"]
        curve["steady_fps"] = round(4 * bench.settings.chunk_frames / statistics.median(steady), 3)
    cache, vace, memory = cache_figures(curves, plan), vace_figures(curves, plan), memory_figures(memory_runs, device)
    result = {
        "device": device.type, "quick": args.quick, "machine": machine_info(device), "sizes": bench.sizes(),
        "repeats": {"main": plan.repeats, "baseline": plan.baseline_repeats},
        "chunks": {"kv": plan.long_chunks, "recompute": plan.baseline_chunks, "vace": plan.vace_chunks},
        "memory_chunks": list(plan.memory_chunks),
        "cache": cache, "vace": vace, "memory": memory, "memory_runs": memory_runs,
        "per_chunk": curves,
        "curve_points": sorted({i for i in (1, 2, plan.early_chunk, 8, 10, plan.baseline_chunks, 20, 30,
                                           plan.late_chunk) if i < plan.long_chunks}),  # not the last
        "attention": {"flags": sdpa_flags(device), "ops": prof.get("attention_ops")},
        "instrumentation": instrumentation, "profile": prof,
        "notes": [("per-chunk time = 4 denoising passes + the clean cache-writing pass (the last chunk has none; "
                   "recompute mode has no clean pass at all)"),
                  ("recompute re-runs every earlier frame with block-causal window masks: quadratic per chunk, "
                   "so it stops after fewer chunks")],
    }
    result["checks"] = checks(cache, memory, vace, instrumentation, timed=not args.quick)
    result["runtime_s"] = round(time.perf_counter() - started, 1)
    return result


def write_results(result: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"results-{result['device']}{'-quick' if result['quick'] else ''}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(md_path, markdown(result))
    return json_path, md_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, a few chunks, one repeat")
    parser.add_argument("--repeats", type=int, default=0, help="override the plan's repeat count")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the transformer blocks (the first chunks then include compile time)")
    parser.add_argument("--comfyui", type=Path, default=None,
                        help="with --device cuda: a ComfyUI checkout, to add the low-VRAM path through its "
                             "memory manager (scripts/bench_lowvram.py, run with this python)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "bench")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device cuda: this torch ({torch.__version__}) sees no CUDA device")
    if args.comfyui is not None:
        if args.device != "cuda" or args.quick:
            raise SystemExit("--comfyui adds the low-VRAM path of a full --device cuda run; drop it here")
        check_comfyui(args.comfyui)
    if args.device == "cpu":
        torch.set_num_threads(1)  # stable timings on a shared machine; stated in the results
    result = run(args)
    json_path, md_path = write_results(result, args.out)
    print(md_path.read_text())
    for name, ok in result["checks"].items():
        print(f"{verdict(ok)} {name}")
    print(f"wrote {json_path} and {md_path} in {result['runtime_s']} s")
    status = exit_status(result["checks"])
    if args.device == "cuda" and not args.quick:
        if args.comfyui is None:
            print("the low-VRAM path was not measured: it runs through ComfyUI's memory manager; add --comfyui DIR")
        else:
            lowvram = [sys.executable, str(Path(__file__).with_name("bench_lowvram.py")), "--comfyui", str(args.comfyui),
                       "--out", str(args.out)]
            status = max(status, subprocess.run(lowvram, check=False).returncode)
    return status


if __name__ == "__main__":
    sys.exit(main())
