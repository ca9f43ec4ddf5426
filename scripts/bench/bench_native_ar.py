#!/usr/bin/env python3
"""Side by side on the CPU: this pack's KV-cache sampler and ComfyUI's native autoregressive path.

ComfyUI (since 0.2x) runs Self-Forcing / Causal Forcing checkpoints with `CausalWanModel`
(comfy/ldm/wan/ar_model.py) and the `ar_video` sampler (`sample_ar_video` in
comfy/k_diffusion/sampling.py, chosen by the SamplerARVideo node). Its KV cache holds every latent
frame of the video; ours holds the references plus a fixed window. This script measures both on
the same tiny weights (one safetensors file both load), in float32 on one CPU thread:

1. per-chunk wall / process-CPU time against the chunk index over a 41-chunk video (chunk 40 is
   not the last), configurations interleaved (A B C, then C B A), each run in a process of its own
   forked from the warmed-up one, medians over repeats;
2. peak memory (process RSS high-water mark, VmHWM) for 10 and 40 chunks, each run in a fresh
   process, and the growth of RSS during sampling;
3. the KV cache bytes each allocates (read from the tensors each one builds), and the same
   allocation at full size (Wan2.1-1.3B, 480x832, bf16), ComfyUI's by its own `init_kv_caches` on
   the meta device.

Ours runs with the LongLive preset (window 12, sink 3: the acceptance figures) and with the
Self-Forcing / Causal Forcing preset (global over 21 latent frames, then a rolling 21-frame window:
the settings of the checkpoints the native path is for). The native path gets the same four
warped steps (sigmas 1, 0.9375, 0.8333, 0.625, then its clean pass at 0) through ComfyUI's own
`comfy.sample.sample_custom`, as the SamplerCustom node would, with cfg 1 (no negative pass). Its
model is ComfyUI's pick for a file whose metadata says `{"transformer": {"causal_ar": true}}`
(plus the tiny preset's `text_dim` and `freq_dim`, which its detector does not read from weights).

Run it with ComfyUI's python (it imports `comfy`); nothing is written into the ComfyUI checkout
(a temporary --base-directory; set PYTHONDONTWRITEBYTECODE=1 for a read-only checkout):

    PYTHONDONTWRITEBYTECODE=1 /opt/comfy-venv/bin/python scripts/bench/bench_native_ar.py \\
        --comfyui /path/to/ComfyUI-0.33.0        # ~10 min on 2 shared cores
        -> bench/results-native-ar-cpu.json, .md, and its section in bench/results-cpu.md
    ... scripts/bench/bench_native_ar.py --quick --out /tmp/bench   # smoke run, 32x32, a few chunks

Helpers (machine probes, RSS, statistics, fresh processes, the timed run of our sampler) come from
scripts/bench/bench.py. It exits 0 whatever the figures and prints PASS/FAIL for our acceptance checks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

import bench_common as common  # first: it puts the repository root and scripts/ on sys.path
from vace_core.cache import kv_cache_bytes
from vace_core.checkpoints import load_longlive
from vace_core.config import architecture
from vace_core.latents import latent_frames_for, video_frames_for
from vace_core.presets import resolve_settings
from vace_core.plan import SamplerSettings, cache_layout, tokens_per_frame
from vace_core.sampler import generate

TINY = "tiny"  # the pack's tiny preset without VACE (the native path has none)
OURS = {"ours": "LongLive", "ours_w21": "Self-Forcing"}  # configuration -> preset
CONFIGS = (*OURS, "native")
LABELS = {"ours": "this pack, LongLive preset (window 12, sink 3)",
          "ours_w21": "this pack, Self-Forcing preset (window 21, no sink)",
          "native": "ComfyUI native AR (cache = whole video)"}
FULL_SIZE_VIDEO_FRAMES = (81, 481, 3841)  # 5 s, 30 s, 240 s at 16 fps
SECTION = "native-ar"


@dataclass(frozen=True)
class Plan:
    height: int
    width: int
    chunks: int  # per timing run; one more than `late`, whose chunk then is not the last
    early: int  # LongLive's window is full from chunk 4
    steady: int  # the 21-frame window is full from chunk 7
    late: int
    memory_chunks: tuple[int, int]
    repeats: int


PLANS = {"cpu": Plan(128, 128, 41, 5, 10, 40, (10, 40), 5),
         "quick": Plan(32, 32, 6, 2, 3, 5, (2, 5), 1)}


# ---- ComfyUI -----------------------------------------------------------------------------------

def import_comfy(comfy_dir: Path, base_dir: Path) -> SimpleNamespace:
    """ComfyUI's sampling and AR model modules (common.import_comfy), refusing a ComfyUI without them."""
    if not (comfy_dir / "comfy" / "ldm" / "wan" / "ar_model.py").is_file():
        raise SystemExit(f"{comfy_dir} has no native AR path (comfy/ldm/wan/ar_model.py): give a ComfyUI "
                         "0.2x or newer, e.g. 0.33.0, with --comfyui or COMFYUI_DIR")
    return common.import_comfy(comfy_dir, base_dir, sd="comfy.sd", sample="comfy.sample",
                              samplers="comfy.samplers", ar_model="comfy.ldm.wan.ar_model")


