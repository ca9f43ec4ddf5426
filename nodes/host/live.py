"""Live preview and steering, the server side (DESIGN.md §12; the logic is nodes/live.py): the
running prompt, its client's websocket, the temp folder the chunk clips go to, ComfyUI's own
Latent2RGB previewer, and the steering and hold routes on ComfyUI's server. Standalone there is no prompt,
no client and no route: the functions say so (None / False) and the nodes run without previews.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .comfyui import IN_COMFYUI, folder_paths, log


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
        _warn_once("context", "LongLive: no live previews or steering: this ComfyUI has no executing context (%s)",
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


def latent_rgb_previewer() -> Callable[[torch.Tensor], Any] | None:
    """A function from normalised Wan 2.1 latents [1, 16, t, h, w] to uint8 images [t, h, w, 3]:
    ComfyUI's own Latent2RGB previewer with its Wan 2.1 factors, one image per latent frame, used
    whatever the user's preview setting. None standalone or when this ComfyUI lacks either."""
    if not IN_COMFYUI:
        return None
    try:
        import comfy.latent_formats
        import latent_preview

        wan = comfy.latent_formats.Wan21()
        previewer = latent_preview.Latent2RGBPreviewer(wan.latent_rgb_factors,
                                                       getattr(wan, "latent_rgb_factors_bias", None),
                                                       getattr(wan, "latent_rgb_factors_reshape", None))
    except Exception as error:  # previews are never worth failing a run for
        _warn_once("latent2rgb", "LongLive: no chunk previews from LATENT samplers: ComfyUI's Latent2RGB previewer "
                                 "for Wan 2.1 is unavailable (%s)", error)
        return None

    def project(latents: torch.Tensor) -> Any:
        import numpy as np

        frames = [np.asarray(previewer.decode_latent_to_preview(latents[:, :, i:i + 1]).convert("RGB"))
                  for i in range(latents.shape[2])]
        return np.stack(frames)

    return project


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


_WARNED: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message, *args)
