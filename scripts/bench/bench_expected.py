"""A CPU model of the GPU figures: the range each figure of the budgeted plan (scripts/bench/bench.py)
should fall in, printed beside the measured value, so that a run far outside it shows at once.

Three sources, each stated beside its figure:
- the FLOP budget: every time figure is FLOPs / (the device's measured matmul rate x an efficiency
  band). `chunk_flops` counts a steady chunk's multiply-adds from the architecture: 139 TFLOP T2V,
  221 R2V at 480x832 (docs/benchmarks.md); tests/test_bench.py finds it equal to what torch's
  FlopCounterMode counts in a real chunk on the CPU (the measured CPU figure it rests on), and
  `video_flops` (a video's chunks, the window filling) what it counts per chunk of a whole run;
- exact bytes: weights, KV and VACE caches from the parameter count and the cache layout, and the
  memory request's estimate (vace_core/memory.py) as the ceiling of a batch's peak;
- the CPU's measured ratios (bench/results-cpu.json, the acceptance figures): a ratio that holds on
  the CPU at 128x128 (flat per-chunk time, flat memory) must hold on a GPU too;
- bounds that hold on any device: a batch costs per video between 1/B and 1 x a single video's
  time; a second decode device gains between about 1 (the hand-over) and what full overlap of the
  DiT and the decode allows, from the decode's measured share of a chunk.

The band: LongLive's 20.7 FPS on an H100 (its paper, T2V at 480x832) is 240 TFLOP/s effective, 0.30 of the
800 TFLOP/s the card reaches on a large bf16 matmul; a fused, unmasked path can reach about 0.75,
and below 0.15 something is off (a masked or math attention kernel costs x1.6-5). At smoke sizes on
the CPU (a few tokens per frame) per-op overhead dominates: there only the upper bound (no run beats
the matmul rate) says anything, so the band is wide.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from bench_common import FLAT_LIMIT, MEMORY_LIMIT, PROMPT_TOKENS
from vace_core.cache import kv_cache_bytes
from vace_core.config import WanConfig, architecture
from vace_core.latents import VAE_STRIDE_T
from vace_core.model import CausalWanModel
from vace_core.plan import SamplerSettings, tokens_per_frame

EFFICIENCY = {"cuda": (0.15, 0.75), "cpu": (0.001, 1.0)}  # of the measured matmul rate (module docstring)
ACTIVATIONS = (1.0, 1.3)  # peak memory / (weights + caches): activations and workspaces on top
RATIO_SLACK = 0.10  # a CPU-proven ratio may move this much on another device before it is flagged
ATTENTION_SHARE = (0.1, 1.0)  # fused attention's FLOP rate against the matmul rate
ELEMENT_SIZE = {"bfloat16": 2, "float16": 2, "float32": 4}


# ---- FLOPs of one steady chunk ------------------------------------------------------------------

def block_flops(config: WanConfig, queries: int, keys: int, text_rows: int) -> int:
    """One attention block over `queries` tokens that see `keys` tokens: self-attention (q, k, v, o
    projections, scores and weighted sum), cross-attention to the prompt (q and o projections; its
    keys and values are computed once per prompt) and the FFN. 2 FLOPs per multiply-add."""
    d, n = config.dim, queries
    projections = 2 * n * d * d * (4 + 2)  # self q, k, v, o; cross q, o
    ffn = 2 * 2 * n * d * config.ffn_dim
    attention = 2 * 2 * n * d * (keys + text_rows)  # QK^T and PV, self and cross
    return projections + ffn + attention


def visible_frames(settings: SamplerSettings, ref_frames: int, vace_attention: str | None,
                   window_frames: int | None = None) -> int:
    """Latent frames a chunk's queries see: the references, the sink and the rolling window
    (window_frames counts the sink and the chunk; fewer while it fills) for the main blocks and
    causal VACE; the references and the chunk for `references`; the chunk alone for `block`."""
    if vace_attention == "block":
        return settings.chunk_frames
    if vace_attention == "references":
        return ref_frames + settings.chunk_frames
    return ref_frames + (settings.window_frames if window_frames is None else window_frames)


def chunk_flops(config: WanConfig, height: int, width: int, settings: SamplerSettings = SamplerSettings(),
                ref_frames: int = 0, vace: bool = False, index: int | None = None, last: bool = False) -> int:
    """FLOPs of a chunk's matrix products: its denoising passes and the clean pass that writes the
    cache (none after the `last` chunk), main blocks (and with `vace`, the VACE blocks on every pass,
    LongLive's and VACE's defaults), plus the patch embeddings and the head. A steady-state chunk
    (the window full) unless `index` (0: the first generated chunk) says how far the window has
    filled. Norms and other elementwise work are not counted (they are memory traffic)."""
    tokens = tokens_per_frame(height, width)
    n = tokens * settings.chunk_frames
    text_rows = PROMPT_TOKENS + 1  # the real rows and the merged padding
    patch = config.patch_size[0] * config.patch_size[1] * config.patch_size[2]
    window = None if index is None else min(settings.window_frames, (index + 1) * settings.chunk_frames)
    per_pass = config.num_layers * block_flops(config, n, tokens * visible_frames(settings, ref_frames, None, window),
                                               text_rows)
    per_pass += 2 * n * config.dim * patch * (config.in_channels + config.out_channels)  # patch embedding, head
    if vace:
        keys = tokens * visible_frames(settings, ref_frames, settings.vace_attention, window)
        hint = block_flops(config, n, keys, text_rows) + 2 * n * config.dim * config.dim  # + after_proj
        per_pass += len(config.vace_layers) * hint + 2 * n * config.dim * config.dim  # + before_proj
        per_pass += 2 * n * config.dim * patch * config.vace_in_dim  # VACE patch embedding
    return per_pass * (len(settings.denoising_steps) + (0 if last else 1))


def video_flops(config: WanConfig, height: int, width: int, chunks: int, settings: SamplerSettings = SamplerSettings(),
                ref_frames: int = 0, vace: bool = False) -> int:
    """FLOPs of one video's `chunks` generated chunks, the window filling over the first ones and no
    clean pass after the last (the reference block's own passes, a fraction of one chunk's, aside)."""
    return sum(chunk_flops(config, height, width, settings, ref_frames, vace, index=i, last=i == chunks - 1)
               for i in range(chunks))


# ---- expected ranges ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expected:
    low: float | None
    high: float | None
    source: str

    def verdict(self, value: float | None) -> str:
        """'ok', 'LOW', 'HIGH' or '' (nothing measured)."""
        if value is None:
            return ""
        if self.low is not None and value < self.low:
            return "LOW"
        if self.high is not None and value > self.high:
            return "HIGH"
        return "ok"

    def shown(self) -> str:
        def number(x: float | None) -> str:
            return "-" if x is None else f"{x:.3g}"
        return f"{number(self.low)} .. {number(self.high)}"


def time_range(flops: int, matmul_flops_per_s: float, device: str) -> tuple[float, float]:
    """Seconds for `flops` at the band's best and worst efficiency of the measured matmul rate."""
    best, worst = EFFICIENCY[device]
    return flops / (matmul_flops_per_s * worst), flops / (matmul_flops_per_s * best)


