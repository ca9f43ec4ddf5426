#!/usr/bin/env python3
"""The streaming decode of one chunk by ComfyUI's Wan 2.1 VAE (random weights) through the pack's
decoder, as Sampler -> Video runs it between chunks: seconds per chunk and the FLOPs of one (torch's
FlopCounterMode: the VAE's convolutions).

scripts/bench/bench.py's sections that need decode figures run it (on a GPU in a process of its own:
ComfyUI's import sets global torch flags, the SDPA backends among them, that would change the
sections timed after it); it writes its figures to --report.

With --decode-device DEVICE it also times the Sampler -> Video node making --chunks chunks with the
decode on the model's device and on DEVICE (a second GPU, or the CPU: the worker-thread path), the
same random weights both times, each way warmed up and then --rounds rounds interleaved
(bench_decode_device.py's helpers); the gain is the model device's time over DEVICE's.

    python scripts/bench/bench_decode.py --comfyui DIR --device cuda --height 480 --width 832 --report decode.json
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch
from torch.utils.flop_counter import FlopCounterMode

import bench_common as common  # first: it puts the repository root and scripts/ on sys.path
import bench_decode_device
from pack_loader import load_pack
from vace_core.latents import LATENT_CHANNELS, VAE_STRIDE_T

PACKAGE = "longlive_pack"  # ComfyUI has a top-level `nodes` module: the pack gets a name of its own
WAN_VAE_DIM = 96  # the Wan 2.1 VAE's width (smoke runs decode with a width-8 one)
DECODE_DEVICE_INPUT = "decode_device"  # Sampler -> Video's choice of decode device (issue 26)


def random_wan_vae(comfy, dim: int):
    """ComfyUI's VAE of a Wan 2.1 VAE state dict of width `dim` with random weights (the builder the
    integration tests use, tests/integration/make_tiny_wan_vae.py)."""
    path = common.ROOT / "tests" / "integration" / "make_tiny_wan_vae.py"
    builder = importlib.util.spec_from_file_location("make_tiny_wan_vae", path)
    maker = importlib.util.module_from_spec(builder)
    builder.loader.exec_module(maker)
    return comfy.sd.VAE(sd=maker.build_state_dict(dim=dim, seed=0))


def chunk_decode(host: ModuleType, vae, device: torch.device, args: argparse.Namespace) -> dict:
    """The first chunk (its first latent frame decodes to one video frame), one untimed steady chunk
    (kernels and the decoder's temporal state settle), then `repeats` timed ones; the FLOPs of one."""
    decoder = host.streaming_decoder(vae)
    latents = torch.randn(1, LATENT_CHANNELS, args.chunk_frames, args.height // 8, args.width // 8,
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
    with FlopCounterMode(display=False) as counter:
        decode()
    steady = [decode() for _ in range(args.repeats)]
    return {"first_chunk_s": round(first, 4), "steady_chunk_s": round(statistics.median(steady), 4),
            "steady_chunk_min_s": round(min(steady), 4), "repeats": len(steady),
            "flops_per_chunk": counter.get_total_flops()}


def decode_device_gain(pack: dict[str, ModuleType], vae, args: argparse.Namespace) -> dict:
    """Sampler -> Video over `chunks` chunks, decoding on the model's device and on --decode-device:
    each way once untimed (the first run on the decode device makes the VAE's copy and loads it
    there), then --rounds timed rounds, the order alternating (bench_decode_device.interleaved).
    Wall seconds per chunk each way, and the gain: model device / decode device. With both on the
    CPU there is no second device: the ratio is the worker thread's overhead (or what it overlaps
    on a second core). Or why it was skipped."""
    node_class = pack["nodes.video"].LongLiveSampleToVideo
    choices = node_class.INPUT_TYPES()["optional"][DECODE_DEVICE_INPUT][0]
    if args.decode_device not in choices:
        return {"skipped": f"{DECODE_DEVICE_INPUT} offers no {args.decode_device!r} here (choices: {choices})"}
    model_device = choices[0]  # the default: decoded between chunks, on the sampler's device
    with tempfile.TemporaryDirectory(prefix="bench_decode_weights_") as folder:
        files = common.write_pack_weights(args.preset, args.dtype, Path(folder))
        model = common.load_pack_model(pack["nodes.model_ref"], files, args.dtype, vace=False)
        text = common.random_prompt(model.shared.network.config)
        runs = {choice: functools.partial(bench_decode_device.node_run, node_class, model, text, vae, args.height,
                                          args.width, args.chunks, choice)
                for choice in (model_device, args.decode_device)}
        times = bench_decode_device.interleaved(runs, args.rounds, args.chunks)
    per_chunk = bench_decode_device.summary(times, model_device, args.decode_device)["per_chunk"]
    wall = per_chunk["wall"]
    same, other = wall["median"][model_device], wall["median"][args.decode_device]
    return {"chunks": args.chunks, "rounds": args.rounds, "decode_device": args.decode_device,
            "overhead_only": args.device == "cpu" and args.decode_device == "cpu",
            "model_device_chunk_s": round(same, 4), "decode_device_chunk_s": round(other, 4),
            "gain": round(same / other, 4), "gain_of_rounds": round(1 / wall["paired_ratio_median"], 4),
            "video_frames": VAE_STRIDE_T * args.chunk_frames * args.chunks,
            "per_chunk": {clock: per_chunk[clock] for clock in ("wall", "cpu")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="a ComfyUI checkout (run with its python)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--chunk-frames", type=int, default=3, help="latent frames per chunk")
    parser.add_argument("--dim", type=int, default=WAN_VAE_DIM, help="the VAE's width (96: the Wan 2.1 VAE)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode-device", help="also time Sampler -> Video decoding there (e.g. cuda:1, cpu)")
    parser.add_argument("--preset", default="wan2.1-vace-1.3B", help="the DiT of the --decode-device run")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--chunks", type=int, default=6, help="chunks of the --decode-device runs")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of the --decode-device runs")
    parser.add_argument("--report", type=Path, required=True, help="JSON file for the figures")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_comfy_") as base:
        comfy = common.import_comfy(args.comfyui, Path(base), flags=("--cpu",) if device.type == "cpu" else (),
                                    sd="comfy.sd", folder_paths="folder_paths")
        # the videos of --decode-device go here, removed with it (a second call in one process finds
        # ComfyUI imported, its output folder the first call's)
        comfy.folder_paths.set_output_directory(str(Path(base) / "output"))
        load_pack(PACKAGE, standalone=False)
        pack = {name: importlib.import_module(f"{PACKAGE}.{name}")
                for name in ("nodes.host", "nodes.model_ref", "nodes.video")}
        vae = random_wan_vae(comfy, args.dim)
        report = {"vae": f"ComfyUI {comfy.version} Wan 2.1 VAE, width {args.dim}, random weights",
                  "comfyui": comfy.version, **chunk_decode(pack["nodes.host"], vae, device, args)}
        if args.decode_device:
            report["decode_device"] = decode_device_gain(pack, vae, args)
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
