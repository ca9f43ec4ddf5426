#!/usr/bin/env python3
"""What the live chunk previews (issue 19, nodes/live.py) cost per chunk, on the CPU.

The execution thread only hands a finished chunk over (the LATENT nodes copy its latents to the
CPU: 3 latent frames of 60x104, 1.2 MB at 480x832; the streaming node passes its decoded frames
on). The preview worker thread does the rest while the next chunk is made:
- the preview frames: ComfyUI's own Latent2RGB previewer (Wan 2.1 factors; one image per latent
  frame at latent resolution, held for the 4 video frames it stands for) for the LATENT nodes;
  every n-th pixel of the decoded frames (n = 2 at 480x832) in 8 bits for the streaming node;
- the H.264 encode (ultrafast, crf 28) and write of the clip, and the websocket message.

Measured here, float32 on one CPU thread, medians over interleaved repeats:
1. a tiny-model T2V run of CHUNKS chunks at 128x128 with and without previews (the LATENT path,
   through the real ChunkPreviews and ComfyUI's previewer): the wall time per chunk each way, i.e.
   what the previews cost the run, worker contention included;
2. the worker's parts alone, at the tiny run's size and at 480x832 (the frames a chunk has there).

A GPU machine runs the worker's CPU code just the same (ComfyUI's VAE hands decoded frames back on
the CPU), so the 480x832 figures stand for it: the report sets them against a chunk's time on an
H100 (LongLive's 20.7 FPS: 0.58 s per 12 frames; the compute-only bound in docs/how-it-works.md, 69 FPS:
0.17 s). The worker adds nothing to a chunk while it needs less than a chunk's time.

Run with ComfyUI's python (the LATENT path uses ComfyUI's previewer); nothing is written into the
checkout:

    PYTHONDONTWRITEBYTECODE=1 /opt/comfy-venv/bin/python scripts/bench/bench_preview.py --comfyui DIR
        -> bench/results-preview-cpu.json and bench/results-preview-cpu.md
    ... scripts/bench/bench_preview.py --comfyui DIR --quick --out /tmp/bench   # smoke run
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

import bench_common as common  # first: it puts the repository root and scripts/ on sys.path
from pack_loader import load_pack
from vace_core.config import architecture
from vace_core.model import CausalWanModel
from vace_core.testing.fixtures import make_state_dict

PACKAGE = "longlive_pack"  # ComfyUI has a top-level `nodes` module: the pack gets a name of its own

SECTION = "live-preview"
CHUNK_FRAMES = 3
H100_CHUNK_S = 12 / 20.7  # LongLive 1.0 on one H100, T2V at 480x832 (docs/how-it-works.md#the-gpu-path)
BOUND_CHUNK_S = 12 / 69  # compute-only bound at 800 TFLOP/s (docs/how-it-works.md#the-gpu-path)
TINY_SIZE = 128


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def smooth_frames(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Decoded-looking frames [T, H, W, 3] in 0..1: smooth colour fields drifting over time (pure
    noise would make the encoder several times slower than on real video)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(frames + 3, 3, height // 32, width // 32, generator=generator)
    coarse = coarse.unfold(0, 4, 1).mean(-1)[:frames]  # neighbouring frames alike
    fine = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return fine.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


class Parts:
    """The two parts of one chunk's preview, with the pack's own functions."""

    def __init__(self, pack: dict, folder: Path) -> None:
        self.live, self.plan = pack["nodes.live"], pack["vace_core.plan"]
        self.project = pack["nodes.host"].latent_rgb_previewer()
        if self.project is None:
            raise SystemExit("ComfyUI's Latent2RGB previewer is unavailable: run with ComfyUI's python and --comfyui")
        self.previews = self.live.ChunkPreviews("bench", "1", 1, 0, folder, lambda event, data: None)
        self.clips = 0

    def latent_frames(self, latents: torch.Tensor) -> object:
        return self.live.hold_latent_frames(self.project(latents.to("cpu", torch.float32)), starts_video=False)

    def decoded_frames(self, pixels: torch.Tensor) -> object:
        return self.live.to_preview_frames(pixels)

    def encode(self, frames) -> None:
        """What the worker thread does for a chunk: the clip's encode and write, and the message."""
        self.clips += 1
        self.previews._write_and_send(frames, self.plan.Block(self.clips, 0, CHUNK_FRAMES, self.clips))


