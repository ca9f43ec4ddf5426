"""Queueing through ComfyUI-Distributed (--distributed): the master's POST /distributed/queue queues the
prompt on the master and on each worker that answers, every worker sends its frames back to the
master, and the master's history reports every video it saved. The workers to use come from the
master's GET /distributed/config (the workers its Distributed panel lists)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import ClientError, HTTPStatusError, ServerError, WorkflowRejected, one_line
from .server import ComfyAPI, parse_json

CONFIG_ROUTE, QUEUE_ROUTE = "/distributed/config", "/distributed/queue"


@dataclass(frozen=True)
class Worker:
    id: str
    name: str
    enabled: bool
    address: str


def configured_workers(comfy: ComfyAPI) -> list[Worker]:
    """The workers the master's ComfyUI-Distributed lists (GET /distributed/config)."""
    try:
        config = comfy.get_json(CONFIG_ROUTE)
    except HTTPStatusError as error:
        if error.code == 404:
            raise ServerError(f"{comfy.url} has no ComfyUI-Distributed (GET {CONFIG_ROUTE} -> HTTP 404): install it "
                              "on the master and on every worker") from None
        raise
    workers = config.get("workers")
    if not isinstance(workers, list):
        raise ServerError(f"GET {CONFIG_ROUTE}: no list of workers in the answer: {one_line(config)}")
    return [Worker(str(w.get("id")), str(w.get("name") or w.get("id")), bool(w.get("enabled")),
                   f"{w.get('host') or 'localhost'}:{w.get('port')}") for w in workers if isinstance(w, dict)]


def choose_workers(workers: list[Worker], wanted: list[str] | None) -> list[str]:
    """The ids to queue on: `wanted` (each checked against the config), else every enabled worker."""
    if wanted is None:
        return [w.id for w in workers if w.enabled]
    known = {w.id for w in workers}
    unknown = [i for i in wanted if i not in known]
    if unknown:
        listed = ", ".join(f"{w.id} ({w.name}, {w.address})" for w in workers) or "none"
        raise ClientError(f"--workers: the master has no worker {', '.join(map(repr, unknown))}; its workers: {listed}")
    return list(wanted)


def queue_distributed(comfy: ComfyAPI, api: dict, client_id: str, worker_ids: list[str]) -> tuple[str, int]:
    """POST /distributed/queue: (the master's prompt id, the number of workers it was sent to: those
    that answered the master's probe). A workflow the master or a worker refuses is WorkflowRejected."""
    body = {"prompt": api, "client_id": client_id, "enabled_worker_ids": worker_ids}
    try:
        answer = comfy.call_json("POST", QUEUE_ROUTE, body=body)
    except HTTPStatusError as error:
        message = _error_text(error.body)
        if "Invalid prompt" in message or "validation_error" in message:
            raise WorkflowRejected(f"ComfyUI-Distributed: the workflow was refused: {one_line(message, 600)}",
                                   {"error": message}) from None
        raise
    if not isinstance(answer.get("prompt_id"), str):
        raise ServerError(f"POST {QUEUE_ROUTE}: the answer has no prompt_id: {one_line(answer)}")
    return answer["prompt_id"], int(answer.get("worker_count") or 0)


def _error_text(body: str) -> str:
    try:
        answer = parse_json(body.encode("utf-8"), QUEUE_ROUTE, dict)
    except ServerError:
        return body
    return str(answer.get("error") or answer.get("errors") or body)


def queue_on_participants(comfy: ComfyAPI, wanted: list[str] | None, say: Callable[[str], None]
                          ) -> Callable[[dict, str], tuple[str, int]]:
    """The workers to use, said, and a function that queues a graph on them: (api, client_id) ->
    (prompt id on the master, workers reached)."""
    workers = configured_workers(comfy)
    ids = choose_workers(workers, wanted)
    if not ids:
        say("ComfyUI-Distributed: no worker is enabled on the master: it runs the workflow alone")
    else:
        names = {w.id: f"{w.name} ({w.address})" for w in workers}
        say(f"ComfyUI-Distributed: queueing on the master and {len(ids)} worker(s): "
            + ", ".join(names[i] for i in ids))

    def queue(api: dict, client_id: str) -> tuple[str, int]:
        prompt_id, reached = queue_distributed(comfy, api, client_id, ids)
        if reached < len(ids):
            say(f"ComfyUI-Distributed: {len(ids) - reached} of {len(ids)} worker(s) did not answer the master and "
                "were left out")
        return prompt_id, reached

    return queue


def expected_videos(api: dict, participants: int) -> int:
    """Videos a run should bring back: one per participant, or one when a Distributed Collector has
    load_balance on (the least busy participant runs it alone)."""
    balanced = any(node.get("class_type") == "DistributedCollector" and node.get("inputs", {}).get("load_balance")
                   is True for node in api.values())
    return 1 if balanced else participants
