"""The correctness parts of the GPU plan (scripts/bench/bench.py's `correctness` section), what to
look at first on a GPU:

1. matmul: the device's rate on a large matrix product in the model's dtype (the time figures'
   expected ranges scale with it, bench_expected.py);
2. attention: each SDPA backend (flash, cuDNN, memory-efficient, math) and the pack's own kernels
   (vace_core.attention.SDPA: the backend priority it runs outside ComfyUI), in bf16 and fp16, on the
   steady-state self-attention of a chunk (q: 3 frames, k/v: the 12-frame window) and on a
   cross-attention with the prompt's padding bias in q's dtype, against float32 math on the same
   inputs: error, time per call, TFLOP/s; a backend that refuses the inputs says why;
3. half precision: a short R2V run of the plan's model in bf16 and fp16 against float32, finite, with
   its relative difference;
4. runs: 7-chunk T2V and R2V (one reference, VACE on every chunk): first-chunk latency, steady FPS
   (DiT only; chunks from the full window on, the last left out), peak VRAM, finite latents; the
   attention kernels that ran in one steady chunk (torch profiler) and, on a GPU, the call sites that
   synchronised with it during the next (torch.cuda.set_sync_debug_mode("warn"), with their stacks).

Each part takes the plan's Bench (full size in bf16 on a GPU; the tiny model at 32x32 in the smoke
run) and returns (figures, checks).
"""

from __future__ import annotations

import copy
import statistics
import time
import traceback
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import bench_common as common  # first: it puts the repository root and scripts/ on sys.path
from vace_core.attention import SDPA
from vace_core.latents import VAE_STRIDE_T, video_frames_for
from vace_core.plan import SamplerSettings, tokens_per_frame
from vace_core.sampler import ChunkInfo, generate

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


ATTENTION_DTYPES = (torch.bfloat16, torch.float16)
HALF_PRECISION_CHUNKS = 2


def repeats_on(device: torch.device) -> int:
    return 10 if device.type == "cuda" else 3


# ---- 1. the matmul rate --------------------------------------------------------------------------

def part_matmul(bench: common.Bench) -> tuple[dict, dict]:
    """FLOP/s of a square matrix product in the model's dtype: 8192 on a GPU, 512 on the CPU."""
    size = 8192 if bench.device.type == "cuda" else 512
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(bench.device, bench.dtype) for _ in range(2))
    seconds = timed(lambda: a @ b, bench.device, repeats_on(bench.device))
    return {"size": size, "dtype": str(bench.dtype).removeprefix("torch."), "ms": round(seconds * 1000, 4),
            "tflops": round(2 * size ** 3 / seconds / 1e12, 3)}, {}


# ---- 2. attention per backend ------------------------------------------------------------------

def attention_inputs(bench: common.Bench) -> dict[str, tuple]:
    """name -> (q, k, v, mask) in float32: steady-state self-attention of a chunk (3 frames against the
    12-frame window), and a cross-attention to a 41-row prompt whose last (merged padding) row
    carries ln(472)."""
    config = bench.model.config
    tokens = tokens_per_frame(bench.plan.height, bench.plan.width)
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(bench.device)

    heads, dim = config.num_heads, config.head_dim
    bias = torch.zeros(1, 1, 1, 41)
    bias[..., -1] = torch.log(torch.tensor(472.0))
    return {"self_attention": (randn(1, heads, 3 * tokens, dim), randn(1, heads, 12 * tokens, dim),
                               randn(1, heads, 12 * tokens, dim), None),
            "cross_attention": (randn(1, heads, 3 * tokens, dim), randn(1, heads, 41, dim), randn(1, heads, 41, dim),
                                bias.to(bench.device))}


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


