#!/usr/bin/env python3
"""Generate the example workflows in example_workflows/ from one definition each.

Every workflow is written down once, below, as a graph of nodes with their inputs (the shape POST
/prompt takes). This script writes it twice:

- `example_workflows/api/<name>.json`: API format, `{id: {"inputs", "class_type", "_meta": {"title"}}}`,
  for `scripts/queue_workflow.py` or any client of POST /prompt. It lives in a subfolder because
  ComfyUI offers every `example_workflows/*.json` of a pack as a template in the editor;
- `example_workflows/<title>.json`: UI format (the litegraph document the editor saves, version
  0.4), named by what it does (the template browser shows the file name as the title), laid out
  in grouped columns that open readable, with a note naming every model file and where it goes.
  (scripts/make_thumbnails.py draws its picture, `<title>.jpg`.)

Widget values of a UI node are positional. Their order comes from our nodes' INPUT_TYPES (imported
from the pack, so an input a node gains appears in every regenerated workflow with its default)
and, for the few core nodes used, from the /object_info snapshots of every ComfyUI version the
pack is tested on (tests/data/comfyui_core_nodes/<version>.json). A core node whose widgets or
sockets differ between those versions is refused: use a node of the pack instead (core SaveVideo
and CreateVideo changed between 0.8 and 0.33, so the workflows save with "Save Video (streaming
decode)"). Every node carries an explicit title, so both editors show and queue the same names.
tests/test_workflows.py converts every UI file back with an independent converter and compares;
scripts/check_workflows_in_editor.py loads them in the real editors.

To add a workflow: write a function that builds a `Graph` (see `t2v` below), decorate it with
`@workflow`, run this script and make_thumbnails.py and commit the files (and add a line to the
README's table). Files a definition no longer makes are removed.

    python3 scripts/make_workflows.py            # (re)write example_workflows/
    python3 scripts/make_workflows.py --check    # exit 1 when a committed file is stale
    python3 scripts/make_workflows.py --snapshot-core http://127.0.0.1:8188
        # write tests/data/comfyui_core_nodes/<its version>.json from a running server's /object_info
    python3 scripts/make_workflows.py --snapshot-extensions http://127.0.0.1:8188
        # write tests/data/extension_nodes/<pack>-<version>.json from a server with those packs
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pack_loader  # noqa: E402  (the pack imported as ComfyUI imports it)
import make_example_inputs as examples  # noqa: E402  (the input files the workflows load)
from editor_widgets import Port, editor_ports  # noqa: E402  (the editor's widget rules)

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = ROOT / "example_workflows"
API_DIR = WORKFLOW_DIR / "api"
CORE_SNAPSHOTS = ROOT / "tests" / "data" / "comfyui_core_nodes"  # <ComfyUI version>.json
EXTENSION_SNAPSHOTS = ROOT / "tests" / "data" / "extension_nodes"  # <extension>-<its version>.json
PACK = "longlive_vace_workflow_gen"
FRONTEND_VERSION = "1.35.9"  # the oldest editor the workflows are checked in (ComfyUI 0.8.0)
# the core nodes the workflows may use (their /object_info entries are snapshotted per version)
CORE_NODE_TYPES = ("CLIPLoader", "CLIPTextEncode", "VAELoader", "LoadImage", "LoadVideo", "GetVideoComponents",
                   "EmptyHunyuanLatentVideo")

# ---------------------------------------------------------------------------------------------
# model files the workflows load (name as the loaders list it, model folder, download address)


@dataclass(frozen=True)
class ModelFile:
    name: str
    folder: str
    url: str
    about: str
    gigabytes: float  # download size, GB (1e9 bytes)


HF = "https://huggingface.co"
WAN_REPACK = f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
FILES = importlib.import_module(f"{pack_loader.load_pack(PACK, standalone=True).__name__}.nodes.model_files")
# Sizes: the LongLive and VACE files from their tensors (1.42B base parameters in fp32, 350M LoRA
# parameters in fp32, 2.15B VACE-model parameters in fp16; the full-size key set of
# vace_core.testing.fixtures), the text encoder and VAE as Comfy-Org publishes them.
BASE = ModelFile(FILES.BASE_FILE, "diffusion_models",
                 f"{HF}/Efficient-Large-Model/LongLive-1.3B/resolve/main/models/{FILES.BASE_FILE}",
                 "LongLive generator (causal Wan2.1-T2V-1.3B)", 5.7)
LORA = ModelFile(FILES.LORA_FILE, "loras",
                 f"{HF}/Efficient-Large-Model/LongLive-1.3B/resolve/main/models/{FILES.LORA_FILE}",
                 "LongLive LoRA (rank 256)", 1.4)
VACE = ModelFile(FILES.VACE_FILES[0], "diffusion_models", f"{WAN_REPACK}/diffusion_models/{FILES.VACE_FILES[0]}",
                 "Wan2.1-VACE-1.3B; only its VACE blocks are used", 4.3)
VACE_MODULE = ModelFile(FILES.VACE_FILES[1], "diffusion_models",
                        f"{HF}/Kijai/WanVideo_comfy/resolve/main/{FILES.VACE_FILES[1]}",
                        "the VACE blocks alone: replaces the file above", 1.5)
UMT5 = ModelFile(FILES.TEXT_ENCODER_FILE, "text_encoders", f"{WAN_REPACK}/text_encoders/{FILES.TEXT_ENCODER_FILE}",
                 "umT5-XXL text encoder, ComfyUI's Wan text encoder", 6.7)
WAN_VAE = ModelFile(FILES.WAN_VAE_FILE, "vae", f"{WAN_REPACK}/vae/{FILES.WAN_VAE_FILE}", "Wan 2.1 VAE", 0.25)
MODEL_FILES = {m.name: m for m in (BASE, LORA, VACE, UMT5, WAN_VAE)}
# (node type, input) -> the model folder its value names a file in
MODEL_INPUTS = {
    ("LongLiveModelLoader", "base_checkpoint"): "diffusion_models",
    ("LongLiveModelLoader", "lora"): "loras",
    ("LongLiveLoraLoader", "lora"): "loras",
    ("LongLiveVaceGraft", "vace_checkpoint"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
}

# ---------------------------------------------------------------------------------------------
# node interfaces: inputs in INPUT_TYPES order, outputs


@dataclass(frozen=True)
class Interface:
    display_name: str
    inputs: tuple[Port, ...]
    outputs: tuple[tuple[str, str], ...]  # (name, type)
    output_node: bool = False

    def port(self, name: str) -> Port:
        for port in self.inputs:
            if port.name == name:
                return port
        raise KeyError(name)


def interface_from_object_info(entry: dict) -> Interface:
    """The interface of a node from its /object_info entry, as the editor builds the node."""
    names = entry.get("output_name") or entry.get("output", [])
    return Interface(entry.get("display_name") or entry.get("name", ""), tuple(editor_ports(entry)),
                     tuple(zip(names, entry.get("output", []))), bool(entry.get("output_node", False)))


def object_info_of_class(cls: type, display_name: str) -> dict:
    """What ComfyUI's /object_info reports for a V1 node class (tuples become JSON lists)."""
    inputs = json.loads(json.dumps(cls.INPUT_TYPES()))
    inputs.pop("hidden", None)
    return {
        "input": inputs,
        "input_order": {section: list(entries) for section, entries in inputs.items()},
        "output": list(cls.RETURN_TYPES),
        "output_name": list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES),
        "name": cls.__name__,
        "display_name": display_name,
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
    }


