"""Smoke test of scripts/bench/bench_batch.py (issue 25): its quick CPU run and its GPU section's function on
the CPU, tiny sizes. Timings are not asserted (benchmarks, not tests); what every run must show is:
the runs finite, the KV cache bytes measured per extra video equal to the memory request's estimate,
and the device section's figures for every kind and batch size, written as they come."""

import json

import torch

from helpers import load_script

bench_batch = load_script("bench/bench_batch")
common = load_script("bench/bench_common")


def test_quick_run_reports_time_per_video_and_the_measured_cache_per_extra_video(tmp_path):
    assert bench_batch.main(["--quick", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results-batch-cpu-quick.json",
                                                         "results-batch-cpu-quick.md"]
    cpu = json.loads((tmp_path / "results-batch-cpu-quick.json").read_text())["cpu"]
    assert list(cpu["kinds"]) == ["t2v", "r2v"]
    for kind in cpu["kinds"].values():
        assert kind["finite"] and kind["ratio_to_batch_1"]["1"] == 1.0
        assert all(kind["seconds_per_video"][b] > 0 for b in ("1", "2", "4"))
        measured = kind["cache_bytes_measured"]
        assert measured["2"] == 2 * measured["1"] and measured["4"] == 4 * measured["1"]
        assert kind["cache_bytes_per_extra_video"] == kind["estimate"]["cache_bytes_per_video"] == measured["1"]
        assert kind["estimate"]["per_video_bytes"] > kind["estimate"]["cache_bytes_per_video"]
    # the released model at 480x832 in bf16: T2V keeps 3.48 GiB of KV cache per video with one
    # reference, 3.21 GiB without (docs/how-it-works.md#the-gpu-path); R2V adds the VACE blocks' cache
    t2v, r2v = (cpu["kinds"][k]["estimate_480x832_bf16"]["cache_bytes_per_video"] / 2**30 for k in ("t2v", "r2v"))
    assert round(t2v, 2) == 3.21 and round(r2v, 2) == 5.22
    markdown = (tmp_path / "results-batch-cpu-quick.md").read_text()
    assert markdown.count("\n| t2v |") == 1 and markdown.count("\n| r2v |") == 1


def test_the_device_section_writes_every_kind_and_batch_as_it_goes():
    written = []
    with torch.inference_mode():
        figures = bench_batch.device_figures(torch.device("cpu"), lambda f: written.append(sorted(f["runs"])),
                                             plan=common.PLANS["quick"], chunks=2)
    names = [f"{kind}_batch_{b}" for kind in ("t2v", "r2v") for b in (1, 2, 4)]
    assert written[-1] == sorted(names) and len(written) == len(names)
    assert figures["video_frames"] == 21
    for name in names:
        run = figures["runs"][name]
        assert run["finite"] and run["peak_bytes"] is None  # no CUDA: no peak VRAM
        assert run["videos_per_hour"] > 0 and run["estimate_bytes"] > figures["weights_bytes"]
