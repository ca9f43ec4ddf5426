#!/usr/bin/env python3
"""Queue a workflow on a running ComfyUI and fetch its results, without the editor.

    python3 scripts/queue_workflow.py example_workflows/api/longlive_vace_r2v.json \\
        --server http://127.0.0.1:8188 --reference me.png --prompt "a cat surfing" --out results/

The workflow may be in API format (example_workflows/api/*.json) or UI format (a file the editor
saved, example_workflows/*.json): a UI file is converted with the server's /object_info first.
Before queueing, inputs can be changed from the command line:

  --prompt TEXT      text of the prompt nodes (CLIPTextEncode and other nodes with a literal
                     `text` input), in node-id order: repeat it for a workflow with several prompts
  --reference PATH   upload an image (POST /upload/image) into the next Load Image node, in node-id
                     order; repeat it for several references
  --video PATH       upload a video into the Load Video node
  --seed N           every `seed` input
  --frames N         the video's length in frames, 4k+1 (81, 161, ...), on the node that holds the
                     video's size (Video size = EmptyHunyuanLatentVideo, or VACE Encode References);
                     another number is refused with the two nearest valid lengths. Continue Video's
                     `length` (the frames it adds) is left alone: --set changes it
  --width/--height N the frame size, a multiple of 16, on that same node
  --set ID.INPUT=VALUE   any input of any node; VALUE is read as JSON when it parses, else as text

Live steering and its replay (a LongLive Sampler or Sampler -> Video with its clip connected):

  --steer            read lines from standard input while the prompt runs and steer it with each
                     (POST /longlive/steer): from the first finished chunk on, each line takes
                     over at the next chunk; several lines before one chunk boundary: the last wins
  --replay-steering [SOURCE]  make the steered video again: a 'LongLive Schedule from Steering'
                     node with the steering record of SOURCE (an mp4 with `longlive_steering`
                     metadata, or a JSON file of the record) feeds the sampler's prompt_schedule.
                     The workflow may itself be such an mp4 (its `prompt` metadata is the API
                     graph, seed included): `queue_workflow.py LongLive_00001_.mp4 --replay-steering`

Progress comes from the server's websocket (/ws, a minimal RFC 6455 client below; falls back to
polling /history when the websocket cannot be opened). Output files (type "output") are streamed
from GET /view into --out, never over an existing file (a second `x.mp4` arrives as `x-2.mp4`),
and their paths printed on stdout, one per line. A file name from the server that is not a plain
name ('', '..', 'a/../b', ...) is refused.

Ctrl-C, or --timeout passing, withdraws the prompt this client queued (it chooses the prompt_id
itself): deleted from the queue while it waits, or interrupted by id while it runs (ComfyUI ignores
an interrupt for a prompt that is not running, so no one else's prompt is touched).

Every failure ends with one line on stderr (no traceback) and an exit status:
  0  done
  1  usage or local: bad arguments, an unreadable workflow or file, an output that cannot be written
  2  the server rejected the workflow (validation; its messages are printed)
  3  a node failed while running (the node and its error are printed)
  4  stopped: --timeout passed (the prompt is withdrawn) or the prompt was interrupted on the server
  5  server: unreachable, refused, no answer within --request-timeout, an HTTP error on any route,
     or an answer that is not the JSON expected
  130 Ctrl-C (the prompt is withdrawn)

Standard library only, so it runs with any python >= 3.10, ComfyUI's own included.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import mimetypes
import os
import select
import shutil
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from editor_widgets import widget_slots  # noqa: E402  (the editor's widget rules, shared with make_workflows)

EXIT_OK, EXIT_USAGE, EXIT_REJECTED, EXIT_FAILED, EXIT_STOPPED, EXIT_SERVER, EXIT_CTRL_C = 0, 1, 2, 3, 4, 5, 130
EXIT_STATUS_HELP = ("Exit status: 0 done, 1 usage or local file error, 2 rejected by validation, 3 a node failed, 4 stopped "
                    "(--timeout, or interrupted on the server), 5 server unreachable / HTTP error / not JSON, "
                    "130 Ctrl-C. Ctrl-C and --timeout withdraw the prompt this client queued.")


class ClientError(Exception):
    """A problem on our side: bad arguments, an unreadable workflow or file, a disk error (exit status 1)."""


class ServerError(Exception):
    """The server could not be reached, took too long to answer one request, answered with an HTTP
    error or with something that is not the JSON expected (exit status 5). One-line message."""


class NoAnswer(ServerError):
    """A request got no answer within --request-timeout (the server may still have acted on it)."""


class HTTPStatusError(ServerError):
    def __init__(self, route: str, error: urllib.error.HTTPError):
        try:
            self.body = error.read().decode("utf-8", "replace")
        except OSError:
            self.body = ""
        self.code = error.code
        detail = f": {_one_line(self.body)}" if self.body.strip() else ""
        super().__init__(f"{route} -> HTTP {error.code} {error.reason}{detail}")


class WorkflowRejected(Exception):
    """POST /prompt answered 400: the workflow failed validation (exit status 2)."""

    def __init__(self, message: str, response: dict):
        super().__init__(message)
        self.response = response


class WorkflowFailed(Exception):
    """The prompt ran and a node raised (exit status 3)."""

    def __init__(self, message: str, entry: dict):
        super().__init__(message)
        self.entry = entry


class WorkflowStopped(Exception):
    """The prompt was interrupted on the server, or did not finish in time (exit status 4)."""


class TimedOut(WorkflowStopped):
    """--timeout passed before the prompt finished (exit status 4; the prompt is withdrawn)."""


# ---------------------------------------------------------------------------------------------
# UI format -> API format

EDITOR_ONLY_NODES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
MODE_MUTED, MODE_BYPASSED = 2, 4


def is_ui_workflow(data: dict) -> bool:
    return isinstance(data.get("nodes"), list) and "links" in data


def _links_by_id(workflow: dict) -> dict[int, tuple[int, int, str]]:
    """link id -> (source node, source slot, type); links are arrays in version 0.4 and objects
    in the editor's newer schema."""
    links = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"], link.get("type", "*"))
        else:
            links[link[0]] = (link[1], link[2], link[5] if len(link) > 5 else "*")
    return links


