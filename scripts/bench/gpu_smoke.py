#!/usr/bin/env python3
"""A two-minute look at the GPU path: what to run first on a GPU, before the benchmark sections.

1. attention: each SDPA backend (flash, cuDNN, memory-efficient, math) and the pack's own kernels
   (vace_core.attention.SDPA: the backend priority it runs outside ComfyUI) on the steady-state
   self-attention of a chunk at 480x832 (q: 3 frames, k/v: the 12-frame window, 12 heads of 128,
   bf16) and on a cross-attention with the prompt's padding bias in q's dtype, against float32 math
   on the same inputs: error, time per call, TFLOP/s; a backend that refuses the inputs says why.
2. runs: 7-chunk T2V and R2V (one reference, VACE on every chunk) at 480x832 on full-size random
   weights (Wan2.1-VACE-1.3B, bf16): first-chunk latency, steady FPS (DiT only; chunks from the
   full window on, the last left out), peak VRAM, finite latents;
3. kernels: the attention kernels that ran in one steady chunk of each run (torch profiler);
4. syncs: the call sites that synchronised with the GPU during a steady chunk
   (torch.cuda.set_sync_debug_mode("warn"), captured with their stacks).

The figures are written to OUT/gpu-smoke-<device>.json and .md after every part, so a run cut
short keeps what it measured. It exits 1 when a check fails (attention within tolerance of
float32, finite latents, no math attention kernel in a steady chunk on a GPU).

    python scripts/bench/gpu_smoke.py                      # on a GPU: ~2 min -> bench/gpu-smoke-cuda.{json,md}
    python3 scripts/bench/gpu_smoke.py --smoke --out DIR   # CPU, tiny sizes (the CI test): the parts a CPU can run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import bench_common as common  # first: it puts the repository root and scripts/ on sys.path
from vace_core.attention import SDPA
from vace_core.encoding import VAE_STRIDE_T
from vace_core.plan import SamplerSettings, tokens_per_frame
from vace_core.sampler import ChunkInfo

ROOT = common.ROOT
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
PACK = "pack"  # the pack's own kernels, vace_core.attention.SDPA
# attention in bf16 against float32: bf16 inputs carry 2^-9 relative rounding, the softmax-weighted sums
# average it out (measured ~3e-3 relative RMS on the CPU); a kernel that reads a mask or scale wrongly
# is off by O(1)
ATTENTION_TOLERANCE = 2e-2
CHUNKS = 7
STEADY_FROM = 5  # the 12-frame window is full from chunk 4 on (chunk 3, sink 3); chunk 7 is the last
ATTENTION_WORDS = ("attention", "attn", "fmha", "flash", "sdpa", "cudnn", "softmax")


class Plan:
    def __init__(self, smoke: bool) -> None:
        self.preset = "tiny-vace" if smoke else "wan2.1-vace-1.3B"
        self.height, self.width = (32, 32) if smoke else (480, 832)
        self.heads, self.head_dim = (2, 16) if smoke else (12, 128)
        self.dtype = "float32" if smoke else "bfloat16"
        self.attention_dtype = torch.bfloat16
        self.repeats = 3 if smoke else 10


class Report:
    """The figures so far, written to disk after every part."""

    def __init__(self, out: Path, device: torch.device, smoke: bool) -> None:
        self.path = out / f"gpu-smoke-{device.type}{'-smoke' if smoke else ''}"
        self.data: dict = {"device": device.type, "smoke": smoke, "machine": common.machine_info(device),
                           "parts": {}, "checks": {}}
        out.mkdir(parents=True, exist_ok=True)

    def add(self, part: str, figures: dict, checks: dict[str, bool]) -> None:
        self.data["parts"][part] = figures
        self.data["checks"].update(checks)
        self.path.with_suffix(".json").write_text(json.dumps(self.data, indent=1) + "\n")
        self.path.with_suffix(".md").write_text(markdown(self.data))
        for name, ok in checks.items():
            print(f"{common.verdict(ok)} {name}", flush=True)


# ---- 1. attention per backend ------------------------------------------------------------------

def attention_inputs(plan: Plan, device: torch.device, smoke: bool) -> dict[str, tuple]:
    """name -> (q, k, v, mask) in float32: steady-state self-attention of a chunk, and a
    cross-attention to a 41-row prompt whose last (merged padding) row carries ln(472)."""
    tokens = tokens_per_frame(plan.height, plan.width)
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device)

    heads, dim = plan.heads, plan.head_dim
    bias = torch.zeros(1, 1, 1, 41)
    bias[..., -1] = torch.log(torch.tensor(472.0))
    return {"self_attention": (randn(1, heads, 3 * tokens, dim), randn(1, heads, 12 * tokens, dim),
                               randn(1, heads, 12 * tokens, dim), None),
            "cross_attention": (randn(1, heads, 3 * tokens, dim), randn(1, heads, 41, dim), randn(1, heads, 41, dim),
                                bias.to(device))}


def backend_call(backend: SDPBackend, qkv: list[torch.Tensor], mask: torch.Tensor | None):
    def call() -> torch.Tensor:
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(*qkv, attn_mask=mask)
    return call


def pack_call(qkv: list[torch.Tensor], mask: torch.Tensor | None):
    """The pack's kernel the model calls for this case: unmasked for self-attention, masked for the
    prompt's bias; its [B, Sq, heads * hd] output back to [B, heads, Sq, hd]."""
    q = qkv[0]

    def call() -> torch.Tensor:
        out = SDPA.unmasked(*qkv) if mask is None else SDPA.masked(*qkv, mask)
        return out.unflatten(-1, (q.shape[1], q.shape[3])).transpose(1, 2)
    return call


