#!/usr/bin/env python3
"""The low-VRAM path on a GPU: LongLive + VACE at full size sampled through ComfyUI's memory
manager on a small VRAM budget, against the same model fully loaded.

The sampler node asks ComfyUI's `load_models_gpu` for room for its KV cache and activations; on a
card too small for everything ComfyUI loads the model partially and streams the other layers'
weights from RAM on every call (`--lowvram`). A small card is emulated on a big one with
`--reserve-vram` (ComfyUI then sees only `--card-gib` of the GPU). Each mode runs in a process of
its own, since ComfyUI reads its flags once at import:

- `full`: ComfyUI's defaults (on a big card the whole model is loaded);
- `lowvram`: `--lowvram --reserve-vram <GPU memory - card>`.

ComfyUI is imported in-process, not started with main.py, so 0.33's DynamicVRAM (which main.py
turns on for a GPU server, and under which `--lowvram` does nothing) stays off: this measures the
estimate-based loading of every 0.8 and of 0.33 with `--disable-dynamic-vram`. The pack's layers
under DynamicVRAM are covered by tests/integration/test_comfy_memory.py (exact outputs, CPU).

Per mode: the LongLive Sampler node's run (random full-size weights in bf16, one reference,
`vace_attention=causal`, 480x832) timed for 1 chunk and for `--chunks` chunks, giving the first
chunk's latency and the steady cost per chunk (the difference over the extra chunks), video frames
per second, torch's peak VRAM, and ComfyUI's partial-load state (bytes loaded, layers streamed).

Run with ComfyUI's python on a CUDA machine (nothing is written into the checkout):

    PYTHONDONTWRITEBYTECODE=1 python scripts/bench/bench_lowvram.py --comfyui DIR     # ~4 min on an H100/H200
        -> bench/results-lowvram-cuda.json, .md and a section in bench/results-cuda.md
    ... scripts/bench/bench_lowvram.py --comfyui DIR --quick --out /tmp/bench   # CPU smoke run: tiny model,
                                                                              # the `full` mode only
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch

import bench_common as common  # first: it puts the repository root and scripts/ on sys.path
from pack_loader import load_pack

ROOT = common.ROOT
PACKAGE = "longlive_pack"  # ComfyUI has a top-level `nodes` module: the pack gets a name of its own
SECTION = "lowvram"
MODES = ("full", "lowvram")
CHUNK_FRAMES = 3  # latent frames per chunk (the LongLive preset the sampler node runs)
VIDEO_STRIDE_T = 4  # video frames per latent frame


def gpu_plan(card_gib: float, chunks: int) -> dict:
    return {"preset": "wan2.1-vace-1.3B", "height": 480, "width": 832, "dtype": "bf16", "chunks": chunks,
            "card_gib": card_gib, "device": "cuda"}


QUICK_PLAN = {"preset": "tiny-vace", "height": 32, "width": 32, "dtype": "fp32", "chunks": 3, "card_gib": None,
              "device": "cpu"}


def comfy_flags(mode: str, plan: dict) -> list[str]:
    if plan["device"] == "cpu":
        return ["--cpu"]  # the smoke run checks the plumbing; a CPU has no partial loads
    if mode == "full":
        return []
    total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    return ["--lowvram", "--reserve-vram", f"{max(0.0, total_gib - plan['card_gib']):.2f}"]


def import_pack() -> dict[str, ModuleType]:
    """The repository imported as ComfyUI imports a custom-node folder (so nodes/host finds
    ComfyUI's memory manager)."""
    load_pack(PACKAGE, standalone=False)
    return {name: importlib.import_module(f"{PACKAGE}.{name}") for name in (
        "nodes.model_ref", "nodes.sampler", "vace_core.encoding")}


def child(args: argparse.Namespace) -> None:
    plan = json.loads(args.plan)
    if plan["device"] == "cpu":
        torch.set_num_threads(1)
    flags = comfy_flags(args.child, plan)
    comfy = common.import_comfy(args.comfyui, Path(args.work) / "base", flags=flags,
                               model_management="comfy.model_management")
    pack = import_pack()
    model_ref, sampler_nodes = pack["nodes.model_ref"], pack["nodes.sampler"]
    encoding, mm = pack["vace_core.encoding"], comfy.model_management
    model = common.load_pack_model(model_ref, json.loads(args.files), plan["dtype"])
    text = common.random_prompt(model.shared.network.config)
    sampler = sampler_nodes.LongLiveSampler()
    device = mm.get_torch_device()

    def run(chunks: int) -> float:
        latent_frames = chunks * CHUNK_FRAMES
        vace = common.random_vace_context(plan["height"], plan["width"], latent_frames,
                                         context_class=encoding.VaceContext)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        size = {"samples": torch.zeros(1, 16, latent_frames, plan["height"] // 8, plan["width"] // 8)}
        sampler.sample(model, [[text, {}]], size, 0, 1.0, vace_context=vace)  # LongLive preset, vace_attention causal
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    run(1)  # warm-up: the first load, kernels, allocator
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    one, many = run(1), run(plan["chunks"])
    steady = (many - one) / (plan["chunks"] - 1)
    patcher = model.patcher
    wrapper = patcher.model
    report = {
        "mode": args.child, "flags": flags, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "comfyui": comfy.version, "torch": torch.__version__, "vram_state": mm.vram_state.name,
        "first_chunk_s": round(one, 3), "run_s": round(many, 3),
        "steady_chunk_s": round(steady, 4),
        "model_bytes": patcher.model_size(), "loaded_bytes": patcher.loaded_size(),
        "lowvram": bool(getattr(wrapper, "model_lowvram", False)),
        "streamed_layers": sum(bool(getattr(m, "comfy_cast_weights", False)) for m in wrapper.modules()),
        "layers": sum(hasattr(m, "comfy_cast_weights") for m in wrapper.modules()),
    }
    # timing noise can make the difference vanish on a tiny CPU smoke run
    report["video_fps"] = round(VIDEO_STRIDE_T * CHUNK_FRAMES / steady, 2) if steady > 0 else None
    if device.type == "cuda":
        report["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    Path(args.report).write_text(json.dumps(report))


def markdown(result: dict) -> str:
    plan, rows = result["plan"], result["modes"]
    card = f"a {plan['card_gib']:g} GiB card emulated with --reserve-vram" if plan["card_gib"] else "CPU smoke run"
    lines = [f"## Low VRAM through ComfyUI {rows[0]['comfyui']}'s memory manager ({rows[0]['gpu'] or 'cpu'})", "",
             (f"{plan['preset']}, random weights in {plan['dtype']}, {plan['width']}x{plan['height']}, one reference, "
              f"vace_attention=causal, LongLive preset; the LongLive Sampler node's run of 1 and {plan['chunks']} "
              f"chunks after a warm-up; {card}; estimate-based loading (no DynamicVRAM); torch {rows[0]['torch']} "
              "(`scripts/bench/bench_lowvram.py`)."), "",
             "| mode | ComfyUI flags | vram state | weights loaded | layers streamed | "
             "first chunk s (references included) | steady s / chunk | video fps | peak VRAM MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | `{' '.join(r['flags']) or '(defaults)'}` | {r['vram_state']} | "
                     f"{r['loaded_bytes'] / 2**30:.2f} of {r['model_bytes'] / 2**30:.2f} GiB | "
                     f"{r['streamed_layers']} of {r['layers']} | {r['first_chunk_s']} | {r['steady_chunk_s']} | "
                     f"{r['video_fps']} | {r.get('peak_allocated_mib', '-')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, default=common.default_comfyui(),
                        help="a ComfyUI checkout (default: the first in $COMFYUI_DIR, else /opt/ComfyUI)")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: the tiny model, 32x32, 3 chunks")
    parser.add_argument("--card-gib", type=float, default=8.0, help="the GPU memory ComfyUI may use in lowvram mode")
    parser.add_argument("--chunks", type=int, default=8, help="chunks of the timed run (at least 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    common.check_comfyui(args.comfyui)
    if args.chunks < 2:
        raise SystemExit(f"--chunks {args.chunks}: at least 2 (the steady cost is the difference to 1 chunk)")
    if not args.quick and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: the low-VRAM benchmark needs a GPU (--quick runs the CPU smoke run)")
    plan = QUICK_PLAN if args.quick else gpu_plan(args.card_gib, args.chunks)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench_lowvram_"))
    try:
        common.log(f"writing random {plan['preset']} weights ({plan['dtype']})")
        files = common.write_pack_weights(plan["preset"], plan["dtype"], work)
        modes = []
        for mode in MODES[:1] if args.quick else MODES:  # on the CPU both are the same run (--cpu)
            common.log(f"{mode}: a ComfyUI process of its own")
            report = work / f"{mode}.json"
            child_run = subprocess.run([sys.executable, __file__, "--comfyui", str(args.comfyui), "--child", mode,
                                        "--plan", json.dumps(plan), "--files", json.dumps(files), "--work",
                                        str(work), "--report", str(report)], check=False)
            if child_run.returncode != 0:
                raise SystemExit(f"the {mode} run failed (exit status {child_run.returncode}); its output is above")
            modes.append(json.loads(report.read_text()))
            common.log(f"{mode}: {modes[-1]['steady_chunk_s']} s per chunk, {modes[-1]['video_fps']} video fps")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"plan": plan, "modes": modes, "runtime_s": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"results-lowvram-{plan['device']}{'-quick' if args.quick else ''}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (args.out / f"{stem}.md").write_text(text)
    if not args.quick:
        common.write_section(args.out / "results-cuda.md", SECTION, text)
    print(text)
    print(f"wrote {args.out / stem}.json / .md in {result['runtime_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