def write_weights(model: torch.nn.Module, path: Path) -> Path:
    """Our tiny model's state dict (original Wan key names) with the metadata that makes ComfyUI
    load it as its causal AR model."""
    config = model.config
    transformer = {"causal_ar": True, "text_dim": config.text_dim, "freq_dim": config.freq_dim}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"config": json.dumps({"transformer": transformer})})
    return path


class Native:
    """ComfyUI's causal Wan model loaded from the weights file, sampled with its `ar_video` sampler;
    each finished chunk (its clean pass at sigma 0) calls `on_chunk`, each cache allocation is noted."""

    def __init__(self, comfy: SimpleNamespace, weights: Path, text: torch.Tensor, sigmas: list[float]) -> None:
        self.comfy = comfy
        self.patcher = comfy.sd.load_diffusion_model(str(weights))
        self.model = self.patcher.model.diffusion_model
        if not isinstance(self.model, comfy.ar_model.CausalWanModel):
            raise RuntimeError(f"ComfyUI loaded {type(self.model).__name__}, not its CausalWanModel")
        self.positive = [[text, {}]]
        self.negative = [[torch.zeros_like(text), {}]]  # unused at cfg 1
        self.sigmas = torch.tensor(sigmas + [0.0])
        self.sampler = comfy.samplers.ksampler("ar_video", {"num_frame_per_block": 3})
        self.on_chunk = None
        self.cache_bytes: list[int] = []
        forward_block, init_kv_caches = self.model.forward_block, self.model.init_kv_caches

        def noting_forward_block(x, timestep, *args, **kwargs):
            out = forward_block(x, timestep, *args, **kwargs)
            if self.on_chunk is not None and not timestep.any():  # the clean pass ends a chunk
                self.on_chunk()
            return out

        def noting_init_kv_caches(*args, **kwargs):
            caches = init_kv_caches(*args, **kwargs)
            self.cache_bytes.append(sum(c["k"].nbytes + c["v"].nbytes for c in caches))
            return caches

        self.model.forward_block, self.model.init_kv_caches = noting_forward_block, noting_init_kv_caches

    def sample(self, chunks: int, plan: Plan) -> torch.Tensor:
        shape = (1, 16, 3 * chunks, plan.height // 8, plan.width // 8)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        return self.comfy.sample.sample_custom(self.patcher, noise, 1.0, self.sampler, self.sigmas, self.positive,
                                               self.negative, torch.zeros(shape), seed=0, disable_pbar=True)


# ---- timing ------------------------------------------------------------------------------------

def timed_native(native: Native, chunks: int, plan: Plan) -> common.RunTimes:
    wall: list[float] = []
    cpu: list[float] = []
    start = time.perf_counter()
    last = [start, time.process_time()]

    def chunk_done() -> None:
        now_wall, now_cpu = time.perf_counter(), time.process_time()
        wall.append(now_wall - last[0])
        cpu.append(now_cpu - last[1])
        last[:] = [now_wall, now_cpu]

    native.on_chunk = chunk_done
    try:
        native.sample(chunks, plan)
    finally:
        native.on_chunk = None
    return common.RunTimes(wall, cpu, wall[0], time.perf_counter() - start, video_frames_for(3 * chunks))