def interface_from_class(cls: type, display_name: str) -> Interface:
    """The interface of a node class from its INPUT_TYPES / RETURN_TYPES, as ComfyUI reads them."""
    return interface_from_object_info(object_info_of_class(cls, display_name))


def core_snapshots() -> dict[str, dict]:
    """ComfyUI version -> its /object_info entries of CORE_NODE_TYPES, oldest version first."""
    def version_key(path: Path) -> list:
        return [int(part) if part.isdigit() else part for part in path.stem.split(".")]

    paths = sorted(CORE_SNAPSHOTS.glob("*.json"), key=version_key)
    if not paths:
        raise FileNotFoundError(f"no core-node snapshots in {CORE_SNAPSHOTS}: run --snapshot-core against a server")
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in paths}


def _layout_of(interface: Interface) -> tuple:
    # what a UI file depends on: positional widgets, sockets by name and type
    return tuple((p.name, p.type if not p.widget else "widget", p.widget, p.control, p.upload)
                 for p in interface.inputs)


def core_interfaces(snapshots: dict[str, dict] | None = None) -> dict[str, Interface]:
    """Interfaces of the core nodes, from the oldest snapshot; ValueError when a node's widgets,
    sockets or outputs differ in a newer version (outputs may only be added at the end)."""
    snapshots = snapshots if snapshots is not None else core_snapshots()
    versions = list(snapshots)
    interfaces = {}
    for name in CORE_NODE_TYPES:
        missing = [v for v in versions if name not in snapshots[v]]
        if missing:
            raise ValueError(f"core node {name} is missing from the snapshot of ComfyUI {', '.join(missing)}")
        oldest = interface_from_object_info(snapshots[versions[0]][name])
        for version in versions[1:]:
            newer = interface_from_object_info(snapshots[version][name])
            if _layout_of(newer) != _layout_of(oldest) or newer.outputs[:len(oldest.outputs)] != oldest.outputs:
                raise ValueError(f"core node {name} differs between ComfyUI {versions[0]} and {version}: "
                                 f"{_layout_of(oldest)} {oldest.outputs} vs {_layout_of(newer)} {newer.outputs}; "
                                 "a UI workflow cannot hold both, use a node of the pack instead")
        interfaces[name] = oldest
    return interfaces


@dataclass(frozen=True)
class Extension:
    """Another custom-node pack a workflow needs, at the version its nodes were snapshotted from
    (tests/data/extension_nodes/<name>-<version>.json: its /object_info entries of `node_types`)."""
    name: str  # its repository's (and a clone's folder) name
    version: str
    url: str
    node_types: tuple[str, ...]

    @property
    def snapshot(self) -> Path:
        return EXTENSION_SNAPSHOTS / f"{self.name}-{self.version}.json"


DISTRIBUTED = Extension("ComfyUI-Distributed", "1.4.4", "https://github.com/robertvoy/ComfyUI-Distributed",
                        ("DistributedSeed", "DistributedCollector"))
EXTENSIONS = {e.name: e for e in (DISTRIBUTED,)}


def extension_interfaces() -> dict[str, Interface]:
    """Interfaces of the extensions' nodes the workflows may use, from their snapshots."""
    interfaces = {}
    for extension in EXTENSIONS.values():
        entries = json.loads(extension.snapshot.read_text(encoding="utf-8"))
        missing = sorted(set(extension.node_types) - set(entries))
        if missing:
            raise ValueError(f"{extension.snapshot} lacks {', '.join(missing)}: run --snapshot-extension")
        interfaces.update({name: interface_from_object_info(entries[name]) for name in extension.node_types})
    return interfaces


NOTE_TYPE = "MarkdownNote"  # an editor-only node: never sent to the server


def load_pack(name: str = PACK) -> ModuleType:
    """The pack with the standalone host (scripts/pack_loader.py)."""
    return pack_loader.load_pack(name, standalone=True)


def all_interfaces() -> dict[str, Interface]:
    """Our registered nodes (from the pack) and the core nodes of CORE_NODE_TYPES."""
    pack = load_pack()
    ours = {name: interface_from_class(cls, pack.NODE_DISPLAY_NAME_MAPPINGS.get(name, name))
            for name, cls in pack.NODE_CLASS_MAPPINGS.items()}
    return {**core_interfaces(), **extension_interfaces(), **ours}


# ---------------------------------------------------------------------------------------------
# graph definition


@dataclass(frozen=True)
class Ref:
    """Output `slot` of node `node`, the value of a linked input."""
    node: int
    slot: int = 0


@dataclass
class Node:
    id: int
    type: str
    inputs: dict[str, Any]
    title: str | None = None
    column: int = 0  # layout column, left to right


