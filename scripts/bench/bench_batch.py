#!/usr/bin/env python3
"""A batch of videos in one run (issue 25, docs/batches.md): what a video costs at batch 1, 2 and 4.

On the CPU (this script's run), float32 on one torch thread, the tiny model at 128x128:
1. time per video at B = 1, 2 and 4, T2V and R2V, the batch sizes interleaved in every round (a
   shared machine slows neighbouring runs alike): the median over rounds of a run's wall time / B,
   and its ratio to B = 1. Expect about 1 on a CPU: its matrix kernels are busy at one video already;
   the gain of a batch is a GPU's, whose kernels a single 1.3B-model chunk leaves partly idle;
2. memory per extra video: the KV cache bytes the runs allocated (measured, `SampleResult.cache_bytes`),
   and the estimate the memory request uses (vace_core/memory.py: caches + activations per video,
   the prompt's K/V once), here and for the released model at 480x832 in bf16.

On a GPU, `device_figures` (the device plan's batch section calls it) measures the released
architecture with random weights at 480x832 in bf16: per batch size and kind (T2V, R2V with one
reference) the wall time of an 81-frame video (7 chunks) after a warm-up run of the same shape,
videos per hour, steady FPS per video and in all, and the peak VRAM (torch.cuda.max_memory_allocated)
against the weights + the estimate. Its figures go to `write` after every measurement, so a run cut
short keeps them.

    python3 scripts/bench/bench_batch.py                       # CPU -> bench/results-batch-cpu.{json,md}
    python3 scripts/bench/bench_batch.py --quick --out /tmp/b  # the smoke run (32x32, 2 rounds)
    python3 scripts/bench/bench_batch.py --device cuda         # the GPU figures alone -> bench/results-batch-cuda.*
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

import bench_common as common  # first: it puts the repository root and scripts/ on sys.path
from vace_core.config import architecture
from vace_core.latents import video_frames_for
from vace_core.memory import RunMemory, run_cache_bytes, run_memory
from vace_core.plan import SamplerSettings
from vace_core.sampler import generate

ROOT = Path(__file__).resolve().parents[2]
BATCHES = (1, 2, 4)
KINDS = ("t2v", "r2v")
GPU_CHUNKS = 7  # 21 latent frames = 81 video frames, LongLive's 5 s clip
# per CPU plan: (chunks, rounds); at 5 chunks the window (12 frames) is full from chunk 4 on
CPU_RUNS = {"cpu": (5, 5), "quick": (2, 1)}
RELEASED = "wan2.1-vace-1.3B"
GPU_SIZE = (480, 832)


def run_once(bench: common.Bench, kind: str, batch: int, chunks: int) -> tuple[float, int, bool]:
    """(wall seconds, cache bytes, latents finite) of one run of `chunks` chunks for `batch` videos."""
    latent_frames = chunks * bench.settings.chunk_frames
    vace = bench.vace_context(latent_frames) if kind == "r2v" else None
    bench.sync()
    started = time.perf_counter()
    result = generate(bench.model, bench.text, video_frames=video_frames_for(latent_frames), height=bench.plan.height,
                      width=bench.plan.width, seed=0, vace=vace, settings=bench.settings, batch=batch)
    bench.sync()
    return time.perf_counter() - started, result.cache_bytes, bool(torch.isfinite(result.latents).all())


def memory_estimate(config_name: str, dtype: torch.dtype, height: int, width: int, kind: str,
                    settings: SamplerSettings) -> tuple[RunMemory, int]:
    """The memory request's estimate (per video, shared) for a run without prompt switches, and the
    cache bytes of one video in it."""
    run = dict(height=height, width=width, ref_frames=int(kind == "r2v"), settings=settings, uses_vace=kind == "r2v")
    config = architecture(config_name)
    return run_memory(config, dtype, **run, prompt_switches=False), run_cache_bytes(config, dtype, **run)


def estimate_figures(memory: RunMemory, cache_bytes: int) -> dict:
    return {"per_video_bytes": memory.per_video, "cache_bytes_per_video": cache_bytes,
            "shared_bytes": memory.shared, **{f"batch_{b}_bytes": memory.total(b) for b in BATCHES}}


def cpu_figures(plan_name: str) -> dict:
    """Time per video at every batch size, interleaved, and memory per extra video (module docstring)."""
    plan = common.PLANS[plan_name]
    bench = common.Bench(plan, torch.device("cpu"))
    chunks, rounds = CPU_RUNS[plan_name]
    figures: dict = {"plan": plan_name, "size": f"{plan.width}x{plan.height}", "model": plan.preset,
                     "chunks": chunks, "rounds": rounds, "threads": torch.get_num_threads(), "kinds": {}}
    for kind in KINDS:
        for batch in BATCHES:  # warm-up: every shape once
            run_once(bench, kind, batch, chunks)
        seconds: dict[int, list[float]] = {b: [] for b in BATCHES}
        caches, finite = {}, True
        for index in range(rounds):
            for batch in BATCHES if index % 2 == 0 else BATCHES[::-1]:  # alternate the order too
                wall, caches[batch], ok = run_once(bench, kind, batch, chunks)
                seconds[batch].append(wall)
                finite = finite and ok
        per_video = {b: statistics.median(seconds[b]) / b for b in BATCHES}
        here = memory_estimate(plan.preset, bench.dtype, plan.height, plan.width, kind, bench.settings)
        released = memory_estimate(RELEASED, torch.bfloat16, *GPU_SIZE, kind, bench.settings)
        figures["kinds"][kind] = {
            "seconds_per_video": {str(b): round(per_video[b], 4) for b in BATCHES},
            "ratio_to_batch_1": {str(b): round(per_video[b] / per_video[1], 3) for b in BATCHES},
            "cache_bytes_measured": {str(b): caches[b] for b in BATCHES},
            "cache_bytes_per_extra_video": (caches[BATCHES[-1]] - caches[1]) // (BATCHES[-1] - 1),
            "estimate": estimate_figures(*here),
            "estimate_480x832_bf16": estimate_figures(*released),
            "finite": finite}
        common.log(f"{kind}: seconds per video {figures['kinds'][kind]['seconds_per_video']}, "
                   f"ratio {figures['kinds'][kind]['ratio_to_batch_1']}")
    return figures


def device_figures(device: torch.device, write: Callable[[dict], None] | None = None, *,
                   batches: tuple[int, ...] = BATCHES, kinds: tuple[str, ...] = KINDS,
                   plan: common.Plan | None = None, chunks: int = GPU_CHUNKS,
                   bench: common.Bench | None = None) -> dict:
    """The GPU figures of the device plan: per kind and batch size, an 81-frame video's wall time
    (after a warm-up run of the same shape), videos per hour, FPS per video and in all, peak VRAM
    against the weights plus the memory request's estimate. `write(figures)` after each one.
    `bench`: the model to run when the caller has built one (the plan's; `plan` is then its plan),
    else one of `plan` is built."""
    bench = bench or common.Bench(plan or common.PLANS["cuda"], device)
    plan = bench.plan
    weights = sum(p.numel() * p.element_size() for p in bench.model.parameters())
    video_frames = video_frames_for(chunks * bench.settings.chunk_frames)
    figures: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
                     "model": plan.preset, "size": f"{plan.width}x{plan.height}", "dtype": plan.dtype,
                     "chunks": chunks, "video_frames": video_frames, "weights_bytes": weights, "runs": {}}
    for kind in kinds:
        estimate, _ = memory_estimate(plan.preset, bench.dtype, plan.height, plan.width, kind, bench.settings)
        for batch in batches:
            run_once(bench, kind, batch, chunks)  # warm-up: kernels chosen, allocator grown
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, cache_bytes, finite = run_once(bench, kind, batch, chunks)
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
            figures["runs"][f"{kind}_batch_{batch}"] = {
                "seconds": round(seconds, 3), "seconds_per_video": round(seconds / batch, 3),
                "videos_per_hour": round(3600 * batch / seconds, 1),
                "fps_per_video": round(video_frames / seconds, 2), "fps_total": round(batch * video_frames / seconds, 2),
                "peak_bytes": peak, "cache_bytes": cache_bytes,
                "estimate_bytes": weights + estimate.total(batch),
                "finite": finite}
            common.log(f"{kind} batch {batch}: {figures['runs'][f'{kind}_batch_{batch}']}")
            if write is not None:
                write(figures)
    return figures


def markdown(cpu: dict | None, gpu: dict | None) -> str:
    lines = ["# A batch of videos in one run", "",
             "Measured by scripts/bench/bench_batch.py (docs/batches.md). Estimates are vace_core/memory.py's, the memory "
             "request the nodes make.", ""]
    if cpu is not None:
        lines += [f"## CPU: {cpu['model']} at {cpu['size']}, float32, {cpu['threads']} thread(s), {cpu['chunks']} "
                  f"chunks, medians of {cpu['rounds']} interleaved rounds", "",
                  "| kind | s per video B=1 / 2 / 4 | ratio to B=1: B=2 / 4 | KV cache bytes per extra video: "
                  "measured / estimate | per extra video at 480x832 bf16 (estimate): caches / caches + activations |",
                  "|---|---|---|---|---|"]
        for kind, k in cpu["kinds"].items():
            s, r, big = k["seconds_per_video"], k["ratio_to_batch_1"], k["estimate_480x832_bf16"]
            lines.append(f"| {kind} | {s['1']} / {s['2']} / {s['4']} | {r['2']} / {r['4']} | "
                         f"{k['cache_bytes_per_extra_video']} / {k['estimate']['cache_bytes_per_video']} | "
                         f"{big['cache_bytes_per_video'] / 2**30:.2f} / {big['per_video_bytes'] / 2**30:.2f} GiB |")
        lines.append("")
    if gpu is not None:
        lines += [f"## {device_title(gpu)}", "", *device_table(gpu), ""]
    return "\n".join(lines)


def device_title(gpu: dict) -> str:
    """What `device_figures` measured: the device, the model, the size and the videos."""
    return (f"{gpu['device']}: {gpu['model']} (random weights) at {gpu['size']}, {gpu['dtype']}, "
            f"{gpu['video_frames']}-frame videos")


def device_table(gpu: dict) -> list[str]:
    """`device_figures`' runs as a markdown table (also the device plan's batch section)."""
    lines = ["| run | s per video | videos per hour | FPS per video / in all | peak VRAM | weights + estimate |",
             "|---|---|---|---|---|---|"]
    for name, run in gpu["runs"].items():
        peak = "n/a" if run["peak_bytes"] is None else f"{run['peak_bytes'] / 2**30:.2f} GiB"
        lines.append(f"| {name} | {run['seconds_per_video']} | {run['videos_per_hour']} | {run['fps_per_video']} / "
                     f"{run['fps_total']} | {peak} | {run['estimate_bytes'] / 2**30:.2f} GiB |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (the interleaved CPU figures) or cuda (the GPU figures)")
    parser.add_argument("--quick", action="store_true", help="the smoke run: tiny sizes, two rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.device == "cpu":
        torch.set_num_threads(1)  # the tiny model is dominated by per-op overhead, which threads only add to
    name = f"results-batch-{args.device}{'-quick' if args.quick else ''}"
    result: dict = {"machine": common.machine_info(torch.device(args.device))}

    def write(figures: dict | None = None) -> None:
        if figures is not None:
            result["gpu"] = figures
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / f"{name}.md").write_text(markdown(result.get("cpu"), result.get("gpu")))

    with torch.inference_mode():
        if args.device == "cpu":
            result["cpu"] = cpu_figures("quick" if args.quick else "cpu")
            write()
        else:
            device_figures(torch.device(args.device), write,
                           plan=common.PLANS["quick"] if args.quick else None, chunks=2 if args.quick else GPU_CHUNKS)
    finite = all(k["finite"] for k in result.get("cpu", {}).get("kinds", {}).values()) and \
        all(r["finite"] for r in result.get("gpu", {}).get("runs", {}).values())
    common.log(f"wrote {args.out / name}.json and .md")
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main())