def load_cpu_ratios(path: Path) -> dict[str, float]:
    """The acceptance ratios the CPU benchmark measured (bench/results-cpu.json), where present."""
    try:
        sections = json.loads(path.read_text())["sections"]
    except (OSError, ValueError, KeyError):
        return {}
    found = {}
    for key, section, group, name in (("kv_late_over_early", "timing", "cache", "kv_late_over_early_wall"),
                                      ("memory_long_over_short", "memory", "memory", "long_over_short_latents_aside"),
                                      ("first_over_off", "vace", "vace", "first_over_off_wall")):
        value = sections.get(section, {}).get("figures", {}).get(group, {}).get(name)
        if value is not None:
            found[key] = value
    return found


def ratio_range(cpu_value: float | None, limit: float, what: str) -> Expected:
    """A ratio whose acceptance limit holds on any device: 1 - slack .. the limit, with the CPU's own figure named."""
    measured = f"; CPU measured {cpu_value:.3f}" if cpu_value is not None else ""
    return Expected(1 - RATIO_SLACK, limit, f"{what} (CPU acceptance limit {limit}){measured}")


def figure(results: dict, section: str, *keys: str) -> float | None:
    """results["sections"][section]["figures"][keys...], or None where a section or figure is missing."""
    value = results["sections"].get(section, {}).get("figures")
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def expected_ranges(results: dict, cpu_ratios: dict[str, float]) -> dict[str, Expected]:
    """figure key -> Expected, for the summary's rows (bench_report.summary_rows), from what the run
    measured itself (the sizes, the matmul rate, batch 1's FPS) and the CPU's ratios."""
    device = results["device"]
    sized = next((results["sections"][name] for name in results["plan"]["ran"] if "sizes" in results["sections"][name]),
                 None)
    ranges: dict[str, Expected] = {
        "kv_late_over_early": ratio_range(cpu_ratios.get("kv_late_over_early"), FLAT_LIMIT, "flat per-chunk time"),
        "memory_long_over_short": ratio_range(cpu_ratios.get("memory_long_over_short"), MEMORY_LIMIT, "flat memory")}
    ranges["kv_late_over_early_long"] = ranges["kv_late_over_early"]
    rate = figure(results, "correctness", "matmul", "tflops")
    if sized is not None and rate:
        ranges.update(time_ranges(sized["sizes"], device, rate * 1e12))
        ranges["attention_tflops"] = Expected(rate * ATTENTION_SHARE[0], rate * ATTENTION_SHARE[1],
                                              f"{ATTENTION_SHARE[0]}-{ATTENTION_SHARE[1]} x the matmul rate")
        decode_flops = figure(results, "decode", "decode", "flops_per_chunk")
        if decode_flops:
            fast, slow = time_range(decode_flops, rate * 1e12, device)
            ranges["decode_chunk_s"] = Expected(fast, slow, f"{decode_flops / 1e12:.3g} TFLOP per chunk (counted)")
    if sized is not None and device == "cuda":
        z = sized["sizes"]
        held = r2v_memory_bytes(architecture(z["preset"]), z["height"], z["width"], ELEMENT_SIZE[z["dtype"]])
        parts = " + ".join(f"{name} {value / 2**30:.2f}" for name, value in held.items())
        total = sum(held.values()) / 2**30
        ranges["r2v_peak_gib"] = Expected(total * ACTIVATIONS[0], total * ACTIVATIONS[1],
                                          f"{parts} GiB, x{ACTIVATIONS[0]}-{ACTIVATIONS[1]} for activations")
    batch = results["sections"].get("batch", {}).get("figures")
    if batch and batch.get("runs"):
        ranges.update(batch_ranges(batch, device, rate * 1e12 if rate else None))
    share = figure(results, "decode", "decode_share")
    ranges["decode_device_gain"] = decode_gain_range(share)
    ranges["compiled_over_eager"] = Expected(None, 1 + RATIO_SLACK, "compiled no slower than eager")
    ranges["vace_first_over_off"] = ratio_range(cpu_ratios.get("first_over_off"), FLAT_LIMIT,
                                                "hint_chunks=first costs as much as VACE off")
    return ranges