@dataclass
class Graph:
    """One workflow: `name` (the API file), `title` (the UI file, which the template browser shows
    as the title: the hosts take no other title for a custom node's template), one line saying what
    it does, its nodes, one note and a group per set of columns."""
    name: str
    title: str
    description: str
    nodes: dict[int, Node] = field(default_factory=dict)
    note_text: str = ""
    groups: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    needs: tuple[Extension, ...] = ()  # other node packs it takes nodes from

    def add(self, type_: str, title: str | None = None, column: int = 0, **inputs: Any) -> Ref:
        node_id = len(self.nodes) + 1
        self.nodes[node_id] = Node(node_id, type_, inputs, title, column)
        return Ref(node_id)

    def note(self, text: str) -> None:
        self.note_text = text.strip()

    def group(self, title: str, *columns: int) -> None:
        self.groups.append((title, columns))


def fill_defaults(graph: Graph, interfaces: dict[str, Interface]) -> None:
    """Give every widget the workflow leaves out its default, as the editor would (so a widget a
    node gains later appears in both formats with its default)."""
    for node in graph.nodes.values():
        for port in interfaces[node.type].inputs:
            if port.widget and port.name not in node.inputs and port.default is not None:
                node.inputs[port.name] = port.default


def check_graph(graph: Graph, interfaces: dict[str, Interface]) -> None:
    """Every node type known, every input named by the interface, required sockets and every widget
    present, and every link from an existing output of the input's type."""
    for node in graph.nodes.values():
        where = f"{graph.name}: node {node.id} ({node.type})"
        if node.type not in interfaces:
            raise ValueError(f"{where}: unknown node type")
        interface = interfaces[node.type]
        names = [p.name for p in interface.inputs]
        unknown = sorted(set(node.inputs) - set(names))
        missing = [p.name for p in interface.inputs if (p.widget or not p.optional) and p.name not in node.inputs]
        if unknown or missing:
            raise ValueError(f"{where}: unknown inputs {unknown}, missing inputs {missing}")
        for name, value in node.inputs.items():
            port = interface.port(name)
            if isinstance(value, Ref):  # a socket's link, or a widget fed by another node's output
                source = graph.nodes.get(value.node)
                if source is None or value.slot >= len(interfaces[source.type].outputs):
                    raise ValueError(f"{where}: input {name} links to a missing output {value}")
                out_type = interfaces[source.type].outputs[value.slot][1]
                if out_type != port.type:
                    raise ValueError(f"{where}: input {name} ({port.type}) linked to a {out_type} output")
            elif not port.widget:
                raise ValueError(f"{where}: socket input {name} needs a link, got {value!r}")


# ---------------------------------------------------------------------------------------------
# the workflows

WIDTH, HEIGHT = 832, 480  # LongLive's training resolution
FPS = 16
PACK_FOLDER = "comfyui-longlive-vace"  # the folder name the README's clone command gives the pack
SIZE_NODE = "EmptyHunyuanLatentVideo"  # core's empty Wan 2.1 video latent: width, height, length
MODELS, INPUTS, GENERATE = 0, 1, 2  # the usual columns


def _model_list(files: list[ModelFile]) -> str:
    total = round(sum(m.gigabytes for m in files) + 1e-9, 1)  # half up, as the README adds them
    lines = [f"**Model files** ({total:.1f} GB), into ComfyUI's `models/` folders:"]
    for folder in ("diffusion_models", "loras", "text_encoders", "vae"):
        for m in (m for m in files if m.folder == folder):
            lines.append(f"- models/{folder}/ [{m.name}]({m.url}) {m.gigabytes:g} GB")
            if m is VACE:
                lines.append(f"  (or [{VACE_MODULE.name}]({VACE_MODULE.url}) {VACE_MODULE.gigabytes:g} GB, "
                             "the VACE blocks alone)")
    return "\n".join(lines)


EXAMPLE_INPUTS_LINE = (f"No picture at hand? From the ComfyUI folder, `python custom_nodes/{PACK_FOLDER}/scripts/"
                       "make_example_inputs.py` puts the example inputs into `input/` (press R to refresh), "
                       "or upload your own with the node's upload button.")
SETTINGS_LINE = ("More settings (window, steps, VACE strength per chunk or block, the causal options): plug a "
                 "**LongLive Sampler Settings** node into the sampler's *settings*.")
STEER_LINE = ("**Steer it live:** while it runs, the sampler plays each finished chunk; type what happens next in its "
              "box and press **Steer** (it takes over at the next chunk). **Hold** stops the video at the next chunk "
              "while you type, until Steer, Resume or a minute. The mp4 records the steering; **LongLive Schedule "
              "from Steering** replays it. The seed is *fixed*: Run again returns the same video from the cache.")


def _note(g: Graph, what: str, steps: list[str], files: list[ModelFile], example_inputs: bool = False) -> None:
    numbered = "\n".join(f"{n}. {step}" for n, step in enumerate(steps, start=1))
    parts = [f"## {g.title}", what, numbered]
    if example_inputs:
        parts.append(EXAMPLE_INPUTS_LINE)
    parts += [STEER_LINE, SETTINGS_LINE, _model_list(files)]
    g.note("\n\n".join(parts))


def _models(g: Graph, vace: bool = False) -> Ref:
    """The model loader (LongLive's base and LoRA; dtype auto = ComfyUI's choice for the device),
    grafted with VACE when asked."""
    model = g.add("LongLiveModelLoader", column=MODELS, base_checkpoint=BASE.name, lora=LORA.name, lora_strength=1.0,
                  dtype="auto")
    if vace:
        model = g.add("LongLiveVaceGraft", column=MODELS, model=model, vace_checkpoint=VACE.name)
    return model


def _text_and_vae(g: Graph, prompt: str, title: str = "Prompt", column: int = INPUTS) -> tuple[Ref, Ref, Ref]:
    """(CLIP, the prompt's CONDITIONING, VAE)."""
    clip = g.add("CLIPLoader", column=MODELS, clip_name=UMT5.name, type="wan", device="default")
    vae = g.add("VAELoader", column=MODELS, vae_name=WAN_VAE.name)
    positive = g.add("CLIPTextEncode", title, column=column, text=prompt, clip=clip)
    return clip, positive, vae


def _video_size(g: Graph, length: int, column: int = INPUTS, title: str = "Video size") -> Ref:
    """The one node that holds the video's width, height and length."""
    return g.add(SIZE_NODE, title, column=column, width=WIDTH, height=HEIGHT, length=length, batch_size=1)


