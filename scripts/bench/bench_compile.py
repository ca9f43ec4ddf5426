#!/usr/bin/env python3
"""A warm compiled chunk against an eager chunk (issue 16): torch.compile of the blocks' parts
(vace_core.compiled, the loader's `compile` choice) as the sampler runs them.

One model with random weights (timing does not depend on their values) and one R2V configuration,
LongLive's: chunk 3, window 12, sink 3, 4 steps, one reference. First a compiled run that compiles
(its first full chunk's time is reported as the compile cost), then runs alternating eager and
compiled (E C, C E, ...), each timing its chunks between `on_chunk` callbacks (4 denoising passes
plus the clean pass). Steady chunks: from the second chunk to the one before the last (which has no
clean pass). The figure is median compiled chunk / median eager chunk, from the same interleaved
runs; on a CPU read it as that ratio only (absolute times are the shared machine's).

Usage (from the repository root):
    python3 scripts/bench/bench_compile.py                 # CPU: tiny-vace, 128x128, float32, inductor (~2 min)
        -> bench/results-compile-cpu.json and a section in bench/results-cpu.md
    python3 scripts/bench/bench_compile.py --device cuda   # GPU: wan2.1-vace-1.3B, 480x832, bf16
        -> bench/results-compile-cuda.json and a section in bench/results-cuda.md
    python3 scripts/bench/bench_compile.py --backend aot_eager --repeats 1 --out /tmp/b   # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import bench_common as common  # first: it puts the repository root and scripts/ on sys.path
from vace_core.compiled import BlockCompiler
from vace_core.config import architecture
from vace_core.latents import video_frames_for
from vace_core.model import CausalWanModel
from vace_core.sampler import SamplerSettings, generate

SECTION = "compile"
DEFAULTS = {"cpu": ("tiny-vace", 128, 128, "float32"), "cuda": ("wan2.1-vace-1.3B", 480, 832, "bfloat16")}


def chunk_times(model: CausalWanModel, text: torch.Tensor, args: argparse.Namespace,
                device: torch.device) -> tuple[list[float], torch.Tensor]:
    """Seconds of every generated chunk of one R2V run (the reference block excluded), and its latents."""
    settings = SamplerSettings()
    latent_frames = settings.chunk_frames * args.chunks
    vace = common.random_vace_context(args.height, args.width, latent_frames)
    marks: list[float] = []

    def mark(info) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        marks.append(time.perf_counter())

    result = generate(model, text, video_frames=video_frames_for(latent_frames), height=args.height,
                      width=args.width, seed=0, vace=vace, settings=settings, on_chunk=mark)
    return [b - a for a, b in zip(marks, marks[1:])], result.latents


def measure(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    dtype = common.DTYPES[args.dtype]
    torch.manual_seed(0)
    with torch.device(device):
        model = CausalWanModel(architecture(args.preset)).set_dtype(dtype).eval()
    text = common.random_prompt(model.config)
    compiler = BlockCompiler(args.backend)

    model.compiler = compiler
    started = time.perf_counter()
    first, compiled_latents = chunk_times(model, text, args, device)
    first_run = time.perf_counter() - started
    model.compiler = None
    _, eager_latents = chunk_times(model, text, args, device)

    steady = slice(1, args.chunks - 1)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for repeat in range(args.repeats):
        for name in (("eager", "compiled") if repeat % 2 == 0 else ("compiled", "eager")):
            model.compiler = compiler if name == "compiled" else None
            times[name] += chunk_times(model, text, args, device)[0][steady]
    model.compiler = None
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {"section": SECTION, "machine": common.machine_info(device), "backend": compiler.backend,
            "preset": args.preset, "height": args.height, "width": args.width, "dtype": args.dtype,
            "chunks_per_run": args.chunks, "repeats": args.repeats, "steady_chunks_timed": len(times["eager"]),
            "compiled_shapes": [list(s) for s in compiler.shapes], "fallbacks": compiler.fallbacks,
            "first_compiled_run_s": round(first_run, 2), "first_compiled_chunk_s": round(first[0], 3),
            "median_chunk_s": {name: round(t, 5) for name, t in medians.items()},
            "min_chunk_s": {name: round(min(t), 5) for name, t in times.items()},
            "compiled_over_eager": round(medians["compiled"] / medians["eager"], 4),
            "max_abs_diff_compiled_vs_eager": float((compiled_latents - eager_latents).abs().max())}


def markdown(result: dict) -> str:
    m, s = result["machine"], result["median_chunk_s"]
    where = m["gpu"] or f"{m['cpu']} ({m['cpu_count']} cores), {m['torch_threads']} thread(s)"
    return "\n".join([
        f"## torch.compile ({result['backend']}) of the blocks: warm chunk time against eager", "",
        (f"Machine: {where}; torch {m['torch']}. {result['preset']} at {result['width']}x{result['height']}, "
         f"{result['dtype']}, R2V with LongLive's settings, {result['chunks_per_run']} chunks per run; "
         f"{result['steady_chunks_timed']} steady chunks per mode from {result['repeats']} interleaved repeats "
         "(`scripts/bench/bench_compile.py`)."), "",
        "| eager chunk s (median) | compiled chunk s (median) | compiled / eager | first compiled run s | "
        "max abs diff |", "|---|---|---|---|---|",
        (f"| {s['eager']:.4f} | {s['compiled']:.4f} | {result['compiled_over_eager']:.3f} | "
         f"{result['first_compiled_run_s']:.1f} | {result['max_abs_diff_compiled_vs_eager']:.1e} |"), "",
        f"Compiled shapes (frames, tokens, dtype, videos): {result['compiled_shapes']}; "
        f"fallbacks: {result['fallbacks'] or 'none'}.",
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--preset")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--dtype", choices=list(common.DTYPES))
    parser.add_argument("--chunks", type=int, default=6, help="generated chunks per run (>= 3)")
    parser.add_argument("--repeats", type=int, default=4, help="interleaved pairs of runs")
    parser.add_argument("--out", type=Path, default=common.ROOT / "bench")
    args = parser.parse_args(argv)
    if args.chunks < 3:
        parser.error("--chunks must be at least 3 (the first and last chunks are not timed)")
    for name, value in zip(("preset", "height", "width", "dtype"), DEFAULTS[args.device]):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.device == "cpu":
        torch.set_num_threads(1)
    result = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"results-compile-{args.device}.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    common.write_section(args.out / f"results-{args.device}.md", SECTION, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
