#!/usr/bin/env python3
"""What decoding on a worker thread (decode_device, issue 26, docs/decode-device.md) costs per
chunk, on the CPU.

With a decode_device the sampling thread only copies each finished chunk's latents for the worker
and queues them; the worker decodes, encodes and writes the chunk while the next one samples. Two
figures, float32 on one torch thread per thread, medians over interleaved repeats in one process:

1. the decode path alone: the same chunks (random latents, CHUNK_FRAMES latent frames each) decoded
   by the core's causal stand-in VAE and written to an H.264 mp4, called inline or handed to a
   `DecodeWorker` on the CPU by a producer that does nothing else: CPU and wall time per chunk each way.
   The ratio is what the worker path itself costs (the copy, the queue, the hand-over between
   threads), with the same decode work; the acceptance is <= 1.05 on the CPU time (issue 26,
   acceptance 2). The minor page faults are counted too, and the section runs again in a child
   process whose C library keeps freed memory (NO_TRIM): glibc hands the worker thread's freed
   buffers back to the OS more often than the main thread's, and touching them again costs CPU time
   that is the allocator's, not the worker's;
2. the Sampler -> Video node (standalone host) making a video with a tiny model, decode_device
   "model device" and "cpu": CPU and wall time per chunk each way, i.e. on a CPU-only machine, where
   both threads share the cores, what the overlap gains or the contention costs.

On a GPU machine the same node call, with decode_device set to a second GPU, gives the gain of a
second decode GPU: the device plan's decode section (bench_decode.py) times `node_run` both ways
through `interleaved` and `summary`, as section 2 does here.

    python scripts/bench/bench_decode_device.py --repeats 15   -> bench/results-decode-device-cpu.{json,md}
    python scripts/bench/bench_decode_device.py --quick --out /tmp/bench   # smoke run
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import resource
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch

import bench_common as common  # first: it puts the repository root and scripts/ on sys.path
from pack_loader import load_pack
from vace_core.config import architecture
from vace_core.testing import fixtures

PACKAGE = "longlive_pack"
SECTION = "decode-device"
LIMIT = 1.05  # issue 26, acceptance 2: worker path / inline decode, per chunk
CHUNK_FRAMES = 3  # latent frames per chunk (LongLive's)
MODEL = "tiny"  # the preset of the node runs
MODEL_FILE = "bench_tiny.safetensors"
QUICK_SIZE = 32  # --quick: 2 chunks at 32x32, one repeat
MODULES = ("vace_core.streaming", "vace_core.plan", "vace_core.sampler", "vace_core.decode_worker",
           "vace_core.testing.stand_in_vae", "nodes.video", "nodes.loader")  # of the pack, as `pack[name]`


# the process's CPU time (every thread: ours, the worker, x264's), wall time, and the minor page faults
# (memory the C library handed back to the OS and touches again)
CLOCKS = ("cpu", "wall", "faults")
# glibc's thresholds above which freed memory goes back to the OS, fixed high: the allocator's part of
# the figures shows as the difference to a run with its defaults
NO_TRIM = {"MALLOC_TRIM_THRESHOLD_": str(256 << 20), "MALLOC_MMAP_THRESHOLD_": str(32 << 20)}


def interleaved(runs: dict[str, Callable[[], None]], repeats: int, chunks: int) -> dict[str, dict[str, list[float]]]:
    """Per chunk of each run, by clock (seconds; faults): every run once untimed (warm-up), then
    `repeats` timed rounds, the order alternating."""
    for call in runs.values():
        call()
    names = list(runs)
    times = {name: {clock: [] for clock in CLOCKS} for name in runs}
    for repeat in range(repeats):
        for name in (names if repeat % 2 == 0 else names[::-1]):
            faults, cpu, wall = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time(), time.perf_counter()
            runs[name]()
            times[name]["wall"].append((time.perf_counter() - wall) / chunks)
            times[name]["cpu"].append((time.process_time() - cpu) / chunks)
            times[name]["faults"].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / chunks)
    return times


def summary(times: dict[str, dict[str, list[float]]], inline: str, worker: str) -> dict:
    """Per clock: the medians and minima per chunk, their ratios worker / inline, and the median of
    the ratios of the rounds (each round runs both, one after the other)."""
    clocks = {}
    for clock in CLOCKS:
        one, other = times[inline][clock], times[worker][clock]
        clocks[clock] = {"median": {inline: statistics.median(one), worker: statistics.median(other)},
                         "min": {inline: min(one), worker: min(other)},
                         "ratio_of_medians": statistics.median(other) / max(statistics.median(one), 1e-9),
                         "ratio_of_minima": min(other) / max(min(one), 1e-9),
                         "paired_ratio_median": statistics.median(w / max(i, 1e-9) for i, w in zip(one, other))}
    return {"per_chunk": clocks, "all_s": times, "repeats": len(times[inline]["wall"])}


def worker_threads(pack: dict[str, ModuleType]) -> int:
    """torch's intra-op threads as a decode worker thread sees them."""
    seen = []
    with pack["vace_core.decode_worker"].DecodeWorker(torch.device("cpu")) as worker:
        worker.submit(lambda latents: seen.append(torch.get_num_threads()), torch.zeros(1))
    return seen[0]


