"""The sections of the benchmark plan (scripts/bench/bench.py runs them, by priority within a time
budget): each takes the invocation's Context and returns {"plan", "bench", "figures", "checks"}
(plus "skipped": {part: reason} for a part it left out), or raises SectionSkipped with the reason.

- correctness: the GPU path's parts (gpu_smoke.py): matmul rate, attention backends in bf16 and
  fp16, half precision against float32, 7-chunk T2V / R2V runs with their kernels and syncs;
- smoke: every timed configuration once, with the facts that do not depend on timing (outputs
  finite, the KV cache read as a view, the prompt embedded once, RoPE tables built once per block);
- steady: steady per-chunk time and FPS of T2V and R2V, interleaved;
- timing / vace: the full per-chunk curves (KV cache against the naive recompute; each VACE mode);
- memory: peak memory of short and long runs;
- decode: the streaming decode of a chunk by ComfyUI's Wan VAE, its share of a chunk, and the gain
  of decoding on a second device, warmed up and interleaved (bench_decode.py);
- batch: videos per hour, FPS and peak memory at batch 1, 2 and 4, T2V and R2V (bench_batch.py);
- compile, lowvram: bench_compile.py, bench_lowvram.py in processes of their own;
- native-ar, preview, forward: the CPU comparisons with ComfyUI (their scripts' smoke runs).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import bench_common as common  # first: it puts the repository root and scripts/ on sys.path
import bench_batch
import bench_lowvram
import gpu_smoke
from bench_common import (FLAT_LIMIT, MEMORY_LIMIT, MIN_REPEATS, PLANS, SERIES, Bench, Plan, RunTimes,
                          curve_summary, fresh_process_reports, log, mean_ratio, ratio, rss_now_mib, rss_peak_mib,
                          sdpa_flags, timed_generate)
from vace_core.cache import KVCache
from vace_core.latents import VAE_STRIDE_T
from vace_core.model import CausalWanModel
from vace_core.passes import VACE_ATTENTION_MODES, CachedPasses, PassExecutor
from vace_core.plan import SamplerSettings
from vace_core.rope import RotaryEmbedding
from vace_core.passes import RunView
from vace_core.sampler import ChunkInfo
from vace_core.testing.recompute import RecomputedPasses

HERE = Path(__file__).resolve().parent


class SectionSkipped(Exception):
    """A section that cannot run here (its reason is the message): listed, not a failure."""


class OutOfTime(Exception):
    """The time budget ran out while a section ran (raised by the plan's alarm or a child's timeout)."""


GROWTH_MIN = 1.5  # acceptance 1: the baseline's ratio must clearly grow
VACE_FIRST_LIMIT = 1.10  # acceptance 3: hint_chunks="first" / VACE off
# VACE attention modes, each timed with hints on every chunk ("vace_<mode>"); hint_chunks="first" is
# timed in the default mode ("vace_first")
VACE_MODES = VACE_ATTENTION_MODES
CHUNK_FRAMES = SamplerSettings().chunk_frames  # LongLive's preset, what the nodes run
# the smoke run's videos in the batch section and the decode's node runs: the first chunk and one more
SMOKE_CHUNKS = 2
# timed rounds of the decode on a second device (after a warm-up run each way), by smoke: the smoke
# run proves the code path, one round is enough there
DECODE_ROUNDS = {False: 5, True: 1}
LOWVRAM_CHUNKS = 5  # bench_lowvram's timed run: the first chunk and 4 steady ones


# ---- timed configurations: warm-up over every shape, then interleaved repeats -----------------

@dataclass(frozen=True)
class Config:
    """One timed configuration."""
    chunks: int
    settings: SamplerSettings
    vace: bool
    repeats: int
    executor: Callable[[RunView], PassExecutor] = CachedPasses.for_run  # what runs the passes

    @property
    def every_chunk_a_new_shape(self) -> bool:
        return self.executor == RecomputedPasses.for_run  # the naive baseline attends to every earlier frame

    def run(self, bench: Bench, chunks: int | None = None, extra: Callable[[ChunkInfo], None] | None = None
            ) -> RunTimes:
        return timed_generate(bench, chunks or self.chunks, self.settings, self.vace, extra=extra,
                              executor=self.executor)


def timing_configs(bench: Bench, plan: Plan) -> dict[str, Config]:
    """The timing section: the KV cache over a long run, the naive recompute baseline (the
    cache-free oracle of vace_core/testing as the run's executor)."""
    s = bench.settings
    return {"kv": Config(plan.long_chunks, s, False, plan.repeats),
            "recompute": Config(plan.baseline_chunks, s, False, plan.baseline_repeats, RecomputedPasses.for_run)}


def vace_configs(bench: Bench, plan: Plan) -> dict[str, Config]:
    """The vace section: VACE off, on every chunk in each attention mode, on the first chunk only."""
    s = bench.settings
    return {"vace_off": Config(plan.vace_chunks, s, False, plan.repeats),
            **{f"vace_{mode}": Config(plan.vace_chunks, replace(s, vace_attention=mode, hint_chunks="all"), True,
                                      plan.repeats) for mode in VACE_MODES},
            "vace_first": Config(plan.vace_chunks, replace(s, hint_chunks="first"), True, plan.repeats)}


def warmup_chunks(config: Config, plan: Plan) -> int:
    """Chunks of an untimed run that shows every shape a timed run of `config` has: with the cache,
    shapes stop changing once the window is full (`early_chunk`), and one chunk more is a last
    chunk (no clean pass); the naive baseline's every chunk is a new shape."""
    if config.every_chunk_a_new_shape:
        return config.chunks
    return min(config.chunks, plan.early_chunk + 1)


def run_interleaved(bench: Bench, configs: dict[str, Config], plan: Plan) -> dict[str, list[RunTimes]]:
    """Warm every configuration up over all its shapes, then time its repeats interleaved."""
    for config in configs.values():
        config.run(bench, warmup_chunks(config, plan))
    log(f"warmed up: {', '.join(configs)}")
    repeats = max(config.repeats for config in configs.values())
    results: dict[str, list[RunTimes]] = {name: [] for name in configs}
    for repeat in range(repeats):
        order = list(configs) if repeat % 2 == 0 else list(reversed(configs))  # A B C .. C B A
        for name in order:
            if repeat < configs[name].repeats:
                results[name].append(configs[name].run(bench))
                log(f"repeat {repeat + 1}/{repeats} {name}: {results[name][-1].total_wall:.1f} s")
    return results


def summarise(runs: dict[str, list[RunTimes]], plan: Plan, chunk_frames: int) -> dict[str, dict]:
    """Per-configuration curves, with the DiT-only steady FPS: video frames of a chunk over the median
    time of the chunks from `early_chunk` on (the window full), the last chunk left out."""
    curves = {}
    for name, values in runs.items():
        curve = curve_summary(values)
        steady = curve["wall_s"][plan.early_chunk - 1:-1] or curve["wall_s"]
        curve["steady_chunk_s"] = round(statistics.median(steady), 5)
        curve["steady_fps"] = round(VAE_STRIDE_T * chunk_frames / curve["steady_chunk_s"], 3)
        curve["all_finite"] = all(r.finite is not False for r in values)
        curves[name] = curve
    return curves


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


def end_to_end(curve: dict, decode: dict | None, chunk_frames: int) -> dict:
    """Steady FPS with each chunk's streaming VAE decode after its DiT passes (as Sampler -> Video
    runs them), or the reason it was not measured."""
    if decode is None or "steady_chunk_s" not in decode:
        return {"end_to_end_fps": None}
    seconds = curve["steady_chunk_s"] + decode["steady_chunk_s"]
    return {"end_to_end_fps": round(VAE_STRIDE_T * chunk_frames / seconds, 3),
            "decode_share": round(decode["steady_chunk_s"] / seconds, 4)}

# ---- memory ---------------------------------------------------------------------------------------

MEMORY_CONFIGS = [  # (length, keep_latents, vace, VACE attention mode)
    ("short", False, False, None), ("long", False, False, None),
    ("short", True, False, None), ("long", True, False, None),
    ("short", False, True, "causal"), ("long", False, True, "causal"),
    ("long", False, True, "references"), ("long", False, True, "block"),
]


def child_memory(plan: Plan, device: torch.device, spec: dict) -> dict:
    """Runs in a fresh process: build, generate once, report this process's peaks."""
    return measure_memory(Bench(plan, device), spec)


def measure_memory(bench: Bench, spec: dict) -> dict:
    """Generate once as `spec` says; the peaks of this process (RSS) and of the GPU since now."""
    device = bench.device
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


def run_memory(plan: Plan, device: torch.device, bench: "Bench | None" = None) -> list[dict]:
    """Every MEMORY_CONFIGS run: on the CPU each in a fresh process (RSS peaks do not reset); on a
    GPU one after another on `bench`'s model after an untimed run (CUDA's peak resets; a process
    per configuration would pay CUDA's start and the model's build each time)."""
    specs = [{"length": length, "chunks": plan.memory_chunks[length == "long"], "keep_latents": keep,
              "vace": vace, "vace_attention": mode} for length, keep, vace, mode in MEMORY_CONFIGS]
    if device.type == "cpu":
        return fresh_process_reports(functools.partial(child_memory, plan), specs, device)
    timed_generate(bench, plan.memory_chunks[0], bench.settings, vace=True)  # kernels, workspaces
    return [measure_memory(bench, spec) for spec in specs]


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



# ---- what the sections of one invocation share ------------------------------------------------

class Context:
    """Arguments, device, the models built so far, the figures later sections read (the decode, the
    steady chunk), the seconds the budget leaves (`time_left`) and where a section's figures go as
    it measures (`keep_figures`), both set by the plan."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args = args
        self.device = device
        self.smoke: bool = getattr(args, "smoke", False)
        self.time_left: Callable[[], float | None] = lambda: None
        self._benches: dict[Plan, Bench] = {}
        self._decode: dict | None = None
        self.steady: dict | None = None
        # a section's figures so far, handed over as it measures: the plan saves them at once (bench.py)
        self.keep_figures: Callable[[dict], None] = lambda figures: None

    def plan(self, section: str) -> Plan:
        if self.smoke or (section == "smoke" and self.device.type == "cpu"):
            return PLANS["quick"]
        return PLANS[self.device.type]

    def bench(self, plan: Plan) -> Bench:
        if plan not in self._benches:
            log(f"building {plan.preset} ({plan.dtype}) on {self.device}")
            self._benches = {plan: Bench(plan, self.device)}  # one model at a time
        return self._benches[plan]

    def weights_dtype(self, plan: Plan) -> str:
        """The loader node's dtype choice for the plan's weights."""
        return "bf16" if plan.dtype == "bfloat16" else "fp32"

    def run_script(self, script: str, *args: str) -> subprocess.CompletedProcess:
        """scripts/bench/<script> with this python, in a process group of its own that is killed when
        the budget runs out (OutOfTime)."""
        try:
            return common.run_child([sys.executable, str(HERE / script), *args], timeout=self.time_left(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except subprocess.TimeoutExpired:
            raise OutOfTime(f"{script} stopped: the time budget ran out") from None

    def decode_report(self, plan: Plan, *extra: str) -> dict:
        """bench_decode.py's figures for a chunk of `plan`'s size (its full-size Wan VAE, width 8 for
        the tiny presets), with `extra` arguments, in a process of its own: ComfyUI's import sets
        CUDA's SDPA flags, which would change the sections timed after it, and a run the budget
        stops is a process killed, not one interrupted in this process with its decode worker
        thread inside torch (which aborted the interpreter at exit)."""
        dim = "96" if plan.preset.startswith("wan2.1") else "8"
        with tempfile.TemporaryDirectory(prefix="bench_decode_") as work:
            report = Path(work) / "decode.json"
            args = ["--comfyui", str(self.args.comfyui), "--device", self.device.type, "--height", str(plan.height),
                    "--width", str(plan.width), "--dim", dim, "--repeats", str(max(plan.repeats, MIN_REPEATS)),
                    "--report", str(report), *extra]
            child = self.run_script("bench_decode.py", *args)
            if child.returncode != 0:
                raise RuntimeError(f"bench_decode.py failed (exit status {child.returncode}):\n"
                                   f"{child.stderr[-3000:]}")
            return json.loads(report.read_text())

    def decode(self, plan: Plan) -> dict | None:
        """Decode figures with --comfyui (measured once per invocation), else None."""
        if self.args.comfyui is None:
            return None
        if self._decode is None:
            log("streaming VAE decode (ComfyUI's Wan VAE, bench_decode.py)")
            self._decode = self.decode_report(plan)
        return self._decode


# ---- sections ------------------------------------------------------------------------------------

def section_correctness(ctx: Context) -> dict:
    plan = ctx.plan("correctness")
    bench = ctx.bench(plan)
    figures, checks = {}, {}
    for part, run in (("matmul", gpu_smoke.part_matmul), ("attention", gpu_smoke.part_attention),
                      ("half_precision", gpu_smoke.part_half_precision), ("runs", gpu_smoke.part_runs)):
        log(f"correctness: {part}")
        figures[part], part_checks = run(bench)
        checks.update(part_checks)
    return {"plan": plan, "bench": bench, "figures": figures, "checks": checks}


def section_smoke(ctx: Context) -> dict:
    plan = ctx.plan("smoke")
    bench = ctx.bench(plan)
    once = {}
    for name, config in {**timing_configs(bench, plan), **vace_configs(bench, plan)}.items():
        run = config.run(bench, warmup_chunks(config, plan))
        once[name] = {"chunks": len(run.wall), "first_chunk_s": round(run.wall[0], 4),
                      "last_chunk_s": round(run.wall[-1], 4), "finite": run.finite}
    on_gpu = ctx.device.type == "cuda"
    instrumentation, prof = run_instrumented(bench, plan, with_profiler=on_gpu)
    decode = ctx.decode(plan)
    figures = {"runs": once, "instrumentation": instrumentation, "profile": prof, "decode": decode,
               "attention": {"flags": sdpa_flags(ctx.device), "ops": prof.get("attention_ops")}}
    checks = {
        "smoke_outputs_finite": all(r["finite"] for r in once.values()),
        "smoke_cache_read_as_view": (instrumentation["steady_state_passes"] > 0
                                     and instrumentation["steady_state_reads_index_select"] == 0),
        "smoke_prompt_embedded_once": instrumentation["encode_text_calls"] == 1,
        "smoke_rope_once_per_block": instrumentation["rope_tables_built"] == instrumentation["blocks"],
    }
    if on_gpu:  # the math kernel is the slow fallback PyTorch takes when no fused kernel accepts the inputs
        checks["smoke_no_math_attention"] = not any("math" in op for op in prof["attention_ops"])
    if decode is not None:
        checks["smoke_vae_decode_runs"] = decode["steady_chunk_s"] > 0
    return {"plan": plan, "bench": bench, "figures": figures, "checks": checks}


def section_timing(ctx: Context) -> dict:
    plan = ctx.plan("timing")
    bench = ctx.bench(plan)
    runs = run_interleaved(bench, timing_configs(bench, plan), plan)
    curves = summarise(runs, plan, bench.settings.chunk_frames)
    cache = cache_figures(curves, plan)
    decode = ctx.decode(plan)
    throughput = {"kv": {**throughput_of(curves["kv"]),
                         **end_to_end(curves["kv"], decode, bench.settings.chunk_frames)}}
    figures = {"cache": cache, "per_chunk": curves, "throughput": throughput, "decode": decode,
               "curve_points": sorted({i for i in (1, 2, plan.early_chunk, 8, 10, plan.baseline_chunks, 20, 30,
                                                   plan.late_chunk) if i < plan.long_chunks})}
    checks = {"1_kv_flat": cache["kv_late_over_early_wall"] <= FLAT_LIMIT,
              "1_baseline_grows": cache["baseline_late_over_early_wall"] >= GROWTH_MIN,
              "timing_outputs_finite": all(c["all_finite"] for c in curves.values())}
    return {"plan": plan, "bench": bench, "figures": figures, "checks": checks}


def section_vace(ctx: Context) -> dict:
    plan = ctx.plan("vace")
    bench = ctx.bench(plan)
    runs = run_interleaved(bench, vace_configs(bench, plan), plan)
    curves = summarise(runs, plan, bench.settings.chunk_frames)
    decode = ctx.decode(plan)
    throughput = {name: {**throughput_of(curve), **end_to_end(curve, decode, bench.settings.chunk_frames)}
                  for name, curve in curves.items()}
    figures = {"vace": vace_figures(curves, plan), "per_chunk": curves, "throughput": throughput, "decode": decode}
    checks = {"3_vace_first_cheap": figures["vace"]["first_over_off_wall"] <= VACE_FIRST_LIMIT,
              "vace_outputs_finite": all(c["all_finite"] for c in curves.values())}
    return {"plan": plan, "bench": bench, "figures": figures, "checks": checks}


def throughput_of(curve: dict) -> dict:
    return {key: curve[key] for key in ("video_frames", "fps", "steady_chunk_s", "steady_fps",
                                         "first_chunk_latency_s")}


def section_memory(ctx: Context) -> dict:
    plan = ctx.plan("memory")
    on_gpu = ctx.device.type == "cuda"
    bench = ctx.bench(plan) if on_gpu else None  # the CPU's runs build their own, in fresh processes
    log(f"memory: {len(MEMORY_CONFIGS)} configurations" + ("" if on_gpu else ", one new process each"))
    reports = run_memory(plan, ctx.device, bench)
    memory = memory_figures(reports, ctx.device)
    return {"plan": plan, "bench": bench, "figures": {"memory": memory, "memory_runs": reports},
            "checks": {"2_memory_flat": memory["long_over_short_latents_aside"] <= MEMORY_LIMIT}}


def steady_configs(bench: Bench, plan: Plan) -> dict[str, Config]:
    """T2V and R2V (one reference, VACE on every chunk), long enough for 4 steady chunks after the
    window is full (the last chunk, which has no clean pass, left out)."""
    s, chunks = bench.settings, plan.early_chunk + 4
    return {"t2v": Config(chunks, s, False, plan.repeats),
            "r2v": Config(chunks, replace(s, hint_chunks="all"), True, plan.repeats)}


def section_steady(ctx: Context) -> dict:
    plan = ctx.plan("steady")
    bench = ctx.bench(plan)
    configs = steady_configs(bench, plan)
    curves = summarise(run_interleaved(bench, configs, plan), plan, bench.settings.chunk_frames)
    late = configs["t2v"].chunks - 1
    figures = {name: throughput_of(curve) for name, curve in curves.items()}
    figures["r2v_over_t2v"] = round(curves["r2v"]["steady_chunk_s"] / curves["t2v"]["steady_chunk_s"], 4)
    figures["kv_late_over_early"] = round(ratio(curves["t2v"]["wall_s"], late, plan.early_chunk), 4)
    figures["chunks_compared"] = [plan.early_chunk, late]
    figures["per_chunk"] = curves
    ctx.steady = figures
    return {"plan": plan, "bench": bench, "figures": figures,
            "checks": {"steady_outputs_finite": all(c["all_finite"] for c in curves.values())}}


def second_decode_device(device: torch.device) -> tuple[str | None, str]:
    """(the other device the decode could run on, or None; why not): a second GPU, or on the CPU
    the CPU itself (the worker-thread path against the inline decode: its overhead, no gain)."""
    if device.type == "cpu":
        return "cpu", ""
    count = torch.cuda.device_count()
    return ("cuda:1", "") if count >= 2 else (None, f"one GPU seen ({count}): a second decode GPU needs two")


def section_decode(ctx: Context) -> dict:
    """The streaming decode of one chunk and its share of a chunk's time (the DiT's steady chunk from
    the steady section, when it ran); Sampler -> Video decoding on a second device against the
    model's, both warmed up, in interleaved rounds, where there is one (bench_decode.py)."""
    plan = ctx.plan("decode")
    decode = ctx.decode(plan)
    figures = {"decode": decode, "skipped": {}}
    dit = ctx.steady["t2v"]["steady_chunk_s"] if ctx.steady else None
    if dit is None:
        figures["skipped"]["decode share"] = "needs the steady section's T2V chunk"
    else:
        figures["dit_chunk_s"] = dit
        figures.update(end_to_end({"steady_chunk_s": dit}, decode, CHUNK_FRAMES))
    target, why = second_decode_device(ctx.device)
    if target is None:
        figures["skipped"]["decode on a second device"] = why
    else:
        log(f"Sampler -> Video decoding on the model's device and on {target} (bench_decode.py)")
        gain = ctx.decode_report(plan, "--decode-device", target, "--preset", plan.preset, "--dtype",
                                 ctx.weights_dtype(plan), "--chunks",
                                 str(SMOKE_CHUNKS if ctx.smoke else plan.early_chunk + 2),
                                 "--rounds", str(DECODE_ROUNDS[ctx.smoke]))["decode_device"]
        if "skipped" in gain:
            figures["skipped"]["decode on a second device"] = gain["skipped"]
        else:
            figures["second_device"] = gain
    checks = {"decode_runs": decode["steady_chunk_s"] > 0}
    return {"plan": plan, "bench": None, "figures": figures, "checks": checks, "skipped": figures["skipped"]}


