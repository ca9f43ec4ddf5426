"""Smoke test of scripts/bench/bench_decode_device.py, in this process (the pack as the other node tests
import it), the allocator variant of section 1 in its child process: each section runs on tiny
inputs and reports what the results file and its summary need. Timings are not asserted (noise on
a shared CPU)."""

from __future__ import annotations

import importlib

import torch

from helpers import PACK, load_script
from test_streaming import text

bench = load_script("bench/bench_decode_device")
pack = {name: importlib.import_module(f"{PACK}.{name}") for name in bench.MODULES}


def check_section(section: dict, inline: str, worker: str) -> None:
    assert section["repeats"] == 1
    for clock in bench.CLOCKS:
        assert set(section["per_chunk"][clock]["median"]) == {inline, worker}
    assert all(seconds > 0 for clock in ("cpu", "wall") for seconds in section["per_chunk"][clock]["median"].values())


def test_the_sections_run_and_the_summary_reads_them(micro_checkpoint, output_dir):
    path = bench.path_chunk_seconds(pack, size=32, chunks=2, repeats=1)
    check_section(path, "inline", "worker")
    path["handover_s"] = {"32x32": bench.handover_seconds(pack, 32, 32, repeats=3)}
    assert path["handover_s"]["32x32"] > 0
    no_trim = bench.path_without_trim(repeats=1, chunks=2, size=32)
    check_section(no_trim, "inline", "worker")
    assert no_trim["env"] == bench.NO_TRIM

    vae = pack["vace_core.testing.stand_in_vae"].CausalStandInVAE(seed=6)
    node = pack["nodes.video"].LongLiveSampleToVideo
    times = bench.interleaved({name: (lambda name=name: bench.node_run(node, micro_checkpoint, text(1), vae, 32, 32, 2,
                                                                       name))
                               for name in ("model device", "cpu")}, repeats=1, chunks=2)
    assert len(list(output_dir.glob("bench_decode_device_*.mp4"))) == 4  # a warm-up and a timed run each
    section = {"model": "micro", "size": "32x32", "chunks": 2, **bench.summary(times, "model device", "cpu")}
    check_section(section, "model device", "cpu")

    result = {"machine": {"cpu": "cpu", "cpu_count": 2, "torch": torch.__version__, "torch_threads": 1},
              "worker_torch_threads": bench.worker_threads(pack), "limit": bench.LIMIT, "decode_path": path,
              "decode_path_no_trim": no_trim, "node": section, "meets_limit": True}
    summary_text = bench.markdown(result)
    assert "Decoding on a worker thread" in summary_text and "Limit x1.05 on the CPU time: **PASS**" in summary_text
    assert "MALLOC_TRIM_THRESHOLD_=268435456" in summary_text
