"""scripts/queue_workflow.py (its package: scripts/queue_client/) against a fake ComfyUI on 127.0.0.1:
every failure ends with its documented exit status and one line on stderr (never a traceback);
--timeout and Ctrl-C withdraw the client's own prompt and nobody else's; downloads stream into new
files and server file names that are not plain names are refused; the websocket client against a
scripted server.

`FakeComfy` answers the routes the client uses (POST /prompt, GET /history/<id>, GET /queue, POST
/queue, POST /interrupt, GET /view, POST /upload/image, GET /object_info, and ComfyUI-Distributed's GET
/distributed/config and POST /distributed/queue; /ws is not offered, so the client polls) and keeps a queue: a prompt of another client is always running or waiting there, and
each test decides what happens to ours. The client runs as a subprocess, as a user runs it.
"""
from __future__ import annotations

import io
import json
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "queue_workflow.py"
OTHER = "00000000-0000-4000-8000-00000000beef"  # another client's prompt
API_GRAPH = {"1": {"class_type": "LongLiveTestNode", "inputs": {"seed": 1}, "_meta": {"title": "Test"}}}
UI_GRAPH = {"nodes": [{"id": 1, "type": "LongLiveTestNode", "mode": 0, "inputs": [], "outputs": [],
                       "widgets_values": [1]}], "links": []}
OBJECT_INFO = {"LongLiveTestNode": {"input": {"required": {"seed": ["INT", {}]}},
                                    "input_order": {"required": ["seed"]}, "output": [], "display_name": "Test"}}
VIDEO = bytes(range(256)) * 12289  # ~3 MB: more than one read of the streaming download

qw = load_script("queue_workflow")
server = sys.modules["queue_client.server"]  # the client's HTTP module, where downloads are made


