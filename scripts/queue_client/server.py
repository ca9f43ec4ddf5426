"""The few HTTP routes of a ComfyUI server a headless client needs, and the files it downloads."""

from __future__ import annotations

import http.client
import json
import mimetypes
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import (ClientError, HTTPStatusError, NoAnswer, ServerError, WorkflowRejected, local, one_line,
                     read_local)
from .websocket import WebSocket

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
            raise ServerError(f"{route}: cannot reach ComfyUI at {self.url} ({one_line(reason)})") from None
        except (OSError, http.client.HTTPException) as error:
            raise ServerError(f"{route}: the connection to {self.url} failed ({one_line(error)})") from None

    def call(self, method: str, path: str, query: dict | None = None, body: Any = None) -> bytes:
        data = None if body is None else json.dumps(body).encode("utf-8")
        with self._open(method, path, query, data) as response:
            return response.read()

    def call_json(self, method: str, path: str, query: dict | None = None, body: Any = None,
                  expect: type = dict) -> Any:
        raw = self.call(method, path, query, body)
        return parse_json(raw, f"{method} {path}", expect)

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
            raise ServerError(f"POST /prompt: the answer has no prompt_id: {one_line(answer)}")
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
             f"Content-Type: {mime}\r\n\r\n").encode() + read_local(path) + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        with self._open("POST", "/upload/image", data=b"".join(parts),
                        content_type=f"multipart/form-data; boundary={boundary}") as response:
            answer = parse_json(response.read(), "POST /upload/image", dict)
        if not isinstance(answer.get("name"), str):
            raise ServerError(f"POST /upload/image: the answer names no file: {one_line(answer)}")
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def download(self, item: dict, out_dir: Path) -> Path:
        """Stream one output file ({"filename", "subfolder", "type"}) from GET /view into a new file
        of out_dir: an existing file is never overwritten (the new one gets the next free number),
        and a file name that could leave out_dir is refused."""
        filename, subfolder, kind = checked_output_item(item)
        with local(f"cannot create the output folder {out_dir}"):
            out_dir.mkdir(parents=True, exist_ok=True)
        with self._open("GET", "/view", {"filename": filename, "subfolder": subfolder, "type": kind}) as response:
            with local(f"cannot create a file in {out_dir}"):
                target, handle = create_new_file(out_dir, filename)
            try:
                with handle:
                    # read errors are the server's (ServerError from _open), write errors ours
                    shutil.copyfileobj(response, _LocalWriter(handle, target), DOWNLOAD_CHUNK)
            except BaseException:
                target.unlink(missing_ok=True)  # no half file under the final name
                raise
        return target

    def websocket(self, client_id: str) -> WebSocket:
        scheme = "wss" if self.url.startswith("https") else "ws"
        return WebSocket(f"{scheme}://{self.url.split('://', 1)[1]}/ws?clientId={client_id}", self.timeout)


DOWNLOAD_CHUNK = 1 << 20  # bytes per read of a streamed download


def parse_json(raw: bytes, route: str, expect: type) -> Any:
    """The JSON of an answer, of the type expected, or ServerError naming the route."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ServerError(f"{route}: the answer is not JSON: {one_line(raw.decode('utf-8', 'replace'), 80)!r}") \
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


def create_new_file(folder: Path, filename: str):
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


class _LocalWriter:
    """A download's file, whose write errors (a full disk) are reported as ours."""

    def __init__(self, handle: Any, path: Path) -> None:
        self.handle, self.path = handle, path

    def write(self, data: bytes) -> int:
        with local(f"cannot write {self.path}"):
            return self.handle.write(data)


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
