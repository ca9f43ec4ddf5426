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
  route refuses what could not be encoded as it is (prompts.check_prompt_text: invalid Unicode,
  prompt weights that are not finite or beyond +-10, embeddings outside their folder) and
  otherwise only stores the text; the sampler takes it at the next chunk boundary, on the
  execution thread, encodes it there as CLIPTextEncode does and hands it to `generate`, where it
  joins the prompt schedule at that boundary's first video frame. Several texts before one
  boundary: the last one wins, and each answer says whether it replaced a pending one. At the
  boundary the clients that queued or steered the prompt get `longlive.steer`: the text applied
  there, or dropped because encoding it failed (the prompt stays, the run goes on). What took
  effect is the steering record, `[{"frame", "text"}, ...]`, which the nodes put into their output
  and the video's metadata.
- Holding: `POST /longlive/hold` holds the run at the next boundary (after its chunk previews are
  out) until a text is posted, it is resumed, its timeout passes or the user cancels; `longlive.hold`
  tells the clients when it holds and when it resumes. Holding changes no frame.

The host (nodes/host/live.py, previews.py) supplies the routes, the websocket, the temp folder and
ComfyUI's previewer; nothing here imports ComfyUI.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
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
from ..vace_core.sampler import ChunkInfo, GenerationCancelled
from ..vace_core.streaming import VideoWriter
from . import host
from .prompts import check_prompt_text, check_text_width, encode_prompt

log = logging.getLogger("longlive_vace")

CHUNK_EVENT = "longlive.chunk"
STEER_EVENT = "longlive.steer"  # a steer applied or dropped at a boundary
HOLD_EVENT = "longlive.hold"  # the run held at a boundary, and resumed
STEER_ROUTE = "/longlive/steer"
HOLD_ROUTE = "/longlive/hold"
MAX_STEER_CHARS = 2000  # a steering text longer than this is refused (400)
MAX_STEER_BODY_BYTES = 16 * 1024  # a request body longer than this is refused (400) before it is parsed
DEFAULT_HOLD_SECONDS = 60.0  # a hold nobody ends resumes by itself after this
MAX_HOLD_SECONDS = 600.0  # the longest hold a request may ask for (the server runs nothing else meanwhile)
HOLD_POLL_SECONDS = 0.05  # how often a held run looks at the Cancel flag
MAX_TOLD_CLIENTS = 32  # client ids a run tells what took effect, besides the one that queued it
PREVIEW_SUBFOLDER = "longlive"  # inside the host's temp folder
PREVIEW_MAX_SIDE = 512  # decoded frames are thinned out to fit; the clip shows in a node, not full screen
PREVIEW_FPS = 16  # the LATENT nodes' clips (Wan 2.1's rate); the streaming node uses its own fps
PREVIEW_CRF = 28  # H.264 quality of the clips: small files, plainly recognisable frames
PREVIEWS_IN_FLIGHT = 2  # chunks that may wait for the encoder before the sampler waits for it

Send = Callable[..., None]  # send(event, data, to=()): the prompt's client, and the client ids in `to`


# ---------------------------------------------------------------------------------------------
# steering and holding