class FakeComfy:
    """The state and behaviour of the fake server.

    mode: "finish" (our prompt finishes at once with `outputs`), "run" (it runs until interrupted
    by id), "wait" (it stays queued behind OTHER, which runs until the test ends).
    `fail`: {route: (status, body)} answered instead of the normal reply; `slow`: {route: seconds}
    to wait before answering (after acting on the request).
    """

    def __init__(self, mode: str = "finish", outputs: list[dict] | None = None):
        self.mode = mode
        self.outputs = outputs if outputs is not None else [{"filename": "clip.mp4", "subfolder": "video",
                                                             "type": "output"}]
        self.served = {("video", "clip.mp4")}  # (subfolder, filename) of the files GET /view has
        self.fail: dict[str, tuple[int, bytes]] = {}
        self.slow: dict[str, float] = {}
        self.history: dict[str, dict] = {}
        self.use(mode)
        self.interrupts: list[str | None] = []  # the prompt_id of every POST /interrupt
        self.deleted: list[str] = []
        self.queued: list[str] = []
        self.steers: list[dict] = []  # the body of every POST /longlive/steer
        self.steer_waiting = False  # a steered text waits for its boundary (the fake never reaches it)
        # ComfyUI-Distributed on this "master": its workers, each POST /distributed/queue body, and
        # how many workers answered its probe (None: all that were asked)
        self.workers = [{"id": "1", "name": "GPU 1", "host": "127.0.0.1", "port": 8189, "enabled": True},
                        {"id": "2", "name": "laptop", "host": "192.168.1.7", "port": 8188, "enabled": False}]
        self.distributed: list[dict] = []
        self.workers_reached: int | None = None
        self.following = threading.Event()  # set once the client polls a prompt it queued
        self.lock = threading.Lock()

    def use(self, mode: str) -> None:
        """Our prompt's fate; OTHER runs ("wait": ours queues behind it) or waits ("run": behind ours)."""
        self.mode = mode
        self.running = [OTHER] if mode == "wait" else []
        self.pending = [OTHER] if mode == "run" else []

    # -- routes --------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, body: bytes) -> tuple[int, bytes, str]:
        route = f"{method} {path if not path.startswith('/history/') else '/history'}"
        answer = self._answer(route, method, path, query, body)
        time.sleep(self.slow.get(route, 0))  # acted on at once, answered late
        return answer

    def _answer(self, route: str, method: str, path: str, query: dict, body: bytes) -> tuple[int, bytes, str]:
        if route in self.fail:
            status, payload = self.fail[route]
            return status, payload, "text/html" if not payload.startswith(b"{") else "application/json"
        with self.lock:
            if route == "GET /object_info":
                return self.json(OBJECT_INFO)
            if route == "POST /upload/image":
                return self.json({"name": "uploaded.png", "subfolder": "", "type": "input"})
            if route == "POST /prompt":
                return self.json(self.queue_prompt(json.loads(body)))
            if route == "GET /history":
                prompt_id = path.rsplit("/", 1)[1]
                if prompt_id in self.queued:
                    self.following.set()
                return self.json({prompt_id: self.history[prompt_id]} if prompt_id in self.history else {})
            if route == "GET /queue":
                return self.json({"queue_running": [[0, i, {}, {}, []] for i in self.running],
                                  "queue_pending": [[1, i, {}, {}, []] for i in self.pending]})
            if route == "POST /queue":
                for prompt_id in json.loads(body).get("delete", []):
                    if prompt_id in self.pending:
                        self.pending.remove(prompt_id)
                        self.deleted.append(prompt_id)
                return 200, b"", "text/plain"
            if route == "POST /interrupt":
                prompt_id = json.loads(body or b"{}").get("prompt_id")
                self.interrupts.append(prompt_id)
                if prompt_id is None or prompt_id in self.running:  # what ComfyUI does
                    for target in ([prompt_id] if prompt_id else list(self.running)):
                        self.running.remove(target)
                        self.history[target] = {"status": {"status_str": "error", "completed": False, "messages": [
                            ["execution_interrupted", {"prompt_id": target, "node_id": "1"}]]}, "outputs": {}}
                return 200, b"", "text/plain"
            if route == "POST /longlive/steer":
                request = json.loads(body)
                self.steers.append(request)
                if request["text"] == "late":
                    return 404, json.dumps({"error": "no chunk boundary left"}).encode(), "application/json"
                replaces, self.steer_waiting = self.steer_waiting, True  # nothing takes it: the next one replaces it
                return self.json({"prompt_id": request["prompt_id"], "node": "5", "takes_effect_at_frame": 21,
                                  "replaces_pending": replaces})
            if route == "GET /distributed/config":
                return self.json({"master": {"host": ""}, "workers": self.workers, "settings": {}})
            if route == "POST /distributed/queue":
                request = json.loads(body)
                self.distributed.append(request)
                prompt_id = f"master-{len(self.distributed)}"  # the extension names the prompt itself
                self.queue_prompt({**request, "prompt_id": prompt_id})
                asked = len(request["enabled_worker_ids"])
                reached = asked if self.workers_reached is None else self.workers_reached
                return self.json({"prompt_id": prompt_id, "number": 1, "node_errors": {}, "worker_count": reached,
                                  "auto_prepare_supported": True})
            if route == "GET /view":
                if (query.get("subfolder"), query.get("filename")) in self.served:
                    return 200, VIDEO, "video/mp4"
                return 404, b"404: Not Found", "text/plain"
        return 404, b"404: Not Found", "text/plain"

    def queue_prompt(self, request: dict) -> dict:
        prompt_id = request["prompt_id"]
        self.queued.append(prompt_id)
        if self.mode == "finish":
            self.history[prompt_id] = {"status": {"status_str": "success", "completed": True, "messages": []},
                                       "outputs": {"1": {"images": self.outputs}}}
        elif self.mode == "run":
            self.running.append(prompt_id)
        else:
            self.pending.append(prompt_id)
        return {"prompt_id": prompt_id, "number": len(self.queued), "node_errors": {}}

    @staticmethod
    def json(value) -> tuple[int, bytes, str]:
        return 200, json.dumps(value).encode(), "application/json"

    # -- what the tests ask ----------------------------------------------------------------
    def holds(self, prompt_id: str) -> bool:
        with self.lock:
            return prompt_id in self.running or prompt_id in self.pending


@pytest.fixture
def fake():
    """(FakeComfy, its URL); the server runs in a thread for the test."""
    state = FakeComfy()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str):
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
            status, payload, kind = state.handle(method, parts.path, query, body)
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up waiting

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_client(url: str, tmp_path: Path, *extra: str, workflow: dict = API_GRAPH, timeout: float = 60):
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(workflow))
    return subprocess.run([sys.executable, str(SCRIPT), str(path), "--server", url, "--out", str(tmp_path / "out"),
                           *extra], capture_output=True, text=True, timeout=timeout)


def assert_one_line_failure(done, status: int, *fragments: str) -> str:
    """The exit status, no traceback, and the last stderr line carrying every fragment."""
    assert done.returncode == status, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, (fragment, done.stderr)
    return last


def our_prompt(state: FakeComfy) -> str:
    assert len(state.queued) == 1, state.queued
    return state.queued[0]


# ---------------------------------------------------------------------------------------------
# success: streamed downloads that never overwrite


