#!/usr/bin/env python3
"""Does the host's heap trim (nodes/heap.py, `release_when_freed`) give a freed model's
memory back to the OS? Measured, not assumed.

Each variant runs in a fresh process with the standalone host and the pack's nodes, as a user's
graph does: Load LongLive Model reads a base checkpoint with a LoRA (applied as a patch when the
model is loaded), the LongLive Sampler makes a short video, then every reference is dropped, the
garbage collected and the process's resident memory (VmRSS) read. "trim" is the host as shipped
(malloc_trim(0) after the collection that frees the network); "no trim" is the same with the trim
request disabled.

    python3 scripts/bench/measure_heap_trim.py [--layers 2] [--dim 1536] [--repeats 3]

Prints one line per run and the medians; exits 0. glibc only (elsewhere there is no malloc_trim).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import bench_common  # noqa: F401  first: it puts the repository root and scripts/ on sys.path
from pack_loader import load_pack

PACK = "longlive_vace_heap_trim"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (not Linux)")


def child(models: Path, trim: bool) -> dict:
    """In a fresh process: RSS before loading, after a sampler run, and after freeing the model."""
    os.environ["LONGLIVE_MODELS_DIR"] = str(models)
    nodes = load_pack(PACK, standalone=True).NODE_CLASS_MAPPINGS
    heap = importlib.import_module(f"{PACK}.nodes.heap")
    model_ref = importlib.import_module(f"{PACK}.nodes.model_ref")
    if not trim:
        heap.TRIM.request = lambda: None

    def run(name: str, **inputs):
        cls = nodes[name]
        with torch.inference_mode():  # as ComfyUI's executor runs nodes
            return getattr(cls(), cls.FUNCTION)(**inputs)[0]

    gc.collect()
    before = rss_mib()
    model = run("LongLiveModelLoader", base_checkpoint="base.safetensors", lora="lora.safetensors",
                lora_strength=1.0, dtype="fp32")
    prompt = [[torch.randn(1, 12, model.facts.text_dim, generator=torch.Generator().manual_seed(1)), {}]]
    video = {"samples": torch.zeros(1, 16, 3, 8, 8)}  # what Empty HunyuanVideo Latent makes: 9 frames at 64x64
    run("LongLiveSampler", model=model, positive=prompt, latent=video, seed=1, vace_scale=1.0)
    loaded = rss_mib()
    del model
    model_ref.clear_cache()
    gc.collect()
    return {"trim": trim, "before_mib": round(before, 1), "loaded_mib": round(loaded, 1),
            "after_free_mib": round(rss_mib(), 1)}


def write_models(models: Path, layers: int, dim: int) -> int:
    """A base checkpoint of `layers` blocks at width `dim` (Wan2.1's FFN ratio, head size and text
    width) and a rank-8 LoRA for it; returns the base's bytes."""
    from vace_core.config import WanConfig
    from vace_core.testing import fixtures

    config = WanConfig(dim=dim, ffn_dim=dim * 35 // 6, num_layers=layers, num_heads=dim // 128)
    state = fixtures.make_state_dict(config, seed=0)
    (models / "diffusion_models").mkdir(parents=True)
    (models / "loras").mkdir()
    fixtures.write_wan_safetensors(models / "diffusion_models" / "base.safetensors", state, causal_ar=True)
    fixtures.write_comfy_lora(models / "loras" / "lora.safetensors", fixtures.make_lora(config, rank=8, seed=1),
                              "lora_ab")
    return sum(t.numel() * t.element_size() for t in state.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODELS", "TRIM"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1] == "1")))
        return 0
    with tempfile.TemporaryDirectory() as work:
        models = Path(work) / "models"
        size = write_models(models, args.layers, args.dim)
        print(f"model: {args.layers} blocks at width {args.dim}, {size / 2**20:.0f} MiB in fp32")
        runs: dict[bool, list[dict]] = {True: [], False: []}
        for _ in range(args.repeats):
            for trim in (True, False):  # interleaved
                out = subprocess.run([sys.executable, __file__, "--child", str(models), "1" if trim else "0"],
                                     check=True, capture_output=True, text=True).stdout
                report = json.loads(out.strip().splitlines()[-1])
                runs[trim].append(report)
                print(json.dumps(report))
    for trim in (True, False):
        kept = statistics.median(r["after_free_mib"] - r["before_mib"] for r in runs[trim])
        loaded = statistics.median(r["loaded_mib"] - r["before_mib"] for r in runs[trim])
        print(f"{'trim' if trim else 'no trim'}: after the run +{loaded:.0f} MiB, after freeing +{kept:.0f} MiB "
              "(median, over the RSS before loading)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