def _sampler(g: Graph, model: Ref, positive: Ref, latent: Ref, clip: Ref, seed: int = 42, column: int = GENERATE,
             **extra: Any) -> Ref:
    """The sampler, steerable: the CLIP that encodes its prompt is on its clip input too."""
    return g.add("LongLiveSampler", column=column, model=model, positive=positive, latent=latent, seed=seed,
                 vace_scale=1.0, preset="LongLive", clip=clip, **extra)


def _save_mp4(g: Graph, samples: Ref, vae: Ref, prefix: str, column: int = GENERATE) -> None:
    # the pack's own saver: core SaveVideo / CreateVideo changed their inputs between 0.8 and 0.33
    g.add("LongLiveSaveVideo", column=column, samples=samples, vae=vae, filename_prefix=f"video/{prefix}", fps=FPS,
          crf=19)


WORKFLOWS: dict[str, Callable[[], Graph]] = {}


def workflow(build: Callable[[], Graph]) -> Callable[[], Graph]:
    """Register a workflow builder; the API file name is the graph's name."""
    WORKFLOWS[build().name] = build
    return build


@workflow
def t2v() -> Graph:
    g = Graph("longlive_t2v", "LongLive text to video", "A 10-second video from one prompt (plain LongLive, no VACE).")
    model = _models(g)
    clip, positive, vae = _text_and_vae(g, "A red fox trots through a snowy birch forest at sunrise, its breath "
                                        "steaming in the cold air, soft golden light between the trees, cinematic "
                                        "tracking shot.")
    size = _video_size(g, 161)
    _save_mp4(g, _sampler(g, model, positive, size, clip), vae, "LongLive_t2v")
    g.group("Models", MODELS)
    g.group("Prompt and video size", INPUTS)
    g.group("Generate", GENERATE)
    _note(g, "Plain LongLive: 161 frames = 10 s at 16 fps. Each chunk of 12 frames costs the same however "
             "long the video gets, and the mp4 is written a few frames at a time.",
          ["Put the model files below in place.", "Describe the scene in **Prompt**.",
           "Set the size and length on **Video size** only (length 4k+1), then press **Run**: the mp4 lands in "
           "`output/video/`."],
          [BASE, LORA, UMT5, WAN_VAE])
    return g


@workflow
def i2v() -> Graph:
    g = Graph("longlive_i2v", "LongLive image to video", "The video starts from your picture and carries on from it.")
    model = _models(g)
    clip, positive, vae = _text_and_vae(g, "A sailing boat glides across a calm bay at sunset, gulls circling the "
                                        "mast, the camera slowly following from the shore.")
    start = g.add("LoadImage", "Start image", column=INPUTS, image=examples.START)
    size = _video_size(g, 81, column=GENERATE)
    _save_mp4(g, _sampler(g, model, positive, size, clip, start_images=start, vae=vae), vae, "LongLive_i2v")
    g.group("Models", MODELS)
    g.group("Prompt and start image", INPUTS)
    g.group("Generate", GENERATE)
    _note(g, "The picture becomes the first frame of the mp4, as it is (centre-cropped to the frame); it stays in "
             "LongLive's attention sink for the whole video, and the prompt says what happens next.",
          ["Put the model files below in place.", "**Start image**: your picture.",
           "Describe what happens in **Prompt**, then press **Run**."], [BASE, LORA, UMT5, WAN_VAE],
          example_inputs=True)
    return g


@workflow
def r2v() -> Graph:
    g = Graph("longlive_vace_r2v", "LongLive VACE reference image to video",
              "A reference picture (a subject) steers the whole video through VACE.")
    model = _models(g, vace=True)
    clip, positive, vae = _text_and_vae(g, "A small red toy robot with round blue eyes walks along a sunny beach "
                                        "towards the camera, waves rolling in behind it, the camera tracking alongside.")
    reference = g.add("LoadImage", "Reference image", column=INPUTS, image=examples.REFERENCE)
    vace = g.add("LongLiveVaceEncode", column=INPUTS, vae=vae, width=WIDTH, height=HEIGHT, length=81,
                 reference_fit="pad", reference_images=reference)
    _save_mp4(g, _sampler(g, model, positive, Ref(vace.node, 1), clip, vace_context=vace), vae, "LongLive_r2v")
    g.group("Models", MODELS)
    g.group("Prompt and reference", INPUTS)
    g.group("Generate", GENERATE)
    _note(g, "The reference is encoded by VACE as one latent frame ahead of the video and stays in the cache for "
             "the whole video. *reference_fit* **pad** fits it on white (upstream VACE), **crop** fills the frame.",
          ["Put the model files below in place.", "**Reference image**: the subject, on a plain background.",
           "Describe the scene in **Prompt**; set the size on **VACE Encode References** (it hands it to the "
           "sampler), then press **Run**."], [BASE, LORA, VACE, UMT5, WAN_VAE], example_inputs=True)
    return g


@workflow
def r2v_multi_ref() -> Graph:
    g = Graph("longlive_vace_r2v_multi_ref", "LongLive VACE two reference images to video",
              "A subject and a scene picture steer the video together through VACE.")
    model = _models(g, vace=True)
    clip, positive, vae = _text_and_vae(g, "A small red toy robot with round blue eyes walks down a quiet street of "
                                        "old stone houses in the rain, the camera following it from the front.",
                                        column=GENERATE)
    subject = g.add("LoadImage", "Reference 1 (subject)", column=INPUTS, image=examples.SUBJECT)
    scene = g.add("LoadImage", "Reference 2 (scene)", column=INPUTS, image=examples.SCENE)
    vace = g.add("LongLiveVaceEncode", column=INPUTS, vae=vae, width=WIDTH, height=HEIGHT, length=81,
                 reference_fit="pad", reference_images=subject, more_reference_images=scene)
    _save_mp4(g, _sampler(g, model, positive, Ref(vace.node, 1), clip, vace_context=vace), vae,
              "LongLive_r2v_multi_ref")
    g.group("Models", MODELS)
    g.group("References", INPUTS)
    g.group("Prompt and generate", GENERATE)
    _note(g, "Each reference becomes one reference frame, fitted to the frame on its own: *reference_images* "
             "first (a batch of one size, in order), then *more_reference_images*, which may have another size.",
          ["Put the model files below in place.", "**Reference 1** and **2**: a subject and a scene.",
           "Describe the scene in **Prompt**; the size is set on **VACE Encode References**. Press **Run**."],
          [BASE, LORA, VACE, UMT5, WAN_VAE], example_inputs=True)
    return g