def section_batch(ctx: Context) -> dict:
    """Videos per hour, FPS and peak memory of T2V and R2V (one reference) at batch 1, 2 and 4
    (bench_batch.device_figures: 81-frame videos after a warm-up run of the same shape; 2 chunks in
    the smoke run) on the plan's model; each measurement saved as it comes, so a run cut short keeps it."""
    plan = ctx.plan("batch")
    bench = ctx.bench(plan)
    with torch.inference_mode():
        figures = bench_batch.device_figures(ctx.device, ctx.keep_figures, bench=bench,
                                             chunks=SMOKE_CHUNKS if ctx.smoke else bench_batch.GPU_CHUNKS)
    runs = figures["runs"]
    checks = {"batch_outputs_finite": all(run["finite"] for run in runs.values()),
              # each video holds its own caches and nothing more: B times batch 1's bytes, exactly
              "batch_cache_per_video": all(run["cache_bytes"] == batch * runs[f"{kind}_batch_1"]["cache_bytes"]
                                           for (kind, batch), run in batch_runs(runs))}
    return {"plan": plan, "bench": bench, "figures": figures, "checks": checks}


def batch_runs(runs: dict[str, dict]) -> list[tuple[tuple[str, int], dict]]:
    """((kind, batch size), run) of bench_batch.device_figures' runs ("t2v_batch_2": ...)."""
    return [((name.split("_batch_")[0], int(name.split("_batch_")[1])), run) for name, run in runs.items()]


