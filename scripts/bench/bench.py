#!/usr/bin/env python3
"""Benchmark of the causal LongLive + VACE sampler in sections: per-chunk cost, VACE cost, memory,
throughput, the low-VRAM path, torch.compile.

Sections (`--sections a,b,...`; the results files are rewritten after EVERY section, and a section
run later replaces only its own figures, so a run cut short keeps what it measured):

- smoke:   every timed configuration runs once, and the facts that do not depend on timing are
           checked: outputs finite, the KV cache read as a view in steady state (no index_select),
           the prompt embedded once per run, RoPE tables built once per block; on a GPU the
           attention kernels that ran. On the CPU at tiny size (the CI test runs it).
- timing:  per-chunk wall time against the chunk index with the KV cache (window rolling: flat) and
           for the naive baseline, the cache-free recompute (vace_core/testing/recompute.py:
           quadratic, so it stops after fewer chunks); throughput of T2V as DiT-only FPS and, with
           --comfyui, end-to-end FPS (DiT plus the streaming decode of every chunk by ComfyUI's
           full-size Wan VAE, random weights).
- vace:    per-chunk cost of VACE on every chunk in each `vace_attention` mode (causal, references,
           block) and on the first only (hint_chunks "first"), against VACE off; R2V throughput.
- memory:  peak memory of a short and a long video (latents aside or kept, VACE on): on the CPU
           the process's RSS high-water mark, one fresh process per configuration; on a GPU
           torch.cuda.max_memory_allocated, one configuration after another in this process.
- lowvram: scripts/bench/bench_lowvram.py (the model through ComfyUI's memory manager on an emulated
           8 GiB card; needs --comfyui, and this python must run ComfyUI).
- compile: scripts/bench/bench_compile.py (the model's compile entry point against eager on the same
           weights, R2V, interleaved: the first compiled run, the steady chunk ratio, the
           difference; checked: no part fell back to eager).

Method: per-chunk time = time between consecutive `on_chunk` callbacks (4 denoising passes plus the
clean pass that writes the cache; the last chunk has none, so a "late" chunk is never the last).
Before timing, every configuration runs once untimed over every shape its timed runs see (cache
modes: through the first steady-state chunks, where the window is full and rolls; the naive
baseline: whole, each of its chunks being a new shape). Then at least 3 timed repeats, interleaved
(A B C .. then .. C B A); every figure is a median over repeats per chunk index (the minimum is
reported beside it). On the CPU torch runs one thread and both wall and process CPU time are
recorded; CPU figures are ratios within one run. On a GPU the times are CUDA-synchronised.

Usage (from the repository root):
    python3 scripts/bench/bench.py                              # CPU: smoke, timing, vace, memory at 128x128 (6-9 min)
    python3 scripts/bench/bench.py --sections smoke --out DIR   # CPU smoke run (~20 s; the CI test)
    python scripts/bench/bench.py --device cuda --sections smoke --comfyui DIR    # GPU, one section per call;
        (README: the commands and each section's expected time on an H100)  -> bench/results-cuda.{json,md}
It prints PASS/FAIL per check and exits 1 when a check of the sections it ran failed (2: a section
could not run).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bench_common import (ROOT, FLAT_LIMIT, MEMORY_LIMIT, MIN_REPEATS, PLANS, SERIES, Bench, Plan, RunTimes,
                          check_comfyui, curve_summary, fresh_process_reports, import_comfy, log, machine_info,
                          mean_ratio, ratio, rss_now_mib, rss_peak_mib, sdpa_flags, timed_generate, verdict,
                          write_markdown)
from pack_loader import load_pack
from vace_core.cache import KVCache
from vace_core.encoding import LATENT_CHANNELS, VAE_STRIDE_T
from vace_core.rope import RotaryEmbedding
from vace_core.model import CausalWanModel
from vace_core.passes import VACE_ATTENTION_MODES, CachedPasses, PassExecutor
from vace_core.plan import SamplerSettings
from vace_core.sampler import ChunkInfo, _Run
from vace_core.testing.recompute import RecomputedPasses

GROWTH_MIN = 1.5  # acceptance 1: the baseline's ratio must clearly grow
VACE_FIRST_LIMIT = 1.10  # acceptance 3: hint_chunks="first" / VACE off
# VACE attention modes, each timed with hints on every chunk ("vace_<mode>"); hint_chunks="first" is
# timed in the default mode ("vace_first")
VACE_MODES = VACE_ATTENTION_MODES
PACKAGE = "longlive_pack"  # ComfyUI has a top-level `nodes` module: the pack gets a name of its own

SECTIONS = ("smoke", "timing", "vace", "memory", "lowvram", "compile")
CPU_SECTIONS = ("smoke", "timing", "vace", "memory")  # the default on the CPU
NEEDS_COMFYUI = ("lowvram",)


# ---- timed configurations: warm-up over every shape, then interleaved repeats -----------------

@dataclass(frozen=True)
class Config:
    """One timed configuration."""
    chunks: int
    settings: SamplerSettings
    vace: bool
    repeats: int
    executor: Callable[[_Run], PassExecutor] = CachedPasses.for_run  # what runs the passes

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


# ---- report -----------------------------------------------------------------------------------------


# ---- streaming VAE decode (end-to-end FPS): ComfyUI's Wan VAE in a process of its own ----------

WAN_VAE_DIM = 96  # the Wan 2.1 VAE's width (the smoke run decodes with a width-8 one)


def measure_decode(comfy_dir: Path, device: torch.device, plan: Plan, chunk_frames: int, dim: int) -> dict:
    """Seconds to decode a chunk with the pack's streaming decoder of ComfyUI's Wan 2.1 VAE (random
    weights of width `dim`), run with this python in a new process (ComfyUI's flags stay there)."""
    spec = {"comfyui": str(comfy_dir), "device": device.type, "height": plan.height, "width": plan.width,
            "chunk_frames": chunk_frames, "dim": dim, "repeats": max(plan.repeats, MIN_REPEATS)}
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as work:
        report = Path(work) / "decode.json"
        child = subprocess.run([sys.executable, __file__, "--decode-child", json.dumps(spec), "--out", work],
                               check=False, capture_output=True, text=True)
        if child.returncode != 0:
            raise RuntimeError(f"the VAE decode run failed (exit status {child.returncode}):\n{child.stderr[-3000:]}")
        return json.loads(report.read_text())


def decode_child(spec: dict, out: Path) -> None:
    """In the child: ComfyUI, the pack as ComfyUI imports it, a random Wan VAE; the first chunk (whose
    first latent frame decodes to one video frame) then `repeats` steady chunks, each timed."""
    device = torch.device(spec["device"])
    with tempfile.TemporaryDirectory(prefix="bench_comfy_") as base:
        comfy = import_comfy(Path(spec["comfyui"]), Path(base), flags=("--cpu",) if device.type == "cpu" else (),
                             sd="comfy.sd")
        load_pack(PACKAGE, standalone=False)
        host = importlib.import_module(f"{PACKAGE}.nodes.host")
        builder = importlib.util.spec_from_file_location("make_tiny_wan_vae",
                                                         ROOT / "tests" / "integration" / "make_tiny_wan_vae.py")
        vae_maker = importlib.util.module_from_spec(builder)
        builder.loader.exec_module(vae_maker)
        vae = comfy.sd.VAE(sd=vae_maker.build_state_dict(dim=spec["dim"], seed=0))
        decoder = host.streaming_decoder(vae)
        latents = torch.randn(1, LATENT_CHANNELS, spec["chunk_frames"], spec["height"] // 8, spec["width"] // 8,
                              generator=torch.Generator().manual_seed(4))

        def decode() -> float:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            frames = decoder.decode_chunk(latents)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if not torch.isfinite(torch.as_tensor(frames)).all():
                raise RuntimeError("the VAE decoded non-finite frames")
            return time.perf_counter() - start

        first = decode()
        decode()  # the first steady chunk: kernels and the decoder's temporal state settle
        steady = [decode() for _ in range(spec["repeats"])]
    report = {"vae": f"ComfyUI {comfy.version} Wan 2.1 VAE, width {spec['dim']}, random weights",
              "first_chunk_s": round(first, 4), "steady_chunk_s": round(statistics.median(steady), 4),
              "steady_chunk_min_s": round(min(steady), 4), "repeats": len(steady)}
    (out / "decode.json").write_text(json.dumps(report))


# ---- sections ------------------------------------------------------------------------------------

class Context:
    """What the sections of one invocation share: arguments, device, the models built so far, the
    decode figures once measured."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args = args
        self.device = device
        self._benches: dict[Plan, Bench] = {}
        self._decode: dict | None = None

    def plan(self, section: str) -> Plan:
        return PLANS["quick"] if section == "smoke" and self.device.type == "cpu" else PLANS[self.device.type]

    def bench(self, plan: Plan) -> Bench:
        if plan not in self._benches:
            log(f"building {plan.preset} ({plan.dtype}) on {self.device}")
            self._benches = {plan: Bench(plan, self.device)}  # one model at a time
        return self._benches[plan]

    def decode(self, plan: Plan, chunk_frames: int) -> dict | None:
        """Decode figures with --comfyui (measured once per invocation), else None."""
        if self.args.comfyui is None:
            return None
        if self._decode is None:
            dim = WAN_VAE_DIM if plan.preset.startswith("wan2.1") else 8
            log(f"streaming VAE decode ({'full-size' if dim == WAN_VAE_DIM else 'width-8'} Wan VAE, ComfyUI)")
            self._decode = measure_decode(self.args.comfyui, self.device, plan, chunk_frames, dim)
        return self._decode


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
    decode = ctx.decode(plan, bench.settings.chunk_frames)
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
    decode = ctx.decode(plan, bench.settings.chunk_frames)
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
    decode = ctx.decode(plan, bench.settings.chunk_frames)
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


LOWVRAM_CHUNKS = 5  # bench_lowvram's timed run: the first chunk and 4 steady ones


def section_lowvram(ctx: Context) -> dict:
    """scripts/bench/bench_lowvram.py in processes of its own (it writes its own files and a section of
    results-cuda.md); its figures are kept here too."""
    quick = ctx.device.type == "cpu"
    command = [sys.executable, str(Path(__file__).with_name("bench_lowvram.py")), "--comfyui", str(ctx.args.comfyui),
               "--out", str(ctx.args.out), "--chunks", str(LOWVRAM_CHUNKS)] + (["--quick"] if quick else [])
    finished = subprocess.run(command, check=False)
    stem = f"results-lowvram-{ctx.device.type}{'-quick' if quick else ''}"
    report = ctx.args.out / f"{stem}.json"
    figures = json.loads(report.read_text()) if finished.returncode == 0 and report.is_file() else {}
    return {"plan": None, "bench": None, "figures": figures,
            "checks": {"lowvram_ran": finished.returncode == 0 and bool(figures)}}


def section_compile(ctx: Context) -> dict:
    """scripts/bench/bench_compile.py in a process of its own (the model's compile entry point against
    eager, R2V, interleaved; it writes its own file and a section of results-<device>.md); its
    figures are kept here too."""
    command = [sys.executable, str(Path(__file__).with_name("bench_compile.py")), "--device", ctx.device.type,
               "--out", str(ctx.args.out)]
    finished = subprocess.run(command, check=False)
    report = ctx.args.out / f"results-compile-{ctx.device.type}.json"
    figures = json.loads(report.read_text()) if finished.returncode == 0 and report.is_file() else {}
    return {"plan": None, "bench": None, "figures": figures,
            "checks": {"compile_ran": bool(figures),
                       "compile_without_fallback": bool(figures) and not figures["fallbacks"]}}


SECTION_RUNNERS: dict[str, Callable[[Context], dict]] = {
    "smoke": section_smoke, "timing": section_timing, "vace": section_vace, "memory": section_memory,
    "lowvram": section_lowvram, "compile": section_compile}


# ---- the results files: rewritten after every section ------------------------------------------

def shown_series(device: str) -> tuple[str, ...]:
    return SERIES if device == "cpu" else ("wall", "wall_min")  # CPU time means nothing on a GPU


def figure_row(label: str, figures: dict, key: str, device: str, target: str = "", ok: bool | None = None) -> str:
    values = " | ".join(f"{figures[f'{key}_{series}']:.3f}" for series in shown_series(device))
    return f"| {label} | {values} | {target} | {'' if ok is None else verdict(ok)} |"


def table_head(device: str) -> list[str]:
    series = shown_series(device)
    return ["| figure | " + " | ".join(s.replace("_min", " min") for s in series) + " | target | result |",
            "|---|" + "---|" * (len(series) + 2)]


def throughput_table(rows: list[tuple[str, dict]], decode: dict | None) -> list[str]:
    lines = ["| run | video frames | FPS (whole run) | steady s / chunk | steady FPS, DiT only | "
             "steady FPS, end-to-end | first-chunk latency s |", "|---|---|---|---|---|---|---|"]
    for label, t in rows:
        e2e = f"{t['end_to_end_fps']:.2f}" if t.get("end_to_end_fps") else "-"
        lines.append(f"| {label} | {t['video_frames']} | {t['fps']:.2f} | {t['steady_chunk_s']:.4f} | "
                     f"{t['steady_fps']:.2f} | {e2e} | {t['first_chunk_latency_s']:.3f} |")
    if decode is None:
        lines += ["", "End-to-end FPS needs --comfyui (the streaming decode of ComfyUI's Wan VAE)."]
    else:
        lines += ["", (f"End-to-end = DiT + the streaming decode of each chunk, one after the other as Sampler -> "
                       f"Video runs them (mp4 encoding not included): {decode['vae']}, "
                       f"{decode['steady_chunk_s']:.4f} s per steady chunk "
                       f"(first chunk {decode['first_chunk_s']:.4f} s).")]
    return lines


def markdown_smoke(entry: dict, device: str) -> list[str]:
    f = entry["figures"]
    lines = ["| configuration | chunks | first chunk s | last chunk s | finite |", "|---|---|---|---|---|"]
    for name, run in f["runs"].items():
        lines.append(f"| {name} | {run['chunks']} | {run['first_chunk_s']} | {run['last_chunk_s']} | "
                     f"{run['finite']} |")
    inst = f["instrumentation"]
    lines += ["", (f"Instrumented R2V run of {inst['chunks']} chunks: {inst['steady_state_passes']} steady-state "
                   f"passes, {inst['steady_state_reads_index_select']} of them read the cache with index_select; "
                   f"prompt embedded {inst['encode_text_calls']} time(s); {inst['rope_tables_built']} RoPE tables "
                   f"for {inst['blocks']} blocks.")]
    if f["attention"]["ops"]:
        lines += ["", (f"Attention ops that ran (profiled chunks): {f['attention']['ops']}; "
                       f"enabled: {f['attention']['flags']}.")]
    if f["decode"]:
        lines += ["", f"Streaming VAE decode: {f['decode']['vae']}, {f['decode']['steady_chunk_s']} s per chunk."]
    return lines


def markdown_timing(entry: dict, device: str) -> list[str]:
    f = entry["figures"]
    c, plan = f["cache"], entry["plan"]
    e, late, be, bl = c["early_chunk"], c["late_chunk"], c["baseline_early_chunk"], c["baseline_late_chunk"]
    ok = entry["checks"]
    lines = table_head(device) + [
        figure_row(f"KV cache: chunk {late} / chunk {e}", c, "kv_late_over_early", device, f"<= {FLAT_LIMIT}",
                   ok["1_kv_flat"]),
        figure_row(f"naive recompute: chunk {bl} / chunk {be}", c, "baseline_late_over_early", device,
                   f"grows (>= {GROWTH_MIN})", ok["1_baseline_grows"]),
        figure_row(f"KV cache: chunk {bl} / chunk {be} (same indices)", c, "kv_at_baseline_late_over_early", device),
        figure_row(f"recompute / KV at chunk {bl}", c, "baseline_over_kv_at_baseline_late", device),
        "", f"Per-chunk wall time (median) relative to the KV cache's chunk {e}:", "",
        "| chunk | " + " | ".join(str(i) for i in f["curve_points"]) + " |",
        "|---|" + "---|" * len(f["curve_points"])]
    reference = f["per_chunk"]["kv"]["wall_s"][e - 1]
    for name in ("kv", "recompute"):
        curve = f["per_chunk"][name]["wall_s"]
        cells = [f"{curve[i - 1] / reference:.2f}" if i <= len(curve) else "-" for i in f["curve_points"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Throughput (T2V, {plan['long_chunks']} chunks):", ""]
    return lines + throughput_table([("T2V, KV cache", f["throughput"]["kv"])], f["decode"])


def markdown_vace(entry: dict, device: str) -> list[str]:
    v = entry["figures"]["vace"]
    compared = f"chunks {v['chunks_compared'][0]}-{v['chunks_compared'][1]}"
    lines = table_head(device)
    lines += [figure_row(f"VACE on every chunk / off, vace_attention={mode}, {compared}", v, f"{mode}_over_off", device,
                         "stated") for mode in VACE_MODES]
    lines.append(figure_row(f"VACE on the first chunk only / off, {compared}", v, "first_over_off", device,
                            f"<= {VACE_FIRST_LIMIT}", entry["checks"]["3_vace_first_cheap"]))
    labels = {"vace_off": "T2V (VACE off)", **{f"vace_{m}": f"R2V, vace_attention={m}" for m in VACE_MODES},
              "vace_first": "R2V, VACE on the first chunk only"}
    rows = [(labels[name], t) for name, t in entry["figures"]["throughput"].items()]
    return lines + ["", "Throughput (one reference):", ""] + throughput_table(rows, entry["figures"]["decode"])


def markdown_memory(entry: dict, device: str) -> list[str]:
    mem, plan = entry["figures"]["memory"], entry["plan"]
    short, long = plan["memory_chunks"]
    lines = ["| figure | ratio | target | result |", "|---|---|---|---|",
             (f"| peak memory {long} / {short} chunks, latents aside ({mem['measure']}) | "
              f"{mem['long_over_short_latents_aside']:.4f} | <= {MEMORY_LIMIT} | "
              f"{verdict(entry['checks']['2_memory_flat'])} |"),
             f"| same, keep_latents=True | {mem['long_over_short_keep_latents']:.4f} | reported | |",
             f"| same, VACE on (R2V context) | {mem['long_over_short_vace_latents_aside']:.4f} | reported | |"]
    if device == "cuda":
        lines += ["", "| run | chunks | keep latents | VACE mode | peak allocated MiB | weights MiB |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['length']} | {r['chunks']} | {r['keep_latents']} | {r['vace_attention'] or 'off'} | "
                  f"{r['cuda_peak_allocated_mib']} | {r['cuda_before_mib']} |" for r in entry["figures"]["memory_runs"]]
    return lines


def markdown_lowvram(entry: dict, device: str) -> list[str]:
    modes = entry["figures"].get("modes", [])
    if not modes:
        return ["bench_lowvram.py did not finish; its output is in the log of this run."]
    return ["| mode | steady s / chunk | video fps | first chunk s | weights loaded / model GiB | peak VRAM MiB |",
            "|---|---|---|---|---|---|"] + [
        f"| {m['mode']} | {m['steady_chunk_s']} | {m['video_fps']} | {m['first_chunk_s']} | "
        f"{m['loaded_bytes'] / 2**30:.2f} / {m['model_bytes'] / 2**30:.2f} | {m.get('peak_allocated_mib', '-')} |"
        for m in modes] + ["", "Details: the Low VRAM section below (scripts/bench/bench_lowvram.py)."]


def markdown_compile(entry: dict, device: str) -> list[str]:
    f = entry["figures"]
    if not f:
        return ["bench_compile.py did not finish; its output is in the log of this run."]
    s = f["median_chunk_s"]
    return ["| eager chunk s | compiled chunk s | compiled / eager | first compiled run s | max abs diff | "
            "fallbacks |", "|---|---|---|---|---|---|",
            (f"| {s['eager']:.4f} | {s['compiled']:.4f} | {f['compiled_over_eager']:.3f} | "
             f"{f['first_compiled_run_s']:.1f} | {f['max_abs_diff_compiled_vs_eager']:.1e} | "
             f"{f['fallbacks'] or 'none'} |"),
            "", "Details: the torch.compile section below (scripts/bench/bench_compile.py)."]


SECTION_MARKDOWN = {"smoke": markdown_smoke, "timing": markdown_timing, "vace": markdown_vace,
                    "memory": markdown_memory, "lowvram": markdown_lowvram, "compile": markdown_compile}
SECTION_TITLES = {"smoke": "Smoke", "timing": "Per-chunk cost and T2V throughput",
                  "vace": "VACE cost and R2V throughput", "memory": "Peak memory",
                  "lowvram": "Low VRAM through ComfyUI", "compile": "torch.compile"}


def markdown(results: dict) -> str:
    device = results["device"]
    lines = [f"# Sampler benchmark ({device})", "",
             ("Written by `scripts/bench/bench.py` after every section; each section keeps the figures of its last run "
              "(the machine and sizes are stated per section). Timed sections: per-chunk medians over at least "
              f"{MIN_REPEATS} interleaved repeats after an untimed run over every shape (wall/cpu = wall-clock/"
              "process CPU time; min = the minimum over repeats).")]
    for name in SECTIONS:
        entry = results["sections"].get(name)
        if entry is None:
            continue
        lines += ["", f"## {SECTION_TITLES[name]} (`--sections {name}`)", "", section_header(entry), ""]
        if "error" in entry:
            lines.append(f"Did not finish: {entry['error']}")
            continue
        lines += SECTION_MARKDOWN[name](entry, device)
        failed = [check for check, ok in entry["checks"].items() if not ok]
        lines += ["", f"Checks: {', '.join(f'{c} {verdict(ok)}' for c, ok in entry['checks'].items())}"
                  + (f" ({len(failed)} failed)" if failed else "") + "."]
    return "\n".join(lines) + "\n"


def section_header(entry: dict) -> str:
    m, z = entry["machine"], entry.get("sizes")
    machine = m["gpu"] or f"{m['cpu']} ({m['cpu_count']} cores)"
    sizes = (f"; {z['dtype']}; preset {z['preset']} ({z['params_m']} M params) at {z['width']}x{z['height']} "
             f"({z['tokens_per_frame']} tokens/frame); chunk {z['chunk_frames']}, window {z['window_frames']}, "
             f"sink {z['sink_frames']}, {len(z['denoising_steps'])} steps") if z else ""
    return (f"{entry['finished']}, {entry['runtime_s']} s. Machine: {machine}; torch {m['torch']}, "
            f"{m['torch_threads']} thread(s){sizes}.")


def results_paths(out: Path, device: str) -> tuple[Path, Path]:
    return out / f"results-{device}.json", out / f"results-{device}.md"


def load_results(out: Path, device: str) -> dict:
    """The results of earlier sections on this device (a file of another layout starts afresh)."""
    json_path, _ = results_paths(out, device)
    if json_path.is_file():
        old = json.loads(json_path.read_text())
        if old.get("device") == device and isinstance(old.get("sections"), dict):
            return old
    return {"device": device, "sections": {}}


def save_results(results: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_paths(out, results["device"])
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(md_path, markdown(results))
    return md_path


def run_section(name: str, ctx: Context) -> dict:
    """One section as a results entry: its figures and checks, or the error that stopped it."""
    started = time.perf_counter()
    entry: dict = {"machine": machine_info(ctx.device)}
    try:
        outcome = SECTION_RUNNERS[name](ctx)
    except Exception as error:  # a section that cannot run must not cost the others their figures
        log(f"{name}: {type(error).__name__}: {error}")
        entry.update(error=f"{type(error).__name__}: {error}", checks={})
    else:
        entry.update(figures=outcome["figures"], checks=outcome["checks"])
        if outcome["plan"] is not None:
            entry["plan"] = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(outcome["plan"]).items()}
        if outcome["bench"] is not None:
            entry["sizes"] = outcome["bench"].sizes()
            entry["repeats"] = outcome["plan"].repeats
    entry["runtime_s"] = round(time.perf_counter() - started, 1)
    entry["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--sections", default=None,
                        help=f"comma-separated, in this order: {','.join(SECTIONS)} (default on the CPU: "
                             f"{','.join(CPU_SECTIONS)}; on a GPU: all)")
    parser.add_argument("--comfyui", type=Path, default=None,
                        help="a ComfyUI checkout, for end-to-end FPS (its Wan VAE) and the lowvram section; this "
                             "python must run ComfyUI")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--decode-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    default = CPU_SECTIONS if args.device == "cpu" else SECTIONS
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else list(default)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.decode_child:
        decode_child(json.loads(args.decode_child), args.out)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device cuda: this torch ({torch.__version__}) sees no CUDA device")
    if args.comfyui is not None:
        check_comfyui(args.comfyui)
    elif any(s in NEEDS_COMFYUI for s in args.sections):
        raise SystemExit(f"--sections {','.join(s for s in args.sections if s in NEEDS_COMFYUI)} runs through "
                         "ComfyUI: add --comfyui DIR (and run this with ComfyUI's python)")
    if args.device == "cpu":
        torch.set_num_threads(1)  # stable timings on a shared machine; stated in the results
    ctx = Context(args, torch.device(args.device))
    results = load_results(args.out, args.device)
    failed, broken = [], []
    for name in args.sections:
        log(f"section {name}")
        entry = run_section(name, ctx)
        results["sections"][name] = entry
        md_path = save_results(results, args.out)  # after every section: an overrun keeps what was measured
        for check, ok in entry["checks"].items():
            print(f"{verdict(ok)} {check}")
            failed += [check] if not ok else []
        broken += [name] if "error" in entry else []
        log(f"section {name} done in {entry['runtime_s']} s; {md_path} updated")
    print(md_path.read_text())
    if broken:
        print(f"sections that did not finish: {', '.join(broken)}", file=sys.stderr)
        return 2
    if failed:
        print(f"failed checks: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