def timed(call, device: torch.device, repeats: int) -> float:
    """Median seconds per call after two untimed calls (CUDA events on a GPU)."""
    call(), call()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000)
        else:
            began = time.perf_counter()
            call()
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def part_attention(plan: Plan, device: torch.device) -> tuple[dict, dict]:
    figures, checks = {}, {}
    for case, (q, k, v, mask) in attention_inputs(plan, device, plan.preset == "tiny-vace").items():
        with sdpa_kernel([SDPBackend.MATH]):
            reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        low = [t.to(plan.attention_dtype) for t in (q, k, v)]
        low_mask = None if mask is None else mask.to(plan.attention_dtype)  # the mask in q's dtype
        flops = 4 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3]
        rows = {}
        for name in (*BACKENDS, PACK):
            call = pack_call(low, low_mask) if name == PACK else backend_call(BACKENDS[name], low, low_mask)
            try:
                out = call()
            except RuntimeError as error:
                rows[name] = {"ran": False, "why": str(error).split(". ")[0][:200]}
                continue
            error = ((out.float() - reference).norm() / reference.norm()).item()
            seconds = timed(call, device, plan.repeats)
            rows[name] = {"ran": True, "relative_rms_vs_fp32": round(error, 6), "ms": round(seconds * 1000, 4),
                          "tflops": round(flops / seconds / 1e12, 3)}
            checks[f"attention_{case}_{name}_within_tolerance"] = error <= ATTENTION_TOLERANCE
        figures[case] = {"q": list(q.shape), "k": list(k.shape), "dtype": str(plan.attention_dtype),
                         "mask": None if mask is None else str(plan.attention_dtype), "backends": rows}
    checks["attention_some_backend_ran"] = any(r["ran"] for case in figures.values() for r in case["backends"].values())
    return figures, checks


# ---- 2.-4. runs with the profiler and the sync capture on one steady chunk each ----------------