class _FromPrimitive:
    """A widget fed by an editor-only Primitive node: its value is already in widgets_values."""


FROM_PRIMITIVE = _FromPrimitive()


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert an editor (UI format) workflow into the API graph the editor would queue.

    Notes, Primitive and Reroute nodes are editor-only; a muted node is dropped with its links;
    a bypassed node passes each linked output on from an input of the same type (the one in the
    output's slot if it fits, else the first), as the editor does. Subgraphs are not supported (expand them in the editor first).
    """
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise ClientError("the workflow contains subgraphs; unpack them in the editor (or export the API "
                          "format with 'Export (API)') and try again")
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = _links_by_id(workflow)

    def source_of(link_id: int, seen: frozenset = frozenset()) -> list | _FromPrimitive | None:
        if link_id not in links or link_id in seen:
            return None
        src_id, src_slot, link_type = links[link_id]
        src = nodes.get(src_id)
        if src is None or src.get("mode") == MODE_MUTED:
            return None
        if src["type"] == "PrimitiveNode":
            return FROM_PRIMITIVE
        if src["type"] == "Reroute" or src.get("mode") == MODE_BYPASSED:
            candidates = [i for i in src.get("inputs", []) if i.get("link") is not None
                          and (src["type"] == "Reroute" or i.get("type") in (link_type, "*"))]
            # a bypassed node prefers the input in the output's own slot
            same_slot = [i for n, i in enumerate(src.get("inputs", [])) if n == src_slot and i in candidates]
            pick = (same_slot or candidates or [None])[0]
            return source_of(pick["link"], seen | {link_id}) if pick else None
        return [str(src_id), src_slot]

    api = {}
    for node in sorted(nodes.values(), key=lambda n: n["id"]):
        if node["type"] in EDITOR_ONLY_NODES or node.get("mode") in (MODE_MUTED, MODE_BYPASSED):
            continue
        definition = object_info.get(node["type"])
        if definition is None:
            raise ClientError(f"node {node['id']}: the server has no node type {node['type']!r} "
                              "(a custom node pack missing?)")
        values = node.get("widgets_values") or []
        if isinstance(values, dict):  # some packs save widgets by name
            inputs = {k: v for k, v in values.items() if k in widget_slots(definition)}
        else:
            inputs = {name: value for name, value in zip(widget_slots(definition), values) if name is not None}
        for entry in node.get("inputs", []):
            if entry.get("link") is None:
                continue
            name = (entry.get("widget") or {}).get("name") or entry["name"]
            source = source_of(entry["link"])
            if isinstance(source, list):
                inputs[name] = source
            elif source is None and not entry.get("widget"):
                inputs.pop(name, None)
        title = node.get("title") or definition.get("display_name") or node["type"]
        api[str(node["id"])] = {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}
    return api


# ---------------------------------------------------------------------------------------------
# command-line overrides on an API graph

def _is_literal(value: Any) -> bool:
    return not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
                and isinstance(value[1], int))


def _ordered(api: dict) -> list[tuple[str, dict]]:
    return sorted(api.items(), key=lambda item: (int(item[0]) if item[0].isdigit() else float("inf"), item[0]))


def _targets(api: dict, predicate: Callable[[str, dict], bool]) -> list[str]:
    return [node_id for node_id, node in _ordered(api) if predicate(node_id, node)]


def _set(api: dict, node_id: str, name: str, value: Any, changes: list[str]) -> None:
    inputs = api[node_id]["inputs"]
    new = "" if name in inputs else " (an input the node did not have)"
    inputs[name] = value
    shown = value if not isinstance(value, str) or len(value) < 60 else value[:57] + "..."
    changes.append(f"node {node_id} ({api[node_id]['class_type']}).{name} = {shown!r}{new}")


def _assign_in_order(api: dict, targets: list[str], name: str, values: list[Any], what: str,
                     changes: list[str]) -> None:
    if len(values) > len(targets):
        raise ClientError(f"{len(values)} {what} given but the workflow has only {len(targets)} node(s) to take "
                          f"them ({', '.join(targets) or 'none'})")
    for node_id, value in zip(targets, values):
        _set(api, node_id, name, value, changes)


def prompt_nodes(api: dict) -> list[str]:
    return _targets(api, lambda _, n: isinstance(n["inputs"].get("text"), str))


def image_nodes(api: dict) -> list[str]:
    return _targets(api, lambda _, n: n["class_type"] == "LoadImage")


def video_nodes(api: dict) -> list[str]:
    return _targets(api, lambda _, n: n["class_type"] == "LoadVideo")


def parse_set(assignment: str) -> tuple[str, str, Any]:
    """"ID.INPUT=VALUE" -> (ID, INPUT, VALUE parsed as JSON, else the text)."""
    target, sep, raw = assignment.partition("=")
    node_id, dot, name = target.partition(".")
    if not sep or not dot or not node_id or not name:
        raise ClientError(f"--set {assignment!r}: expected NODE_ID.INPUT=VALUE, e.g. 9.seed=7")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return node_id, name, value


@dataclass
class Overrides:
    prompts: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # names in the server's input folder
    video: str | None = None
    seed: int | None = None
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    sets: list[str] = field(default_factory=list)


# the nodes that hold a video's width, height and length (what the sampler nodes read from their
# LATENT): core's empty Wan 2.1 video latent and VACE Encode References
SIZE_NODES = ("EmptyHunyuanLatentVideo", "LongLiveVaceEncode")
SIZE_MULTIPLE, FRAME_STRIDE = 16, 4


def check_frames(frames: int) -> None:
    """A length the Wan VAE makes: 4k+1 frames (the first frame alone, then 4 per latent frame)."""
    if frames >= 1 and frames % FRAME_STRIDE == 1:
        return
    above = frames + (1 - frames) % FRAME_STRIDE if frames > 1 else 1
    nearest = f"{above - FRAME_STRIDE} or {above}" if above > FRAME_STRIDE else f"{above} or {above + FRAME_STRIDE}"
    raise ClientError(f"--frames {frames}: a video is 4k+1 frames long (the Wan VAE turns the first frame and then "
                      f"every 4 frames into one latent frame): use {nearest}")


def check_size(axis: str, value: int) -> None:
    """A frame size the model takes: a positive multiple of 16 (VAE stride 8 x patch 2)."""
    if value >= SIZE_MULTIPLE and value % SIZE_MULTIPLE == 0:
        return
    below = max(SIZE_MULTIPLE, value - value % SIZE_MULTIPLE)
    nearest = f"{below} or {below + SIZE_MULTIPLE}" if value > SIZE_MULTIPLE else f"{SIZE_MULTIPLE}"
    raise ClientError(f"--{axis} {value}: must be a positive multiple of {SIZE_MULTIPLE}: use {nearest}")


def size_nodes(api: dict) -> list[str]:
    return _targets(api, lambda _, n: n["class_type"] in SIZE_NODES)


def apply_overrides(api: dict, o: Overrides) -> list[str]:
    """Change `api` in place; returns one line per changed input."""
    changes: list[str] = []
    _assign_in_order(api, prompt_nodes(api), "text", o.prompts, "--prompt value(s)", changes)
    _assign_in_order(api, image_nodes(api), "image", o.images, "--reference image(s)", changes)
    if o.video is not None:
        _assign_in_order(api, video_nodes(api), "file", [o.video], "--video", changes)
    for node_id, node in _ordered(api):
        if o.seed is not None and "seed" in node["inputs"] and _is_literal(node["inputs"]["seed"]):
            _set(api, node_id, "seed", o.seed, changes)
    size = {name: value for name, value in (("length", o.frames), ("width", o.width), ("height", o.height))
            if value is not None}
    if o.frames is not None:
        check_frames(o.frames)
    for axis in ("width", "height"):
        if axis in size:
            check_size(axis, size[axis])
    holders = size_nodes(api)
    if size and not holders:
        options = "/".join(f"--{'frames' if name == 'length' else name}" for name in size)
        raise ClientError(f"{options}: the workflow has no node that holds the video's size "
                          f"({' or '.join(SIZE_NODES)}); use --set NODE_ID.INPUT=VALUE")
    # Continue Video's length is the frames it adds, not the video's: --set changes it
    for node_id in holders:
        for name, value in size.items():
            if _is_literal(api[node_id]["inputs"].get(name, value)):
                _set(api, node_id, name, value, changes)
    for assignment in o.sets:
        node_id, name, value = parse_set(assignment)
        if node_id not in api:
            raise ClientError(f"--set {assignment!r}: the workflow has no node {node_id!r}")
        _set(api, node_id, name, value, changes)
    return changes


# ---------------------------------------------------------------------------------------------
# HTTP


class ComfyAPI:
    """The few HTTP routes of a ComfyUI server a headless client needs.

    Every failure becomes a ServerError whose message is one line naming the route: an HTTP error
    status, a refused or dropped connection, a request that takes longer than `timeout` seconds,
    or an answer that is not the JSON expected.
    """

    def __init__(self, server: str, timeout: float = 60):
        if "://" not in server:
            server = "http://" + server
        self.url = server.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str, query: dict | None = None, data: bytes | None = None,
                 content_type: str = "application/json") -> urllib.request.Request:
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Content-Type": content_type} if data is not None else {}
        return urllib.request.Request(url, data=data, method=method, headers=headers)

    @contextmanager
    def _open(self, method: str, path: str, query: dict | None = None, data: bytes | None = None,
              content_type: str = "application/json") -> Iterator[Any]:
        """The open response; any failure while opening or reading it raises ServerError."""
        route = f"{method} {path}"
        try:
            with urllib.request.urlopen(self._request(method, path, query, data, content_type),
                                        timeout=self.timeout) as response:
                yield response
        except urllib.error.HTTPError as error:
            raise HTTPStatusError(route, error) from None
        except (TimeoutError, socket.timeout):
            raise NoAnswer(f"{route}: no answer from {self.url} within {self.timeout:g} s") from None
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise NoAnswer(f"{route}: no answer from {self.url} within {self.timeout:g} s") from None
            raise ServerError(f"{route}: cannot reach ComfyUI at {self.url} ({_one_line(reason)})") from None
        except (OSError, http.client.HTTPException) as error:
            raise ServerError(f"{route}: the connection to {self.url} failed ({_one_line(error)})") from None

    def call(self, method: str, path: str, query: dict | None = None, body: Any = None) -> bytes:
        data = None if body is None else json.dumps(body).encode("utf-8")
        with self._open(method, path, query, data) as response:
            return response.read()

    def call_json(self, method: str, path: str, query: dict | None = None, body: Any = None,
                  expect: type = dict) -> Any:
        raw = self.call(method, path, query, body)
        return _parse_json(raw, f"{method} {path}", expect)

    def get_json(self, path: str, expect: type = dict) -> Any:
        return self.call_json("GET", path, expect=expect)

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json("/history/" + urllib.parse.quote(prompt_id)).get(prompt_id)

    def queue_ids(self) -> tuple[set[str], set[str]]:
        """(running, pending) prompt ids of GET /queue (items are [number, prompt_id, ...])."""
        state = self.get_json("/queue")

        def ids(key: str) -> set[str]:
            items = state.get(key) or []
            return {str(item[1]) for item in items if isinstance(item, (list, tuple)) and len(item) > 1}

        return ids("queue_running"), ids("queue_pending")

    def queue(self, api: dict, client_id: str, prompt_id: str) -> str:
        """POST /prompt under our own prompt_id (both 0.8 and 0.33 take one from the client, so
        an interrupted client can always withdraw what it queued); the id the server reports, or
        WorkflowRejected with the server's explanation."""
        body = {"prompt": api, "client_id": client_id, "prompt_id": prompt_id}
        try:
            answer = self.call_json("POST", "/prompt", body=body)
        except HTTPStatusError as error:
            if error.code == 400:
                try:
                    rejection = json.loads(error.body)
                except ValueError:
                    rejection = None
                if isinstance(rejection, dict):
                    raise WorkflowRejected(describe_rejection(rejection, api), rejection) from None
            raise
        if not isinstance(answer.get("prompt_id"), str):
            raise ServerError(f"POST /prompt: the answer has no prompt_id: {_one_line(answer)}")
        return answer["prompt_id"]

    def upload(self, path: str | Path, folder_type: str = "input") -> str:
        """Upload a file into the server's input folder (POST /upload/image, which takes any file a
        loader reads); returns the name to put in a loader (the server renames rather than overwrite
        a different file of the same name)."""
        path = Path(path)
        if not path.is_file():
            raise ClientError(f"no such file: {path}")
        boundary = uuid.uuid4().hex
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts = [
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\n{folder_type}\r\n".encode(),
            (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
             f"Content-Type: {mime}\r\n\r\n").encode() + _read_local(path) + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        with self._open("POST", "/upload/image", data=b"".join(parts),
                        content_type=f"multipart/form-data; boundary={boundary}") as response:
            answer = _parse_json(response.read(), "POST /upload/image", dict)
        if not isinstance(answer.get("name"), str):
            raise ServerError(f"POST /upload/image: the answer names no file: {_one_line(answer)}")
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def download(self, item: dict, out_dir: Path) -> Path:
        """Stream one output file ({"filename", "subfolder", "type"}) from GET /view into a new file
        of out_dir: an existing file is never overwritten (the new one gets the next free number),
        and a file name that could leave out_dir is refused."""
        filename, subfolder, kind = checked_output_item(item)
        with _local(f"cannot create the output folder {out_dir}"):
            out_dir.mkdir(parents=True, exist_ok=True)
        with self._open("GET", "/view", {"filename": filename, "subfolder": subfolder, "type": kind}) as response:
            with _local(f"cannot create a file in {out_dir}"):
                target, handle = _create_new_file(out_dir, filename)
            try:
                with handle:
                    # read errors are the server's (ServerError from _open), write errors ours
                    shutil.copyfileobj(response, _LocalWriter(handle, target), DOWNLOAD_CHUNK)
            except BaseException:
                target.unlink(missing_ok=True)  # no half file under the final name
                raise
        return target

    def websocket(self, client_id: str) -> "WebSocket":
        scheme = "wss" if self.url.startswith("https") else "ws"
        return WebSocket(f"{scheme}://{self.url.split('://', 1)[1]}/ws?clientId={client_id}", self.timeout)


DOWNLOAD_CHUNK = 1 << 20


@contextmanager
def _local(what: str) -> Iterator[None]:
    """A failure of this machine's disk is ours (exit status 1), not the server's."""
    try:
        yield
    except OSError as error:
        raise ClientError(f"{what}: {error.strerror or error}") from None


class _LocalWriter:
    """A download's file, whose write errors (a full disk) are reported as ours."""

    def __init__(self, handle: Any, path: Path) -> None:
        self.handle, self.path = handle, path

    def write(self, data: bytes) -> int:
        with _local(f"cannot write {self.path}"):
            return self.handle.write(data)


def _read_local(path: Path) -> bytes:
    with _local(f"cannot read {path}"):
        return path.read_bytes()


def _one_line(value: Any, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _parse_json(raw: bytes, route: str, expect: type) -> Any:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ServerError(f"{route}: the answer is not JSON: {_one_line(raw.decode('utf-8', 'replace'), 80)!r}") \
            from None
    if not isinstance(value, expect):
        raise ServerError(f"{route}: expected a JSON {expect.__name__}, got {type(value).__name__}")
    return value


def checked_output_item(item: dict) -> tuple[str, str, str]:
    """(filename, subfolder, type) of an output the server reported, or ServerError when the file
    name is not a plain name ('', '.', '..', anything with a path separator) or the subfolder
    climbs out of the output folder."""
    filename, subfolder, kind = item.get("filename"), item.get("subfolder") or "", item.get("type", "output")
    if (not isinstance(filename, str) or filename.strip() in ("", ".", "..")
            or any(c in filename for c in ("/", "\\", "\0"))):
        raise ServerError(f"refusing the output file name {filename!r} from the server: not a plain file name")
    parts = subfolder.replace("\\", "/").split("/") if isinstance(subfolder, str) else [".."]
    if (not isinstance(subfolder, str) or subfolder.startswith(("/", "\\")) or "\0" in subfolder
            or ".." in parts):
        raise ServerError(f"refusing the output subfolder {subfolder!r} from the server")
    if kind not in ("output", "temp", "input"):
        raise ServerError(f"refusing the output type {kind!r} from the server")
    return filename, subfolder, kind


def _create_new_file(folder: Path, filename: str):
    """(path, binary handle) of a file created exclusively in `folder`: `filename`, else
    `stem-2.ext`, `stem-3.ext`, ... (never an existing file, even one made meanwhile)."""
    stem, suffix = os.path.splitext(filename)
    for number in range(1, 100_000):
        target = folder / (filename if number == 1 else f"{stem}-{number}{suffix}")
        try:
            return target, open(target, "xb")
        except FileExistsError:
            continue
    raise ClientError(f"{folder} holds too many copies of {filename}")


def describe_rejection(answer: dict, api: dict) -> str:
    """The server's validation errors, one line per node, with the node's title."""
    error = answer.get("error") or {}
    lines = [f"ComfyUI rejected the workflow: {error.get('message', 'validation failed')}"
             + (f" ({error['details']})" if error.get("details") else "")]
    for node_id, info in (answer.get("node_errors") or {}).items():
        title = api.get(node_id, {}).get("_meta", {}).get("title", "")
        label = f"node {node_id} ({info.get('class_type', '?')}{', ' + repr(title) if title else ''})"
        for problem in info.get("errors", []):
            details = f": {problem['details']}" if problem.get("details") else ""
            lines.append(f"  {label}: {problem.get('message', '?')}{details}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# websocket (RFC 6455), just enough for ComfyUI's /ws progress messages: standard library only, so
# the client runs with any Python and never needs a package installed into ComfyUI's (README,
# "Headless use")

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketClosed(Exception):
    pass


class WebSocket:
    """A blocking websocket client: opening handshake, unmasked server frames (fragmented or not),
    ping/pong and close. Sent frames are masked, as a client's must be."""

    def __init__(self, url: str, timeout: float = 30):
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "wss"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if secure else 80)
        self.timeout = timeout
        self._buffer = b""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if secure:
            self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode("ascii"))
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        status, *header_lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode("ascii")).digest()).decode("ascii")
        if status.split()[1:2] != ["101"] or headers.get("sec-websocket-accept") != expected:
            self.sock.close()
            raise ConnectionError(f"websocket handshake refused: {status}")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise WebSocketClosed("connection closed by the server")
        self._buffer += chunk

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _read(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _read_frame(self) -> tuple[bool, int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        mask = self._read(4) if second & 0x80 else None
        payload = self._read(length)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(first & 0x80), first & 0x0F, payload

    def send(self, opcode: int, payload: bytes = b"") -> None:
        header = bytes([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", length)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self, wait: float) -> tuple[int, bytes] | None:
        """The next whole message (OP_TEXT or OP_BINARY, payload), or None if none began within
        `wait` seconds. Pings are answered; a close frame raises WebSocketClosed."""
        if not self._buffer:
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                return None
        opcode, parts = None, []
        while True:
            fin, op, payload = self._read_frame()
            if op == OP_PING:
                self.send(OP_PONG, payload)
            elif op == OP_CLOSE:
                self.close()
                raise WebSocketClosed("the server closed the websocket")
            elif op in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
                opcode = op if op != OP_CONTINUATION else opcode
                parts.append(payload)
                if fin:
                    return opcode, b"".join(parts)

    def close(self) -> None:
        try:
            self.send(OP_CLOSE, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# running a prompt


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
        shown = text if len(text) <= 60 else text[:57] + "..."
        try:
            answer = self.comfy.call_json("POST", "/longlive/steer", body={"prompt_id": self.prompt_id, "text": text})
            self.say(f"steered: {shown!r} takes over at frame {answer.get('takes_effect_at_frame')}")
        except HTTPStatusError as error:
            try:
                reason = json.loads(error.body).get("error", error.body)
            except (ValueError, AttributeError):
                reason = error.body
            self.say(f"steer {shown!r} refused (HTTP {error.code}): {_one_line(reason)}")
        except ServerError as error:
            self.say(f"steer {shown!r} not sent: {error}")


TERMINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


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


def run(comfy: ComfyAPI, api: dict, *, out_dir: Path | None = None, timeout: float = 3600,
        use_websocket: bool = True, progress: Progress | None = None,
        steer_lines: Iterable[str] | None = None) -> RunResult:
    """Queue `api`, follow it to the end, download its output files into out_dir (when given).
    With `steer_lines` (needs the websocket), each line steers the prompt while it runs (--steer).

    On --timeout (TimedOut) or Ctrl-C (KeyboardInterrupt) our prompt is withdrawn from the server
    before the exception goes on; the exception's message says what became of it.
    """
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
                progress.say(f"websocket unavailable ({_one_line(error)})")
        try:
            try:
                prompt_id = comfy.queue(api, client_id, prompt_id)
            except NoAnswer as error:  # it may have been queued all the same
                outcome = withdraw(comfy, prompt_id, wait=NO_ANSWER_WITHDRAW_SECONDS, may_appear=True)
                raise NoAnswer(f"{error}; {outcome}") from None
            progress.say(f"queued prompt {prompt_id}")
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
                    progress.say(f"websocket lost ({_one_line(error)})")
                    wait_with_polling(comfy, prompt_id, progress, deadline)
            else:
                wait_with_polling(comfy, prompt_id, progress, deadline)
        except TimedOut:
            raise TimedOut(f"--timeout of {timeout:g} s reached; {withdraw(comfy, prompt_id)}") from None
        except KeyboardInterrupt:
            raise KeyboardInterrupt(withdraw(comfy, prompt_id)) from None
    finally:
        if steerer is not None:
            steerer.stop()
        if ws is not None:
            ws.close()
    entry = finished_entry(comfy, prompt_id, deadline + 30)
    check_entry(entry, api)
    files = [comfy.download(item, out_dir) for item in output_items(entry)] if out_dir is not None else []
    return RunResult(prompt_id, entry, files)


# ---------------------------------------------------------------------------------------------
# command line


def read_json_or_mp4_record(source: str | Path, key: str, what: str, missing: str) -> object:
    """The JSON held by a file, or by an mp4's `key` metadata (ClientError `missing` when it has none);
    `what` names the thing in the other errors."""
    if is_mp4(source):
        text = mp4_metadata(source).get(key)
        if text is None:
            raise ClientError(missing)
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as error:
            raise ClientError(f"cannot read {what} {source}: {error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ClientError(f"cannot read {what} {source}: it is not JSON ({error})") from None


def load_workflow(path: str | Path) -> dict:
    """A workflow from a JSON file, or the API graph an mp4 of ComfyUI's records (`prompt` metadata)."""
    data = read_json_or_mp4_record(path, "prompt", "workflow", f"{path} holds no workflow (no 'prompt' metadata: "
                                   "was ComfyUI run with --disable-metadata?)")
    if not isinstance(data, dict):
        raise ClientError(f"{path}: not a workflow (expected a JSON object)")
    return data


# ---------------------------------------------------------------------------------------------
# live steering: its record and replay


STEERABLE = ("LongLiveSampler", "LongLiveSampleToVideo")
STEERING_KEY = "longlive_steering"


def is_mp4(path: str | Path) -> bool:
    """True for an ISO media file (mp4, mov): its first box is 'ftyp'."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8)[4:8] == b"ftyp"
    except OSError:
        return False


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the ISO boxes in data[start:end]."""
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[start + 8:start + 16])[0], 16
        elif size == 0:
            size = end - start
        if size < header or start + size > end:
            return
        yield kind, start + header, start + size
        start += size


def mp4_metadata(path: str | Path) -> dict[str, str]:
    """The text metadata of an mp4 as ffmpeg writes it with `use_metadata_tags` (what ComfyUI and
    this pack write: moov/udta/meta with 'mdta' keys and an ilst of UTF-8 values)."""
    data = _read_local(Path(path))
    found: dict[str, str] = {}
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind != b"moov":
            continue
        containers = [(start, end)] + [(s, e) for k, s, e in _boxes(data, start, end) if k == b"udta"]
        for c_start, c_end in containers:
            for meta_kind, m_start, m_end in _boxes(data, c_start, c_end):
                if meta_kind == b"meta":
                    found.update(_meta_items(data, m_start, m_end))
    return found


def _meta_items(data: bytes, start: int, end: int) -> dict[str, str]:
    if data[start + 4:start + 8] not in (b"hdlr", b"keys", b"ilst"):
        start += 4  # an ISO 'meta' full box: version and flags first
    keys: list[str] = []
    values: dict[int, str] = {}
    for kind, s, e in _boxes(data, start, end):
        if kind == b"keys":
            offset = s + 8  # version/flags, entry count
            while offset + 8 <= e:
                size = struct.unpack(">I", data[offset:offset + 4])[0]
                if size < 8:
                    break
                keys.append(data[offset + 8:offset + size].decode("utf-8", "replace"))
                offset += size
        elif kind == b"ilst":
            for item, i_start, i_end in _boxes(data, s, e):
                for box, d_start, d_end in _boxes(data, i_start, i_end):
                    if box == b"data" and data[d_start:d_start + 4] == b"\x00\x00\x00\x01":  # UTF-8 text
                        values[struct.unpack(">I", item)[0]] = data[d_start + 8:d_end].decode("utf-8", "replace")
    return {keys[index - 1]: value for index, value in values.items() if 1 <= index <= len(keys)}


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
    samplers = [i for i, n in _ordered(api) if n["class_type"] in STEERABLE]
    if len(samplers) != 1:
        raise ClientError(f"--replay-steering needs exactly one LongLive Sampler or Sampler -> Video in the workflow, "
                          f"found {len(samplers)}; add a 'LongLive Schedule from Steering' node by hand")
    node_id = samplers[0]
    inputs = api[node_id]["inputs"]
    clip = inputs.get("clip")
    positive = inputs.get("positive")
    if not _is_literal(positive or 0) and clip is None:
        clip = api.get(positive[0], {}).get("inputs", {}).get("clip")
    if clip is None or _is_literal(clip):
        raise ClientError(f"--replay-steering: node {node_id} has no CLIP to encode the texts with (connect its "
                          "clip input)")
    new_id = str(max((int(i) for i in api if i.isdigit()), default=0) + 1)
    schedule = {"clip": clip, "steering": json.dumps(record, ensure_ascii=False)}
    if "prompt_schedule" in inputs and not _is_literal(inputs["prompt_schedule"]):
        schedule["previous"] = inputs["prompt_schedule"]
    api[new_id] = {"inputs": schedule, "class_type": "LongLiveSteeringSchedule",
                   "_meta": {"title": "Replay of the steering"}}
    inputs["prompt_schedule"] = [new_id, 0]
    return [f"node {new_id} (LongLiveSteeringSchedule) replays {len(record)} steering text(s) into node {node_id}"]


REPLAY_FROM_WORKFLOW = "<the workflow's mp4>"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit with 2, which here means "rejected"
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EXIT_STATUS_HELP)
    parser.add_argument("workflow", help="workflow JSON, API format or UI format, or an mp4 that records one")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI address (default %(default)s)")
    parser.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                        help="prompt text for the next prompt node (repeatable)")
    parser.add_argument("--reference", action="append", default=[], metavar="PATH",
                        help="image uploaded into the next Load Image node (repeatable)")
    parser.add_argument("--video", metavar="PATH", help="video uploaded into the Load Video node")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--frames", type=int, help="the video's length in frames, 4k+1 (e.g. 81, 161)")
    parser.add_argument("--width", type=int, help="frame width, a multiple of 16 (e.g. 832)")
    parser.add_argument("--height", type=int, help="frame height, a multiple of 16 (e.g. 480)")
    parser.add_argument("--set", action="append", default=[], metavar="ID.INPUT=VALUE",
                        help="set any input (VALUE as JSON, else text; repeatable)")
    parser.add_argument("--steer", action="store_true",
                        help="steer the running prompt with each line read from standard input")
    parser.add_argument("--replay-steering", nargs="?", const=REPLAY_FROM_WORKFLOW, metavar="SOURCE",
                        help="replay a run's steering: SOURCE is its mp4 or a JSON file of the record "
                             "(default: the workflow, when it is an mp4)")
    parser.add_argument("--out", default="comfy_outputs", help="folder for the downloaded outputs (default %(default)s)")
    parser.add_argument("--no-download", action="store_true", help="leave the outputs on the server")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds to wait for the result; then the prompt is withdrawn (default %(default)s)")
    parser.add_argument("--request-timeout", type=float, default=60,
                        help="seconds to wait for any one HTTP answer (default %(default)s)")
    parser.add_argument("--no-websocket", action="store_true", help="follow the prompt by polling /history")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the API workflow that would be queued and exit (no upload, no queue)")
    parser.add_argument("--debug", action="store_true", help="show a traceback for an unexpected error")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = Progress({}).say
    try:
        return _main(args, say)
    except WorkflowRejected as error:
        say(str(error))
        return EXIT_REJECTED
    except WorkflowFailed as error:
        say(str(error))
        return EXIT_FAILED
    except WorkflowStopped as error:
        say(f"stopped: {error}")
        return EXIT_STOPPED
    except ServerError as error:
        say(f"error: {error}")
        return EXIT_SERVER
    except ClientError as error:
        say(f"error: {error}")
        return EXIT_USAGE
    except KeyboardInterrupt as stop:
        say(f"interrupted (Ctrl-C){': ' + str(stop) if str(stop) else ''}")
        return EXIT_CTRL_C
    except Exception as error:  # a bug of ours: still one line, unless asked for the details
        if args.debug:
            raise
        say(f"error: unexpected {type(error).__name__}: {_one_line(error)} (--debug shows the traceback)")
        return EXIT_USAGE


def _main(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    comfy = ComfyAPI(args.server, timeout=args.request_timeout)
    workflow = load_workflow(args.workflow)
    if is_ui_workflow(workflow):
        say("UI-format workflow: converting with the server's /object_info")
        workflow = ui_to_api(workflow, comfy.object_info())
    if args.dry_run:
        images = [Path(p).name for p in args.reference]
        video = Path(args.video).name if args.video else None
    else:
        images = [comfy.upload(p) for p in args.reference]
        video = comfy.upload(args.video) if args.video else None
    overrides = Overrides(prompts=args.prompt, images=images, video=video, seed=args.seed, frames=args.frames,
                          width=args.width, height=args.height, sets=args.set)
    for change in apply_overrides(workflow, overrides):
        say(f"set {change}")
    if args.replay_steering is not None:
        source = args.workflow if args.replay_steering == REPLAY_FROM_WORKFLOW else args.replay_steering
        if args.replay_steering == REPLAY_FROM_WORKFLOW and not is_mp4(source):
            raise ClientError("--replay-steering without SOURCE replays the workflow's own record: give an mp4 as "
                              "the workflow, or the record's file or mp4 as SOURCE")
        for change in add_steering_replay(workflow, load_steering_record(source)):
            say(f"set {change}")
    if args.dry_run:
        print(json.dumps(workflow, indent=2, ensure_ascii=False))
        return EXIT_OK
    if args.steer and args.no_websocket:
        raise ClientError("--steer needs the websocket (it steers from the first chunk the server reports): "
                          "drop --no-websocket")
    out_dir = None if args.no_download else Path(args.out)
    result = run(comfy, workflow, out_dir=out_dir, timeout=args.timeout, use_websocket=not args.no_websocket,
                 steer_lines=sys.stdin if args.steer else None)
    say(f"finished prompt {result.prompt_id}: {len(output_items(result.entry))} output file(s)")
    for node_id, output in (result.entry.get("outputs") or {}).items():
        if output.get(STEERING_KEY):
            say(f"steering of node {node_id} (replay it with --replay-steering): "
                f"{json.dumps(output[STEERING_KEY], ensure_ascii=False)}")
    for path in result.files:
        print(path)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