@workflow
def v2v() -> Graph:
    g = Graph("longlive_vace_v2v", "LongLive VACE control video to video",
              "A control video (pose, depth, edges, motion) guides a new video through VACE.")
    model = _models(g, vace=True)
    clip, positive, vae = _text_and_vae(g, "A robot made of polished brass dances in a dim jazz club, warm "
                                        "spotlights, smoke in the air, the camera slowly circling.")
    video = g.add("LoadVideo", "Control video", column=INPUTS, file=examples.CONTROL)
    frames = g.add("GetVideoComponents", column=INPUTS, video=video)
    vace = g.add("LongLiveVaceEncode", column=INPUTS, vae=vae, width=WIDTH, height=HEIGHT, length=81,
                 reference_fit="pad", control_video=frames)
    _save_mp4(g, _sampler(g, model, positive, Ref(vace.node, 1), clip, vace_context=vace), vae, "LongLive_v2v")
    g.group("Models", MODELS)
    g.group("Prompt and control video", INPUTS)
    g.group("Generate", GENERATE)
    _note(g, "The control video's frames are centre-cropped to the frame; a shorter video is padded with grey (the "
             "rest is free), a longer one is cut. A reference image on *reference_images* fixes the subject's look; "
             "*control_masks* (1 = generate, 0 = keep) make it inpainting.",
          ["Put the model files below in place.", "**Control video**: a pose, depth or edge video, or any video "
           "whose motion to follow.", "Describe the new video in **Prompt**, then press **Run**."],
          [BASE, LORA, VACE, UMT5, WAN_VAE], example_inputs=True)
    return g


SWITCH_PROMPTS = (
    "A 3D animated scene. A small red panda walks along a forest path towards the camera on a spring day.",
    "A 3D animated scene. A small red panda sits down on a forest path and looks up at falling cherry blossoms.",
    "A 3D animated scene. A small red panda stands up on a forest path and raises its arms to catch a blossom.",
)


@workflow
def prompt_switch() -> Graph:
    g = Graph("longlive_prompt_switch", "LongLive prompt switching (30 s)",
              "A 30-second video that follows three prompts in turn.")
    model = _models(g)
    clip, positive, vae = _text_and_vae(g, SWITCH_PROMPTS[0], "Prompt 1 (from frame 0)")
    schedule = None
    for number, (prompt, start) in enumerate(zip(SWITCH_PROMPTS[1:], (160, 320)), start=2):
        text = g.add("CLIPTextEncode", f"Prompt {number} (from frame {start})", column=INPUTS, text=prompt, clip=clip)
        extra = {"previous": schedule} if schedule is not None else {}
        schedule = g.add("LongLivePromptSchedule", f"Switch to prompt {number}", column=INPUTS, conditioning=text,
                         start_frame=start, **extra)
    size = _video_size(g, 481, column=GENERATE)
    _save_mp4(g, _sampler(g, model, positive, size, clip, prompt_schedule=schedule), vae, "LongLive_prompt_switch")
    g.group("Models", MODELS)
    g.group("Prompts and switches", INPUTS)
    g.group("Generate", GENERATE)
    _note(g, "481 frames = 30 s at 16 fps. Each **Prompt Schedule** node starts a prompt at its *start_frame* "
             "(chain them through *previous*); at a switch LongLive re-caches its recent frames under the new "
             "prompt, so the scene changes smoothly. Keep the subject and setting in every prompt.",
          ["Put the model files below in place.", "Write the three prompts; move the switches on the schedule "
           "nodes.", "Press **Run**."], [BASE, LORA, UMT5, WAN_VAE])
    return g


@workflow
def continue_video() -> Graph:
    g = Graph("longlive_continue", "LongLive continue a video",
              "81 frames, then 80 more, exactly as one 161-frame run would make them.")
    model = _models(g)
    clip, positive, vae = _text_and_vae(g, "A hot air balloon drifts over green hills and small villages in the "
                                        "morning haze, the camera flying slowly beside it.")
    size = _video_size(g, 81, title="Video size (first part)")
    first = _sampler(g, model, positive, size, clip, column=INPUTS)
    extended = g.add("LongLiveContinue", "Continue Video (+80 frames)", column=GENERATE, model=model,
                     positive=positive, samples=first, seed=42, length=80, vace_scale=1.0, preset="LongLive",
                     output="earlier + continuation")
    _save_mp4(g, extended, vae, "LongLive_continued")
    g.group("Models", MODELS)
    g.group("The first 81 frames", INPUTS)
    g.group("80 frames more", GENERATE)
    _note(g, "**Continue Video** takes a finished video's latents and adds *length* frames: it rebuilds the KV "
             "caches the first run had and draws the noise one longer run would, so 81 + 80 frames equal one "
             "161-frame run with the same seed and settings.",
          ["Put the model files below in place.", "Give Continue Video the first run's seed and settings (and "
           "its VACE context for the whole length, if it had one).", "Press **Run**. *output* **earlier + "
           "continuation** decodes seamlessly; **continuation** returns the new frames only."],
          [BASE, LORA, UMT5, WAN_VAE])
    return g


