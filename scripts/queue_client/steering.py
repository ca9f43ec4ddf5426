"""Live steering: sending texts to a running prompt (--steer), and replaying a run's steering record
(--replay-steering) through a 'LongLive Schedule from Steering' node."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from .errors import ClientError, HTTPStatusError, ServerError, one_line
from .mp4 import read_json_or_mp4_record
from .workflow import is_literal, ordered_nodes, shortened

if TYPE_CHECKING:
    from .server import ComfyAPI

STEERABLE = ("LongLiveSampler", "LongLiveSampleToVideo")
STEERING_KEY = "longlive_steering"


class Steerer:
    """--steer: sends each line of `lines` (standard input) to POST /longlive/steer for our own
    prompt, from the first chunk the prompt reports on (the node takes steers by then), and prints
    the server's answer. Runs on its own thread while the main one follows the websocket."""

    def __init__(self, comfy: "ComfyAPI", prompt_id: str, lines: Iterable[str], say: Callable[[str], None]):
        self.comfy, self.prompt_id, self.lines, self.say = comfy, prompt_id, lines, say
        self.ready = threading.Event()  # a chunk has been made: the node is running and steerable
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="steer", daemon=True)

    def event(self, kind: str, data: dict) -> None:
        if kind == "longlive.chunk":
            self.ready.set()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.ready.set()

    def _run(self) -> None:
        for line in self.lines:
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            self.ready.wait()
            if self.stopped.is_set():
                return
            self.send(text)

    def send(self, text: str) -> None:
        shown = shortened(text)
        try:
            answer = self.comfy.call_json("POST", "/longlive/steer", body={"prompt_id": self.prompt_id, "text": text})
            replaces = ", replacing a text still waiting for that frame" if answer.get("replaces_pending") else ""
            self.say(f"steered: {shown!r} takes over at frame {answer.get('takes_effect_at_frame')}{replaces}")
        except HTTPStatusError as error:
            try:
                reason = json.loads(error.body).get("error", error.body)
            except (ValueError, AttributeError):
                reason = error.body
            self.say(f"steer {shown!r} refused (HTTP {error.code}): {one_line(reason)}")
        except ServerError as error:
            self.say(f"steer {shown!r} not sent: {error}")


def live_news(kind: str, data: dict) -> str | None:
    """What a `longlive.steer` or `longlive.hold` message says (docs/live.md#the-contract), as one
    line; None for any other message. The server sends them to the client that queued the prompt,
    whoever steered or held it: a steer dropped at its boundary, or replaced there by a later one,
    is news to the client that sent it."""
    frame = data.get("frame")
    if kind == "longlive.steer":
        text = shortened(str(data.get("text", "")))
        replaced = data.get("replaced") or 0
        if data.get("status") == "dropped":
            return f"steer {text!r} dropped at frame {frame} ({one_line(data.get('reason', ''))}); the prompt stays as it was"
        others = f" (it replaced {replaced} text(s) sent before it)" if replaced else ""
        return f"steer {text!r} took over at frame {frame}{others}"
    if kind == "longlive.hold":
        if data.get("state") == "held":
            return f"held before frame {frame} (resumes by itself after {data.get('timeout_s')} s)"
        return f"resumed at frame {frame} by {data.get('by')} after {data.get('held_s')} s"
    return None


def load_steering_record(source: str | Path) -> list[dict]:
    """The steering record [{"frame", "text"}, ...] of an mp4 (its longlive_steering metadata) or a JSON file."""
    record = read_json_or_mp4_record(source, STEERING_KEY, "the steering record",
                                     f"{source} has no {STEERING_KEY} metadata: it was not made by a steerable "
                                     "LongLive node (or ComfyUI ran with --disable-metadata)")
    if not isinstance(record, list) or not all(isinstance(e, dict) and {"frame", "text"} <= set(e) for e in record):
        raise ClientError(f"the steering record of {source} is not a list of {{\"frame\", \"text\"}} entries")
    return record


def add_steering_replay(api: dict, record: list[dict]) -> list[str]:
    """Feed the workflow's LongLive sampler a 'LongLive Schedule from Steering' made from `record`
    (chained after the sampler's own schedule, encoded with the sampler's clip, or else the CLIP of
    the prompt node feeding `positive`). Changes `api` in place; returns one line per change."""
    samplers = [i for i, n in ordered_nodes(api) if n["class_type"] in STEERABLE]
    if len(samplers) != 1:
        raise ClientError(f"--replay-steering needs exactly one LongLive Sampler or Sampler -> Video in the workflow, "
                          f"found {len(samplers)}; add a 'LongLive Schedule from Steering' node by hand")
    node_id = samplers[0]
    inputs = api[node_id]["inputs"]
    clip = inputs.get("clip")
    positive = inputs.get("positive")
    if not is_literal(positive or 0) and clip is None:
        clip = api.get(positive[0], {}).get("inputs", {}).get("clip")
    if clip is None or is_literal(clip):
        raise ClientError(f"--replay-steering: node {node_id} has no CLIP to encode the texts with (connect its "
                          "clip input)")
    new_id = str(max((int(i) for i in api if i.isdigit()), default=0) + 1)
    schedule = {"clip": clip, "steering": json.dumps(record, ensure_ascii=False)}
    if "prompt_schedule" in inputs and not is_literal(inputs["prompt_schedule"]):
        schedule["previous"] = inputs["prompt_schedule"]
    api[new_id] = {"inputs": schedule, "class_type": "LongLiveSteeringSchedule",
                   "_meta": {"title": "Replay of the steering"}}
    inputs["prompt_schedule"] = [new_id, 0]
    return [f"node {new_id} (LongLiveSteeringSchedule) replays {len(record)} steering text(s) into node {node_id}"]