class SyncCapture:
    """Call sites of synchronising CUDA operations while active (set_sync_debug_mode("warn")): the
    innermost frame in this repository of each warning's stack."""

    def __init__(self) -> None:
        self.sites: dict[str, int] = {}
        self._catcher = None

    def start(self) -> None:
        self._catcher = warnings.catch_warnings(record=False)
        self._catcher.__enter__()
        warnings.simplefilter("always")
        warnings.showwarning = self._record
        torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self._catcher.__exit__(None, None, None)

    def _record(self, message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" not in str(message):
            return
        ours = [f for f in traceback.extract_stack()[:-1] if str(ROOT) in f.filename and "gpu_smoke" not in f.filename]
        frame = ours[-1] if ours else traceback.extract_stack()[-3]
        site = f"{Path(frame.filename).relative_to(ROOT) if str(ROOT) in frame.filename else frame.filename}:" \
               f"{frame.lineno} ({frame.name})"
        self.sites[site] = self.sites.get(site, 0) + 1


def part_runs(plan: Plan, device: torch.device) -> tuple[dict, dict]:
    from torch.profiler import ProfilerActivity, profile

    model = common.Bench(replace(common.PLANS["quick" if plan.preset == "tiny-vace" else "cuda"],
                                      preset=plan.preset, height=plan.height, width=plan.width, dtype=plan.dtype),
                        device)
    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    figures, checks = {}, {}
    for name, vace in (("t2v", False), ("r2v", True)):
        prof, syncs = profile(activities=activities), SyncCapture()

        def hook(info: ChunkInfo) -> None:  # chunk STEADY_FROM profiled, the next one sync-captured
            number = info.block.chunk_index + 1
            if info.block.is_reference:
                return
            if number == STEADY_FROM - 1:
                prof.start()
            elif number == STEADY_FROM:
                prof.stop()
                if on_gpu:
                    syncs.start()
            elif number == STEADY_FROM + 1 and on_gpu:
                syncs.stop()

        if on_gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        settings = SamplerSettings(hint_chunks="all") if vace else SamplerSettings()
        run = common.timed_generate(model, CHUNKS, settings, vace, extra=hook)
        steady = statistics.median(run.wall[STEADY_FROM - 1:-1])
        figures[name] = {
            "chunks": len(run.wall), "first_chunk_latency_s": round(run.first_chunk_latency, 4),
            "per_chunk_s": [round(t, 4) for t in run.wall], "steady_chunk_s": round(steady, 4),
            "steady_fps": round(VAE_STRIDE_T * settings.chunk_frames / steady, 3),
            "finite": run.finite, "kernels": attention_kernels(prof, on_gpu),
            "sync_sites": syncs.sites if on_gpu else "needs CUDA",
            "peak_vram_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if on_gpu else "needs CUDA"}
        checks[f"{name}_finite"] = bool(run.finite) and len(run.wall) == CHUNKS
        if on_gpu:
            # SDPA's math fallback shows as its op (its kernels are plain matmuls and softmax)
            checks[f"{name}_no_math_attention"] = not any("math" in k.lower() for k in figures[name]["kernels"])
    figures["sizes"] = model.sizes()
    return figures, checks


def attention_kernels(prof, on_gpu: bool) -> dict[str, dict]:
    """What attention ran in the profiled chunk: PyTorch's SDPA ops (`aten::_scaled_dot_product_*`:
    flash, efficient, cudnn or math, whatever the device) and, on a GPU, the kernels whose names
    say attention; calls and self time (device time on a GPU) in ms."""
    found = {}
    for event in prof.key_averages():
        name = event.key.lower()
        sdpa_op = name.startswith("aten::_scaled_dot_product")
        if not (sdpa_op or any(word in name for word in ATTENTION_WORDS)):
            continue
        device_us = getattr(event, "self_device_time_total", 0.0) if on_gpu else event.self_cpu_time_total
        if on_gpu and device_us == 0 and not sdpa_op:
            continue  # a CPU-side wrapper of a kernel listed on its own
        found[event.key[:160]] = {"calls": event.count, "ms": round(device_us / 1000, 3)}
    return found


# ---- report ---------------------------------------------------------------------------------------

def markdown(data: dict) -> str:
    m = data["machine"]
    lines = [f"# GPU smoke ({m['gpu'] or m['cpu']}{', tiny CPU smoke sizes' if data['smoke'] else ''})", "",
             f"torch {m['torch']}, CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}. Written by `scripts/bench/gpu_smoke.py`.",
             ""]
    for case, figures in data["parts"].get("attention", {}).items():
        lines += [f"## {case}: q {figures['q']}, k/v {figures['k']}, {figures['dtype']}, mask {figures['mask']}", "",
                  "| backend | relative RMS vs fp32 math | ms per call | TFLOP/s |", "|---|---|---|---|"]
        for name, row in figures["backends"].items():
            lines.append(f"| {name} | {row['relative_rms_vs_fp32']:.2e} | {row['ms']} | {row['tflops']} |" if row["ran"]
                         else f"| {name} | did not run: {row['why']} | | |")
        lines.append("")
    runs = data["parts"].get("runs")
    if runs:
        lines += ["## 7-chunk runs", "",
                  "| run | first chunk s | steady s / chunk | steady FPS (DiT) | peak VRAM MiB | finite |",
                  "|---|---|---|---|---|---|"]
        for name in ("t2v", "r2v"):
            r = runs[name]
            lines.append(f"| {name} | {r['first_chunk_latency_s']} | {r['steady_chunk_s']} | {r['steady_fps']} | "
                         f"{r['peak_vram_mib']} | {r['finite']} |")
        for name in ("t2v", "r2v"):
            lines += ["", f"Attention kernels in a steady {name} chunk: " + (", ".join(
                f"`{k}` x{v['calls']} ({v['ms']} ms)" for k, v in runs[name]["kernels"].items()) or "none found"),
                      f"Synchronising call sites in a steady {name} chunk: " + (
                          ", ".join(f"`{s}` x{n}" for s, n in runs[name]["sync_sites"].items()) or "none")
                      if isinstance(runs[name]["sync_sites"], dict) else "Synchronising call sites: needs CUDA."]
    lines += ["", "Checks: " + ", ".join(f"{name} {common.verdict(ok)}" for name, ok in data["checks"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, the parts a CPU can run (CI)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device cuda: this torch ({torch.__version__}) sees no CUDA device")
    if device.type == "cpu" and not args.smoke:
        raise SystemExit("on the CPU only --smoke runs (tiny sizes); the full sizes are for a GPU")
    if device.type == "cpu":
        torch.set_num_threads(1)
    plan, report = Plan(args.smoke), Report(args.out, device, args.smoke)
    with torch.inference_mode():
        common.log("attention per backend")
        report.add("attention", *part_attention(plan, device))
        common.log("7-chunk T2V and R2V runs")
        report.add("runs", *part_runs(plan, device))
    common.log(f"wrote {report.path}.json / .md")
    failed = [name for name, ok in report.data["checks"].items() if not ok]
    if failed:
        print(f"failed checks: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
