"""Live preview and steering, the server side (docs/live.md#the-contract; the logic is nodes/live.py): the
running prompt, the websocket of its client (and of the clients that steered or held it), the temp
folder the chunk clips go to, and JSON routes on ComfyUI's server (the steering and hold routes;
previews.py has the Latent2RGB previewer). Standalone there is no prompt, no client and no route:
the functions say so (None / False) and the nodes run without previews.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .comfyui import IN_COMFYUI, folder_paths, warn_once


def _prompt_server() -> Any:
    """ComfyUI's running PromptServer, or None (standalone, or a process without a server). Only a
    server that has been imported is looked at: importing `server` would start building one."""
    server = sys.modules.get("server") if IN_COMFYUI else None
    return getattr(getattr(server, "PromptServer", None), "instance", None)


def running_prompt_id() -> str | None:
    """The id of the prompt whose node is executing on this thread (ComfyUI's executing context,
    0.8 and 0.33 alike), or None outside a prompt or standalone."""
    if not IN_COMFYUI:
        return None
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError as error:
        warn_once("context", "LongLive: no live previews or steering: this ComfyUI has no executing context (%s)",
                  error)
        return None
    context = get_executing_context()
    return None if context is None else str(context.prompt_id)


def client_messenger() -> Callable[..., None] | None:
    """`send(event, data, to=())` to the client that queued the running prompt, as ComfyUI sends its
    own progress (to its client id; to every client when it gave none), and to the client ids in
    `to` besides, or None without a server. Call it on the execution thread: it takes the prompt's
    client id from there. The returned function may be called from any thread."""
    server = _prompt_server()
    if server is None or not callable(getattr(server, "send_sync", None)):
        return None
    client_id = getattr(server, "client_id", None)

    def send(event: str, data: dict, to: Sequence[str] = ()) -> None:
        server.send_sync(event, data, client_id)
        if client_id is not None:  # (None: every client has it already)
            for other in dict.fromkeys(to):
                if other != client_id:
                    server.send_sync(event, data, other)

    return send


def temp_dir() -> Path:
    """ComfyUI's temp folder (served by GET /view?type=temp, emptied when ComfyUI starts), or
    $LONGLIVE_TEMP_DIR (default ./temp) standalone."""
    if folder_paths is not None:
        return Path(folder_paths.get_temp_directory())
    return Path(os.environ.get("LONGLIVE_TEMP_DIR", "temp")).resolve()


def add_json_post_route(path: str, answer: Callable[[bytes], tuple[int, dict]], max_body: int) -> bool:
    """Serve POST `path` (and /api`path`, as ComfyUI mirrors its routes) on ComfyUI's server:
    `answer(body) -> (status, JSON object)`. The route sits behind the same middleware as /prompt
    (ComfyUI's host/origin checks apply to every route). A body over `max_body` bytes is answered
    400 before it is read in full. False when there is no server (standalone, tests)."""
    server = _prompt_server()
    routes = getattr(server, "routes", None)
    if routes is None:
        return False
    from aiohttp import web

    async def handle(request: "web.Request") -> "web.Response":
        body = b""
        while len(body) <= max_body:  # read() returns what has arrived, b"" at the end
            part = await request.content.read(max_body + 1 - len(body))
            if not part:
                break
            body += part
        if len(body) > max_body:
            status, payload = 400, {"error": f"the request body is over {max_body} bytes"}
        else:
            status, payload = answer(body)
        return web.json_response(payload, status=status)

    routes.post(path)(handle)
    return True