def parts_at(parts: Parts, height: int, width: int, repeats: int) -> dict:
    latents = torch.randn(1, 16, CHUNK_FRAMES, height // 8, width // 8, generator=torch.Generator().manual_seed(1))
    pixels = smooth_frames(4 * CHUNK_FRAMES, height, width)
    latent_clip, decoded_clip = parts.latent_frames(latents), parts.decoded_frames(pixels)
    return {
        "size": f"{width}x{height}",
        "latent_clip": list(latent_clip.shape), "decoded_clip": list(decoded_clip.shape),
        "latent_frames_s": median_seconds(lambda: parts.latent_frames(latents), repeats),
        "latent_encode_s": median_seconds(lambda: parts.encode(latent_clip), repeats),
        "decoded_frames_s": median_seconds(lambda: parts.decoded_frames(pixels), repeats),
        "decoded_encode_s": median_seconds(lambda: parts.encode(decoded_clip), repeats),
    }


def tiny_runs(pack: dict, folder: Path, chunks: int, repeats: int) -> dict:
    """Wall seconds per chunk of a tiny T2V run without and with LATENT-node previews, interleaved."""
    sampler, live = pack["vace_core.sampler"], pack["nodes.live"]
    config = architecture("tiny")
    model = CausalWanModel(config)
    model.load_state_dict(make_state_dict(config, seed=0))
    model.eval()
    text = common.random_prompt(config)
    video_frames = 4 * (CHUNK_FRAMES * chunks - 1) + 1
    project = pack["nodes.host"].latent_rgb_previewer()

    def run(with_previews: bool) -> float:
        previews = live.ChunkPreviews("bench", "1", chunks, 0, folder, lambda event, data: None)
        run_live = live.LiveRun(previews if with_previews else None, None, None, project)
        start = time.perf_counter()
        sampler.generate(model, text, video_frames=video_frames, height=TINY_SIZE, width=TINY_SIZE, seed=0,
                         on_chunk=run_live.on_chunk)
        previews.close()  # the node waits for the last clip too
        return (time.perf_counter() - start) / chunks

    run(False)
    run(True)
    times: dict[str, list[float]] = {"off": [], "on": []}
    for repeat in range(repeats):
        for name in (("off", "on") if repeat % 2 == 0 else ("on", "off")):
            times[name].append(run(name == "on"))
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    return {"chunks": chunks, "size": f"{TINY_SIZE}x{TINY_SIZE}", "chunk_s_without": off, "chunk_s_with": on,
            "with_over_without": on / off, "repeats": repeats}


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as base:
        comfy = common.import_comfy(args.comfyui, Path(base), latent_preview="latent_preview")
    load_pack(PACKAGE, standalone=False)  # its host finds the ComfyUI imported above
    pack = {name: importlib.import_module(f"{PACKAGE}.{name}")
            for name in ("nodes.live", "nodes.host", "vace_core.plan", "vace_core.sampler")}
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as folder:
        parts = Parts(pack, Path(folder))
        common.log("tiny T2V run, previews off / on")
        tiny = tiny_runs(pack, Path(folder), 3 if args.quick else args.chunks, repeats)
        sizes = {}
        for name, (height, width) in {"tiny": (TINY_SIZE, TINY_SIZE), "480x832": (480, 832)}.items():
            if args.quick and name != "tiny":
                continue
            common.log(f"preview parts at {name}")
            sizes[name] = parts_at(parts, height, width, repeats)
        parts.previews.close()
    return {"section": SECTION, "quick": args.quick, "comfyui": comfy.version,
            "machine": common.machine_info(torch.device("cpu")), "tiny_run": tiny, "parts": sizes,
            "gpu_chunk_s": {"h100_longlive": H100_CHUNK_S, "compute_bound": BOUND_CHUNK_S}}


def markdown(result: dict) -> str:
    m, tiny = result["machine"], result["tiny_run"]
    lines = [f"## Live chunk previews: cost per chunk (ComfyUI {result['comfyui']})", "",
             (f"Machine: {m['cpu']} ({m['cpu_count']} cores, shared); torch {m['torch']}, 1 thread; medians over "
              "interleaved repeats (`scripts/bench/bench_preview.py`)."), "",
             (f"Tiny-model T2V run at {tiny['size']}, {tiny['chunks']} chunks, LATENT-node previews (ComfyUI's "
              f"Latent2RGB) off / on: {tiny['chunk_s_without'] * 1e3:.1f} / {tiny['chunk_s_with'] * 1e3:.1f} ms "
              f"per chunk (x{tiny['with_over_without']:.3f})."), "",
             "The preview worker's time per chunk (the execution thread only hands the chunk over):", "",
             "| chunk of | LATENT nodes: Latent2RGB frames + encode | streaming node: every n-th pixel + encode |",
             "|---|---|---|"]
    for part in result["parts"].values():
        latent = part["latent_frames_s"] + part["latent_encode_s"]
        decoded = part["decoded_frames_s"] + part["decoded_encode_s"]
        lines.append(f"| {part['size']} (clips of {part['latent_clip'][2]}x{part['latent_clip'][1]} / "
                     f"{part['decoded_clip'][2]}x{part['decoded_clip'][1]}) | {latent * 1e3:.1f} ms "
                     f"({part['latent_frames_s'] * 1e3:.1f} + {part['latent_encode_s'] * 1e3:.1f}) | "
                     f"{decoded * 1e3:.1f} ms ({part['decoded_frames_s'] * 1e3:.1f} + "
                     f"{part['decoded_encode_s'] * 1e3:.1f}) |")
    big = result["parts"].get("480x832")
    if big is not None:
        gpu = result["gpu_chunk_s"]
        latent = big["latent_frames_s"] + big["latent_encode_s"]
        decoded = big["decoded_frames_s"] + big["decoded_encode_s"]
        lines.append("")
        for label, chunk in (("an H100 at LongLive's 20.7 FPS", gpu["h100_longlive"]),
                             ("the compute-only bound (69 FPS)", gpu["compute_bound"])):
            lines.append(
                f"- Estimate at 480x832 on {label} ({chunk * 1e3:.0f} ms per chunk): the worker needs "
                f"{latent / chunk:.0%} (LATENT nodes) / {decoded / chunk:.0%} (streaming node) of a chunk's time "
                f"and overlaps the next chunk, so the previews add nothing to the run while this stays below "
                "100 %; the execution thread's hand-over is a 1.2 MB copy (LATENT nodes) or nothing.")
        lines.append("- These CPU figures come from this shared 2-core machine; a GPU host's CPU is usually faster.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, default=common.default_comfyui(),
                        help="a ComfyUI checkout, 0.8 or newer (default: the first in $COMFYUI_DIR, else /opt/ComfyUI)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 chunks, the tiny size, one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--out", type=Path, default=common.ROOT / "bench")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"results-preview-cpu{'-quick' if args.quick else ''}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