def test_a_finished_prompt_downloads_into_new_numbered_files(fake, tmp_path):
    state, url = fake
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "clip.mp4").write_bytes(b"the user's own file")
    first = run_client(url, tmp_path)
    second = run_client(url, tmp_path)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert [Path(p).name for p in first.stdout.split()] == ["clip-2.mp4"]
    assert [Path(p).name for p in second.stdout.split()] == ["clip-3.mp4"]
    assert (tmp_path / "out" / "clip.mp4").read_bytes() == b"the user's own file"
    assert (tmp_path / "out" / "clip-2.mp4").read_bytes() == VIDEO == (tmp_path / "out" / "clip-3.mp4").read_bytes()
    assert "websocket unavailable" in first.stderr and "polling /history" in first.stderr


def test_downloads_are_streamed_in_chunks(fake, tmp_path, monkeypatch):
    """The body is copied to the file in DOWNLOAD_CHUNK pieces, never read whole."""
    state, url = fake
    reads = []
    original = shutil.copyfileobj

    def spy(source, target, length=0):
        reads.append(length)
        return original(source, target, length)

    monkeypatch.setattr(shutil, "copyfileobj", spy)
    comfy = qw.ComfyAPI(url)
    path = comfy.download({"filename": "clip.mp4", "subfolder": "video", "type": "output"}, tmp_path)
    assert reads == [server.DOWNLOAD_CHUNK] and server.DOWNLOAD_CHUNK < len(VIDEO)
    assert path.read_bytes() == VIDEO


# ---------------------------------------------------------------------------------------------
# failures: documented exit status, one line, no traceback

HTTP_FAILURES = {
    # route that fails -> (status, body, what the client must be doing when it fails)
    "GET /object_info": (500, b"500 Internal Server Error", "ui"),
    "POST /upload/image": (413, b"payload too large", "upload"),
    "POST /prompt": (500, b'{"error": "boom"}', "api"),
    "GET /history": (503, b"unavailable", "api"),
    "GET /view": (404, b"404: Not Found", "api"),
}


@pytest.mark.parametrize("route", sorted(HTTP_FAILURES))
def test_an_http_error_on_any_route_is_one_line_and_exit_5(fake, tmp_path, route):
    state, url = fake
    status, body, case = HTTP_FAILURES[route]
    state.fail[route] = (status, body)
    extra = []
    if case == "upload":
        (tmp_path / "ref.png").write_bytes(b"\x89PNG")
        extra = ["--reference", str(tmp_path / "ref.png")]
    done = run_client(url, tmp_path, *extra, workflow=UI_GRAPH if case == "ui" else API_GRAPH)
    method, path = route.split(" ")
    assert_one_line_failure(done, qw.EXIT_SERVER, f"{method} {path}", f"HTTP {status}")
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())  # no half-written file


def test_500_on_object_info_names_the_route(fake, tmp_path):
    state, url = fake
    state.fail["GET /object_info"] = (500, b"500 Internal Server Error")
    done = run_client(url, tmp_path, workflow=UI_GRAPH)
    last = assert_one_line_failure(done, 5, "GET /object_info -> HTTP 500")
    assert last.startswith("error: ")


def test_404_on_view_leaves_no_file(fake, tmp_path):
    state, url = fake
    state.outputs = [{"filename": "gone.mp4", "subfolder": "", "type": "output"}]
    done = run_client(url, tmp_path)
    assert_one_line_failure(done, 5, "GET /view -> HTTP 404")
    assert list((tmp_path / "out").glob("*")) == []


@pytest.mark.parametrize("route", ["POST /prompt", "GET /history"])
def test_a_non_json_answer_is_one_line_and_exit_5(fake, tmp_path, route):
    state, url = fake
    state.fail[route] = (200, b"<html><body>a proxy login page</body></html>")
    done = run_client(url, tmp_path)
    assert_one_line_failure(done, 5, route.split(" ")[1], "not JSON", "<html>")


def test_a_refused_connection_is_one_line_and_exit_5(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = run_client(f"http://127.0.0.1:{port}", tmp_path)
    assert_one_line_failure(done, 5, "cannot reach ComfyUI", "refused")


def test_a_request_without_answer_times_out_and_the_prompt_is_withdrawn(fake, tmp_path):
    """POST /prompt queues the prompt but answers only after --request-timeout: exit 5, and the
    prompt the server did queue is taken off it."""
    state, url = fake
    state.use("wait")
    state.slow["POST /prompt"] = 4
    done = run_client(url, tmp_path, "--request-timeout", "1")
    assert_one_line_failure(done, 5, "POST /prompt: no answer", "within 1 s", "removed from the queue")
    prompt = our_prompt(state)
    assert not state.holds(prompt) and state.deleted == [prompt]
    assert state.running == [OTHER] and state.interrupts == []


def test_usage_errors_exit_1_not_2(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "missing.json")], capture_output=True,
                          text=True, timeout=30)
    assert_one_line_failure(done, 1, "cannot read workflow")


