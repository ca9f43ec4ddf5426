"""Running a prompt: queue it, follow it (websocket, else polling /history), withdraw it on
--timeout or Ctrl-C, check how it ended and download what it made."""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .errors import NoAnswer, ServerError, TimedOut, WorkflowFailed, WorkflowStopped, one_line
from .server import ComfyAPI
from .steering import Steerer, live_news
from .websocket import OP_TEXT, WebSocket, WebSocketClosed

class Progress:
    """Prints what the server reports, at most about once a second per node, to `stream`."""

    def __init__(self, api: dict, stream=None):
        self.api = api
        self.stream = stream if stream is not None else sys.stderr
        self.last_line = 0.0
        self.node: str | None = None

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _label(self, node_id: str | None) -> str:
        node = self.api.get(str(node_id), {})
        return f"node {node_id} ({node.get('_meta', {}).get('title') or node.get('class_type', '?')})"

    def event(self, kind: str, data: dict) -> None:
        if kind == "execution_start":
            self.say("started")
        elif kind == "execution_cached" and data.get("nodes"):
            self.say(f"cached (unchanged since the last run): {', '.join(map(str, data['nodes']))}")
        elif kind == "executing" and data.get("node") is not None:
            self.node = str(data["node"])
            self.say(f"running {self._label(self.node)}")
        elif kind == "progress":
            value, total = data.get("value", 0), data.get("max", 0)
            now = time.monotonic()
            if value >= total or now - self.last_line >= 1.0:
                self.last_line = now
                percent = 100 * value / total if total else 0
                self.say(f"  {self._label(data.get('node', self.node))}: {value}/{total} ({percent:.0f}%)")
        elif kind == "executed":
            self.say(f"done {self._label(data.get('node'))}")
        elif kind == "longlive.chunk":
            first, frames = data.get("first_frame", 0), data.get("frames", 0)
            self.say(f"  {self._label(data.get('node'))}: chunk {data.get('chunk')}/{data.get('chunks')} made "
                     f"(frames {first}-{first + frames - 1})")
        elif (news := live_news(kind, data)) is not None:
            self.say(f"  {self._label(data.get('node'))}: {news}")




TERMINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")
# (api, client_id) -> (the master's prompt id, workers reached): distributed.queue_on_participants
DistributedQueue = Callable[[dict, str], tuple[str, int]]


def wait_with_websocket(ws: WebSocket, comfy: ComfyAPI, prompt_id: str, progress: Progress,
                        deadline: float, on_event: Callable[[str, dict], None] | None = None) -> None:
    """Follow the websocket until the prompt ends (or the deadline passes); `on_event(kind, data)`
    also sees every message of the prompt."""
    last_poll = time.monotonic()
    while time.monotonic() < deadline:
        message = ws.receive(wait=1.0)
        if message is None:
            # belt and braces: a message could be missed if the socket was replaced meanwhile
            if time.monotonic() - last_poll > 10:
                last_poll = time.monotonic()
                if _finished(comfy.history(prompt_id)):
                    return
            continue
        opcode, payload = message
        if opcode != OP_TEXT:
            continue  # binary frames carry preview images
        try:
            event = json.loads(payload.decode("utf-8"))
        except ValueError:
            continue  # not a message of ComfyUI's: nothing to follow
        if not isinstance(event, dict) or not isinstance(event.get("data") or {}, dict):
            continue
        kind, data = event.get("type"), event.get("data") or {}
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        progress.event(kind, data)
        if on_event is not None:
            on_event(kind, data)
        if kind in TERMINAL_EVENTS or (kind == "executing" and data.get("node") is None
                                       and data.get("prompt_id") == prompt_id):
            return
    raise TimedOut(f"prompt {prompt_id} did not finish in time")


def _finished(entry: dict | None) -> bool:
    if not entry:
        return False
    status = entry.get("status") or {}
    return status.get("status_str") in ("success", "error") or bool(status.get("completed"))