def run_timings(ours: common.Bench, native: Native, plan: Plan) -> dict[str, list[common.RunTimes]]:
    """Every timed run in its own process forked from this one (the models built and warmed up), one
    at a time in interleaved order, so no run inherits the allocator state of the one before (the
    native path allocates and frees a whole-video cache)."""
    settings = {name: resolve_settings(p) for name, p in OURS.items()}

    def once(name: str, chunks: int) -> common.RunTimes:
        if name == "native":
            return timed_native(native, chunks, plan)
        return common.timed_generate(ours, chunks, settings[name], vace=False)

    def timed_child(device: torch.device, spec: dict) -> dict:
        times = once(spec["config"], plan.chunks)
        common.log(f"repeat {spec['repeat'] + 1}/{plan.repeats} {spec['config']}: {times.total_wall:.1f} s")
        return asdict(times)

    for name in CONFIGS:  # warm-up: allocator, kernels, ComfyUI's first model load
        once(name, 2)
    specs = [{"config": name, "repeat": repeat} for repeat in range(plan.repeats)
             for name in (CONFIGS if repeat % 2 == 0 else tuple(reversed(CONFIGS)))]  # A B C .. C B A
    reports = common.fresh_process_reports(timed_child, specs, torch.device("cpu"), parallel=1)
    results: dict[str, list[common.RunTimes]] = {name: [] for name in CONFIGS}
    for spec, report in zip(specs, reports):
        results[spec["config"]].append(common.RunTimes(**report))
    return results


BAND = 3  # chunks averaged on each side for the less noisy band ratio


def timing_figures(curves: dict, plan: Plan) -> dict:
    """Ratios of single chunks (the acceptance figure) and of bands of BAND chunks ending at `late`
    and starting at `early`, which average out some of a shared machine's load changes."""
    figures = {}
    for name in CONFIGS:
        for series in common.SERIES:
            curve = curves[name][f"{series}_s"]
            figures[f"{name}_late_over_early_{series}"] = round(common.ratio(curve, plan.late, plan.early), 4)
            figures[f"{name}_late_over_steady_{series}"] = round(common.ratio(curve, plan.late, plan.steady), 4)
            late_band = statistics.mean(curve[plan.late - BAND:plan.late])
            early_band = statistics.mean(curve[plan.early - 1:plan.early - 1 + BAND])
            figures[f"{name}_late_band_over_early_band_{series}"] = round(late_band / early_band, 4)
        for clock in ("wall", "cpu"):
            figures[f"{name}_late_over_ours_late_{clock}"] = round(
                curves[name][f"{clock}_s"][plan.late - 1] / curves["ours"][f"{clock}_s"][plan.late - 1], 4)
    return figures


# ---- memory: one fresh process per configuration and length ------------------------------------

def child_peak(shared: SimpleNamespace, device: torch.device, spec: dict) -> dict:
    """Runs in a fresh process: load the weights file, sample once, report RSS and cache bytes."""
    plan, chunks = shared.plan, spec["chunks"]
    if spec["config"] == "native":
        native = Native(shared.comfy, shared.weights, shared.text, shared.sigmas)
        before = common.rss_now_mib()
        native.sample(chunks, plan)
        cache_bytes = native.cache_bytes[-1]
    else:
        model = load_longlive(shared.weights, dtype="fp32")
        before = common.rss_now_mib()
        result = generate(model, shared.text, video_frames=video_frames_for(3 * chunks), height=plan.height,
                          width=plan.width, seed=0, settings=resolve_settings(OURS[spec["config"]]))
        cache_bytes = result.cache_bytes
    return dict(spec, rss_before_mib=before, rss_peak_mib=round(common.rss_peak_mib(), 2), kv_cache_bytes=cache_bytes)