def batch_ranges(figures: dict, device: str, matmul_flops_per_s: float | None) -> dict[str, Expected]:
    """The batch section's figures (bench_batch.device_figures) per kind and batch size B: videos
    per hour from the FLOP budget of one video (a batch does B videos' work); seconds per video at B
    over B = 1's, between 1 / B (B videos for the time of one) and 1 (a batch is never dearer per
    video); peak memory between what the run holds (weights + B x the caches, exact) and the memory
    request the nodes make (weights + vace_core/memory.py's estimate: above it they under-ask)."""
    config = architecture(figures["model"])
    width, height = (int(side) for side in figures["size"].split("x"))
    ranges: dict[str, Expected] = {}
    for name, run in figures["runs"].items():
        kind, batch = name.split("_batch_")
        vace = kind == "r2v"
        if matmul_flops_per_s:
            flops = video_flops(config, height, width, figures["chunks"], ref_frames=int(vace), vace=vace)
            fast, slow = time_range(flops, matmul_flops_per_s, device)
            band = EFFICIENCY[device]
            ranges[f"{name}_videos_per_hour"] = Expected(
                3600 / slow, 3600 / fast, f"{flops / 1e12:.4g} TFLOP per {figures['video_frames']}-frame video / "
                                          f"({matmul_flops_per_s / 1e12:.3g} TFLOP/s matmul x {band[0]}-{band[1]})")
        if batch != "1":
            ranges[f"{name}_per_video_ratio"] = Expected(1 / int(batch), 1 + RATIO_SLACK,
                                                         f"1/{batch} (the batch in one video's time) .. 1 (no gain), "
                                                         f"+{RATIO_SLACK:.0%}")
        if run["peak_bytes"] is not None:
            held = figures["weights_bytes"] + run["cache_bytes"]  # the batch's caches: B videos'
            ranges[f"{name}_peak_gib"] = Expected(held / 2**30, run["estimate_bytes"] / 2**30,
                                                  f"weights + {batch} x caches (held) .. + the memory request's "
                                                  "activations")
    return ranges