def section_lowvram(ctx: Context) -> dict:
    """scripts/bench/bench_lowvram.py, from this process (it starts a ComfyUI process per mode and
    writes its own files and a section of results-cuda.md); its figures are kept here too."""
    quick = ctx.device.type == "cpu"
    status = bench_lowvram.main(["--comfyui", str(ctx.args.comfyui), "--out", str(ctx.args.out), "--chunks",
                                 str(LOWVRAM_CHUNKS), *(["--quick"] if quick else [])])
    report = ctx.args.out / f"results-lowvram-{ctx.device.type}{'-quick' if quick else ''}.json"
    figures = json.loads(report.read_text())
    return {"plan": None, "bench": None, "figures": figures,
            "checks": {"lowvram_ran": status == 0, "lowvram_loaded_by_comfyui": all(
                mode["loaded_bytes"] > 0 and mode["layers"] > 0 for mode in figures["modes"])}}


def section_compile(ctx: Context) -> dict:
    """scripts/bench/bench_compile.py in a process of its own (the model's compile entry point against
    eager, R2V, interleaved; it writes its own file and a section of results-<device>.md); its
    figures are kept here too."""
    finished = ctx.run_script("bench_compile.py", "--device", ctx.device.type, "--out", str(ctx.args.out))
    report = ctx.args.out / f"results-compile-{ctx.device.type}.json"
    figures = json.loads(report.read_text()) if finished.returncode == 0 and report.is_file() else {}
    if not figures:
        log(f"bench_compile.py failed (exit status {finished.returncode}):\n{finished.stderr[-3000:]}")
    return {"plan": None, "bench": None, "figures": figures,
            "checks": {"compile_ran": bool(figures),
                       "compile_without_fallback": bool(figures) and not figures["fallbacks"]}}