def run_memory(shared: SimpleNamespace) -> list[dict]:
    specs = [{"config": name, "chunks": chunks} for name in CONFIGS for chunks in shared.plan.memory_chunks]
    return common.fresh_process_reports(lambda device, spec: child_peak(shared, device, spec), specs,
                                       torch.device("cpu"))


def memory_figures(reports: list[dict], plan: Plan) -> dict:
    short, long = plan.memory_chunks
    figures = {}
    for name in CONFIGS:
        runs = {r["chunks"]: r for r in reports if r["config"] == name}
        figures[f"{name}_peak_long_over_short"] = round(runs[long]["rss_peak_mib"] / runs[short]["rss_peak_mib"], 4)
        figures[f"{name}_growth_mib"] = [round(runs[n]["rss_peak_mib"] - runs[n]["rss_before_mib"], 1)
                                         for n in (short, long)]
        figures[f"{name}_kv_cache_bytes"] = [runs[n]["kv_cache_bytes"] for n in (short, long)]
    return figures


# ---- full-size cache bytes ---------------------------------------------------------------------

def full_size_cache_bytes(comfy: SimpleNamespace) -> list[dict]:
    """KV cache bytes at full size for some video lengths: ours by the formula the sampler sizes its
    cache with (`kv_cache_bytes`); ComfyUI's from its own `init_kv_caches` on the meta device (shapes,
    no memory), sized as `sample_ar_video` sizes it: latent frames x tokens per frame."""
    config = architecture("wan2.1-1.3B")
    tokens = tokens_per_frame(480, 832)
    shape = SimpleNamespace(num_layers=config.num_layers, num_heads=config.num_heads, head_dim=config.head_dim)
    rows = []
    for video_frames in FULL_SIZE_VIDEO_FRAMES:
        latent_frames = latent_frames_for(video_frames)
        caches = comfy.ar_model.CausalWanModel.init_kv_caches(shape, 1, latent_frames * tokens, "meta",
                                                              torch.bfloat16)
        row = {"video_frames": video_frames, "latent_frames": latent_frames,
               "native_bytes": sum(c["k"].nbytes + c["v"].nbytes for c in caches)}
        for name, preset_name in OURS.items():
            layout = cache_layout(resolve_settings(preset_name), 0, 480, 832)
            row[f"{name}_bytes"] = kv_cache_bytes(num_layers=config.num_layers, dim=config.dim,
                                                  tokens_per_frame=tokens, capacity_frames=layout.capacity_frames,
                                                  element_size=2)
        rows.append(row)
    return rows


# ---- one pass on the same input: the two models are the same network ---------------------------