@workflow
def distributed() -> Graph:
    g = Graph("longlive_distributed", "LongLive on several GPUs (ComfyUI Distributed)",
              "Every GPU or machine makes a video of its own seed at once.", needs=(DISTRIBUTED,))
    model = _models(g)
    clip, positive, vae = _text_and_vae(g, "A red fox trots through a snowy birch forest at sunrise, its breath "
                                        "steaming in the cold air, soft golden light between the trees, cinematic "
                                        "tracking shot.", column=MODELS)
    size = _video_size(g, 81)
    seed = g.add("DistributedSeed", column=INPUTS, seed=42)
    samples = _sampler(g, model, positive, size, clip, seed=seed, column=INPUTS)
    frames = g.add("LongLiveDecode", column=GENERATE, samples=samples, vae=vae)
    collected = g.add("DistributedCollector", column=GENERATE, images=frames, load_balance=False)
    g.add("LongLiveSaveFrames", column=GENERATE, images=collected, samples=samples,
          filename_prefix="video/LongLive_distributed", fps=FPS, crf=19)
    g.group("Models and prompt", MODELS)
    g.group("Each participant's video", INPUTS)
    g.group("Collected and saved", GENERATE)
    _note(g, "The master and every worker (a whole ComfyUI on another GPU or machine) each make the video of "
             "their own seed at once; the master saves them all, its own first. The live panel here shows and "
             "steers the master's video only: each worker runs a prompt of its own.",
          [f"On the master and every worker: [ComfyUI-Distributed]({DISTRIBUTED.url}), this pack at the same "
           "version and the model files below.",
           "Start each worker as its own ComfyUI (`--port 8189 --cuda-device 1`; another machine: `--listen`), "
           "add and enable it in the master's **Distributed** panel.",
           "Press **Run**: **Distributed Seed** gives worker *k* (1, 2, ...) seed + *k*; **Save Videos** writes one "
           "mp4 per whole video to `output/video/`. *load_balance*: one participant (the least busy) makes one video.",
           "*batch_size* B on **Video size**: each participant's B videos come back (worker *k*'s seeds start at "
           "seed + *k*, so they overlap the master's: docs/several-gpus.md)."],
          [BASE, LORA, UMT5, WAN_VAE])
    return g


# ---------------------------------------------------------------------------------------------
# API format


def _title(node: Node, interfaces: dict[str, Interface]) -> str:
    return node.title or interfaces[node.type].display_name


def to_api(graph: Graph, interfaces: dict[str, Interface]) -> dict:
    """{"<id>": {"inputs", "class_type", "_meta": {"title"}}}, inputs in interface order."""
    api = {}
    for node in graph.nodes.values():
        inputs = {}
        for port in interfaces[node.type].inputs:
            if port.name in node.inputs:
                value = node.inputs[port.name]
                inputs[port.name] = [str(value.node), value.slot] if isinstance(value, Ref) else value
        api[str(node.id)] = {"inputs": inputs, "class_type": node.type, "_meta": {"title": _title(node, interfaces)}}
    return api


# ---------------------------------------------------------------------------------------------
# UI format: layout
#
# The template browser opens a workflow by fitting all its nodes into the window at 3/4 of the
# window's size (editor 1.49; 1.35 shows the view stored in the file, which is set here to the same
# fit), and the editor draws nodes as empty boxes below 0.6 zoom. So a workflow is laid out in a few
# columns, each a group, with one note on the left, and its nodes are kept to the size the editor
# gives them (measured in both editors: the minimum heights below).

COLUMN_GAP, ROW_GAP, TITLE_HEIGHT = 50, 24, 30
GROUP_PAD, GROUP_TITLE = 12, 40
SLOT_HEIGHT, WIDGET_HEIGHT = 22, 24
NODE_WIDTHS = {"CLIPTextEncode": 380, "CLIPLoader": 340, "LongLiveVaceGraft": 340, "LoadImage": 280, "LoadVideo": 280,
               "LongLiveSaveVideo": 320, "ImageBatch": 260, "GetVideoComponents": 260, "LongLiveSampler": 320,
               "LongLiveContinue": 320}
# the heights the editors compute (1.35.9 and 1.49.6, the larger), and room for a text box or picture
MIN_HEIGHTS = {"CLIPTextEncode": 150, "LoadImage": 290, "LoadVideo": 290, "GetVideoComponents": 110}
DEFAULT_WIDTH = 300
# the live panel web/longlive.js adds to a running sampler (its PANEL_HEIGHT, 260, and the editors'
# margins around a DOM widget): those nodes are laid out at the height they grow to, so that after a
# run the panel covers no node below them (nodes at the bottom of a column, such as Save Video with
# the editor's own player, grow into free space)
LIVE_NODES = ("LongLiveSampler", "LongLiveSampleToVideo", "LongLiveContinue")
LIVE_PANEL_HEIGHT = 270
NOTE_WIDTH, NOTE_COLOR, NOTE_BGCOLOR = 340, "#432", "#653"
# the markdown note's text in both editors: 10 px type on 12 px lines, headings on 19 px lines, about
# 55 characters (headings 35) to a line of this width (measured: note_height is within a line of it)
NOTE_LINE_HEIGHT, NOTE_CHARS_PER_LINE, NOTE_HEADING_HEIGHT, NOTE_HEADING_CHARS = 12, 52, 19, 34
NOTE_PARAGRAPH_GAP, NOTE_PADDING = 10, 36
FIT_VIEWPORT, FIT_ZOOM = (1600, 1000), 0.75  # the window templates are measured in; 1.49's fit rule


def _node_size(node: Node, interface: Interface) -> list[int]:
    sockets = sum(not p.widget for p in interface.inputs)
    widgets = sum(p.widget + p.control + p.upload for p in interface.inputs)
    height = max(sockets, len(interface.outputs)) * SLOT_HEIGHT + widgets * WIDGET_HEIGHT + 12
    height = max(height, MIN_HEIGHTS.get(node.type, 0)) + (LIVE_PANEL_HEIGHT if node.type in LIVE_NODES else 0)
    return [NODE_WIDTHS.get(node.type, DEFAULT_WIDTH), height]