# the CPU comparisons with ComfyUI: each script's smoke run (--quick), in this process (ComfyUI is
# imported once for the three), its figures read back from the file it writes; the file of ComfyUI
# each needs
COMPARISONS = {"native-ar": ("bench_native_ar", "results-native-ar-cpu-quick.json", "comfy/ldm/wan/ar_model.py"),
               "preview": ("bench_preview", "results-preview-cpu-quick.json", "latent_preview.py"),
               "forward": ("bench_forward", "results-forward-cpu-quick.json", "comfy/ldm/wan/model.py")}


def comparison_checks(name: str, result: dict) -> dict[str, bool]:
    """What a comparison's smoke run must show whatever the timing: both sides ran the same network
    (native-ar, forward), the preview clips have the chunk's frames (preview)."""
    if name == "native-ar":
        return {"native_ar_same_network": result["first_pass_max_abs_diff"] < 1e-4}
    if name == "forward":
        return {"forward_same_outputs": all(max(case["max_abs_diff_vs_comfy"].values()) < 1e-4
                                            for case in result["cases"].values())}
    return {"preview_clips_made": all(part["latent_clip"][0] == VAE_STRIDE_T * CHUNK_FRAMES
                                      for part in result["parts"].values())}


def section_comparison(name: str) -> Callable[[Context], dict]:
    def run(ctx: Context) -> dict:
        module_name, report, needs = COMPARISONS[name]
        if not (ctx.args.comfyui / needs).is_file():
            raise SectionSkipped(f"needs a ComfyUI with {needs} (--comfyui {ctx.args.comfyui} has none)")
        module = importlib.import_module(module_name)
        status = module.main(["--quick", "--comfyui", str(ctx.args.comfyui), "--out", str(ctx.args.out)])
        result = json.loads((ctx.args.out / report).read_text())
        return {"plan": None, "bench": None, "figures": result,
                "checks": {f"{name.replace('-', '_')}_ran": status == 0, **comparison_checks(name, result)}}
    run.__doc__ = f"scripts/bench/{COMPARISONS[name][0]}.py --quick, in this process."
    return run


SECTION_RUNNERS: dict[str, Callable[[Context], dict]] = {
    "correctness": section_correctness, "smoke": section_smoke, "steady": section_steady,
    "timing": section_timing, "vace": section_vace, "memory": section_memory, "decode": section_decode,
    "batch": section_batch, "compile": section_compile, "lowvram": section_lowvram,
    **{name: section_comparison(name) for name in COMPARISONS}}
