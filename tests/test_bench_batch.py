"""Smoke test of scripts/bench/bench_batch.py (issue 25): its quick CPU run, tiny sizes. Timings are not
asserted (benchmarks, not tests); what every run must show is: the runs finite, the KV cache bytes
measured per extra video equal to the memory request's estimate. Its GPU section's function
(`device_figures`) is the device plan's batch section: tests/test_bench.py runs it on the CPU."""

import json

from helpers import load_script

bench_batch = load_script("bench/bench_batch")


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