@torch.no_grad()
def first_pass_difference(ours: common.Bench, native: Native, plan: Plan) -> float:
    """Max |ComfyUI - ours| of the flow for the first chunk at t = 1000 (no earlier frames)."""
    x = torch.randn(1, 16, 3, plan.height // 8, plan.width // 8, generator=torch.Generator().manual_seed(5))
    tokens = 3 * tokens_per_frame(plan.height, plan.width)
    model = native.model
    theirs = model.forward_block(x, torch.full((1, 3), 1000.0), ours.text, 0,
                                 model.init_kv_caches(1, tokens, "cpu", torch.float32),
                                 model.init_crossattn_caches(1, "cpu", torch.float32))
    mine = ours.model.forward_block(x, 1000.0, ours.model.encode_text(ours.text), 0)
    native.cache_bytes.clear()
    return (theirs.double() - mine.double()).abs().max().item()


# ---- report -------------------------------------------------------------------------------------

def checks(timing: dict, memory: dict) -> dict:
    # flat by both clocks: on a shared machine other processes' load moves wall time between
    # chunks, process CPU time much less
    return {"ours_flat_time": max(timing["ours_late_over_early_wall"],
                                  timing["ours_late_over_early_cpu"]) <= common.FLAT_LIMIT,
            "ours_flat_memory": memory["ours_peak_long_over_short"] <= common.MEMORY_LIMIT}


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def markdown(result: dict) -> str:
    m, p, t, mem, ok = result["machine"], result["plan"], result["timing"], result["memory"], result["checks"]
    early, steady, late = p["early"], p["steady"], p["late"]
    short, long = p["memory_chunks"]
    lines = [
        f"## Side by side with ComfyUI's native AR nodes (ComfyUI {result['comfyui']}, cpu"
        f"{', quick' if result['quick'] else ''})",
        "",
        (f"Machine: {m['cpu']} ({m['cpu_count']} cores, shared: load average {result['load_average'][0]:.1f} "
         f"at the start, {result['load_average'][1]:.1f} at the end); torch {m['torch']}, "
         f"{m['torch_threads']} thread; "
         f"float32; the same tiny weights (`{TINY}` preset, {result['params_m']} M params, one safetensors file) "
         f"at {p['width']}x{p['height']} ({result['tokens_per_frame']} tokens/frame); chunk 3, 4 warped steps "
         f"+ the clean pass; {p['chunks']} chunks per run, {p['repeats']} repeat(s) interleaved, each run in a "
         f"process of its own forked from the warmed-up one, medians. "
         f"Native = `comfy.sample.sample_custom` with the `ar_video` sampler (SamplerARVideo, 3 frames per "
         f"block) on the `CausalWanModel` ComfyUI loads for `causal_ar` metadata. Written by "
         f"`scripts/bench/bench_native_ar.py` in {result['runtime_s']:.0f} s."),
        "",
        (f"| path | chunk {late} / chunk {early}: wall | wall min | cpu | cpu min | chunks {late - BAND + 1}-{late} "
         f"/ {early}-{early + BAND - 1}: wall, cpu | chunk {late} / chunk {steady}: wall, cpu | chunk {late} cpu "
         f"time / ours | peak RSS {long} / {short} chunks | RSS growth while sampling {short} → {long} chunks | "
         f"KV cache {short} → {long} chunks |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in CONFIGS:
        growth = mem[f"{name}_growth_mib"]
        kv = mem[f"{name}_kv_cache_bytes"]
        early_ratios = " | ".join(f"{t[f'{name}_late_over_early_{series}']:.3f}" for series in common.SERIES)
        lines.append(
            f"| {LABELS[name]} | {early_ratios} | {t[f'{name}_late_band_over_early_band_wall']:.3f}, "
            f"{t[f'{name}_late_band_over_early_band_cpu']:.3f} | {t[f'{name}_late_over_steady_wall']:.3f}, "
            f"{t[f'{name}_late_over_steady_cpu']:.3f} | {t[f'{name}_late_over_ours_late_cpu']:.2f} | "
            f"{mem[f'{name}_peak_long_over_short']:.4f} | {growth[0]:.1f} → {growth[1]:.1f} MiB | "
            f"{mib(kv[0])} → {mib(kv[1])} |")
    lines += [
        "",
        (f"Checks (ours, LongLive preset): chunk {late} / {early} <= {common.FLAT_LIMIT} (wall and cpu medians): "
         f"{common.verdict(ok['ours_flat_time'])}; peak memory {long} / {short} chunks <= {common.MEMORY_LIMIT}: "
         f"{common.verdict(ok['ours_flat_memory'])}. The native figures are as measured (no target). One pass "
         f"of both models on the same input differs by {result['first_pass_max_abs_diff']:.1e}: the same "
         "network (float32 rounding)."),
        "",
        f"Per-chunk time (median; wall / process CPU) relative to ours (LongLive preset) at chunk {early}:",
        "",
        "| chunk | " + " | ".join(str(i) for i in result["curve_points"]) + " |",
        "|---|" + "---|" * len(result["curve_points"]),
    ]
    for name in CONFIGS:
        cells = []
        for i in result["curve_points"]:
            wall, cpu = (result["per_chunk"][name][f"{clock}_s"][i - 1]
                         / result["per_chunk"]["ours"][f"{clock}_s"][early - 1] for clock in ("wall", "cpu"))
            cells.append(f"{wall:.2f} / {cpu:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "KV cache at full size (Wan2.1-1.3B, 480x832 = 1560 tokens/frame, bf16, no references):", "",
              "| video frames (latent) | ComfyUI native | ours, LongLive preset | ours, Self-Forcing preset |",
              "|---|---|---|---|"]
    for row in result["full_size_cache"]:
        lines.append(f"| {row['video_frames']} ({row['latent_frames']}) | {gib(row['native_bytes'])} | "
                     f"{gib(row['ours_bytes'])} | {gib(row['ours_w21_bytes'])} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict:
    plan = PLANS["quick" if args.quick else "cpu"]
    if args.repeats:
        plan = replace(plan, repeats=args.repeats)
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    base_dir = Path(tempfile.mkdtemp(prefix="bench_native_ar_"))
    try:
        comfy = import_comfy(args.comfyui, base_dir)
        ours = common.Bench(replace(common.PLANS["cpu"], preset=TINY, height=plan.height, width=plan.width,
                                   dtype="float32"), torch.device("cpu"))
        weights = write_weights(ours.model, base_dir / "tiny_causal_wan.safetensors")
        sigmas = resolve_settings("Self-Forcing").schedule.sigmas.tolist()
        assert sigmas == SamplerSettings().schedule.sigmas.tolist()  # one schedule for all three
        shared = SimpleNamespace(plan=plan, comfy=comfy, weights=weights, text=ours.text, sigmas=sigmas)
        common.log(f"memory: {len(CONFIGS) * 2} runs, one new process each")
        memory_runs = run_memory(shared)  # forked before this process builds the native model
        native = Native(comfy, weights, ours.text, sigmas)
        difference = first_pass_difference(ours, native, plan)
        common.log(f"first pass, ComfyUI vs ours: max abs diff {difference:.1e}; timing runs (interleaved)")
        timings = run_timings(ours, native, plan)
        curves = {name: common.curve_summary(runs) for name, runs in timings.items()}
        timing, memory = timing_figures(curves, plan), memory_figures(memory_runs, plan)
        result = {
            "device": "cpu", "quick": args.quick, "comfyui": comfy.version, "machine": common.machine_info(
                torch.device("cpu")), "plan": asdict(plan),
            "params_m": round(sum(p.numel() for p in ours.model.parameters()) / 1e6, 2),
            "tokens_per_frame": tokens_per_frame(plan.height, plan.width), "sigmas": sigmas,
            "first_pass_max_abs_diff": difference, "timing": timing, "memory": memory,
            "memory_runs": memory_runs, "per_chunk": curves,
            "curve_points": sorted({i for i in (1, 2, plan.early, plan.steady, 20, 30, plan.late)
                                    if i < plan.chunks}),
            "full_size_cache": full_size_cache_bytes(comfy),
        }
        result["checks"] = checks(timing, memory)
        result["load_average"] = [load_at_start, os.getloadavg()[0]]
        result["runtime_s"] = round(time.perf_counter() - started, 1)
        return result
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


def write_results(result: dict, out: Path, section: Path | None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"results-native-ar-cpu{'-quick' if result['quick'] else ''}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    md_path.write_text(text)
    written = [json_path, md_path]
    if section is not None:
        common.write_section(section, SECTION, text)
        written.append(section)
    return written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, default=common.default_comfyui("comfy/ldm/wan/ar_model.py"),
                        help="ComfyUI checkout with the native AR nodes (default: the first such in $COMFYUI_DIR, "
                             "else /opt/ComfyUI)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 32x32, a few chunks, one repeat")
    parser.add_argument("--repeats", type=int, default=0, help="override the plan's repeat count")
    parser.add_argument("--out", type=Path, default=common.ROOT / "bench")
    parser.add_argument("--section", type=Path, default=None,
                        help="results file to put this section into (default: OUT/results-cpu.md; "
                             "none with --quick)")
    args = parser.parse_args(argv)
    if args.section is None and not args.quick:
        args.section = args.out / "results-cpu.md"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # stable timings on a shared machine; stated in the results
    result = run(args)
    written = write_results(result, args.out, args.section)
    print(markdown(result))
    for name, ok in result["checks"].items():
        print(f"{common.verdict(ok)} {name}")
    print(f"wrote {', '.join(map(str, written))} in {result['runtime_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
