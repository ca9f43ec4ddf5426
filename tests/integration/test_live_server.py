"""Watch it grow, steer it live, on real ComfyUIs (docs/live.md#the-contract): the `longlive.chunk` messages and
their preview clips served by GET /view, POST /longlive/steer while a node runs (200 / 404 / 400),
the steering record in the mp4, and replays that give the same frames.

The tiny T2V workflow of test_workflows_e2e (80x48, tiny weights, the harness's tiny real Wan VAE,
core CLIPTextEncode on the test pack's CLIP) runs at a length of 14 chunks for the previews, and the
streaming node at 8 chunks for steering; the test client reads the websocket with the headless
client's own websocket code, as the client that queued the prompt.
"""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import load_script
from test_workflows_e2e import (HEIGHT, RUN_TIMEOUT, WIDTH, _streaming_t2v, load_api, tiny_graph,  # noqa: F401 (fixture)
                                tiny_server)

qw = load_script("queue_workflow")

CHUNKS = 14
LENGTH_14_CHUNKS = 4 * (3 * CHUNKS - 1) + 1  # 42 latent frames


def decode(source: bytes | Path) -> list[np.ndarray]:
    """The frames of an mp4 (a file, or its bytes), as RGB arrays."""
    with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def metadata(path: Path) -> dict:
    with av.open(str(path)) as container:
        return dict(container.metadata)