# ---- 1. the decode path alone -------------------------------------------------------------------

def path_chunk_seconds(pack: dict[str, ModuleType], size: int, chunks: int, repeats: int) -> dict:
    streaming, plan = pack["vace_core.streaming"], pack["vace_core.plan"]
    sampler, decode_worker = pack["vace_core.sampler"], pack["vace_core.decode_worker"]
    stand_in = pack["vace_core.testing.stand_in_vae"]
    generator = torch.Generator().manual_seed(1)
    infos = [sampler.ChunkInfo(plan.Block(i, i * CHUNK_FRAMES, CHUNK_FRAMES, i),
                               torch.randn(1, 16, CHUNK_FRAMES, size // 8, size // 8, generator=generator))
             for i in range(chunks)]

    def run(threaded: bool) -> None:
        with tempfile.TemporaryDirectory() as folder, \
                streaming.VideoWriter(Path(folder) / "bench.mp4", size, size) as writer:
            sink = streaming.ChunkVideoSink(stand_in.CausalStandInVAE(seed=6).streaming_decoder(), writer)
            if threaded:
                with decode_worker.DecodeWorker(torch.device("cpu")) as worker:
                    on_chunk = worker.chunk_sink(sink)
                    for info in infos:
                        on_chunk(info)
            else:
                for info in infos:
                    sink(info)

    times = interleaved({"inline": lambda: run(False), "worker": lambda: run(True)}, repeats, chunks)
    return {"size": f"{size}x{size}", "chunks": chunks, **summary(times, "inline", "worker")}


def handover_seconds(pack: dict[str, ModuleType], height: int, width: int, repeats: int) -> float:
    """What the sampling thread spends per chunk with a worker: the copy of a chunk's latents
    (CHUNK_FRAMES latent frames of height x width pixels) and the queueing, the worker idle."""
    decode_worker = pack["vace_core.decode_worker"]
    latents = torch.randn(1, 16, CHUNK_FRAMES, height // 8, width // 8)
    times = []
    with decode_worker.DecodeWorker(torch.device("cpu")) as worker:
        done = threading.Event()
        for _ in range(repeats + 1):
            done.clear()
            start = time.perf_counter()
            worker.submit(lambda copy: done.set(), latents)
            times.append(time.perf_counter() - start)
            done.wait()  # the queue is empty again: the next submit never waits for room
    return statistics.median(times[1:])


# ---- 2. the node ---------------------------------------------------------------------------------

def node_run(video_node: type, model, text: torch.Tensor, vae, height: int, width: int, chunks: int,
             decode_device: str) -> None:
    """One 'LongLive Sampler -> Video' run (`video_node`: the node's class, LongLiveSampleToVideo)
    of `chunks` chunks with this decode_device, called as ComfyUI's executor calls a node (under
    inference mode); the mp4 goes to the host's output folder."""
    frames = 4 * (CHUNK_FRAMES * chunks - 1) + 1
    latent = {"samples": torch.zeros(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)}
    with torch.inference_mode():
        video_node().generate(model=model, positive=[[text, {}]], latent=latent, seed=0, vace_scale=1.0, vae=vae,
                              filename_prefix="bench_decode_device", fps=16, crf=19, decode_device=decode_device)


def node_runs(pack: dict[str, ModuleType], size: int, chunks: int, repeats: int) -> dict:
    config = architecture(MODEL)
    with tempfile.TemporaryDirectory() as models, tempfile.TemporaryDirectory() as output:
        (Path(models) / "diffusion_models").mkdir()
        fixtures.write_wan_safetensors(Path(models) / "diffusion_models" / MODEL_FILE,
                                       fixtures.make_state_dict(config, seed=0), causal_ar=True)
        os.environ["LONGLIVE_MODELS_DIR"], os.environ["LONGLIVE_OUTPUT_DIR"] = models, output
        model = pack["nodes.loader"].LongLiveModelLoader().load(MODEL_FILE, "none", 1.0, "fp32")[0]
        vae = pack["vace_core.testing.stand_in_vae"].CausalStandInVAE(seed=6)
        text = common.random_prompt(config)
        node = pack["nodes.video"].LongLiveSampleToVideo
        times = interleaved({name: (lambda name=name: node_run(node, model, text, vae, size, size, chunks, name))
                             for name in ("model device", "cpu")}, repeats, chunks)
    return {"model": MODEL, "size": f"{size}x{size}", "chunks": chunks, **summary(times, "model device", "cpu")}


# ---- the report ----------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict:
    load_pack(PACKAGE, standalone=True)
    pack = {name: importlib.import_module(f"{PACKAGE}.{name}") for name in MODULES}
    repeats, chunks, size = (1, 2, QUICK_SIZE) if args.quick else (args.repeats, args.chunks, args.size)
    common.log("the decode path alone, inline / on the worker")
    path = path_chunk_seconds(pack, size, chunks, repeats)
    if args.path_only is not None:
        return path
    path["handover_s"] = {f"{w}x{h}": handover_seconds(pack, h, w, 5 if args.quick else 50)
                          for h, w in ((size, size), (480, 832))}
    common.log("the decode path alone again, in a process whose C library keeps freed memory")
    no_trim = path_without_trim(repeats, chunks, size)
    common.log("Sampler -> Video, decode_device 'model device' / 'cpu'")
    node = node_runs(pack, size, chunks, repeats)
    return {"section": SECTION, "quick": args.quick, "machine": common.machine_info(torch.device("cpu")),
            "worker_torch_threads": worker_threads(pack), "limit": LIMIT, "decode_path": path,
            "decode_path_no_trim": no_trim, "node": node,
            "meets_limit": path["per_chunk"]["cpu"]["ratio_of_medians"] <= LIMIT}


def path_without_trim(repeats: int, chunks: int, size: int) -> dict:
    """Section 1 in a child process run with NO_TRIM (the variables are read when it starts)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "path.json"
        subprocess.run([sys.executable, __file__, "--path-only", str(out), "--repeats", str(repeats), "--chunks",
                        str(chunks), "--size", str(size)], env={**os.environ, **NO_TRIM}, check=True)
        return {"env": NO_TRIM, **json.loads(out.read_text())}


def _figures(section: dict, inline: str, worker: str) -> str:
    """'cpu a / b ms per chunk (xR, ...); wall ...; faults ...' for one section."""
    parts = []
    for clock in CLOCKS:
        c = section["per_chunk"][clock]
        scale, unit = (1, "") if clock == "faults" else (1e3, " ms")
        parts.append(f"{clock} {c['median'][inline] * scale:.1f} / {c['median'][worker] * scale:.1f}{unit} per chunk, "
                     f"x{c['ratio_of_medians']:.3f} (minima x{c['ratio_of_minima']:.3f}, rounds "
                     f"x{c['paired_ratio_median']:.3f})")
    return "; ".join(parts)


def markdown(result: dict) -> str:
    m, path, node, no_trim = result["machine"], result["decode_path"], result["node"], result["decode_path_no_trim"]
    handover = ", ".join(f"{seconds * 1e6:.0f} µs at {size}" for size, seconds in path["handover_s"].items())
    env = " ".join(f"{key}={value}" for key, value in no_trim["env"].items())
    return "\n".join([
        "## Decoding on a worker thread (decode_device): cost per chunk on the CPU", "",
        (f"Machine: {m['cpu']} ({m['cpu_count']} cores, shared); torch {m['torch']}, {m['torch_threads']} thread "
         f"(the worker: {result['worker_torch_threads']}); {path['repeats']} interleaved rounds in one process, "
         "medians (`scripts/bench/bench_decode_device.py`). CPU time is the process's, all threads (ours, the worker, "
         "x264's): on a shared machine it measures the work, where wall time also measures the neighbours; faults "
         "are minor page faults (memory the C library gave back to the OS and touches again)."), "",
        (f"1. The decode path alone ({path['chunks']} chunks of {CHUNK_FRAMES} latent frames at {path['size']}: the "
         "core's causal stand-in VAE, H.264 into an mp4), inline / handed to a `DecodeWorker` on the CPU: "
         f"{_figures(path, 'inline', 'worker')}. Limit x{result['limit']:.2f} on the CPU time: "
         f"**{common.verdict(result['meets_limit'])}**. The sampling thread's part of it (copying a chunk's latents "
         f"for the worker and queueing them, the worker idle): {handover}."),
        (f"   The same in a process whose C library keeps freed memory ({env}): "
         f"{_figures(no_trim, 'inline', 'worker')}."),
        (f"2. 'LongLive Sampler -> Video' (standalone host, the {node['model']} model, {node['chunks']} chunks at "
         f"{node['size']}), decode_device 'model device' / 'cpu': {_figures(node, 'model device', 'cpu')}. On a "
         "CPU-only machine the worker shares the cores with the sampler: this is the overlap gained or the "
         "contention paid there; with a second GPU the decode leaves the sampling GPU altogether."), ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 chunks at 32x32, one repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--chunks", type=int, default=12)
    parser.add_argument("--size", type=int, default=128, help="frame width and height (a multiple of 16)")
    parser.add_argument("--out", type=Path, default=common.ROOT / "bench")
    parser.add_argument("--path-only", type=Path, help=argparse.SUPPRESS)  # the child of path_without_trim
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = run(args)
    if args.path_only is not None:
        args.path_only.write_text(json.dumps(result))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"results-decode-device-cpu{'-quick' if args.quick else ''}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