# ---------------------------------------------------------------------------------------------
# --timeout and Ctrl-C withdraw our prompt, and only ours


def test_timeout_interrupts_our_running_prompt_only(fake, tmp_path):
    state, url = fake
    state.use("run")  # ours runs until interrupted; OTHER waits behind it
    done = run_client(url, tmp_path, "--timeout", "2")
    prompt = our_prompt(state)
    assert_one_line_failure(done, qw.EXIT_STOPPED, "--timeout of 2 s reached", f"prompt {prompt} interrupted")
    assert not state.holds(prompt)
    assert state.interrupts and set(state.interrupts) == {prompt}  # never a global interrupt
    assert state.pending == [OTHER]


def _start_and_wait_until_following(url: str, tmp_path: Path, state: FakeComfy) -> subprocess.Popen:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(API_GRAPH))
    # a shell's background job (a CI runner's, say) starts with SIGINT ignored, which a child would
    # inherit; a user's terminal delivers it, so give the client the default disposition
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(path), "--server", url, "--out", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # the fake server has no websocket, so the client follows its prompt by polling /history
    assert state.following.wait(timeout=30), f"the client never followed its prompt (queued: {state.queued})"
    return process


@pytest.mark.parametrize("mode, what", [("wait", "removed from the queue"), ("run", "interrupted")])
def test_ctrl_c_withdraws_our_prompt_only(fake, tmp_path, mode, what):
    state, url = fake
    state.use(mode)
    process = _start_and_wait_until_following(url, tmp_path, state)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    prompt = our_prompt(state)
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_one_line_failure(done, qw.EXIT_CTRL_C, "interrupted (Ctrl-C)", f"prompt {prompt} {what}")
    assert not state.holds(prompt)
    assert set(state.interrupts) <= {prompt}
    assert state.holds(OTHER)  # the other client's prompt is still there (running or waiting)


# ---------------------------------------------------------------------------------------------
# file names from the server


@pytest.mark.parametrize("filename, subfolder", [
    ("", ""), (".", ""), ("..", ""), ("a/../b", ""), ("../../etc/passwd", ""), ("/etc/passwd", ""),
    ("a\\..\\b", ""), ("ok.mp4", "../.."), ("ok.mp4", "/abs"), ("ok.mp4", "video/../../x"), ("x\0.mp4", ""),
])
def test_unsafe_server_file_names_are_refused(filename, subfolder):
    with pytest.raises(qw.ServerError, match="refusing"):
        qw.checked_output_item({"filename": filename, "subfolder": subfolder, "type": "output"})


def test_plain_server_file_names_are_accepted():
    assert qw.checked_output_item({"filename": "LongLive_00001_.mp4", "subfolder": "video/2026"}) == \
        ("LongLive_00001_.mp4", "video/2026", "output")


def test_an_unsafe_output_name_stops_the_download_with_one_line(fake, tmp_path):
    state, url = fake
    state.outputs = [{"filename": "a/../b", "subfolder": "", "type": "output"}]
    done = run_client(url, tmp_path)
    assert_one_line_failure(done, 5, "refusing the output file name 'a/../b'")
    assert not (tmp_path / "b").exists() and list((tmp_path / "out").glob("*")) == []


def test_an_output_folder_that_cannot_be_made_is_our_error_not_the_servers(fake, tmp_path):
    """A local disk problem (here --out names a file) is exit status 1 with one line, not a
    server error (5), and the client does not interrupt or delete anything on the server."""
    state, url = fake
    (tmp_path / "out").write_bytes(b"a file where the folder should be")
    done = run_client(url, tmp_path)
    assert_one_line_failure(done, 1, "cannot create the output folder", "out")
    assert (tmp_path / "out").read_bytes() == b"a file where the folder should be"
    assert state.interrupts == [] and state.deleted == []  # the finished prompt is left alone


def test_a_write_error_while_downloading_is_ours_and_leaves_no_half_file(fake, tmp_path, monkeypatch):
    state, url = fake
    create = server.create_new_file

    def full_disk(folder, filename):
        target, handle = create(folder, filename)

        class Handle:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

            def write(self, data):
                raise OSError(28, "No space left on device")

        return target, Handle()

    monkeypatch.setattr(server, "create_new_file", full_disk)
    with pytest.raises(qw.ClientError, match="cannot write .*clip.mp4: No space left on device"):
        qw.ComfyAPI(url).download({"filename": "clip.mp4", "subfolder": "video", "type": "output"}, tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# live steering: --steer, and --replay-steering from an mp4's metadata or a JSON record


SAMPLER_GRAPH = {
    "2": {"class_type": "LongLiveTestCLIP", "inputs": {"dim": 64}, "_meta": {"title": "CLIP"}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["2", 0]}, "_meta": {"title": "P"}},
    "5": {"class_type": "LongLiveSampleToVideo", "inputs": {"positive": ["3", 0], "clip": ["2", 0], "seed": 7},
          "_meta": {"title": "Sampler"}},
}
RECORD = [{"frame": 21, "text": "a hare, \u00fcn\u00efc\u00f6d\u00e9"}, {"frame": 45, "text": "night falls"}]