class SteerRefused(Exception):
    """A steering or hold request that is answered with `status` and this message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class HoldEnd:
    """How a hold at a boundary ended: "steer", "resume", "timeout" or "cancel", after `seconds`."""
    by: str
    seconds: float


class SteerSession:
    """One running steerable node: the boundaries left, the text waiting for the next one, a hold
    asked for, the clients that steered it, and the steering record. `post`, `hold` and `resume`
    run on the server's thread; `begin_hold`, `wait_held` and `take` on the execution thread."""

    def __init__(self, prompt_id: str, node_id: str, boundaries: Sequence[Boundary]) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.boundaries = list(boundaries)
        self.record: list[dict[str, Any]] = []  # [{"frame": int, "text": str}] in the order they took effect
        self._clients: dict[str, None] = {}  # client ids that steered or held it, in order (told what took effect)
        self._changed = threading.Condition()
        self._pending: str | None = None
        self._replaced = 0  # texts the pending one replaced
        self._hold: float | None = None  # seconds of a hold asked for the next boundary
        self._hold_asked = 0.0  # when it was asked (time.monotonic)
        self._holding = False  # the sampler waits at a boundary
        self._resume = False  # `resume` ended the wait
        self._next = 0  # index of the next boundary the sampler takes a text at
        self._checked = -1  # index of the last boundary whose hold the sampler looked at

    def _frame_of(self, index: int) -> int:
        """The video frame of boundary `index`; SteerRefused(404) past the last one."""
        if index >= len(self.boundaries):
            raise SteerRefused(404, f"prompt {self.prompt_id}: node {self.node_id} is making its last chunk; "
                                    "there is no chunk boundary left to steer or hold at")
        return self.boundaries[index].frame

    def add_client(self, client_id: str) -> None:
        """Tell `client_id` too what takes effect (the first MAX_TOLD_CLIENTS ids only)."""
        with self._changed:
            if len(self._clients) < MAX_TOLD_CLIENTS:
                self._clients[client_id] = None

    def clients(self) -> list[str]:
        with self._changed:
            return list(self._clients)

    def post(self, text: str) -> tuple[int, bool]:
        """Queue `text` for the next boundary (it replaces a text queued before it, and ends a hold):
        (the video frame where it takes over, whether it replaced a pending text)."""
        with self._changed:
            frame = self._frame_of(self._next)
            replaces = self._pending is not None
            self._replaced += replaces
            self._pending = text
            self._changed.notify_all()
            return frame, replaces

    def hold(self, seconds: float) -> int:
        """Hold the run at the next boundary until a text is posted, `resume`, or `seconds` pass (a
        hold asked while held restarts the clock); the video frame it holds before."""
        with self._changed:
            # the sampler may have passed the next boundary's hold check: then the one after it
            frame = self._frame_of(self._next if self._holding or self._checked < self._next else self._next + 1)
            self._hold, self._hold_asked = seconds, time.monotonic()
            self._changed.notify_all()
            return frame

    def resume(self) -> bool:
        """End the hold (held now, or asked for the next boundary); whether there was one."""
        with self._changed:
            had = self._hold is not None
            self._hold = None
            self._resume = self._holding
            self._changed.notify_all()
            return had

    def begin_hold(self) -> float | None:
        """At a boundary: the seconds of the hold asked for it (the run is held from now on, so a
        `resume` ends it), or None."""
        with self._changed:
            self._checked = self._next
            if self._hold is not None:
                self._holding, self._resume = True, False
            return self._hold

    def wait_held(self, stop: Callable[[], bool]) -> HoldEnd:
        """After `begin_hold`: wait until a text is posted, `resume`, the hold's time is up, or
        `stop()` (Cancel, polled) says so."""
        started = time.monotonic()
        with self._changed:
            try:
                while True:
                    deadline = max(started, self._hold_asked) + (self._hold or 0.0)
                    if self._pending is not None:
                        by = "steer"
                    elif self._resume:
                        by = "resume"
                    elif stop():
                        by = "cancel"
                    elif time.monotonic() >= deadline:
                        by = "timeout"
                    else:
                        self._changed.wait(max(0.0, min(HOLD_POLL_SECONDS, deadline - time.monotonic())))
                        continue
                    return HoldEnd(by, time.monotonic() - started)
            finally:
                self._hold, self._holding, self._resume = None, False, False

    def take(self, boundary: Boundary) -> tuple[str | None, int]:
        """The text to use at `boundary` (the sampler's next one), if any, and how many texts it
        replaced; later posts wait for the next boundary."""
        with self._changed:
            expected = self.boundaries[self._next] if self._next < len(self.boundaries) else None
            if expected != boundary:
                raise RuntimeError(f"steering: the sampler reached the boundary at frame {boundary.frame}, "
                                   f"expected {expected}")
            self._next += 1
            taken = (self._pending, self._replaced)
            self._pending, self._replaced = None, 0
            return taken


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

    def session(self, request: "LiveRequest") -> SteerSession:
        """The running node a request names; SteerRefused(404 / 400) when there is none or it is unclear."""
        with self._lock:
            running = dict(self._sessions.get(request.prompt_id, {}))
        if not running:
            raise SteerRefused(404, f"prompt {request.prompt_id} is not running a steerable LongLive node (a LongLive "
                                    "Sampler or Sampler -> Video with its clip input connected)")
        if request.node is None:
            if len(running) > 1:
                raise SteerRefused(400, f"prompt {request.prompt_id} runs several steerable nodes "
                                        f"({', '.join(sorted(running))}): name one in \"node\"")
            session = next(iter(running.values()))
        elif request.node in running:
            session = running[request.node]
        else:
            raise SteerRefused(404, f"prompt {request.prompt_id} is not running steerable node {request.node} "
                                    f"(running: {', '.join(sorted(running))})")
        if request.client_id is not None:
            session.add_client(request.client_id)
        return session

    def steer(self, request: "LiveRequest") -> dict[str, Any]:
        """Queue the request's text for the running node: the 200 answer."""
        session = self.session(request)
        frame, replaces = session.post(request.text)
        return {"prompt_id": request.prompt_id, "node": session.node_id, "takes_effect_at_frame": frame,
                "replaces_pending": replaces}

    def hold(self, request: "LiveRequest") -> dict[str, Any]:
        """Hold (or resume) the running node: the 200 answer."""
        session = self.session(request)
        answer = {"prompt_id": request.prompt_id, "node": session.node_id}
        if request.resume:
            return {**answer, "resumed": session.resume()}
        return {**answer, "holds_at_frame": session.hold(request.seconds), "timeout_s": request.seconds}

    def answer(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """The steering route: (HTTP status, JSON answer) for a request body. Never raises."""
        return _answer(lambda: self.steer(parse_steer_request(body)))

    def answer_hold(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """The hold route: (HTTP status, JSON answer) for a request body. Never raises."""
        return _answer(lambda: self.hold(parse_hold_request(body)))


def _answer(respond: Callable[[], dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    try:
        return 200, respond()
    except SteerRefused as refused:
        return refused.status, {"error": str(refused)}


@dataclass(frozen=True)
class LiveRequest:
    """A checked steering or hold request."""
    prompt_id: str
    node: str | None = None
    client_id: str | None = None  # the client to tell what took effect (as in POST /prompt)
    text: str = ""
    resume: bool = False
    seconds: float = DEFAULT_HOLD_SECONDS


def _request_fields(body: bytes, example: str) -> dict[str, Any]:
    """The JSON object of a request body with its "prompt_id", "node" and "client_id" checked;
    SteerRefused(400) otherwise."""
    if len(body) > MAX_STEER_BODY_BYTES:
        raise SteerRefused(400, f"the request body is over {MAX_STEER_BODY_BYTES} bytes")
    try:
        request = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SteerRefused(400, f"the body must be JSON: {example}") from None
    if not isinstance(request, dict):
        raise SteerRefused(400, f"the body must be a JSON object: {example}")
    prompt_id, node_id, client_id = request.get("prompt_id"), request.get("node"), request.get("client_id")
    if not isinstance(prompt_id, str) or not prompt_id:
        raise SteerRefused(400, '"prompt_id" must be the id of the running prompt (a string)')
    if node_id is not None and (isinstance(node_id, bool) or not isinstance(node_id, (str, int))):
        raise SteerRefused(400, '"node" must be the id of the node to steer (a string)')
    if client_id is not None and (not isinstance(client_id, str) or not client_id or len(client_id) > 200):
        raise SteerRefused(400, '"client_id" must be the id of a websocket client (a string)')
    return {"prompt_id": prompt_id, "node": None if node_id is None else str(node_id), "client_id": client_id,
            "body": request}


def parse_steer_request(body: bytes) -> LiveRequest:
    """The checked `POST /longlive/steer` request, or SteerRefused(400): besides a malformed body,
    a text that cannot be encoded as it is (see prompts.check_prompt_text) is refused here, while the
    user can still change it, rather than dropped at the boundary."""
    fields = _request_fields(body, '{"prompt_id": "...", "text": "...", "node": "..." (optional)}')
    text = fields.pop("body").get("text")
    if not isinstance(text, str):
        raise SteerRefused(400, '"text" must be a string: the prompt that takes over at the next chunk')
    if not text.strip():
        raise SteerRefused(400, '"text" is empty')
    if len(text) > MAX_STEER_CHARS:
        raise SteerRefused(400, f'"text" has {len(text)} characters; at most {MAX_STEER_CHARS} are taken')
    try:
        check_prompt_text(text, '"text"')
    except ValueError as error:
        raise SteerRefused(400, str(error)) from None
    return LiveRequest(**fields, text=text)


def parse_hold_request(body: bytes) -> LiveRequest:
    """The checked `POST /longlive/hold` request, or SteerRefused(400)."""
    fields = _request_fields(body, '{"prompt_id": "...", "timeout_s": 60 (optional), "resume": false (optional)}')
    request = fields.pop("body")
    resume, seconds = request.get("resume", False), request.get("timeout_s", DEFAULT_HOLD_SECONDS)
    if not isinstance(resume, bool):
        raise SteerRefused(400, '"resume" must be true (end the hold) or false (hold)')
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_HOLD_SECONDS:
        raise SteerRefused(400, f'"timeout_s" must be a number of seconds above 0 and at most {MAX_HOLD_SECONDS:g}: '
                                "the held run resumes by itself after it")
    return LiveRequest(**fields, resume=resume, seconds=float(seconds))


REGISTRY = SteeringRegistry()


def steering(session: SteerSession, clip: Any, text_dim: int, send: Send | None = None,
             flush: Callable[[], None] | None = None) -> Callable[[Boundary], list[PromptSegment]]:
    """`generate`'s steer callable. At each boundary: first a hold, if one was asked (the previews
    of the chunks made so far are sent first, then the run waits); then the text posted last,
    encoded with `clip` as CLIPTextEncode encodes it, becomes a prompt at the boundary's frame and
    joins the record. A text that fails there (the encoder raises, or its conditioning is not
    finite or not the model's width) is dropped: the prompt stays, the video goes on, and the
    clients and the log are told. `send(event, data, to)` tells the clients."""
    def tell(event: str, data: dict) -> None:
        if send is not None:
            send(event, {"prompt_id": session.prompt_id, "node": session.node_id, **data}, to=session.clients())

    def steer(boundary: Boundary) -> list[PromptSegment]:
        seconds = session.begin_hold()
        if seconds is not None:
            if flush is not None:
                flush()  # the clients see every chunk made before the hold
            tell(HOLD_EVENT, {"state": "held", "frame": boundary.frame, "timeout_s": seconds})
            end = session.wait_held(host.is_interrupted)
            log.info("LongLive: prompt %s node %s held before frame %d for %.1f s, ended by %s", session.prompt_id,
                     session.node_id, boundary.frame, end.seconds, end.by)
            tell(HOLD_EVENT, {"state": "resumed", "frame": boundary.frame, "by": end.by,
                              "held_s": round(end.seconds, 3)})
            if end.by == "cancel":
                raise GenerationCancelled(boundary.block.index)
        text, replaced = session.take(boundary)
        if text is None:
            return []
        shown = text if len(text) <= 80 else text[:77] + "..."
        name = f"clip (the steering text at frame {boundary.frame})"
        try:
            context = check_text_width(encode_prompt(clip, text, name), text_dim, name)
        except Exception as error:  # a steer is never worth failing the run for: it is dropped
            reason = f"{type(error).__name__}: {error}"
            log.warning("LongLive: dropped the steer of prompt %s node %s at frame %d (%r): %s; the prompt stays "
                        "as it was", session.prompt_id, session.node_id, boundary.frame, shown, reason)
            tell(STEER_EVENT, {"status": "dropped", "frame": boundary.frame, "text": text, "replaced": replaced,
                               "reason": reason})
            return []
        session.record.append({"frame": boundary.frame, "text": text})
        log.info("LongLive: steered prompt %s node %s at frame %d: %r", session.prompt_id, session.node_id,
                 boundary.frame, shown)
        tell(STEER_EVENT, {"status": "applied", "frame": boundary.frame, "text": text, "replaced": replaced})
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
    send: Send
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

    def flush(self) -> None:
        """Wait for the previews still being written (their messages go out before this returns)."""
        for future in self._pending:
            self._settle(future)
        self._pending.clear()

    def close(self) -> None:
        """Flush, then stop the worker (the messages go out before the node ends)."""
        self.flush()
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
    if send is not None and prompt_id is not None and node is not None:
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
                steer = steering(session, clip, text_dim, send, previews.flush if previews is not None else None)
                yield LiveRun(previews, steer, session.record, latent_rgb)
    finally:
        if previews is not None:
            previews.close()


def record_json(record: list[dict[str, Any]]) -> str:
    """The steering record as the video's `longlive_steering` metadata holds it."""
    return json.dumps(record, ensure_ascii=False)



# the routes of the live contract on the host's server: (path, answer(body) -> (status, JSON), max body
# bytes); the pack registers them where it is assembled (nodes/__init__.py)
ROUTES = ((STEER_ROUTE, REGISTRY.answer, MAX_STEER_BODY_BYTES),
          (HOLD_ROUTE, REGISTRY.answer_hold, MAX_STEER_BODY_BYTES))
