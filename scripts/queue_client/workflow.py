"""Workflows: an editor (UI format) file converted into the API graph the editor would queue, the
command line's changes to an API graph, and reading a workflow from a JSON file or an mp4."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from editor_widgets import widget_slots  # scripts/editor_widgets.py: the editor's widget rules

from .errors import ClientError
from .mp4 import read_json_or_mp4_record

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
    output's slot if it fits, else the first), as the editor does. Subgraphs are not supported
    (expand them in the editor first).
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


def is_literal(value: Any) -> bool:
    return not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
                and isinstance(value[1], int))


def ordered_nodes(api: dict) -> list[tuple[str, dict]]:
    return sorted(api.items(), key=lambda item: (int(item[0]) if item[0].isdigit() else float("inf"), item[0]))


def _targets(api: dict, predicate: Callable[[str, dict], bool]) -> list[str]:
    return [node_id for node_id, node in ordered_nodes(api) if predicate(node_id, node)]


def shortened(text: str) -> str:
    """`text` cut to 60 characters for a console line."""
    return text if len(text) <= 60 else text[:57] + "..."


def _set(api: dict, node_id: str, name: str, value: Any, changes: list[str]) -> None:
    inputs = api[node_id]["inputs"]
    new = "" if name in inputs else " (an input the node did not have)"
    inputs[name] = value
    shown = shortened(value) if isinstance(value, str) else value
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
    for node_id, node in ordered_nodes(api):
        if o.seed is not None and "seed" in node["inputs"] and is_literal(node["inputs"]["seed"]):
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
            if is_literal(api[node_id]["inputs"].get(name, value)):
                _set(api, node_id, name, value, changes)
    for assignment in o.sets:
        node_id, name, value = parse_set(assignment)
        if node_id not in api:
            raise ClientError(f"--set {assignment!r}: the workflow has no node {node_id!r}")
        _set(api, node_id, name, value, changes)
    return changes


def load_workflow(path: str | Path) -> dict:
    """A workflow from a JSON file, or the API graph an mp4 of ComfyUI's records (`prompt` metadata)."""
    data = read_json_or_mp4_record(path, "prompt", "workflow", f"{path} holds no workflow (no 'prompt' metadata: "
                                   "was ComfyUI run with --disable-metadata?)")
    if not isinstance(data, dict):
        raise ClientError(f"{path}: not a workflow (expected a JSON object)")
    return data