def write_mp4(path: Path, metadata: dict[str, str], late: dict[str, str] | None = None) -> Path:
    """An mp4 written by the pack's own VideoWriter, with metadata at the start and (late) at the end."""
    import importlib

    import torch

    load_pack = load_script("make_workflows").load_pack
    load_pack("longlive_vace_under_test")
    streaming = importlib.import_module("longlive_vace_under_test.vace_core.streaming")
    with streaming.VideoWriter(path, 16, 16, metadata=metadata) as writer:
        writer.write(torch.rand(5, 16, 16, 3))
        for key, value in (late or {}).items():
            writer.set_metadata(key, value)
    return path


def test_the_mp4_reader_gets_the_metadata_ffmpeg_wrote(tmp_path):
    import av

    big = json.dumps({str(n): {"class_type": "X" * 40, "inputs": {"text": "y" * 200}} for n in range(400)})
    path = write_mp4(tmp_path / "a.mp4", {"prompt": big, "workflow": "{}"},
                     late={"longlive_steering": json.dumps(RECORD, ensure_ascii=False)})
    with av.open(str(path)) as container:
        expected = {k: v for k, v in container.metadata.items() if k in ("prompt", "workflow", "longlive_steering")}
    found = qw.mp4_metadata(path)
    assert {k: found[k] for k in expected} == expected and len(found["prompt"]) > 100_000
    assert json.loads(found["longlive_steering"]) == RECORD
    assert qw.is_mp4(path) and not qw.is_mp4(tmp_path / "missing.mp4")


