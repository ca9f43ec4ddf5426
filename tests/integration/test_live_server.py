"""Watch it grow, steer it live, on real ComfyUIs (DESIGN.md §12): the `longlive.chunk` messages and
their preview clips served by GET /view, POST /longlive/steer while a node runs (200 / 404 / 400),
the steering record in the mp4, and replays that give the same frames.

The tiny T2V workflow of test_workflows_e2e (80x48, tiny weights, the harness's tiny real Wan VAE,
core CLIPTextEncode on the test pack's CLIP) runs at a length of 14 chunks for the previews, read
from the websocket with the headless client's own websocket code, as the client that queued the
prompt; and the streaming node at 8 chunks for steering: one run, queued and steered by the
headless client while the test steers it through the route too, replayed once by the client.
"""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
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


def run_client_steering(server, graph_file: Path, out: Path, first_line: str, at_chunk: int, on_chunk
                        ) -> tuple[subprocess.CompletedProcess, str]:
    """`queue_workflow.py GRAPH --steer` with `first_line` on its standard input; `on_chunk(prompt_id)`
    is called once the client reports chunk `at_chunk` made. Returns (the finished client, its prompt_id)."""
    client = subprocess.Popen([sys.executable, str(Path(qw.__file__)), str(graph_file), "--server", server.url,
                               "--steer", "--out", str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    client.stdin.write(first_line + "\n")
    client.stdin.close()
    said, prompt_id = [], None
    deadline = threading.Timer(RUN_TIMEOUT, client.kill)  # reading its output waits for nothing else
    deadline.start()
    try:
        for line in client.stderr:  # line by line while it runs
            said.append(line)
            queued = re.search(r"queued prompt (\S+)", line)
            prompt_id = queued.group(1) if queued else prompt_id
            if f": chunk {at_chunk}/" in line:
                on_chunk(prompt_id)
        stdout = client.stdout.read()
        client.wait(timeout=RUN_TIMEOUT)
    finally:
        deadline.cancel()
        if client.poll() is None:
            client.kill()
            client.wait()
    return subprocess.CompletedProcess(client.args, client.returncode, stdout, "".join(said)), prompt_id


def test_steers_from_the_client_and_the_route_are_recorded_and_replay_to_the_same_frames(tiny_server, tmp_path):
    """One steered run on the streaming node, 8 chunks: queued by `queue_workflow.py --steer`, which
    sends its standard input's line once the first chunk is made, while the test POSTs a second text
    to /longlive/steer itself after the third chunk (and bad requests, refused while it runs). Both
    land in the mp4's steering record; `queue_workflow.py THE.mp4 --replay-steering` queues the
    workflow the mp4 records with that steering as a schedule: the same frames. An unsteered run has
    the same frames up to the first steer, and others after it."""
    length = 4 * (3 * 8 - 1) + 1  # 8 chunks
    graph = _streaming_t2v(length, "steered")
    qw.apply_overrides(graph, qw.Overrides(seed=202))
    node = node_of(graph, "LongLiveSampleToVideo")
    graph_file = tmp_path / "steer.json"
    graph_file.write_text(json.dumps(graph))
    client_text, route_text = "a hare runs across the snow", "the fox turns into a hare"
    answers, refused = [], []

    def after_the_third_chunk(prompt_id):
        answers.append(steer(tiny_server, {"prompt_id": prompt_id, "text": route_text}))
        # while it runs: 400 for bad requests, 404 for another prompt or node
        refused.extend([
            steer(tiny_server, None, raw=b"{not json"),
            steer(tiny_server, {"prompt_id": prompt_id, "text": "   "}),
            steer(tiny_server, {"prompt_id": prompt_id, "text": "x" * 2001}),
            steer(tiny_server, {"prompt_id": prompt_id, "text": "ok", "node": "999"}),
            steer(tiny_server, {"prompt_id": str(uuid.uuid4()), "text": "ok"}),
        ])

    steered, prompt_id = run_client_steering(tiny_server, graph_file, tmp_path / "steered", client_text, 3,
                                             after_the_third_chunk)
    assert steered.returncode == 0, steered.stderr
    # the client's steer: sent from the first chunk on, its answer printed
    assert "chunk 1/8 made (frames 0-8)" in steered.stderr
    said = re.search(rf"steered: '{client_text}' takes over at frame (\d+)", steered.stderr)
    assert said, steered.stderr
    # the route's: answered with the frame of a chunk boundary after the third chunk
    [(status, answer)] = answers
    frame = answer["takes_effect_at_frame"]
    assert status == 200 and answer == {"prompt_id": prompt_id, "node": node, "takes_effect_at_frame": frame}
    starts = [int(m.group(1)) for m in re.finditer(r": chunk \d+/8 made \(frames (\d+)-", steered.stderr)]
    assert starts == [0] + [9 + 12 * n for n in range(7)], steered.stderr
    assert frame in starts[3:], (frame, starts)
    assert [s for s, _ in refused] == [400, 400, 400, 404, 404], refused
    assert "at most 2000" in refused[2][1]["error"] and "not running" in refused[4][1]["error"]
    first = int(said.group(1))
    assert first in starts[1:] and first < frame, (first, frame)
    record = [{"frame": first, "text": client_text}, {"frame": frame, "text": route_text}]
    assert tiny_server.wait(prompt_id, timeout=60)["outputs"][node]["longlive_steering"] == record
    [video] = [Path(line) for line in steered.stdout.split()]
    assert json.loads(metadata(video)["longlive_steering"]) == record
    assert f"(replay it with --replay-steering): {json.dumps(record)}" in steered.stderr
    # the prompt has finished: it cannot be steered any more
    assert steer(tiny_server, {"prompt_id": prompt_id, "text": "too late"})[0] == 404

    replayed = subprocess.run([sys.executable, str(Path(qw.__file__)), str(video), "--server", tiny_server.url,
                               "--replay-steering", "--out", str(tmp_path / "replayed")], capture_output=True,
                              text=True, timeout=RUN_TIMEOUT)
    assert replayed.returncode == 0, replayed.stderr
    assert "LongLiveSteeringSchedule) replays 2 steering text(s)" in replayed.stderr
    [again] = [Path(line) for line in replayed.stdout.split()]
    assert json.loads(metadata(again)["longlive_steering"]) == []  # nothing steered the replay
    steered_frames, replayed_frames = decode(video), decode(again)
    assert len(steered_frames) == len(replayed_frames) == length
    assert all(np.array_equal(a, b) for a, b in zip(steered_frames, replayed_frames))
    # the frames before the first steer are those of an unsteered run; after it they differ
    plain = dict(json.loads(json.dumps(graph)))
    plain[node] = dict(plain[node], inputs=dict(plain[node]["inputs"], filename_prefix="plain"))
    [unsteered] = tiny_server.output_files(tiny_server.run(plain, timeout=RUN_TIMEOUT))
    plain_frames = decode(unsteered)
    assert all(np.array_equal(a, b) for a, b in zip(plain_frames[:first], steered_frames[:first]))
    assert not np.array_equal(np.stack(plain_frames[first:]), np.stack(steered_frames[first:]))


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