def wait_with_polling(comfy: ComfyAPI, prompt_id: str, progress: Progress, deadline: float) -> None:
    progress.say("following the prompt by polling /history (no websocket)")
    while time.monotonic() < deadline:
        if _finished(comfy.history(prompt_id)):
            return
        time.sleep(0.5)
    raise TimedOut(f"prompt {prompt_id} did not finish in time")


def finished_entry(comfy: ComfyAPI, prompt_id: str, deadline: float) -> dict:
    """The prompt's /history entry (it is stored just after the last websocket message)."""
    while True:
        entry = comfy.history(prompt_id)
        if _finished(entry):
            return entry
        if time.monotonic() > deadline:
            raise WorkflowStopped(f"prompt {prompt_id} has no finished history entry")
        time.sleep(0.2)


def check_entry(entry: dict, api: dict) -> None:
    """Raise WorkflowFailed / WorkflowStopped unless the history entry is a success."""
    status = entry.get("status") or {}
    if status.get("status_str") != "error":
        return
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            node_id = str(data.get("node_id"))
            title = api.get(node_id, {}).get("_meta", {}).get("title", "")
            raise WorkflowFailed(
                f"node {node_id} ({data.get('node_type')}{', ' + repr(title) if title else ''}) failed: "
                f"{data.get('exception_type')}: {data.get('exception_message')}", entry)
        if kind == "execution_interrupted":
            raise WorkflowStopped(f"interrupted at node {data.get('node_id')}")
    raise WorkflowFailed("the prompt ended with an error but no error message", entry)


def output_items(entry: dict, types: Iterable[str] = ("output",)) -> list[dict]:
    """Every file a finished prompt reported ({"filename", "subfolder", "type"}), node by node."""
    items = []
    for node_output in (entry.get("outputs") or {}).values():
        for values in node_output.values():
            for item in values if isinstance(values, list) else []:
                if isinstance(item, dict) and "filename" in item and item.get("type", "output") in types:
                    items.append(item)
    return items


@dataclass
class RunResult:
    prompt_id: str
    entry: dict
    files: list[Path]
    participants: int = 1  # servers that ran it: the master and the workers reached (--distributed)


WITHDRAW_SECONDS = 15  # how long to wait for our interrupted prompt to leave the server
NO_ANSWER_WITHDRAW_SECONDS = 3  # after POST /prompt went unanswered: the server may be stuck


def withdraw(comfy: ComfyAPI, prompt_id: str, wait: float = WITHDRAW_SECONDS, may_appear: bool = False) -> str:
    """Take our prompt off the server and say how: delete it from the queue while it waits, or
    interrupt it (POST /interrupt with its id, which ComfyUI ignores unless that very prompt is
    running) until GET /queue no longer lists it. Other clients' prompts are never touched.

    `may_appear`: POST /prompt went unanswered, so the prompt may still show up; keep watching
    for it for `wait` seconds instead of stopping once it is not listed.
    """
    deadline = time.monotonic() + wait
    done = ""
    try:
        while True:
            running, pending = comfy.queue_ids()
            if prompt_id in pending:
                comfy.call("POST", "/queue", body={"delete": [prompt_id]})
                done = done or "removed from the queue"
            elif prompt_id in running:
                comfy.call("POST", "/interrupt", body={"prompt_id": prompt_id})
                done = "interrupted"
            elif done or not may_appear or time.monotonic() > deadline:
                return f"prompt {prompt_id} {done or 'is not on the server'}"
            if time.monotonic() > deadline:
                return f"prompt {prompt_id} is still on the server after {wait:g} s"
            time.sleep(0.25)
    except ServerError as error:
        return f"could not withdraw prompt {prompt_id} ({error})"


def _withdraw_ours(comfy: ComfyAPI, prompt_id: str, participants: int) -> str:
    outcome = withdraw(comfy, prompt_id)
    if participants > 1:  # the workers' prompts have ids the extension chose and did not report
        outcome += f" (on the master; the prompts of its {participants - 1} worker(s) run on: stop them there)"
    return outcome