def test_replay_from_the_mp4_alone_rebuilds_the_recorded_workflow_with_the_steering(tmp_path):
    video = write_mp4(tmp_path / "LongLive_00001_.mp4", {"prompt": json.dumps(SAMPLER_GRAPH)},
                      late={"longlive_steering": json.dumps(RECORD)})
    done = subprocess.run([sys.executable, str(SCRIPT), str(video), "--replay-steering", "--dry-run"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    graph = json.loads(done.stdout)
    assert graph["6"] == {"inputs": {"clip": ["2", 0], "steering": json.dumps(RECORD, ensure_ascii=False)},
                          "class_type": "LongLiveSteeringSchedule", "_meta": {"title": "Replay of the steering"}}
    assert graph["5"]["inputs"] == {**SAMPLER_GRAPH["5"]["inputs"], "prompt_schedule": ["6", 0]}
    assert {k: v for k, v in graph.items() if k != "6" and k != "5"} == \
        {k: v for k, v in SAMPLER_GRAPH.items() if k != "5"}
    assert "node 6 (LongLiveSteeringSchedule) replays 2 steering text(s) into node 5" in done.stderr


def test_replay_from_a_record_file_chains_the_run_schedule_and_finds_the_prompt_clip(tmp_path):
    graph = json.loads(json.dumps(SAMPLER_GRAPH))
    del graph["5"]["inputs"]["clip"]  # not steerable itself: the CLIP comes from the prompt node
    graph["5"]["inputs"]["prompt_schedule"] = ["9", 0]
    graph["9"] = {"class_type": "LongLivePromptSchedule", "inputs": {"conditioning": ["3", 0], "start_frame": 80}}
    (tmp_path / "record.json").write_text(json.dumps(RECORD))
    done = run_client("http://127.0.0.1:9", tmp_path, "--replay-steering", str(tmp_path / "record.json"),
                      "--dry-run", workflow=graph)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["10"]["inputs"] == {"clip": ["2", 0], "steering": json.dumps(RECORD, ensure_ascii=False),
                                   "previous": ["9", 0]}
    assert out["5"]["inputs"]["prompt_schedule"] == ["10", 0]


@pytest.mark.parametrize("case, message", [
    ("json workflow, no source", "give an mp4 as the workflow"),
    ("mp4 without a record", "has no longlive_steering metadata"),
    ("mp4 without a workflow", "holds no workflow"),
    ("two samplers", "exactly one LongLive Sampler"),
    ("bad record", "not a list"),
    ("record not JSON", "cannot read the steering record"),
    ("steer without websocket", "--steer needs the websocket"),
])
def test_steering_options_fail_with_one_line(fake, tmp_path, case, message):
    state, url = fake
    plain = write_mp4(tmp_path / "plain.mp4", {"prompt": json.dumps(SAMPLER_GRAPH)})
    bad, good = tmp_path / "bad.json", tmp_path / "record.json"
    bad.write_text(json.dumps({"frame": 1}))
    (tmp_path / "broken.json").write_text('[{"frame": 21,')
    good.write_text(json.dumps(RECORD))
    two = {**SAMPLER_GRAPH, "6": SAMPLER_GRAPH["5"]}
    args = {
        "json workflow, no source": ([str(tmp_path / "workflow.json"), "--replay-steering"], SAMPLER_GRAPH),
        "mp4 without a record": ([str(plain), "--replay-steering"], None),
        "mp4 without a workflow": ([str(write_mp4(tmp_path / "empty.mp4", {}))], None),
        "two samplers": ([str(tmp_path / "workflow.json"), "--replay-steering", str(good)], two),
        "bad record": ([str(tmp_path / "workflow.json"), "--replay-steering", str(bad)], SAMPLER_GRAPH),
        "record not JSON": ([str(tmp_path / "workflow.json"), "--replay-steering", str(tmp_path / "broken.json")],
                            SAMPLER_GRAPH),
        "steer without websocket": ([str(tmp_path / "workflow.json"), "--steer", "--no-websocket"], SAMPLER_GRAPH),
    }[case]
    command, workflow = args
    if workflow is not None:
        (tmp_path / "workflow.json").write_text(json.dumps(workflow))
    done = subprocess.run([sys.executable, str(SCRIPT), *command, "--server", url], capture_output=True, text=True,
                          timeout=60)
    assert_one_line_failure(done, qw.EXIT_USAGE, message)
    assert state.queued == []


def test_steerer_waits_for_the_first_chunk_then_sends_each_line_for_its_own_prompt(fake):
    state, url = fake
    said = []
    lines = iter(["\n", "a hare\n", "a fox\n", "late\n"])
    steerer = qw.Steerer(qw.ComfyAPI(url), "our-prompt", lines, said.append)
    steerer.start()
    time.sleep(0.3)
    assert state.steers == []  # nothing before the node has made a chunk
    steerer.event("progress", {})
    steerer.event("longlive.chunk", {"chunk": 1})
    steerer.thread.join(timeout=10)
    assert state.steers == [{"prompt_id": "our-prompt", "text": text} for text in ("a hare", "a fox", "late")]
    # the second text was sent before the first reached its boundary: the answer said it replaces it
    assert said == ["steered: 'a hare' takes over at frame 21",
                    "steered: 'a fox' takes over at frame 21, replacing a text still waiting for that frame",
                    "steer 'late' refused (HTTP 404): no chunk boundary left"]


def test_what_took_effect_is_printed_whoever_steered_or_held():
    """The longlive.steer / longlive.hold messages (docs/live.md#the-contract) as one line each,
    in the order the server sent them: a steer dropped at its boundary and one that replaced others
    are news to a client whose own text was dropped or replaced."""
    stream = io.StringIO()
    progress = qw.Progress({"5": {"class_type": "LongLiveSampleToVideo", "_meta": {"title": "Sampler -> Video"}}},
                           stream)
    base = {"prompt_id": "p", "node": "5"}
    for kind, data in [
        ("longlive.hold", {"state": "held", "frame": 33, "timeout_s": 60.0}),
        ("longlive.hold", {"state": "resumed", "frame": 33, "by": "steer", "held_s": 2.504}),
        ("longlive.steer", {"status": "dropped", "frame": 33, "text": "a fox embedding:broken", "replaced": 0,
                            "reason": "ValueError: clip (the steering text at frame 33): non-finite\nvalues"}),
        ("longlive.steer", {"status": "applied", "frame": 45, "text": "a hare " + "x" * 60, "replaced": 2}),
        ("longlive.steer", {"status": "applied", "frame": 57, "text": "a hare", "replaced": 0}),
        ("longlive.unknown", {"frame": 69}),
    ]:
        progress.event(kind, {**base, **data})
    assert stream.getvalue().splitlines() == [
        "  node 5 (Sampler -> Video): held before frame 33 (resumes by itself after 60.0 s)",
        "  node 5 (Sampler -> Video): resumed at frame 33 by steer after 2.504 s",
        "  node 5 (Sampler -> Video): steer 'a fox embedding:broken' dropped at frame 33 (ValueError: clip (the "
        "steering text at frame 33): non-finite values); the prompt stays as it was",
        f"  node 5 (Sampler -> Video): steer {'a hare ' + 'x' * 50 + '...'!r} took over at frame 45 "
        "(it replaced 2 text(s) sent before it)",
        "  node 5 (Sampler -> Video): steer 'a hare' took over at frame 57",
    ]


def test_a_stopped_steerer_sends_nothing(fake):
    state, url = fake
    steerer = qw.Steerer(qw.ComfyAPI(url), "our-prompt", iter(["too late\n"]), print)
    steerer.start()
    steerer.stop()
    steerer.thread.join(timeout=10)
    assert state.steers == [] and not steerer.thread.is_alive()


# the websocket client against a scripted server


def _server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    length = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if length < 126:
        head += bytes([length])
    elif length < 1 << 16:
        head += bytes([126]) + struct.pack(">H", length)
    else:
        head += bytes([127]) + struct.pack(">Q", length)
    return head + payload  # servers never mask


def _read_client_frame(conn: socket.socket) -> tuple[int, bytes]:
    first, second = conn.recv(2, socket.MSG_WAITALL)
    assert second & 0x80, "client frames must be masked"
    length = second & 0x7F
    if length == 126:
        length = struct.unpack(">H", conn.recv(2, socket.MSG_WAITALL))[0]
    mask = conn.recv(4, socket.MSG_WAITALL)
    data = conn.recv(length, socket.MSG_WAITALL) if length else b""
    return first & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def test_websocket_client_handshake_fragments_ping_and_close():
    import base64
    import hashlib

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: dict = {}
    big = json.dumps({"type": "progress", "data": {"value": 1, "max": 2, "pad": "x" * 70000}}).encode()

    def serve():
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            lines = request.decode().split("\r\n")
            seen["request_line"] = lines[0]
            key = next(line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1((key + qw.WS_GUID).encode()).digest()).decode()
            conn.sendall(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
                         + _server_frame(qw.OP_TEXT, b'{"type": "status"}'))
            conn.sendall(_server_frame(qw.OP_PING, b"hi")
                         + _server_frame(qw.OP_TEXT, b'{"type": "exec', fin=False)
                         + _server_frame(qw.OP_CONTINUATION, b'uting"}')
                         + _server_frame(qw.OP_BINARY, b"\x00\x01preview")
                         + _server_frame(qw.OP_TEXT, big))
            seen["pong"] = _read_client_frame(conn)
            conn.sendall(_server_frame(qw.OP_CLOSE, struct.pack(">H", 1000)))
            seen["close"] = _read_client_frame(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ws = qw.WebSocket(f"ws://127.0.0.1:{port}/ws?clientId=abc", timeout=10)
    assert ws.receive(wait=5) == (qw.OP_TEXT, b'{"type": "status"}')
    assert ws.receive(wait=5) == (qw.OP_TEXT, b'{"type": "executing"}')  # ping answered on the way
    assert ws.receive(wait=5) == (qw.OP_BINARY, b"\x00\x01preview")
    assert ws.receive(wait=5) == (qw.OP_TEXT, big)  # 64-bit length
    with pytest.raises(qw.WebSocketClosed):
        ws.receive(wait=5)
    thread.join(timeout=10)
    listener.close()
    assert seen["request_line"] == "GET /ws?clientId=abc HTTP/1.1"
    assert seen["pong"] == (qw.OP_PONG, b"hi")
    assert seen["close"][0] == qw.OP_CLOSE


def test_websocket_handshake_refusal_is_an_error():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with pytest.raises(ConnectionError, match="404"):
        qw.WebSocket(f"ws://127.0.0.1:{port}/ws", timeout=10)
    thread.join(timeout=10)
    listener.close()


# ---------------------------------------------------------------------------------------------
# --distributed: through ComfyUI-Distributed on the master

TWO_VIDEOS = [{"filename": f"LongLive_distributed_0000{n}_.mp4", "subfolder": "video", "type": "output"}
              for n in (1, 2)]
COLLECTOR = {"class_type": "DistributedCollector", "inputs": {"images": ["1", 0], "load_balance": False},
             "_meta": {"title": "Distributed Collector"}}


def test_distributed_queues_on_the_enabled_workers_and_downloads_every_video(fake, tmp_path):
    """--distributed: POST /distributed/queue with the graph, a client id and the workers the master
    has enabled (not POST /prompt); the master's history lists both participants' videos, and both
    are downloaded and printed."""
    state, url = fake
    state.outputs = TWO_VIDEOS
    state.served |= {(v["subfolder"], v["filename"]) for v in TWO_VIDEOS}
    graph = {**API_GRAPH, "2": COLLECTOR}
    done = run_client(url, tmp_path, "--distributed", workflow=graph)
    assert done.returncode == 0, done.stderr
    [request] = state.distributed
    assert request["prompt"] == graph and request["enabled_worker_ids"] == ["1"] and request["client_id"]
    assert state.queued == ["master-1"]  # the extension queued it; the client never called POST /prompt
    assert [Path(p).name for p in done.stdout.split()] == [v["filename"] for v in TWO_VIDEOS]
    assert all((tmp_path / "out" / v["filename"]).read_bytes() == VIDEO for v in TWO_VIDEOS)
    for said in ("queueing on the master and 1 worker(s): GPU 1 (127.0.0.1:8189)",
                 "queued prompt master-1 on the master (2 participant(s))",
                 "2 video(s) collected on the master from 2 participant(s), the master's first"):
        assert said in done.stderr, said
    assert "fewer than expected" not in done.stderr


def test_workers_names_the_workers_and_refuses_an_unknown_one(fake, tmp_path):
    state, url = fake
    done = run_client(url, tmp_path, "--workers", "2,1")
    assert done.returncode == 0, done.stderr
    assert state.distributed[-1]["enabled_worker_ids"] == ["2", "1"]
    refused = run_client(url, tmp_path, "--workers", "1,9")
    assert_one_line_failure(refused, 1, "--workers: the master has no worker '9'", "1 (GPU 1, 127.0.0.1:8189)",
                            "2 (laptop, 192.168.1.7:8188)")
    assert len(state.distributed) == 1 and len(state.queued) == 1  # nothing queued the second time


def test_a_worker_that_does_not_answer_and_a_missing_video_are_said(fake, tmp_path):
    """The master reached none of the workers asked, and one video came back: said, not an error."""
    state, url = fake
    state.workers_reached = 0
    state.workers[1]["enabled"] = True
    done = run_client(url, tmp_path, "--distributed")
    assert done.returncode == 0, done.stderr
    assert "2 of 2 worker(s) did not answer the master and were left out" in done.stderr
    assert "1 video(s) collected on the master from 1 participant(s)" in done.stderr
    state.workers_reached = None
    done = run_client(url, tmp_path, "--distributed")
    assert "1 video(s) collected on the master from 3 participant(s)" in done.stderr
    assert "2 video(s) fewer than expected: a worker sent no whole video before the master's timeout" in done.stderr


def test_with_load_balance_one_video_is_what_is_expected(fake, tmp_path):
    state, url = fake
    graph = {**API_GRAPH, "2": {**COLLECTOR, "inputs": {**COLLECTOR["inputs"], "load_balance": True}}}
    done = run_client(url, tmp_path, "--distributed", workflow=graph)
    assert done.returncode == 0, done.stderr
    assert "1 video(s) collected on the master from 2 participant(s)" in done.stderr
    assert "fewer than expected" not in done.stderr


@pytest.mark.parametrize("failure, status, fragments", [
    (("GET /distributed/config", 404, b"404: Not Found"), 5,
     ("has no ComfyUI-Distributed (GET /distributed/config -> HTTP 404)", "install it on the master")),
    (("POST /distributed/queue", 500, json.dumps({"error": "Invalid prompt: {'type': 'prompt_outputs_failed_"
                                                           "validation', 'details': 'seed: too big'}"}).encode()), 2,
     ("ComfyUI-Distributed: the workflow was refused: Invalid prompt", "seed: too big")),
    (("POST /distributed/queue", 500, json.dumps({"error": "Worker websocket closed unexpectedly"}).encode()), 5,
     ("POST /distributed/queue -> HTTP 500", "Worker websocket closed unexpectedly")),
])
def test_distributed_failures_are_one_line_with_their_exit_status(fake, tmp_path, failure, status, fragments):
    state, url = fake
    route, code, body = failure
    state.fail[route] = (code, body)
    done = run_client(url, tmp_path, "--distributed")
    assert_one_line_failure(done, status, *fragments)
    assert state.queued == []


def test_distributed_timeout_withdraws_the_masters_prompt_and_says_the_workers_run_on(fake, tmp_path):
    state, url = fake
    state.use("run")
    done = run_client(url, tmp_path, "--distributed", "--timeout", "2")
    assert_one_line_failure(done, qw.EXIT_STOPPED, "--timeout of 2 s reached", "prompt master-1 interrupted",
                            "the prompts of its 1 worker(s) run on")
    assert state.interrupts and set(state.interrupts) == {"master-1"}


def test_steering_a_distributed_run_is_refused(fake, tmp_path):
    state, url = fake
    done = run_client(url, tmp_path, "--distributed", "--steer")
    assert_one_line_failure(done, 1, "--steer steers the master's prompt only")
    assert state.distributed == []
