"""Watch it grow, steer it live, on real ComfyUIs (docs/live.md#the-contract): the `longlive.chunk` messages and
their preview clips served by GET /view; POST /longlive/steer and /longlive/hold while a node runs
(200 / 404 / 400, refused texts), the `longlive.steer` / `longlive.hold` messages, a steer dropped at
its boundary, holds ended by their timeout, Resume, a steer and Cancel; the steering record in the
mp4, and replays that give the same frames; a queued prompt whose weights make NaN refused before
any chunk; and the route's reading of prompt weights against this ComfyUI's own tokenizer code.

The tiny T2V workflow of test_workflows_e2e (80x48, tiny weights, the harness's tiny real Wan VAE,
core CLIPTextEncode on the test pack's CLIP, which reads prompt weights and embeddings as ComfyUI's
tokenizers do) runs at a length of 14 chunks for the previews, and the streaming node at 8 chunks
for steering: one run takes every steer and hold; the test client reads the websocket with the
headless client's own websocket code, as the client that queued the prompt.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from comfy_harness import REPO_ROOT
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


def view(server, preview: dict) -> bytes:
    query = urllib.parse.urlencode(preview)
    with urllib.request.urlopen(f"{server.url}/view?{query}", timeout=30) as response:
        assert response.headers["Content-Type"] == "video/mp4"
        return response.read()


def run_watching(server, graph: dict, on_event=None, timeout: float = RUN_TIMEOUT
                 ) -> tuple[str, list[tuple[float, str, dict]], dict]:
    """Queue `graph` as a client with its own websocket; call `on_event(prompt_id, type, data)` for
    every longlive.* message of the prompt; return (prompt_id, [(arrival time, type, data)] of its
    longlive.* messages, the history entry)."""
    client_id, prompt_id = uuid.uuid4().hex, str(uuid.uuid4())
    ws = qw.WebSocket(f"ws://{server.url.split('://', 1)[1]}/ws?clientId={client_id}", 30)
    events = []
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
            if event["type"].startswith("longlive."):
                events.append((time.monotonic(), event["type"], data))
                if on_event is not None:
                    on_event(prompt_id, event["type"], data)
            if event["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                break
    finally:
        ws.close()
    return prompt_id, events, server.wait(prompt_id, timeout=60)


def of_type(events, kind: str) -> list[dict]:
    return [data for _, type_, data in events if type_ == kind]


def node_of(graph: dict, class_type: str) -> str:
    return next(i for i, n in graph.items() if n["class_type"] == class_type)


def test_every_chunk_sends_a_preview_served_by_view_with_the_frames_it_states(tiny_server, report_figure):
    graph = tiny_graph(load_api("longlive_t2v"))
    qw.apply_overrides(graph, qw.Overrides(frames=LENGTH_14_CHUNKS, seed=101))
    sampler = node_of(graph, "LongLiveSampler")
    started = time.monotonic()
    prompt_id, events, entry = run_watching(tiny_server, graph)
    seconds = time.monotonic() - started
    chunks = of_type(events, "longlive.chunk")
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


STEERED_CHUNKS = 8
CONCURRENT_STEERS = 50
TIMEOUT_HOLD_S, RESUME_AFTER_S, STEER_AFTER_S = 1.5, 1.0, 0.5
# texts a steer must not end a run with (ComfyUI's own tokenizers would read them so): each refused
UNENCODABLE = {"(snow:nan)": "the prompt weight of 'snow' is nan",
               "(snow:1e30)": "the prompt weight of 'snow' is 1e+30",
               "a fox \\ud800 runs": "not valid Unicode text",  # a lone surrogate: valid JSON
               "embedding:../../etc/passwd": "names a file outside ComfyUI's embeddings folder"}


def post(server, route: str, body: dict | None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + route, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")  # (POST /interrupt answers nothing)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def steer(server, body, raw: bytes | None = None) -> tuple[int, dict]:
    return post(server, "/longlive/steer", body, raw)


def write_nan_embedding(server, dim: int) -> str:
    """An embedding file whose values are NaN (a broken download, say): the route cannot know, the
    text encoder makes NaN conditioning from it at the boundary."""
    from safetensors.torch import save_file

    path = server.models_dir("embeddings") / "broken_style.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.full((2, dim), float("nan"))}, str(path))
    return "broken_style"


class SteeringClient:
    """Acts on the running prompt from the websocket, as a user with the panel would: refused texts
    and a hold after the first chunk; the hold ends by its timeout; a second hold is resumed, a third
    is ended by a steer whose embedding is broken (dropped at that boundary); then 50 concurrent
    steers, sent for another client (`watcher`) that must hear what took effect."""

    def __init__(self, server, watcher: str, broken_text: str) -> None:
        self.server, self.watcher, self.broken_text = server, watcher, broken_text
        self.refused, self.holds, self.concurrent = [], [], []
        self.hold_answers: list[tuple[int, dict]] = []

    def hold(self, prompt_id: str, **fields) -> None:
        self.hold_answers.append(post(self.server, "/longlive/hold", {"prompt_id": prompt_id, **fields}))

    def __call__(self, prompt_id: str, kind: str, data: dict) -> None:
        if kind == "longlive.chunk" and data["chunk"] == 1:
            self.refused = [steer(self.server, None, raw=f'{{"prompt_id": "{prompt_id}", "text": "{text}"}}'.encode())
                            for text in UNENCODABLE]
            self.refused += [steer(self.server, None, raw=b"{not json"),
                             steer(self.server, {"prompt_id": prompt_id, "text": "   "}),
                             steer(self.server, {"prompt_id": prompt_id, "text": "x" * 2001}),
                             steer(self.server, {"prompt_id": prompt_id, "text": "ok", "node": "999"}),
                             steer(self.server, {"prompt_id": str(uuid.uuid4()), "text": "ok"})]
            self.hold(prompt_id, timeout_s=TIMEOUT_HOLD_S)
        elif kind == "longlive.hold" and data["state"] == "held":
            self.holds.append({"frame": data["frame"], "held_at": time.monotonic()})
            if len(self.holds) == 2:
                time.sleep(RESUME_AFTER_S)
                self.hold(prompt_id, resume=True)
            elif len(self.holds) == 3:
                time.sleep(STEER_AFTER_S)
                self.broken_answer = steer(self.server, {"prompt_id": prompt_id, "text": self.broken_text,
                                                         "client_id": self.watcher})
        elif kind == "longlive.hold":
            self.holds[-1].update(by=data["by"], held_s=data["held_s"], resumed_at=time.monotonic())
            if len(self.holds) < 3:
                self.hold(prompt_id)
        elif kind == "longlive.steer" and data["status"] == "dropped" and not self.concurrent:
            def one(n: int) -> tuple[str, tuple[int, dict]]:
                text = f"the fox turns into a hare number {n}"
                return text, steer(self.server, {"prompt_id": prompt_id, "text": text, "client_id": self.watcher})

            with ThreadPoolExecutor(CONCURRENT_STEERS) as pool:
                self.concurrent = list(pool.map(one, range(CONCURRENT_STEERS)))


def read_all(ws, prompt_id: str) -> list[tuple[str, dict]]:
    """The longlive.* messages of `prompt_id` waiting on a websocket."""
    seen = []
    while (message := ws.receive(wait=1.0)) is not None:
        event = json.loads(message[1]) if message[0] == qw.OP_TEXT else {}
        if event.get("type", "").startswith("longlive.") and event["data"].get("prompt_id") == prompt_id:
            seen.append((event["type"], event["data"]))
    return seen


def replay_graph(graph: dict, node: str, record: list[dict], prefix: str) -> dict:
    """The same workflow with a Prompt Schedule made from the record (core CLIPTextEncode on the same
    CLIP), and no live steering."""
    replay = json.loads(json.dumps(graph))
    clip, previous = replay[node]["inputs"]["clip"], None
    for n, entry in enumerate(record):
        replay[f"{900 + 2 * n}"] = {"class_type": "CLIPTextEncode", "inputs": {"text": entry["text"], "clip": clip}}
        inputs = {"conditioning": [f"{900 + 2 * n}", 0], "start_frame": entry["frame"]}
        if previous is not None:
            inputs["previous"] = previous
        replay[f"{901 + 2 * n}"] = {"class_type": "LongLivePromptSchedule", "inputs": inputs}
        previous = [f"{901 + 2 * n}", 0]
    replay[node]["inputs"].update(prompt_schedule=previous, filename_prefix=prefix)
    return replay


def test_steers_and_holds_against_one_running_prompt_never_end_it_and_replay(tiny_server, report_figure):
    """One streaming run of 8 chunks takes every kind of steer and hold; its mp4 replays exactly
    (an unheld run with the record as a schedule); the frames before the first steer are those of a
    run nobody touched, which a run interrupted while held also holds."""
    length = 4 * (3 * STEERED_CHUNKS - 1) + 1
    graph = _streaming_t2v(length, "steered")
    qw.apply_overrides(graph, qw.Overrides(seed=202))
    node = node_of(graph, "LongLiveSampleToVideo")
    dim = graph[node_of(graph, "LongLiveTestCLIP")]["inputs"]["dim"]
    broken_text = f"a fox runs embedding:{write_nan_embedding(tiny_server, dim)} through the snow"
    watcher_id = uuid.uuid4().hex
    watcher = qw.WebSocket(f"ws://{tiny_server.url.split('://', 1)[1]}/ws?clientId={watcher_id}", 30)
    client = SteeringClient(tiny_server, watcher_id, broken_text)
    try:
        prompt_id, events, entry = run_watching(tiny_server, graph, client)
        heard = read_all(watcher, prompt_id)
    finally:
        watcher.close()
    assert entry["status"]["status_str"] == "success", entry["status"]

    # the texts ComfyUI's tokenizers cannot encode are refused while the user can change them
    statuses = [status for status, _ in client.refused]
    assert statuses == [400] * 4 + [400, 400, 400, 404, 404], client.refused
    for (_, answer), reason in zip(client.refused, UNENCODABLE.values()):
        assert reason in answer["error"], answer
    assert "at most 2000" in client.refused[6][1]["error"] and "not running" in client.refused[8][1]["error"]

    # every chunk was made and announced, frames tiling the video
    chunks = of_type(events, "longlive.chunk")
    assert [c["chunk"] for c in chunks] == list(range(1, STEERED_CHUNKS + 1))
    assert [c["first_frame"] for c in chunks] == [0] + [9 + 12 * n for n in range(STEERED_CHUNKS - 1)]

    # three holds, ended by their timeout, by Resume and by a steer; nothing was made while held
    assert [h["by"] for h in client.holds] == ["timeout", "resume", "steer"], client.holds
    answers = [a for s, a in client.hold_answers if "holds_at_frame" in a]
    assert all(s == 200 for s, _ in client.hold_answers) and [a["holds_at_frame"] for a in answers] == \
        [h["frame"] for h in client.holds]
    assert [a.get("resumed") for _, a in client.hold_answers] == [None, None, True, None]
    for hold in client.holds:
        made = [c for t, kind, c in events if kind == "longlive.chunk" and hold["held_at"] <= t <= hold["resumed_at"]]
        assert made == [], hold
        assert next(c for c in chunks if c["first_frame"] >= hold["frame"])["first_frame"] == hold["frame"]
    held_s = [h["held_s"] for h in client.holds]
    assert TIMEOUT_HOLD_S <= held_s[0] < TIMEOUT_HOLD_S + 2 and RESUME_AFTER_S <= held_s[1] and STEER_AFTER_S <= held_s[2]
    measured = [round(h["resumed_at"] - h["held_at"], 2) for h in client.holds]

    # the steer with the broken embedding was taken (200), then dropped at the held boundary: the
    # prompt stayed, the run went on; both clients were told
    status, answer = client.broken_answer
    assert status == 200 and answer["takes_effect_at_frame"] == client.holds[2]["frame"]
    [dropped] = [d for d in of_type(events, "longlive.steer") if d["status"] == "dropped"]
    assert (dropped["frame"], dropped["text"]) == (client.holds[2]["frame"], broken_text)
    assert "non-finite" in dropped["reason"] and "embedding file" in dropped["reason"]

    # 50 concurrent steers: every answer says whether it replaced a pending text; per boundary, the
    # first did not and every later one did; the message names the text that took effect there
    assert len(client.concurrent) == CONCURRENT_STEERS and all(s == 200 for _, (s, _) in client.concurrent)
    by_frame: dict[int, list[tuple[str, bool]]] = {}
    for text, (_, a) in client.concurrent:
        by_frame.setdefault(a["takes_effect_at_frame"], []).append((text, a["replaces_pending"]))
    applied = [d for d in of_type(events, "longlive.steer") if d["status"] == "applied"]
    assert [d["frame"] for d in applied] == sorted(by_frame)
    for data in applied:
        sent = by_frame[data["frame"]]
        assert sorted(replaces for _, replaces in sent) == [False] + [True] * (len(sent) - 1)
        assert data["text"] in [text for text, _ in sent] and data["replaced"] == len(sent) - 1
    record = [{"frame": d["frame"], "text": d["text"]} for d in applied]
    assert entry["outputs"][node]["longlive_steering"] == record
    [steered_mp4] = tiny_server.output_files(entry)
    assert json.loads(metadata(steered_mp4)["longlive_steering"]) == record
    # the watcher (it sent the steers, it did not queue the prompt) heard what took effect, and the drop
    assert [(k, d["status"], d["frame"]) for k, d in heard if k == "longlive.steer"] == \
        [("longlive.steer", "dropped", dropped["frame"])] + [("longlive.steer", "applied", r["frame"]) for r in record]
    # the prompt has finished: it cannot be steered or held any more
    assert steer(tiny_server, {"prompt_id": prompt_id, "text": "too late"})[0] == 404
    assert post(tiny_server, "/longlive/hold", {"prompt_id": prompt_id})[0] == 404

    # replay: unheld, the record as a schedule: the same frames
    replayed_entry = tiny_server.run(replay_graph(graph, node, record, "replayed"), timeout=RUN_TIMEOUT)
    [replayed] = tiny_server.output_files(replayed_entry)
    assert json.loads(metadata(replayed)["longlive_steering"]) == []  # nothing steered the replay
    steered_frames, replayed_frames = decode(steered_mp4), decode(replayed)
    assert len(steered_frames) == len(replayed_frames) == length
    assert all(np.array_equal(a, b) for a, b in zip(steered_frames, replayed_frames))
    # before the first steer, the frames of a run nobody touched; after it they differ
    first = record[0]["frame"]
    plain = json.loads(json.dumps(graph))
    plain[node]["inputs"]["filename_prefix"] = "plain"
    [unsteered] = tiny_server.output_files(tiny_server.run(plain, timeout=RUN_TIMEOUT))
    plain_frames = decode(unsteered)
    assert all(np.array_equal(a, b) for a, b in zip(plain_frames[:first], steered_frames[:first]))
    assert not np.array_equal(np.stack(plain_frames[first:]), np.stack(steered_frames[first:]))

    # interrupted while held: a valid mp4 of the chunks before the hold, the frames of the plain run
    def interrupt_when_held(prompt_id: str, kind: str, data: dict) -> None:
        if kind == "longlive.chunk" and data["chunk"] == 1:
            post(tiny_server, "/longlive/hold", {"prompt_id": prompt_id})
        if kind == "longlive.hold" and data["state"] == "held":
            post(tiny_server, "/interrupt", {})

    interrupted = json.loads(json.dumps(graph))
    interrupted[node]["inputs"]["filename_prefix"] = "held_interrupted"
    _, held_events, held_entry = run_watching(tiny_server, interrupted, interrupt_when_held)
    assert "execution_interrupted" in [name for name, _ in held_entry["status"]["messages"]]
    [held, cancelled] = of_type(held_events, "longlive.hold")
    assert cancelled["by"] == "cancel"
    [cut] = sorted(tiny_server.output_dir.glob("held_interrupted_*.mp4"))
    cut_frames = decode(cut)
    assert len(cut_frames) == held["frame"] and all(np.array_equal(a, b) for a, b in zip(cut_frames, plain_frames))
    per_frame = {frame: len(sent) for frame, sent in by_frame.items()}
    report_figure(f"steering: {len(client.refused)} refused ({statuses}); holds ended by timeout/Resume/steer "
                  f"after {measured} s (server {held_s} s), no chunk made meanwhile; "
                  f"1 dropped at frame {dropped['frame']}; {CONCURRENT_STEERS} concurrent steers -> "
                  f"{per_frame} per frame, "
                  f"{sum(a['replaces_pending'] for _, (_, a) in client.concurrent)} said replaces_pending; "
                  f"replay identical ({length} frames); interrupted while held at frame {held['frame']}: "
                  f"{len(cut_frames)} frames kept")


def test_a_queued_prompt_with_a_nan_weight_is_refused_before_any_chunk(tiny_server):
    graph = _streaming_t2v(4 * (3 * 2 - 1) + 1, "nan_prompt")
    prompt = node_of(graph, "CLIPTextEncode")
    graph[prompt]["inputs"]["text"] = "a fox runs through (snow:nan)"
    _, events, entry = run_watching(tiny_server, graph)
    assert entry["status"]["status_str"] == "error" and events == []
    error = next(data for name, data in entry["status"]["messages"] if name == "execution_error")
    message = error["exception_message"]
    assert error["node_type"] == "LongLiveSampleToVideo" and message.startswith("positive: the prompt's conditioning")
    assert "prompt weight such as (word:nan)" in message and "checkpoint" not in message and "LoRA" not in message
    assert not list(tiny_server.output_dir.glob("nan_prompt_*.mp4"))


def test_the_steering_route_reads_weights_as_this_comfyuis_tokenizers_do(comfy_install):
    """nodes/prompts.py's reading of prompt weights equals comfy/sd1_clip.py's token_weights on
    5000 random texts made of brackets, colons, numbers, escapes and words (run with ComfyUI's python)."""
    script = f"""
import math, random, re, sys
sys.path.insert(0, {str(comfy_install.dir)!r})
import comfy.options
comfy.options.enable_args_parsing()
sys.argv = [sys.argv[0], "--cpu"]
from comfy.sd1_clip import escape_important, token_weights
source = open({str(REPO_ROOT / "nodes" / "prompts.py")!r}).read()
ours = {{"re": re, "math": math}}
exec(source[source.index("# ComfyUI's tokenizers"):source.index("def check_prompt_text")], ours)
rng = random.Random(7)
pieces = list("ab (():)\\\\:1.5 ") + ["nan", "inf", "1e30", ":2", "\\\\(", "\\\\)", " embedding:x", "-0.5"]
def same(a, b):
    return len(a) == len(b) and all(t == u and (w == v or math.isnan(w) and math.isnan(v)) for (t, w), (u, v) in zip(a, b))
texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 24))) for _ in range(5000)]
differ = [t for t in texts if not same(token_weights(escape_important(t), 1.0), ours["prompt_weights"](t))]
print(len(texts), len(differ), repr(differ[:3]))
"""
    done = comfy_install.run_python(["-c", script], timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["5000", "0"], done.stdout


def test_steering_route_answers_404_and_400_when_nothing_runs(tiny_server):
    assert steer(tiny_server, {"prompt_id": str(uuid.uuid4()), "text": "a cat"})[0] == 404
    assert steer(tiny_server, None, raw=b'{"prompt_id": "x"')[0] == 400
    assert steer(tiny_server, None, raw=b"{" + b" " * 20000 + b"}")[0] == 400  # over the body limit
    assert steer(tiny_server, {"prompt_id": "x", "text": ""})[0] == 400
    # the hold route: the same rules and limits
    assert post(tiny_server, "/longlive/hold", {"prompt_id": str(uuid.uuid4())})[0] == 404
    assert post(tiny_server, "/longlive/hold", {"prompt_id": "x", "timeout_s": 0})[0] == 400
    assert post(tiny_server, "/longlive/hold", None, raw=b"{" + b" " * 20000 + b"}")[0] == 400
    # mirrored under /api like ComfyUI's own routes, and behind the same origin check as /prompt
    request = urllib.request.Request(tiny_server.url + "/api/longlive/steer", method="POST",
                                     data=json.dumps({"prompt_id": "x", "text": "a"}).encode())
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=30)
    assert missing.value.code == 404 and "not running" in json.loads(missing.value.read())["error"]
    port = tiny_server.url.rsplit(":", 1)[1]
    for route in ("/longlive/steer", "/longlive/hold", "/prompt"):
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