def part_attention(bench: common.Bench) -> tuple[dict, dict]:
    figures, checks = {}, {}
    for case, (q, k, v, mask) in attention_inputs(bench).items():
        with sdpa_kernel([SDPBackend.MATH]):
            reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        for dtype in ATTENTION_DTYPES:
            name = f"{case}_{str(dtype).removeprefix('torch.')}"
            figures[name], dtype_checks = attention_in(dtype, (q, k, v, mask), reference, bench.device)
            checks.update({f"attention_{name}_{check}": ok for check, ok in dtype_checks.items()})
    checks["attention_some_backend_ran"] = any(r["ran"] for case in figures.values() for r in case["backends"].values())
    return figures, checks


def attention_in(dtype: torch.dtype, qkv_mask: tuple, reference: torch.Tensor,
                 device: torch.device) -> tuple[dict, dict]:
    """Every backend on the inputs cast to `dtype` (the mask too: in q's dtype) against `reference`."""
    q, k, v, mask = qkv_mask
    low = [t.to(dtype) for t in (q, k, v)]
    low_mask = None if mask is None else mask.to(dtype)
    flops = 4 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3]
    rows, checks = {}, {}
    for name in (*BACKENDS, PACK):
        call = pack_call(low, low_mask) if name == PACK else backend_call(BACKENDS[name], low, low_mask)
        try:
            out = call()
        except RuntimeError as error:
            rows[name] = {"ran": False, "why": str(error).split(". ")[0][:200]}
            continue
        error = ((out.float() - reference).norm() / reference.norm()).item()
        seconds = timed(call, device, repeats_on(device))
        rows[name] = {"ran": True, "relative_rms_vs_fp32": round(error, 6), "ms": round(seconds * 1000, 4),
                      "tflops": round(flops / seconds / 1e12, 3)}
        checks[f"{name}_within_tolerance"] = error <= ATTENTION_TOLERANCE
    figures = {"q": list(q.shape), "k": list(k.shape), "dtype": str(dtype),
               "mask": None if mask is None else str(dtype), "backends": rows}
    return figures, checks


# ---- 3. half precision ---------------------------------------------------------------------------

def part_half_precision(bench: common.Bench) -> tuple[dict, dict]:
    """A short R2V run (VACE on every chunk) at half the plan's height and width (a quarter of the
    tokens: float32 at full size would cost a GPU plan half a minute) with the plan's model cast to
    bf16 and to fp16, against the same weights in float32 on the same device: finite, and their
    relative RMS difference (bf16 / fp16 is near 2^3, the ratio of their unit roundoffs, when the
    difference is rounding; tests/test_half_precision.py bounds it on the CPU)."""
    settings = SamplerSettings(hint_chunks="all")
    latent_frames = HALF_PRECISION_CHUNKS * settings.chunk_frames
    height, width = bench.plan.height // 2, bench.plan.width // 2
    context = common.random_vace_context(height, width, latent_frames)
    latents = {}
    for dtype in (torch.float32, *ATTENTION_DTYPES):
        model = copy.deepcopy(bench.model).set_dtype(dtype)
        latents[dtype] = generate(model, bench.text, video_frames=video_frames_for(latent_frames), height=height,
                                  width=width, seed=0, vace=context, settings=settings).latents
        del model
    reference = latents[torch.float32].double()
    figures, checks = {}, {}
    for dtype in ATTENTION_DTYPES:
        name = str(dtype).removeprefix("torch.")
        finite = bool(torch.isfinite(latents[dtype]).all())
        figures[name] = {"finite": finite, "relative_rms_vs_fp32": round(
            ((latents[dtype].double() - reference).norm() / reference.norm()).item(), 6) if finite else None}
        checks[f"half_precision_{name}_finite"] = finite
    figures.update(chunks=HALF_PRECISION_CHUNKS, size=f"{width}x{height}")
    return figures, checks


# ---- 4. runs with the profiler and the sync capture on one steady chunk each -------------------

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


def part_runs(bench: common.Bench) -> tuple[dict, dict]:
    from torch.profiler import ProfilerActivity, profile

    device = bench.device
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
        run = common.timed_generate(bench, CHUNKS, settings, vace, extra=hook)
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
    figures["sizes"] = bench.sizes()
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