def steer(server, body, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + "/longlive/steer", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def view(server, preview: dict) -> bytes:
    query = urllib.parse.urlencode(preview)
    with urllib.request.urlopen(f"{server.url}/view?{query}", timeout=30) as response:
        assert response.headers["Content-Type"] == "video/mp4"
        return response.read()


def run_watching(server, graph: dict, on_chunk=None, timeout: float = RUN_TIMEOUT) -> tuple[str, list[dict], dict]:
    """Queue `graph` as a client with its own websocket; call `on_chunk(prompt_id, data)` for every
    longlive.chunk message of the prompt; return (prompt_id, the chunk messages, the history entry)."""
    client_id, prompt_id = uuid.uuid4().hex, str(uuid.uuid4())
    ws = qw.WebSocket(f"ws://{server.url.split('://', 1)[1]}/ws?clientId={client_id}", 30)
    chunks = []
    try:
        qw.ComfyAPI(server.url).queue(graph, client_id, prompt_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = ws.receive(wait=1.0)
            if message is None or message[0] != qw.OP_TEXT:
                continue
            event = json.loads(message[1])
            data = event.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if event["type"] == "longlive.chunk":
                chunks.append(data)
                if on_chunk is not None:
                    on_chunk(prompt_id, data)
            if event["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                break
    finally:
        ws.close()
    return prompt_id, chunks, server.wait(prompt_id, timeout=60)


def node_of(graph: dict, class_type: str) -> str:
    return next(i for i, n in graph.items() if n["class_type"] == class_type)


def test_every_chunk_sends_a_preview_served_by_view_with_the_frames_it_states(tiny_server, report_figure):
    graph = tiny_graph(load_api("longlive_t2v"))
    qw.apply_overrides(graph, qw.Overrides(frames=LENGTH_14_CHUNKS, seed=101))
    sampler = node_of(graph, "LongLiveSampler")
    started = time.monotonic()
    prompt_id, chunks, entry = run_watching(tiny_server, graph)
    seconds = time.monotonic() - started
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert [(c["node"], c["chunk"], c["chunks"]) for c in chunks] == [(sampler, n, CHUNKS) for n in range(1, CHUNKS + 1)]
    # frames tile the video: 9 frames, then 12 per chunk, each chunk starting where the last ended
    assert [c["frames"] for c in chunks] == [9] + [12] * (CHUNKS - 1)
    assert [c["first_frame"] for c in chunks] == [0] + [9 + 12 * n for n in range(CHUNKS - 1)]
    assert chunks[-1]["first_frame"] + chunks[-1]["frames"] == LENGTH_14_CHUNKS
    for chunk in chunks:
        assert set(chunk) == {"prompt_id", "node", "chunk", "chunks", "first_frame", "frames", "preview"}
        assert chunk["preview"]["type"] == "temp"
        frames = decode(view(tiny_server, chunk["preview"]))
        assert len(frames) == chunk["frames"]
        assert frames[0].shape == (HEIGHT // 8, WIDTH // 8, 3)  # ComfyUI's Latent2RGB preview: latent resolution
    # the steerable workflow (its clip is connected) records that nothing steered it
    [video] = tiny_server.output_files(entry)
    assert json.loads(metadata(video)["longlive_steering"]) == []
    assert entry["outputs"][sampler]["longlive_steering"] == []
    report_figure(f"live previews: {CHUNKS} chunks of the tiny T2V in {seconds:.1f} s, every clip served by /view")


def test_a_steer_after_the_third_chunk_is_recorded_and_replays_to_the_same_frames(tiny_server):
    length = 4 * (3 * 8 - 1) + 1  # 8 chunks
    graph = _streaming_t2v(length, "steered")
    qw.apply_overrides(graph, qw.Overrides(seed=202))
    node = node_of(graph, "LongLiveSampleToVideo")
    answers, refused = [], []

    def on_chunk(prompt_id, data):
        if data["chunk"] == 3:
            answers.append(steer(tiny_server, {"prompt_id": prompt_id, "text": "the fox turns into a hare"}))
            # while it runs: 400 for bad requests, 404 for another prompt or node
            refused.extend([
                steer(tiny_server, None, raw=b"{not json"),
                steer(tiny_server, {"prompt_id": prompt_id, "text": "   "}),
                steer(tiny_server, {"prompt_id": prompt_id, "text": "x" * 2001}),
                steer(tiny_server, {"prompt_id": prompt_id, "text": "ok", "node": "999"}),
                steer(tiny_server, {"prompt_id": str(uuid.uuid4()), "text": "ok"}),
            ])

    prompt_id, chunks, entry = run_watching(tiny_server, graph, on_chunk)
    assert entry["status"]["status_str"] == "success", entry["status"]
    [(status, answer)] = answers
    frame = answer["takes_effect_at_frame"]
    assert status == 200 and answer == {"prompt_id": prompt_id, "node": node, "takes_effect_at_frame": frame}
    starts = [c["first_frame"] for c in chunks]
    assert frame in starts[3:], (frame, starts)  # a chunk boundary after the third chunk
    assert [s for s, _ in refused] == [400, 400, 400, 404, 404], refused
    assert "at most 2000" in refused[2][1]["error"] and "not running" in refused[4][1]["error"]
    record = [{"frame": frame, "text": "the fox turns into a hare"}]
    assert entry["outputs"][node]["longlive_steering"] == record
    [steered] = tiny_server.output_files(entry)
    assert json.loads(metadata(steered)["longlive_steering"]) == record
    # the prompt has finished: it cannot be steered any more
    assert steer(tiny_server, {"prompt_id": prompt_id, "text": "too late"})[0] == 404

    # replay: the same workflow, same seed, a Prompt Schedule made from the record with core
    # CLIPTextEncode on the same CLIP
    replay = json.loads(json.dumps(graph))
    clip = replay[node]["inputs"]["clip"]
    replay["900"] = {"class_type": "CLIPTextEncode", "inputs": {"text": record[0]["text"], "clip": clip}}
    replay["901"] = {"class_type": "LongLivePromptSchedule", "inputs": {"conditioning": ["900", 0],
                                                                      "start_frame": frame}}
    replay[node]["inputs"].update(prompt_schedule=["901", 0], filename_prefix="replayed")
    replayed_entry = tiny_server.run(replay, timeout=RUN_TIMEOUT)
    [replayed] = tiny_server.output_files(replayed_entry)
    assert json.loads(metadata(replayed)["longlive_steering"]) == []  # nothing steered the replay
    steered_frames, replayed_frames = decode(steered), decode(replayed)
    assert len(steered_frames) == len(replayed_frames) == length
    assert all(np.array_equal(a, b) for a, b in zip(steered_frames, replayed_frames))
    # the frames before the switch are those of an unsteered run; after it they differ
    plain = dict(json.loads(json.dumps(graph)))
    plain[node] = dict(plain[node], inputs=dict(plain[node]["inputs"], filename_prefix="plain"))
    [unsteered] = tiny_server.output_files(tiny_server.run(plain, timeout=RUN_TIMEOUT))
    plain_frames = decode(unsteered)
    assert all(np.array_equal(a, b) for a, b in zip(plain_frames[:frame], steered_frames[:frame]))
    assert not np.array_equal(np.stack(plain_frames[frame:]), np.stack(steered_frames[frame:]))


def test_steering_route_answers_404_and_400_when_nothing_runs(tiny_server):
    assert steer(tiny_server, {"prompt_id": str(uuid.uuid4()), "text": "a cat"})[0] == 404
    assert steer(tiny_server, None, raw=b'{"prompt_id": "x"')[0] == 400
    assert steer(tiny_server, None, raw=b"{" + b" " * 20000 + b"}")[0] == 400  # over the body limit
    assert steer(tiny_server, {"prompt_id": "x", "text": ""})[0] == 400
    # mirrored under /api like ComfyUI's own routes, and behind the same origin check as /prompt
    request = urllib.request.Request(tiny_server.url + "/api/longlive/steer", method="POST",
                                     data=json.dumps({"prompt_id": "x", "text": "a"}).encode())
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=30)
    assert missing.value.code == 404 and "not running" in json.loads(missing.value.read())["error"]
    port = tiny_server.url.rsplit(":", 1)[1]
    for route in ("/longlive/steer", "/prompt"):
        foreign = urllib.request.Request(tiny_server.url + route, method="POST", data=b"{}",
                                         headers={"Origin": "http://evil.example", "Host": f"127.0.0.1:{port}"})
        with pytest.raises(urllib.error.HTTPError) as blocked:
            urllib.request.urlopen(foreign, timeout=30)
        assert blocked.value.code == 403, route
    assert tiny_server.get_object_info("LongLiveSteeringSchedule")  # the server keeps serving


def test_the_headless_client_steers_from_stdin_and_replays_the_steering_from_the_mp4(tiny_server, tmp_path):
    """`queue_workflow.py --steer` sends each line of its standard input once the first chunk is made;
    `queue_workflow.py THE.mp4 --replay-steering` queues the workflow the mp4 records with the
    steering as a schedule: the same frames."""
    graph_file = tmp_path / "steer.json"
    graph = _streaming_t2v(4 * (3 * 8 - 1) + 1, "cli_steered")
    qw.apply_overrides(graph, qw.Overrides(seed=404))
    graph_file.write_text(json.dumps(graph))
    script = str(Path(qw.__file__))
    steered = subprocess.run([sys.executable, script, str(graph_file), "--server", tiny_server.url, "--steer",
                              "--out", str(tmp_path / "steered")], input="a hare runs across the snow\n",
                             capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert steered.returncode == 0, steered.stderr
    said = re.search(r"steered: 'a hare runs across the snow' takes over at frame (\d+)", steered.stderr)
    assert said, steered.stderr
    record = [{"frame": int(said.group(1)), "text": "a hare runs across the snow"}]
    assert "chunk 1/8 made (frames 0-8)" in steered.stderr
    [video] = [Path(line) for line in steered.stdout.split()]
    assert json.loads(metadata(video)["longlive_steering"]) == record
    assert f"(replay it with --replay-steering): {json.dumps(record)}" in steered.stderr

    replayed = subprocess.run([sys.executable, script, str(video), "--server", tiny_server.url, "--replay-steering",
                               "--out", str(tmp_path / "replayed")], capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
    assert replayed.returncode == 0, replayed.stderr
    assert "LongLiveSteeringSchedule) replays 1 steering text(s)" in replayed.stderr
    [again] = [Path(line) for line in replayed.stdout.split()]
    first, second = decode(video), decode(again)
    assert len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second))