def decode_gain_range(share: float | None) -> Expected:
    """Sampler -> Video's time per chunk decoding inline over decoding on another device: at least
    about 1 (what the hand-over costs); at most (DiT + decode) / the longer of the two, i.e.
    1 / max(share, 1 - share) with the decode's measured share of a chunk, where the two overlap
    fully."""
    if share is None:
        return Expected(1 - RATIO_SLACK, None, "the hand-over's cost at most; the upper bound needs the decode share")
    best = 1 / max(share, 1 - share)
    return Expected(1 - RATIO_SLACK, best * (1 + RATIO_SLACK),
                    f"1 .. 1 / max(share, 1 - share) = {best:.3g}: DiT and decode overlapped (share {share:.3g})")


def time_ranges(sizes: dict, device: str, matmul_flops_per_s: float) -> dict[str, Expected]:
    """Steady chunk time and FPS of T2V and R2V (one reference), and their ratio, from the FLOP budget."""
    config = architecture(sizes["preset"])
    height, width = sizes["height"], sizes["width"]
    chunk_video_frames = VAE_STRIDE_T * sizes["chunk_frames"]
    band = EFFICIENCY[device]
    rate = f"{matmul_flops_per_s / 1e12:.3g} TFLOP/s matmul x {band[0]}-{band[1]}"
    ranges = {}
    flops = {"t2v": chunk_flops(config, height, width), "r2v": chunk_flops(config, height, width, ref_frames=1,
                                                                          vace=True)}
    for name, count in flops.items():
        fast, slow = time_range(count, matmul_flops_per_s, device)
        source = f"{count / 1e12:.4g} TFLOP per chunk / ({rate})"
        ranges[f"{name}_steady_chunk_s"] = Expected(fast, slow, source)
        ranges[f"{name}_fps"] = ranges[f"{name}_7chunk_fps"] = Expected(chunk_video_frames / slow,
                                                                        chunk_video_frames / fast, source)
    if device == "cuda":  # at smoke sizes per-op overhead rules, and VACE adds ops more than FLOPs
        flop_ratio = flops["r2v"] / flops["t2v"]
        ranges["r2v_over_t2v"] = Expected(1.0, flop_ratio * (1 + RATIO_SLACK),
                                          f"FLOP ratio {flop_ratio:.3f}; overhead-bound runs sit lower")
    return ranges


def r2v_memory_bytes(config: WanConfig, height: int, width: int, element_size: int,
                     settings: SamplerSettings = SamplerSettings(), ref_frames: int = 1) -> dict[str, int]:
    """Bytes an R2V run holds besides activations: weights (main and VACE), the KV cache (refs + window)
    and the causal VACE stream's cache (docs/benchmarks.md lists them at 480x832)."""
    with torch.device("meta"):
        model = CausalWanModel(config)
    vace_params = sum(p.numel() for name, p in model.named_parameters() if name.startswith("vace_"))
    main_params = sum(p.numel() for p in model.parameters()) - vace_params
    frames = ref_frames + settings.window_frames
    tokens = tokens_per_frame(height, width)
    return {"weights": (main_params + vace_params) * element_size,
            "kv cache": kv_cache_bytes(num_layers=config.num_layers, dim=config.dim, tokens_per_frame=tokens,
                                       capacity_frames=frames, element_size=element_size),
            "VACE cache": kv_cache_bytes(num_layers=len(config.vace_layers), dim=config.dim, tokens_per_frame=tokens,
                                         capacity_frames=frames, element_size=element_size)}
