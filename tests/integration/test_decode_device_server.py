"""decode_device on real ComfyUIs (issue 26, docs/decode-device.md): Sampler -> Video decoding on a
worker thread on the CPU writes the same frames as the decode on the model's device, with a VAE of
its own loaded through ComfyUI's memory manager, and "Unload models" (POST /free) releases it.

The session server (`--cpu`, so the model's device is the CPU too) runs the tiny T2V workflow of
test_workflows_e2e as the streaming node, 3 chunks, twice: decode_device left out (a workflow from
before the input) and "cpu". The test pack's GET /longlive_test/loaded_models shows what ComfyUI
holds loaded: after the first run the workflow's VAE, after the second one WanVAE more (the copy
made for the decode device), after /free none. A GPU the server lacks ("cuda:1", a workflow from a
2-GPU machine) runs on the model's device with a warning; a name that is no device is refused
when the prompt is queued.
"""
from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pytest

from comfy_harness import PromptRejected
from test_live_server import decode
from test_workflows_e2e import FRAMES, RUN_TIMEOUT, _streaming_t2v

FREE = {"unload_models": True, "free_memory": True}
RELEASE_TIMEOUT = 60  # seconds


def loaded(server) -> list[dict]:
    return server.get_json("/longlive_test/loaded_models")


def vaes(server) -> list[dict]:
    return [m for m in loaded(server) if m["class"] == "WanVAE"]


def free(server) -> None:
    request = urllib.request.Request(server.url + "/free", data=json.dumps(FREE).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def free_and_wait(server, repost_every: float = 3.0) -> list[dict]:
    """POST /free until nothing is listed as loaded (ComfyUI's worker may miss a wake-up between two
    prompts, see test_comfy_memory_server.wait_for_release); what is still listed at the end."""
    deadline = time.monotonic() + RELEASE_TIMEOUT
    posted = 0.0
    while (still := loaded(server)) and time.monotonic() < deadline:
        if time.monotonic() - posted > repost_every:
            free(server)
            posted = time.monotonic()
        time.sleep(0.2)
    return still


def streaming_graph(prefix: str, decode_device: str | None) -> dict:
    graph = _streaming_t2v(FRAMES, prefix)
    node = next(n for n in graph.values() if n["class_type"] == "LongLiveSampleToVideo")
    if decode_device is not None:
        node["inputs"]["decode_device"] = decode_device
    return graph


def run_streaming(server, prefix: str, decode_device: str | None) -> list[np.ndarray]:
    entry = server.run(streaming_graph(prefix, decode_device), timeout=RUN_TIMEOUT)
    [video] = server.output_files(entry)
    return decode(video)


def test_decoding_on_the_cpu_worker_gives_the_same_video_and_free_releases_its_vae(tiny_server, report_figure):
    choices = tiny_server.get_object_info("LongLiveSampleToVideo")["LongLiveSampleToVideo"]["input"]["optional"]
    assert choices["decode_device"][0] == ["model device", "cpu"]  # a --cpu server has no GPU to offer

    started = time.monotonic()
    inline = run_streaming(tiny_server, "decode_inline", None)
    inline_s = time.monotonic() - started
    before = vaes(tiny_server)
    assert {"class": "WanVAE", "device": "cpu"} in before  # the workflow's VAE, loaded to decode
    started = time.monotonic()
    threaded = run_streaming(tiny_server, "decode_cpu", "cpu")
    threaded_s = time.monotonic() - started
    assert vaes(tiny_server) == before + [{"class": "WanVAE", "device": "cpu"}]  # and the decode device's own

    assert len(threaded) == len(inline) == FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(inline, threaded, strict=True))
    assert free_and_wait(tiny_server) == []
    report_figure(f"decode_device cpu: {FRAMES} frames equal to the model device's; runs {inline_s:.1f} s inline, "
                  f"{threaded_s:.1f} s on the worker (first run of the copy); /free released both VAEs")


def test_a_gpu_missing_here_decodes_on_the_model_device_and_a_name_that_is_no_device_is_refused(tiny_server):
    """A workflow saved on a 2-GPU machine: ComfyUI does not refuse 'cuda:1' (the node validates the
    input itself), the run decodes on the model's device, and the log says so."""
    with pytest.raises(PromptRejected, match="decode_device: 'the second card' is not a device"):
        tiny_server.post_prompt(streaming_graph("decode_refused", "the second card"))
    frames = run_streaming(tiny_server, "decode_missing_gpu", "cuda:1")
    assert len(frames) == FRAMES
    log = tiny_server.log_path.read_text(errors="replace")
    assert "decode_device cuda:1 is not on this machine (it has cpu); decoding on the model's device instead" in log