def _queue(comfy: ComfyAPI, api: dict, client_id: str, prompt_id: str, distributed: DistributedQueue | None
           ) -> tuple[str, int]:
    """(the prompt id, the servers that run it) once queued, on this server alone or through
    ComfyUI-Distributed."""
    if distributed is not None:
        try:
            prompt_id, workers = distributed(api, client_id)
        except NoAnswer as error:  # the extension names the prompt itself: nothing to withdraw by id
            raise NoAnswer(f"{error}; the master may have queued it all the same (check its queue)") from None
        return prompt_id, 1 + workers
    try:
        return comfy.queue(api, client_id, prompt_id), 1
    except NoAnswer as error:  # it may have been queued all the same
        outcome = withdraw(comfy, prompt_id, wait=NO_ANSWER_WITHDRAW_SECONDS, may_appear=True)
        raise NoAnswer(f"{error}; {outcome}") from None


def run(comfy: ComfyAPI, api: dict, *, out_dir: Path | None = None, timeout: float = 3600,
        use_websocket: bool = True, progress: Progress | None = None,
        steer_lines: Iterable[str] | None = None, distributed: DistributedQueue | None = None) -> RunResult:
    """Queue `api`, follow it to the end, download its output files into out_dir (when given).
    With `steer_lines` (needs the websocket), each line steers the prompt while it runs (--steer).
    With `distributed` (distributed.queue_on_participants), the prompt is queued through
    ComfyUI-Distributed on the master (this server) and its workers; the master's history holds
    every participant's video.

    On --timeout (TimedOut) or Ctrl-C (KeyboardInterrupt) our prompt is withdrawn from the server
    before the exception goes on; the exception's message says what became of it (a distributed
    run's workers are not touched: their prompts are not ours to name).
    """
    participants = 1
    progress = progress or Progress(api)
    client_id = uuid.uuid4().hex
    prompt_id = str(uuid.uuid4())  # ours from the start: even a Ctrl-C during POST /prompt can withdraw it
    deadline = time.monotonic() + timeout
    ws = None
    steerer = Steerer(comfy, prompt_id, steer_lines, progress.say) if steer_lines is not None else None
    try:
        if use_websocket:
            try:  # open before queueing, so no message of the prompt is missed
                ws = comfy.websocket(client_id)
            except (OSError, ConnectionError, WebSocketClosed) as error:
                progress.say(f"websocket unavailable ({one_line(error)})")
        try:
            prompt_id, participants = _queue(comfy, api, client_id, prompt_id, distributed)
            progress.say(f"queued prompt {prompt_id}" + (f" on the master ({participants} participant(s))"
                                                         if distributed is not None else ""))
            if steerer is not None:
                if ws is None:
                    progress.say("--steer: no websocket, so no chunk can be seen and nothing is steered")
                else:
                    steerer.start()
            if ws is not None:
                try:
                    wait_with_websocket(ws, comfy, prompt_id, progress, deadline,
                                        steerer.event if steerer is not None else None)
                except (OSError, WebSocketClosed) as error:
                    progress.say(f"websocket lost ({one_line(error)})")
                    wait_with_polling(comfy, prompt_id, progress, deadline)
            else:
                wait_with_polling(comfy, prompt_id, progress, deadline)
        except TimedOut:
            raise TimedOut(f"--timeout of {timeout:g} s reached; {_withdraw_ours(comfy, prompt_id, participants)}") \
                from None
        except KeyboardInterrupt:
            raise KeyboardInterrupt(_withdraw_ours(comfy, prompt_id, participants)) from None
    finally:
        if steerer is not None:
            steerer.stop()
        if ws is not None:
            ws.close()
    entry = finished_entry(comfy, prompt_id, deadline + 30)
    check_entry(entry, api)
    files = [comfy.download(item, out_dir) for item in output_items(entry)] if out_dir is not None else []
    return RunResult(prompt_id, entry, files, participants)
