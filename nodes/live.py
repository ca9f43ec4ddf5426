"""Watch it grow, steer it live (docs/live.md#the-contract): what the LongLive sampler nodes do while they run.

- Previews: after every finished chunk the node writes a short mp4 of that chunk's video frames into
  the host's temp folder and sends the `longlive.chunk` message naming it to the client that queued
  the prompt. The streaming node previews its real decoded frames (every n-th pixel, so that they
  fit PREVIEW_MAX_SIDE); the LATENT nodes preview ComfyUI's Latent2RGB projection of the chunk's
  latents (latent resolution), each latent frame held for the video frames it stands for. A batch's
  clip shows its videos side by side, video 0 leftmost (the streaming node's strip is thinned as a
  whole to fit PREVIEW_MAX_SIDE). One
  worker thread makes the preview frames, encodes and writes the clip and sends the message, so on
  a GPU all of it overlaps the next chunk (the execution thread only hands the chunk over); at most
  PREVIEWS_IN_FLIGHT chunks wait for it, and the node waits for the last one before it returns.
- Steering: while a node with a `clip` input runs, `POST /longlive/steer` queues a text for it. The
  route only stores the text; the sampler takes it at the next chunk boundary, on the execution
  thread, encodes it there as CLIPTextEncode does and hands it to `generate`, where it joins the
  prompt schedule at that boundary's first video frame. Several texts before one boundary: the last
  one wins (the earlier ones are dropped unencoded). What took effect is the steering record,
  `[{"frame", "text"}, ...]`, which the nodes put into their output and the video's metadata.

The host (nodes/host/live.py) supplies the route, the websocket, the temp folder and ComfyUI's previewer;
nothing here imports ComfyUI.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..vace_core.device import HostCopy
from ..vace_core.latents import VAE_STRIDE_T
from ..vace_core.plan import Block, Boundary, PromptSegment, first_video_frame, steer_boundaries
from ..vace_core.sampler import ChunkInfo
from ..vace_core.streaming import VideoWriter
from . import host
from .prompts import check_text_width, encode_prompt

log = logging.getLogger("longlive_vace")

CHUNK_EVENT = "longlive.chunk"
STEER_ROUTE = "/longlive/steer"
MAX_STEER_CHARS = 2000  # a steering text longer than this is refused (400)
MAX_STEER_BODY_BYTES = 16 * 1024  # a request body longer than this is refused (400) before it is parsed
PREVIEW_SUBFOLDER = "longlive"  # inside the host's temp folder
PREVIEW_MAX_SIDE = 512  # decoded frames are thinned out to fit; the clip shows in a node, not full screen
PREVIEW_FPS = 16  # the LATENT nodes' clips (Wan 2.1's rate); the streaming node uses its own fps
PREVIEW_CRF = 28  # H.264 quality of the clips: small files, plainly recognisable frames
PREVIEWS_IN_FLIGHT = 2  # chunks that may wait for the encoder before the sampler waits for it


# ---------------------------------------------------------------------------------------------
# steering


class SteerRefused(Exception):
    """A steering request that is answered with `status` and this message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class SteerSession:
    """One running steerable node: the boundaries left, the text waiting for the next one, and the
    steering record. `post` runs on the server's thread, `take` on the execution thread."""

    def __init__(self, prompt_id: str, node_id: str, boundaries: Sequence[Boundary]) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.boundaries = list(boundaries)
        self.record: list[dict[str, Any]] = []  # [{"frame": int, "text": str}] in the order they took effect
        self._lock = threading.Lock()
        self._pending: str | None = None
        self._next = 0  # index of the next boundary the sampler reaches

    def post(self, text: str) -> int:
        """Queue `text` for the next boundary (replacing a text queued before it) and return the
        video frame where it takes over; SteerRefused(404) when no boundary is left."""
        with self._lock:
            if self._next >= len(self.boundaries):
                raise SteerRefused(404, f"prompt {self.prompt_id}: node {self.node_id} is making its last chunk; "
                                        "there is no chunk boundary left to steer at")
            self._pending = text
            return self.boundaries[self._next].frame

    def take(self, boundary: Boundary) -> str | None:
        """The text to use at `boundary` (the sampler's next one), if any; later posts wait for the next."""
        with self._lock:
            expected = self.boundaries[self._next] if self._next < len(self.boundaries) else None
            if expected != boundary:
                raise RuntimeError(f"steering: the sampler reached the boundary at frame {boundary.frame}, "
                                   f"expected {expected}")
            self._next += 1
            text, self._pending = self._pending, None
            return text


