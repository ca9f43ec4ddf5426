"""Watch it grow, steer it live, on real ComfyUIs (docs/live.md#the-contract): the `longlive.chunk` messages and
their preview clips served by GET /view; POST /longlive/steer and /longlive/hold while a node runs
(200 / 404 / 400, refused texts), the `longlive.steer` / `longlive.hold` messages, a steer dropped at
its boundary, holds ended by their timeout, Resume, a steer and Cancel; the steering record in the
mp4, and the headless client's replay that gives the same frames; a queued prompt whose weights make
NaN refused before any chunk; and the route's reading of prompt weights against this ComfyUI's own
tokenizer code.

The tiny T2V workflow of test_workflows_e2e (80x48, tiny weights, the harness's tiny real Wan VAE,
core CLIPTextEncode on the test pack's CLIP, which reads prompt weights and embeddings as ComfyUI's
tokenizers do) runs at a length of 14 chunks for the previews, read from the websocket with the
headless client's own websocket code, as the client that queued the prompt; and the streaming node
at 8 chunks for steering: one run per ComfyUI version, queued and steered by the headless client
(`queue_workflow.py --steer`) while the test sends every steer and hold through the routes, replayed
once by the client; a short second run is interrupted while held.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import av
import numpy as np
import pytest
import torch

from comfy_harness import REPO_ROOT
from helpers import load_script
from test_workflows_e2e import HEIGHT, RUN_TIMEOUT, WIDTH, _streaming_t2v, load_api, tiny_graph

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


def queue_workflow(*args: str, stdin: str = "", on_line: Callable[[str], None] | None = None
                   ) -> subprocess.CompletedProcess:
    """Run `scripts/queue_workflow.py ARGS` with `stdin` on its standard input (then closed);
    `on_line(line)` sees each line it prints on stderr as it prints it."""
    client = subprocess.Popen([sys.executable, str(Path(qw.__file__)), *args], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client.stdin.write(stdin)
    client.stdin.close()
    said = []
    deadline = threading.Timer(RUN_TIMEOUT, client.kill)  # reading its output waits for nothing else
    deadline.start()
    try:
        for line in client.stderr:  # line by line while it runs
            said.append(line)
            if on_line is not None:
                on_line(line)
        stdout = client.stdout.read()
        client.wait(timeout=RUN_TIMEOUT)
    finally:
        deadline.cancel()
        if client.poll() is None:
            client.kill()
            client.wait()
    return subprocess.CompletedProcess(client.args, client.returncode, stdout, "".join(said))


class SteeringClient:
    """Acts on the running prompt from what the headless client that queued it prints, as a second
    user with the panel would: once the client's own steer has taken over, a hold and refused texts;
    the hold ends by its timeout; a second hold is resumed, a third is ended by a steer whose
    embedding is broken (dropped at that boundary); then 50 concurrent steers. Holds and steers are
    sent for another websocket client (`watcher`) that must hear what took effect."""

    def __init__(self, server, watcher: str, client_text: str, broken_text: str) -> None:
        self.server, self.watcher, self.client_text, self.broken_text = server, watcher, client_text, broken_text
        self.prompt_id: str | None = None
        self.lines: list[tuple[float, str]] = []  # (arrival time, line) of the client's stderr
        self.refused, self.holds, self.concurrent = [], [], []
        self.hold_answers: list[tuple[int, dict]] = []

    def hold(self, **fields) -> None:
        self.hold_answers.append(post(self.server, "/longlive/hold", {"prompt_id": self.prompt_id,
                                                                     "client_id": self.watcher, **fields}))

    def steer(self, text: str) -> tuple[int, dict]:
        return steer(self.server, {"prompt_id": self.prompt_id, "text": text, "client_id": self.watcher})

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        self.lines.append((now, line))
        if queued := re.search(r"queued prompt (\S+)", line):
            self.prompt_id = queued.group(1)
        elif f"steer {self.client_text!r} took over at frame" in line:
            self.hold(timeout_s=TIMEOUT_HOLD_S)  # first: the boundary after the client's steer
            prompt_id = self.prompt_id
            self.refused = [steer(self.server, None, raw=f'{{"prompt_id": "{prompt_id}", "text": "{text}"}}'.encode())
                            for text in UNENCODABLE]
            self.refused += [steer(self.server, None, raw=b"{not json"),
                             steer(self.server, {"prompt_id": prompt_id, "text": "   "}),
                             steer(self.server, {"prompt_id": prompt_id, "text": "x" * 2001}),
                             steer(self.server, {"prompt_id": prompt_id, "text": "ok", "node": "999"}),
                             steer(self.server, {"prompt_id": str(uuid.uuid4()), "text": "ok"})]
        elif held := re.search(r": held before frame (\d+) ", line):
            self.holds.append({"frame": int(held.group(1)), "held_at": now, "held_line": len(self.lines) - 1})
            if len(self.holds) == 2:
                time.sleep(RESUME_AFTER_S)
                self.hold(resume=True)
            elif len(self.holds) == 3:
                time.sleep(STEER_AFTER_S)
                self.broken_answer = self.steer(self.broken_text)
        elif resumed := re.search(r": resumed at frame (\d+) by (\w+) after (\S+) s$", line):
            self.holds[-1].update(by=resumed.group(2), said_held_s=float(resumed.group(3)), resumed_at=now,
                                  resumed_line=len(self.lines) - 1)
            if len(self.holds) < 3:
                self.hold()
        elif " dropped at frame " in line and not self.concurrent:
            def one(n: int) -> tuple[str, tuple[int, dict]]:
                text = f"the fox turns into a hare number {n}"
                return text, self.steer(text)

            with ThreadPoolExecutor(CONCURRENT_STEERS) as pool:
                self.concurrent = list(pool.map(one, range(CONCURRENT_STEERS)))

    def chunks(self) -> list[tuple[int, int, int]]:
        """(line index, first frame, last frame) of every chunk the client reported made."""
        return [(n, int(m.group(1)), int(m.group(2))) for n, (_, line) in enumerate(self.lines)
                if (m := re.search(rf": chunk \d+/{STEERED_CHUNKS} made \(frames (\d+)-(\d+)\)", line))]


def read_all(ws, prompt_id: str) -> list[tuple[str, dict]]:
    """The longlive.* messages of `prompt_id` waiting on a websocket."""
    seen = []
    while (message := ws.receive(wait=1.0)) is not None:
        event = json.loads(message[1]) if message[0] == qw.OP_TEXT else {}
        if event.get("type", "").startswith("longlive.") and event["data"].get("prompt_id") == prompt_id:
            seen.append((event["type"], event["data"]))
    return seen


def test_one_steered_run_takes_the_clients_and_every_route_steer_and_hold_and_replays(tiny_server, tmp_path,
                                                                                     report_figure):
    """One streaming run of 8 chunks, queued by `queue_workflow.py --steer`, which sends its standard
    input's line once the first chunk is made; once that text has taken over, the test sends every
    kind of steer and hold through the routes. The mp4 records the client's text and what took effect;
    `queue_workflow.py THE.mp4 --replay-steering` (unheld, the record as a schedule) gives the same
    frames; the frames before the first steer are those of a run nobody touched, which a run
    interrupted while held also holds."""
    length = 4 * (3 * STEERED_CHUNKS - 1) + 1
    graph = _streaming_t2v(length, "steered")
    qw.apply_overrides(graph, qw.Overrides(seed=202))
    node = node_of(graph, "LongLiveSampleToVideo")
    graph_file = tmp_path / "steer.json"
    graph_file.write_text(json.dumps(graph))
    dim = graph[node_of(graph, "LongLiveTestCLIP")]["inputs"]["dim"]
    client_text = "a hare runs across the snow"
    broken_text = f"a fox runs embedding:{write_nan_embedding(tiny_server, dim)} through the snow"
    watcher_id = uuid.uuid4().hex
    watcher = qw.WebSocket(f"ws://{tiny_server.url.split('://', 1)[1]}/ws?clientId={watcher_id}", 30)
    client = SteeringClient(tiny_server, watcher_id, client_text, broken_text)
    try:
        steered = queue_workflow(str(graph_file), "--server", tiny_server.url, "--steer", "--out",
                                 str(tmp_path / "steered"), stdin=client_text + "\n", on_line=client)
        heard = read_all(watcher, client.prompt_id)
    finally:
        watcher.close()
    assert steered.returncode == 0, steered.stderr
    prompt_id, entry = client.prompt_id, tiny_server.wait(client.prompt_id, timeout=60)

    # every chunk was made and reported, frames tiling the video
    chunks = client.chunks()
    assert [(first, last) for _, first, last in chunks] == \
        [(0, 8)] + [(9 + 12 * n, 20 + 12 * n) for n in range(STEERED_CHUNKS - 1)], steered.stderr
    starts = [first for _, first, _ in chunks]

    # the client's steer: sent from the first chunk on, its answer printed, then what took effect
    said = re.search(rf"steered: '{client_text}' takes over at frame (\d+)\n", steered.stderr)
    assert said, steered.stderr
    first = int(said.group(1))
    assert first in starts[1:] and f"steer {client_text!r} took over at frame {first}\n" in steered.stderr

    # the texts ComfyUI's tokenizers cannot encode are refused while the user can change them
    statuses = [status for status, _ in client.refused]
    assert statuses == [400] * 4 + [400, 400, 400, 404, 404], client.refused
    for (_, answer), reason in zip(client.refused, UNENCODABLE.values()):
        assert reason in answer["error"], answer
    assert "at most 2000" in client.refused[6][1]["error"] and "not running" in client.refused[8][1]["error"]

    # three holds, ended by their timeout, by Resume and by a steer; nothing was made while held: the
    # client reported every chunk before the hold's frame before it was held, and the next once resumed
    assert [h["by"] for h in client.holds] == ["timeout", "resume", "steer"], client.holds
    answers = [a for s, a in client.hold_answers if "holds_at_frame" in a]
    assert all(s == 200 for s, _ in client.hold_answers) and [a["holds_at_frame"] for a in answers] == \
        [h["frame"] for h in client.holds]
    assert [a.get("resumed") for _, a in client.hold_answers] == [None, None, True, None]
    for hold in client.holds:
        assert [last for n, _, last in chunks if n < hold["held_line"]][-1] == hold["frame"] - 1, hold
        assert not [n for n, _, _ in chunks if hold["held_line"] < n < hold["resumed_line"]], hold
        assert [start for n, start, _ in chunks if n > hold["resumed_line"]][0] == hold["frame"], hold
    heard_holds = [d for kind, d in heard if kind == "longlive.hold"]
    assert [(d["state"], d["frame"], d.get("by")) for d in heard_holds] == \
        [(state, h["frame"], by) for h in client.holds for state, by in (("held", None), ("resumed", h["by"]))]
    held_s = [d["held_s"] for d in heard_holds if d["state"] == "resumed"]
    assert held_s == [h["said_held_s"] for h in client.holds]  # the client printed what the server measured
    assert TIMEOUT_HOLD_S <= held_s[0] < TIMEOUT_HOLD_S + 2 and RESUME_AFTER_S <= held_s[1] and STEER_AFTER_S <= held_s[2]
    measured = [round(h["resumed_at"] - h["held_at"], 2) for h in client.holds]

    # the steer with the broken embedding was taken (200), then dropped at the held boundary: the
    # prompt stayed, the run went on; the watcher (it steered) and the client (it queued) were told
    status, answer = client.broken_answer
    assert status == 200 and answer["takes_effect_at_frame"] == client.holds[2]["frame"]
    [dropped] = [d for kind, d in heard if kind == "longlive.steer" and d["status"] == "dropped"]
    assert (dropped["frame"], dropped["text"]) == (client.holds[2]["frame"], broken_text)
    assert "non-finite" in dropped["reason"] and "embedding file" in dropped["reason"]
    assert f"steer {broken_text!r} dropped at frame {dropped['frame']} (" in steered.stderr

    # 50 concurrent steers: every answer says whether it replaced a pending text; per boundary, the
    # first did not and every later one did; the message names the text that took effect there
    assert len(client.concurrent) == CONCURRENT_STEERS and all(s == 200 for _, (s, _) in client.concurrent)
    by_frame: dict[int, list[tuple[str, bool]]] = {}
    for text, (_, a) in client.concurrent:
        assert a == {"prompt_id": prompt_id, "node": node, "takes_effect_at_frame": a["takes_effect_at_frame"],
                     "replaces_pending": a["replaces_pending"]}, a
        by_frame.setdefault(a["takes_effect_at_frame"], []).append((text, a["replaces_pending"]))
    applied = [d for kind, d in heard if kind == "longlive.steer" and d["status"] == "applied"]
    assert [d["frame"] for d in applied] == sorted(by_frame)
    for data in applied:
        sent = by_frame[data["frame"]]
        assert sorted(replaces for _, replaces in sent) == [False] + [True] * (len(sent) - 1)
        assert data["text"] in [text for text, _ in sent] and data["replaced"] == len(sent) - 1
        replaced = f" (it replaced {data['replaced']} text(s)" if data["replaced"] else "\n"
        assert f"steer {data['text']!r} took over at frame {data['frame']}{replaced}" in steered.stderr
    # the watcher heard what took effect from its first hold on: the drop, then the concurrent steers
    assert [(d["status"], d["frame"]) for kind, d in heard if kind == "longlive.steer"] == \
        [("dropped", dropped["frame"])] + [("applied", d["frame"]) for d in applied]

    # the record: the client's text, then the concurrent steers that took effect; in the prompt's
    # output, the mp4 and the client's closing line
    record = [{"frame": first, "text": client_text}] + [{"frame": d["frame"], "text": d["text"]} for d in applied]
    assert entry["outputs"][node]["longlive_steering"] == record
    [steered_mp4] = [Path(line) for line in steered.stdout.split()]
    assert json.loads(metadata(steered_mp4)["longlive_steering"]) == record
    assert f"(replay it with --replay-steering): {json.dumps(record)}" in steered.stderr
    # the prompt has finished: it cannot be steered or held any more
    assert steer(tiny_server, {"prompt_id": prompt_id, "text": "too late"})[0] == 404
    assert post(tiny_server, "/longlive/hold", {"prompt_id": prompt_id})[0] == 404

    # replay by the client, from the mp4 alone: unheld, the record as a schedule: the same frames
    replayed = queue_workflow(str(steered_mp4), "--server", tiny_server.url, "--replay-steering", "--out",
                              str(tmp_path / "replayed"))
    assert replayed.returncode == 0, replayed.stderr
    assert f"LongLiveSteeringSchedule) replays {len(record)} steering text(s)" in replayed.stderr
    [again] = [Path(line) for line in replayed.stdout.split()]
    assert json.loads(metadata(again)["longlive_steering"]) == []  # nothing steered the replay
    steered_frames, replayed_frames = decode(steered_mp4), decode(again)
    assert len(steered_frames) == len(replayed_frames) == length
    assert all(np.array_equal(a, b) for a, b in zip(steered_frames, replayed_frames))
    # before the first steer, the frames of a run nobody touched; after it they differ
    plain = json.loads(json.dumps(graph))
    plain[node]["inputs"]["filename_prefix"] = "plain"
    [unsteered] = tiny_server.output_files(tiny_server.run(plain, timeout=RUN_TIMEOUT))
    plain_frames = decode(unsteered)
    assert all(np.array_equal(a, b) for a, b in zip(plain_frames[:first], steered_frames[:first]))
    assert not np.array_equal(np.stack(plain_frames[first:]), np.stack(steered_frames[first:]))

    # interrupted while held (a run of its own: the interrupt ends the prompt): a valid mp4 of the
    # chunks before the hold, the frames of the plain run
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
    report_figure(f"steering: the client's steer at frame {first}; {len(client.refused)} refused ({statuses}); "
                  f"holds at frames {[h['frame'] for h in client.holds]} ended by timeout/Resume/steer "
                  f"after {measured} s (server {held_s} s), no chunk made meanwhile; "
                  f"1 dropped at frame {dropped['frame']}; {CONCURRENT_STEERS} concurrent steers -> "
                  f"{per_frame} per frame, "
                  f"{sum(a['replaces_pending'] for _, (_, a) in client.concurrent)} said replaces_pending; "
                  f"the client's replay identical ({length} frames); interrupted while held at frame "
                  f"{held['frame']}: {len(cut_frames)} frames kept")


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