def note_height(text: str) -> int:
    """The height the note's markdown takes in the editor, estimated from its wrapped lines."""
    height = NOTE_PADDING
    for paragraph in text.split("\n\n"):
        for line in paragraph.splitlines():
            if line.startswith("#"):
                height += NOTE_HEADING_HEIGHT * max(1, -(-len(line.lstrip("# ")) // NOTE_HEADING_CHARS))
                continue
            shown = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line).replace("**", "").replace("`", "")
            height += NOTE_LINE_HEIGHT * max(1, -(-len(shown) // NOTE_CHARS_PER_LINE))
        height += NOTE_PARAGRAPH_GAP
    return height


@dataclass
class Layout:
    nodes: dict[int, tuple[list[int], list[int]]]  # node id -> (pos, size)
    note: tuple[list[int], list[int]]
    groups: list[tuple[str, list[int]]]  # (title, [x, y, w, h])

    def bounds(self) -> tuple[float, float, float, float]:
        """(x, y, w, h) of every node with its title bar: what the editor fits into the window."""
        rects = [(p[0], p[1] - TITLE_HEIGHT, p[0] + s[0], p[1] + s[1]) for p, s in [*self.nodes.values(), self.note]]
        x0, y0 = min(r[0] for r in rects), min(r[1] for r in rects)
        return x0, y0, max(r[2] for r in rects) - x0, max(r[3] for r in rects) - y0

    def fitted_view(self) -> tuple[float, list[float]]:
        """(scale, offset) of the editor's fit of the bounds into FIT_VIEWPORT."""
        x, y, w, h = self.bounds()
        width, height = FIT_VIEWPORT
        scale = min(FIT_ZOOM * width / w, FIT_ZOOM * height / h)
        return scale, [round(-x - w / 2 + width / scale / 2, 1), round(-y - h / 2 + height / scale / 2, 1)]


def layout(graph: Graph, interfaces: dict[str, Interface]) -> Layout:
    """Columns left to right (nodes stacked in the order they were added), one group per set of
    columns, the note left of the first column."""
    columns = sorted({n.column for n in graph.nodes.values()})
    sizes = {i: _node_size(n, interfaces[n.type]) for i, n in graph.nodes.items()}
    placed: dict[int, tuple[list[int], list[int]]] = {}
    x = 0
    for column in columns:
        members = [i for i, n in graph.nodes.items() if n.column == column]
        width = max(sizes[i][0] for i in members)
        y = GROUP_TITLE
        for node_id in members:
            placed[node_id] = ([x, y + TITLE_HEIGHT], [width, sizes[node_id][1]])
            y += TITLE_HEIGHT + sizes[node_id][1] + ROW_GAP
        x += width + 2 * GROUP_PAD + COLUMN_GAP
    groups = []
    for title, in_group in graph.groups:
        rects = [placed[i] for i, n in graph.nodes.items() if n.column in in_group]
        x0 = min(p[0] for p, _ in rects) - GROUP_PAD
        y0 = min(p[1] for p, _ in rects) - TITLE_HEIGHT - GROUP_TITLE
        x1 = max(p[0] + s[0] for p, s in rects) + GROUP_PAD
        y1 = max(p[1] + s[1] for p, s in rects) + GROUP_PAD
        groups.append((title, [x0, y0, x1 - x0, y1 - y0]))
    note = ([-(NOTE_WIDTH + GROUP_PAD + COLUMN_GAP), TITLE_HEIGHT], [NOTE_WIDTH, note_height(graph.note_text)])
    return Layout(placed, note, groups)


def _topological(graph: Graph) -> list[int]:
    depth: dict[int, int] = {}

    def visit(node_id: int) -> int:
        if node_id not in depth:
            sources = [v.node for v in graph.nodes[node_id].inputs.values() if isinstance(v, Ref)]
            depth[node_id] = 1 + max(map(visit, sources)) if sources else 0
        return depth[node_id]

    return sorted(graph.nodes, key=lambda i: (visit(i), i))


def to_ui(graph: Graph, interfaces: dict[str, Interface]) -> dict:
    """The litegraph document the editor (frontend 1.35) saves and loads."""
    placed = layout(graph, interfaces)
    links: list[list] = []
    in_links: dict[tuple[int, str], int] = {}
    out_links: dict[tuple[int, int], list[int]] = {}
    for node in graph.nodes.values():
        for port in interfaces[node.type].inputs:
            value = node.inputs.get(port.name)
            if isinstance(value, Ref):
                link_id = len(links) + 1
                links.append([link_id, value.node, value.slot, node.id, None, port.type])
                in_links[(node.id, port.name)] = link_id
                out_links.setdefault((value.node, value.slot), []).append(link_id)

    order = {node_id: n for n, node_id in enumerate(_topological(graph), start=1)}
    ui_nodes = []
    for node in graph.nodes.values():
        interface = interfaces[node.type]
        inputs, widgets_values, fed_widgets = [], [], []
        for port in interface.inputs:
            if not port.widget:
                entry = {"name": port.name, "type": port.type, "link": in_links.get((node.id, port.name))}
                if port.optional:
                    entry["shape"] = 7  # the editor draws optional sockets hollow
                link_id = entry["link"]
                if link_id is not None:
                    links[link_id - 1][4] = len(inputs)
                inputs.append(entry)
                continue
            value = node.inputs.get(port.name)
            if isinstance(value, Ref):  # the widget keeps a value of its own; the link overrides it
                fed_widgets.append(port)
                value = port.default
            widgets_values.append(value)
            if port.control:
                widgets_values.append("fixed")
        for port in fed_widgets:  # after the sockets, where the editor puts a widget turned into an input
            link_id = in_links[(node.id, port.name)]
            links[link_id - 1][4] = len(inputs)
            inputs.append({"name": port.name, "type": port.type, "widget": {"name": port.name}, "link": link_id})
        if any(p.upload for p in interface.inputs):
            widgets_values.append("image")  # the upload button's stored value
        outputs = [{"name": name, "type": type_, "links": out_links.get((node.id, slot), []), "slot_index": slot}
                   for slot, (name, type_) in enumerate(interface.outputs)]
        properties: dict[str, Any] = {"Node name for S&R": node.type}
        models = [MODEL_FILES[node.inputs[name]] for (type_, name), _ in MODEL_INPUTS.items()
                  if type_ == node.type and node.inputs.get(name) in MODEL_FILES]
        if models:  # the editor offers to download missing files listed here
            properties["models"] = [{"name": m.name, "url": m.url, "directory": m.folder} for m in models]
        pos, size = placed.nodes[node.id]
        ui_nodes.append({"id": node.id, "type": node.type, "pos": pos, "size": size, "flags": {},
                         "order": order[node.id], "mode": 0, "inputs": inputs, "outputs": outputs,
                         # always explicit: each editor would otherwise show (and queue) its own display name
                         "title": _title(node, interfaces), "properties": properties,
                         "widgets_values": widgets_values})
    pos, size = placed.note
    ui_nodes.append({"id": len(graph.nodes) + 1, "type": NOTE_TYPE, "pos": pos, "size": size, "flags": {}, "order": 0,
                     "mode": 0, "inputs": [], "outputs": [], "title": "Read me", "properties": {},
                     "widgets_values": [graph.note_text], "color": NOTE_COLOR, "bgcolor": NOTE_BGCOLOR})
    scale, offset = placed.fitted_view()
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-longlive-vace/{graph.name}")),
        "revision": 0,
        "last_node_id": len(ui_nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": [{"id": n, "title": title, "bounding": bounding, "color": "#3f789e", "font_size": 24, "flags": {}}
                   for n, (title, bounding) in enumerate(placed.groups, start=1)],
        "config": {},
        "extra": {"ds": {"scale": round(scale, 4), "offset": offset}, "frontendVersion": FRONTEND_VERSION},
        "version": 0.4,
    }


# ---------------------------------------------------------------------------------------------
# files


def _dump(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class WorkflowFiles:
    name: str  # the API file's name, what scripts and the client use
    title: str  # the UI file's name, what the template browser shows
    description: str
    ui: Path
    api: Path
    thumbnail: Path  # the template browser's picture: <UI file name>.jpg
    needs: tuple[Extension, ...] = ()  # node packs besides this one it needs


def workflow_files() -> list[WorkflowFiles]:
    """Every workflow's files, in the order they are defined."""
    found = []
    for name, build in WORKFLOWS.items():
        graph = build()
        found.append(WorkflowFiles(name, graph.title, graph.description, WORKFLOW_DIR / f"{graph.title}.json",
                                   API_DIR / f"{name}.json", WORKFLOW_DIR / f"{graph.title}.jpg", graph.needs))
    return found


def render_all() -> dict[Path, str]:
    """Path -> file text of every workflow in both formats."""
    interfaces = all_interfaces()
    files = {}
    for name, build in WORKFLOWS.items():
        graph = build()
        if graph.name != name:
            raise ValueError(f"workflow {name!r} builds a graph named {graph.name!r}")
        fill_defaults(graph, interfaces)
        check_graph(graph, interfaces)
        files[API_DIR / f"{name}.json"] = _dump(to_api(graph, interfaces))
        files[WORKFLOW_DIR / f"{graph.title}.json"] = _dump(to_ui(graph, interfaces))
    return files


def obsolete_files() -> list[Path]:
    """Workflow files and thumbnails in example_workflows/ that no definition makes any more (the
    editor would still list them as templates)."""
    wanted = {f.ui for f in workflow_files()} | {f.api for f in workflow_files()} | {f.thumbnail for f in workflow_files()}
    present = [*WORKFLOW_DIR.glob("*.json"), *WORKFLOW_DIR.glob("*.jpg"), *API_DIR.glob("*.json")]
    return sorted(path for path in present if path not in wanted)


def stale_files() -> list[Path]:
    """Generated files whose committed text differs, that are missing, or that are obsolete."""
    return [path for path, text in render_all().items()
            if not path.is_file() or path.read_text(encoding="utf-8") != text] + obsolete_files()


def write_all() -> list[Path]:
    rendered = render_all()
    written = []
    for path in obsolete_files():
        path.unlink()
        written.append(path)
    for path, text in rendered.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


FILE_COMBOS = {("CLIPLoader", "clip_name"), ("VAELoader", "vae_name"), ("LoadImage", "image"), ("LoadVideo", "file")}
SNAPSHOT_KEYS = ("input", "input_order", "output", "output_name", "name", "display_name", "output_node")


def _server_json(server: str, route: str) -> Any:
    with urllib.request.urlopen(server.rstrip("/") + route, timeout=60) as response:
        return json.loads(response.read().decode("utf-8"))


def _snapshot(info: dict, node_types: tuple[str, ...], path: Path) -> Path:
    """Write the /object_info entries of `node_types` to `path` (file lists emptied: they depend on
    the machine)."""
    missing = sorted(set(node_types) - set(info))
    if missing:
        raise ValueError(f"the server has no {', '.join(missing)} (is the node pack installed?)")
    snapshot = {}
    for name in sorted(node_types):
        entry = {key: info[name][key] for key in SNAPSHOT_KEYS if key in info[name]}
        for section in entry["input"].values():
            for input_name, spec in section.items():
                if (name, input_name) in FILE_COMBOS:
                    if isinstance(spec[0], list):
                        spec[0] = []
                    elif len(spec) > 1 and "options" in spec[1]:
                        spec[1]["options"] = []
        snapshot[name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_dump(snapshot), encoding="utf-8")
    return path


def snapshot_core(server: str) -> Path:
    """Write the /object_info entries of CORE_NODE_TYPES as tests/data/comfyui_core_nodes/<version>.json."""
    version = _server_json(server, "/system_stats")["system"]["comfyui_version"]
    return _snapshot(_server_json(server, "/object_info"), CORE_NODE_TYPES, CORE_SNAPSHOTS / f"{version}.json")


def snapshot_extensions(server: str) -> list[Path]:
    """Write each extension's snapshot from a server that has the extension (at its version)
    installed."""
    info = _server_json(server, "/object_info")
    return [_snapshot(info, extension.node_types, extension.snapshot) for extension in EXTENSIONS.values()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    parser.add_argument("--snapshot-core", metavar="SERVER",
                        help="refresh the core-node snapshot from a running ComfyUI (e.g. http://127.0.0.1:8188)")
    parser.add_argument("--snapshot-extensions", metavar="SERVER",
                        help="refresh the snapshots of the other node packs' nodes (ComfyUI-Distributed) from a "
                             "running ComfyUI that has them installed")
    args = parser.parse_args(argv)
    if args.snapshot_core:
        print(f"wrote {snapshot_core(args.snapshot_core).relative_to(ROOT)}")
        return 0
    if args.snapshot_extensions:
        for path in snapshot_extensions(args.snapshot_extensions):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)}")
        if stale:
            print("run: python3 scripts/make_workflows.py")
        return 1 if stale else 0
    written = write_all()
    for path in written:
        print(f"wrote {path.relative_to(ROOT)}")
    print(f"{len(WORKFLOWS)} workflows, {len(written)} files changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