class SteeringRegistry:
    """The steerable nodes running in this server process, by prompt id and node id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, dict[str, SteerSession]] = {}

    @contextmanager
    def open(self, prompt_id: str, node_id: str, boundaries: Sequence[Boundary]) -> Iterator[SteerSession]:
        """A session for the node's run; steering it is possible only inside the `with` block."""
        session = SteerSession(prompt_id, node_id, boundaries)
        with self._lock:
            self._sessions.setdefault(prompt_id, {})[node_id] = session
        try:
            yield session
        finally:
            with self._lock:
                nodes = self._sessions.get(prompt_id, {})
                if nodes.get(node_id) is session:
                    del nodes[node_id]
                if not nodes:
                    self._sessions.pop(prompt_id, None)

    def steer(self, prompt_id: str, text: str, node_id: str | None = None) -> dict[str, Any]:
        """Queue `text` for the running node; the 200 answer, or SteerRefused(404)."""
        with self._lock:
            running = dict(self._sessions.get(prompt_id, {}))
        if not running:
            raise SteerRefused(404, f"prompt {prompt_id} is not running a steerable LongLive node (a LongLive "
                                    "Sampler or Sampler -> Video with its clip input connected)")
        if node_id is None:
            if len(running) > 1:
                raise SteerRefused(400, f"prompt {prompt_id} runs several steerable nodes "
                                        f"({', '.join(sorted(running))}): name one in \"node\"")
            session = next(iter(running.values()))
        elif node_id in running:
            session = running[node_id]
        else:
            raise SteerRefused(404, f"prompt {prompt_id} is not running steerable node {node_id} "
                                    f"(running: {', '.join(sorted(running))})")
        frame = session.post(text)
        return {"prompt_id": prompt_id, "node": session.node_id, "takes_effect_at_frame": frame}

    def answer(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """The route: (HTTP status, JSON answer) for a request body. Never raises."""
        try:
            prompt_id, text, node_id = parse_steer_request(body)
            return 200, self.steer(prompt_id, text, node_id)
        except SteerRefused as refused:
            return refused.status, {"error": str(refused)}


def parse_steer_request(body: bytes) -> tuple[str, str, str | None]:
    """(prompt_id, text, node or None) of a `POST /longlive/steer` body, or SteerRefused(400)."""
    if len(body) > MAX_STEER_BODY_BYTES:
        raise SteerRefused(400, f"the request body is over {MAX_STEER_BODY_BYTES} bytes")
    try:
        request = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SteerRefused(400, 'the body must be JSON: {"prompt_id": "...", "text": "...", "node": "..." '
                                "(optional)}") from None
    if not isinstance(request, dict):
        raise SteerRefused(400, 'the body must be a JSON object {"prompt_id": "...", "text": "..."}')
    prompt_id, text, node_id = request.get("prompt_id"), request.get("text"), request.get("node")
    if not isinstance(prompt_id, str) or not prompt_id:
        raise SteerRefused(400, '"prompt_id" must be the id of the running prompt (a string)')
    if not isinstance(text, str):
        raise SteerRefused(400, '"text" must be a string: the prompt that takes over at the next chunk')
    if not text.strip():
        raise SteerRefused(400, '"text" is empty')
    if len(text) > MAX_STEER_CHARS:
        raise SteerRefused(400, f'"text" has {len(text)} characters; at most {MAX_STEER_CHARS} are taken')
    if node_id is not None and (isinstance(node_id, bool) or not isinstance(node_id, (str, int))):
        raise SteerRefused(400, '"node" must be the id of the node to steer (a string)')
    return prompt_id, text, None if node_id is None else str(node_id)


REGISTRY = SteeringRegistry()


def steering(session: SteerSession, clip: Any, text_dim: int) -> Callable[[Boundary], list[PromptSegment]]:
    """`generate`'s steer callable: at each boundary the text posted last, encoded with `clip` as
    CLIPTextEncode encodes it, becomes a prompt at the boundary's frame and joins the record."""
    def steer(boundary: Boundary) -> list[PromptSegment]:
        text = session.take(boundary)
        if text is None:
            return []
        name = f"clip (the steering text at frame {boundary.frame})"
        context = check_text_width(encode_prompt(clip, text, name), text_dim, name)
        session.record.append({"frame": boundary.frame, "text": text})
        log.info("LongLive: steered prompt %s node %s at frame %d: %r", session.prompt_id, session.node_id,
                 boundary.frame, text if len(text) <= 80 else text[:77] + "...")
        return [PromptSegment(boundary.frame, context)]

    return steer


# ---------------------------------------------------------------------------------------------
# previews


def preview_step(width: int, height: int, max_side: int = PREVIEW_MAX_SIDE) -> int:
    """Every how many pixels a decoded-frame preview keeps one, so that it fits `max_side` (2 at 832x480).
    Taking every n-th pixel costs a few milliseconds where filtered scaling of a chunk's frames costs
    a few hundred on one CPU thread."""
    return max(1, -(-max(width, height) // max_side))


def to_preview_frames(pixels: torch.Tensor) -> np.ndarray:
    """Decoded frames [T, H, W, 3] in 0..1 -> uint8 [T, h, w, 3]: every `preview_step`-th pixel, the
    sides cut to even lengths (yuv420p)."""
    step = preview_step(pixels.shape[2], pixels.shape[1])
    frames = pixels[:, ::step, ::step, :3]
    height, width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    frames = frames[:, :height, :width].float()
    return (frames * 255 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()


def hold_latent_frames(images: np.ndarray, starts_video: bool) -> np.ndarray:
    """One image per latent frame [t, h, w, 3] -> one per video frame: each held for the 4 frames its
    latent frame decodes to, the video's first latent frame for 1 (as the VAE decodes it)."""
    held = np.repeat(images, VAE_STRIDE_T, axis=0)
    return held[VAE_STRIDE_T - 1:] if starts_video else held


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text)[:64] or "x"


@dataclass
class ChunkPreviews:
    """Writes each finished chunk's preview clip and announces it (`send(event, data)`), in order."""
    prompt_id: str
    node_id: str
    chunks: int  # chunks of the video (given and generated; references excluded)
    ref_frames: int
    folder: Path  # the host's temp folder
    send: Callable[[str, dict], None]
    fps: float = PREVIEW_FPS
    failed: bool = False  # after an error: no more previews for this run
    _pending: list[Future] = field(default_factory=list)
    _worker: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "longlive-preview"))

    def add(self, source: Any, block: Block, frames_of: Callable[[Any], np.ndarray]) -> None:
        """Queue the preview of `block`: the worker makes its uint8 frames [T, h, w, 3] with
        `frames_of(source)`, then writes and announces the clip. Waits while the worker is behind."""
        if self.failed:
            return
        while len(self._pending) >= PREVIEWS_IN_FLIGHT:
            self._settle(self._pending.pop(0))
        self._pending.append(self._worker.submit(lambda: self._write_and_send(frames_of(source), block)))

    def _write_and_send(self, frames: np.ndarray, block: Block) -> None:
        chunk = block.chunk_index + 1
        name = f"{_safe_name(self.prompt_id)}_{_safe_name(self.node_id)}_{chunk:05}.mp4"
        target = self.folder / PREVIEW_SUBFOLDER
        target.mkdir(parents=True, exist_ok=True)
        height, width = frames.shape[1:3]
        with VideoWriter(target / name, width, height, fps=self.fps, crf=PREVIEW_CRF, preset="ultrafast") as writer:
            writer.write(frames)
        self.send(CHUNK_EVENT, {
            "prompt_id": self.prompt_id, "node": self.node_id, "chunk": chunk, "chunks": self.chunks,
            "first_frame": first_video_frame(block, self.ref_frames), "frames": int(frames.shape[0]),
            "preview": {"filename": name, "subfolder": PREVIEW_SUBFOLDER, "type": "temp"}})

    def _settle(self, future: Future) -> None:
        try:
            future.result()
        except Exception as error:  # a preview is never worth failing a run for
            if not self.failed:
                log.warning("LongLive: chunk previews stopped after an error (%s: %s)", type(error).__name__, error)
            self.failed = True

    def close(self) -> None:
        """Wait for the previews still being written (their messages go out before the node ends)."""
        for future in self._pending:
            self._settle(future)
        self._pending.clear()
        self._worker.shutdown(wait=True)


@dataclass
class LiveRun:
    """What one sampler node run offers `generate`: chunk callbacks, the steer callable (None when
    nothing can steer the run) and the steering record (None when the node has no clip)."""
    previews: ChunkPreviews | None
    steer: Callable[[Boundary], list[PromptSegment]] | None
    record: list[dict[str, Any]] | None
    latent_rgb: Callable[[torch.Tensor], np.ndarray] | None

    def on_chunk(self, info: ChunkInfo) -> None:
        """LATENT nodes: a chunk's preview from its latents (ComfyUI's Latent2RGB projection, made on
        the worker from a host copy, 1.2 MB per video at 480x832, that the execution thread does not
        wait for); a batch's videos side by side."""
        if self.previews is None or self.latent_rgb is None or info.block.is_reference:
            return
        starts_video = info.block.start == self.previews.ref_frames
        project = self.latent_rgb

        def frames_of(copy: HostCopy) -> np.ndarray:
            videos = [project(video.float()) for video in copy.get().split(1)]  # each [t, h, w, 3]
            return hold_latent_frames(np.concatenate(videos, axis=2), starts_video)

        self.previews.add(HostCopy(info.latents), info.block, frames_of)

    def on_frames(self, pixels: torch.Tensor, block: Block | None) -> None:
        """The streaming node: a chunk's preview from its decoded frames (read on the worker; the
        decoder makes new ones for every chunk)."""
        if self.previews is not None and block is not None:
            self.previews.add(pixels, block, to_preview_frames)


@contextmanager
def live_run(node_id: str | None, blocks: Sequence[Block], ref_frames: int, clip: Any = None,
             text_dim: int = 0, fps: float = PREVIEW_FPS, latent_previews: bool = True) -> Iterator[LiveRun]:
    """Previews (inside a host that can message the prompt's client) and, with a `clip`, steering
    for the run of node `node_id` over `blocks`. With a clip but no running prompt to steer
    (standalone) the record stays empty."""
    prompt_id = host.running_prompt_id()
    node = None if node_id is None else str(node_id)
    send = host.client_messenger() if prompt_id is not None and node is not None else None
    previews = None
    if send is not None:
        chunks = sum(not b.is_reference for b in blocks)
        previews = ChunkPreviews(prompt_id, node, chunks, ref_frames, host.temp_dir(), send, fps)
    latent_rgb = host.latent_rgb_previewer() if previews is not None and latent_previews else None
    try:
        if clip is None:
            yield LiveRun(previews, None, None, latent_rgb)
        elif prompt_id is None or node is None:
            yield LiveRun(previews, None, [], latent_rgb)
        else:
            with REGISTRY.open(prompt_id, node, steer_boundaries(blocks, ref_frames)) as session:
                yield LiveRun(previews, steering(session, clip, text_dim), session.record, latent_rgb)
    finally:
        if previews is not None:
            previews.close()


def record_json(record: list[dict[str, Any]]) -> str:
    """The steering record as the video's `longlive_steering` metadata holds it."""
    return json.dumps(record, ensure_ascii=False)


host.add_json_post_route(STEER_ROUTE, REGISTRY.answer, MAX_STEER_BODY_BYTES)
