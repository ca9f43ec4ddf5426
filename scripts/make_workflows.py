#!/usr/bin/env python3
"""Generate the example workflows in example_workflows/ from one definition each.

Every workflow is written down once, below, as a graph of nodes with their inputs (the shape POST
/prompt takes). This script writes it twice:

- `example_workflows/api/<name>.json`: API format, `{id: {"inputs", "class_type", "_meta": {"title"}}}`,
  for `scripts/queue_workflow.py` or any client of POST /prompt. It lives in a subfolder because
  ComfyUI offers every `example_workflows/*.json` of a pack as a template in the editor;
- `example_workflows/<name>.json`: UI format (the litegraph document the editor saves, version 0.4),
  laid out in columns by dependency depth, with notes naming every model file and where it goes.

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
`@workflow`, run the script and commit the JSON (and add a line to the README's table).

    python3 scripts/make_workflows.py            # (re)write example_workflows/
    python3 scripts/make_workflows.py --check    # exit 1 when a committed file is stale
    python3 scripts/make_workflows.py --snapshot-core http://127.0.0.1:8188
        # write tests/data/comfyui_core_nodes/<its version>.json from a running server's /object_info
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pack_loader  # noqa: E402  (the pack imported as ComfyUI imports it)
from editor_widgets import Port, editor_ports  # noqa: E402  (the editor's widget rules)

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = ROOT / "example_workflows"
API_DIR = WORKFLOW_DIR / "api"
CORE_SNAPSHOTS = ROOT / "tests" / "data" / "comfyui_core_nodes"  # <ComfyUI version>.json
PACK = "longlive_vace_workflow_gen"
FRONTEND_VERSION = "1.35.9"  # the oldest editor the workflows are checked in (ComfyUI 0.8.0)
# the core nodes the workflows may use (their /object_info entries are snapshotted per version)
CORE_NODE_TYPES = ("CLIPLoader", "CLIPTextEncode", "VAELoader", "LoadImage", "LoadVideo", "GetVideoComponents",
                   "ResizeAndPadImage", "ImageBatch")

# ---------------------------------------------------------------------------------------------
# model files the workflows load (name as the loaders list it, model folder, download address)


@dataclass(frozen=True)
class ModelFile:
    name: str
    folder: str
    url: str
    about: str


HF = "https://huggingface.co"
WAN_REPACK = f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
FILES = importlib.import_module(f"{pack_loader.load_pack(PACK, standalone=True).__name__}.nodes.host.files")
BASE = ModelFile(FILES.BASE_FILE, "diffusion_models",
                 f"{HF}/Efficient-Large-Model/LongLive-1.3B/resolve/main/models/{FILES.BASE_FILE}",
                 "LongLive generator (causal Wan2.1-T2V-1.3B), 5.7 GB")
LORA = ModelFile(FILES.LORA_FILE, "loras",
                 f"{HF}/Efficient-Large-Model/LongLive-1.3B/resolve/main/models/{FILES.LORA_FILE}",
                 "LongLive LoRA (rank 256), merged at load")
VACE = ModelFile(FILES.VACE_FILES[0], "diffusion_models", f"{WAN_REPACK}/diffusion_models/{FILES.VACE_FILES[0]}",
                 "Wan2.1-VACE-1.3B; only its VACE blocks are grafted onto LongLive. The 0.7 GB VACE module "
                 f"[{FILES.VACE_FILES[1]}]({HF}/Kijai/WanVideo_comfy/resolve/main/{FILES.VACE_FILES[1]}) works "
                 "as well")
UMT5 = ModelFile(FILES.TEXT_ENCODER_FILE, "text_encoders", f"{WAN_REPACK}/text_encoders/{FILES.TEXT_ENCODER_FILE}",
                 "umT5-XXL text encoder (ComfyUI's Wan text encoder; umt5_xxl_fp16 works too)")
WAN_VAE = ModelFile(FILES.WAN_VAE_FILE, "vae", f"{WAN_REPACK}/vae/{FILES.WAN_VAE_FILE}", "Wan 2.1 VAE")
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


NOTE_TYPE = "MarkdownNote"  # an editor-only node: never sent to the server


def load_pack(name: str = PACK) -> ModuleType:
    """The pack with the standalone host (scripts/pack_loader.py)."""
    return pack_loader.load_pack(name, standalone=True)


def all_interfaces() -> dict[str, Interface]:
    """Our registered nodes (from the pack) and the core nodes of CORE_NODE_TYPES."""
    pack = load_pack()
    ours = {name: interface_from_class(cls, pack.NODE_DISPLAY_NAME_MAPPINGS.get(name, name))
            for name, cls in pack.NODE_CLASS_MAPPINGS.items()}
    return {**core_interfaces(), **ours}


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


@dataclass
class Note:
    title: str
    text: str


@dataclass
class Graph:
    name: str
    nodes: dict[int, Node] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)

    def add(self, type_: str, title: str | None = None, **inputs: Any) -> Ref:
        node_id = len(self.nodes) + 1
        self.nodes[node_id] = Node(node_id, type_, inputs, title)
        return Ref(node_id)

    def note(self, title: str, text: str) -> None:
        self.notes.append(Note(title, text.strip()))


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
            if isinstance(value, Ref):
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
# -1 / empty: the sampler takes these from its preset (LongLive), so choosing another preset works
SAMPLER_DEFAULTS = dict(vace_scale=1.0, chunk_frames=-1, window_frames=-1, sink_frames=-1,
                        steps="", shift=-1.0, vace_scale_end=-1.0)


def _model_list(files: list[ModelFile]) -> str:
    lines = ["## Model files", "", "Download each file into the folder shown (inside your ComfyUI folder):", ""]
    for folder in ("diffusion_models", "loras", "text_encoders", "vae"):
        picked = [m for m in files if m.folder == folder]
        if not picked:
            continue
        lines.append(f"**models/{folder}/**")
        lines.extend(f"- [{m.name}]({m.url}) – {m.about}" for m in picked)
        lines.append("")
    lines.append("Files already downloaded for ComfyUI's own Wan 2.1 workflows (text encoder, VAE, "
                 "VACE) are the same files. Restart ComfyUI or press R in the editor after adding files.")
    return "\n".join(lines)


def _text_and_vae(g: Graph, prompt: str, title: str = "Prompt") -> tuple[Ref, Ref, Ref]:
    """(CLIP, the prompt's CONDITIONING, VAE)."""
    clip = g.add("CLIPLoader", clip_name=UMT5.name, type="wan", device="default")
    positive = g.add("CLIPTextEncode", title, text=prompt, clip=clip)
    vae = g.add("VAELoader", vae_name=WAN_VAE.name)
    return clip, positive, vae


def _sampler(g: Graph, model: Ref, positive: Ref, length: int, seed: int, **extra: Any) -> Ref:
    return g.add("LongLiveSampler", model=model, positive=positive, seed=seed, length=length, width=WIDTH,
                 height=HEIGHT, **{**SAMPLER_DEFAULTS, **extra})


def _loader(g: Graph) -> Ref:
    # LongLive's base and LoRA; dtype auto = ComfyUI's choice for the device
    return g.add("LongLiveModelLoader", base_checkpoint=BASE.name, lora=LORA.name, lora_strength=1.0, dtype="auto")


def _save_mp4(g: Graph, samples: Ref, vae: Ref, prefix: str) -> None:
    # the pack's own saver: core SaveVideo / CreateVideo changed their inputs between 0.8 and 0.33
    g.add("LongLiveSaveVideo", samples=samples, vae=vae, filename_prefix=f"video/{prefix}", fps=FPS, crf=19)


SAMPLER_NOTE = """
## LongLive Sampler

Generates the video chunk by chunk (3 latent frames = 12 video frames each) with LongLive's KV
cache, so every chunk costs the same however long the video gets.

- **length**: video frames, 4k+1 (81 = 5 s at 16 fps). Must equal *length* on VACE Encode References.
- **width / height**: multiples of 16; LongLive is trained at 832×480.
- **preset**: the checkpoint's settings (LongLive; Self-Forcing, CausVid, Causal Forcing for theirs).
- **steps / shift / chunk / window / sink**: -1 or empty = the preset's; a value wins over the preset.
- **vace_scale**: how strongly the references steer the video (0 = plain text-to-video).

No negative prompt and no CFG: LongLive is distilled without them.
"""


WORKFLOWS: dict[str, Callable[[], Graph]] = {}


def workflow(build: Callable[[], Graph]) -> Callable[[], Graph]:
    """Register a workflow builder; the file name is the graph's name."""
    WORKFLOWS[build().name] = build
    return build


@workflow
def r2v() -> Graph:
    g = Graph("longlive_vace_r2v")
    loader = _loader(g)
    model = g.add("LongLiveVaceGraft", model=loader, vace_checkpoint=VACE.name)
    _, positive, vae = _text_and_vae(g, "A corgi wearing a red scarf runs along a sunny beach towards the camera, "
                                     "waves rolling in behind it, the camera tracking alongside at dog height.")
    reference = g.add("LoadImage", "Reference image", image="longlive_reference.png")
    vace = g.add("LongLiveVaceEncode", vae=vae, width=WIDTH, height=HEIGHT, length=81, reference_fit="pad",
                 reference_images=reference)
    samples = _sampler(g, model, positive, 81, 42, vace_context=vace)
    _save_mp4(g, samples, vae, "LongLive_r2v")
    g.note("LongLive + VACE: reference to video", f"""
# Reference-to-video with LongLive

1. Put the model files listed below in place.
2. **Load Image**: upload the reference (the subject on a plain background works best).
3. Describe the scene in **Prompt**, then press **Run**.

The reference is encoded by the VACE node as one extra latent frame ahead of the video and stays
in LongLive's attention sink for the whole video. *reference_fit* **pad** fits it inside the frame
on white, as upstream VACE does; **crop** fills the frame like ComfyUI's WanVaceToVideo.

The mp4 lands in `output/video/`.

{_model_list([BASE, LORA, VACE, UMT5, WAN_VAE])}
""")
    g.note("Sampler settings", SAMPLER_NOTE)
    return g


@workflow
def r2v_multi_ref() -> Graph:
    g = Graph("longlive_vace_r2v_multi_ref")
    loader = _loader(g)
    model = g.add("LongLiveVaceGraft", model=loader, vace_checkpoint=VACE.name)
    _, positive, vae = _text_and_vae(g, "A young woman in a yellow raincoat walks through a quiet street of old stone "
                                     "houses in the rain, holding a transparent umbrella; the camera follows her "
                                     "from the front.")
    first = g.add("LoadImage", "Reference 1 (subject)", image="longlive_reference_subject.png")
    second = g.add("LoadImage", "Reference 2 (scene or object)", image="longlive_reference_scene.png")
    fitted = [g.add("ResizeAndPadImage", f"Fit reference {i}", image=image, target_width=WIDTH,
                    target_height=HEIGHT, padding_color="white", interpolation="area")
              for i, image in ((1, first), (2, second))]
    batch = g.add("ImageBatch", "References as one batch", image1=fitted[0], image2=fitted[1])
    vace = g.add("LongLiveVaceEncode", vae=vae, width=WIDTH, height=HEIGHT, length=81, reference_fit="pad",
                 reference_images=batch)
    samples = _sampler(g, model, positive, 81, 42, vace_context=vace)
    _save_mp4(g, samples, vae, "LongLive_r2v_multi_ref")
    g.note("LongLive + VACE: several references", f"""
# Several reference images

Every image of the batch given to **reference_images** becomes one reference frame (all are used,
in batch order). A batch needs images of one size, and *Batch Images* would stretch or crop the
second image to the first one's size, so each reference is first fitted inside the video frame
on white (**ResizeAndPadImage** at the video's width × height, what upstream VACE does).

For a third reference, add another Load Image → ResizeAndPadImage and chain a second Batch Images
after the first. If you change width/height, change them on the ResizeAndPadImage nodes too.

{_model_list([BASE, LORA, VACE, UMT5, WAN_VAE])}
""")
    g.note("Sampler settings", SAMPLER_NOTE)
    return g


@workflow
def t2v() -> Graph:
    g = Graph("longlive_t2v")
    model = _loader(g)
    _, positive, vae = _text_and_vae(g, "A red fox trots through a snowy birch forest at sunrise, its breath steaming "
                                     "in the cold air, soft golden light between the trees, cinematic tracking shot.")
    samples = _sampler(g, model, positive, 161, 42)
    _save_mp4(g, samples, vae, "LongLive_t2v")
    g.note("LongLive: text to video", f"""
# Text-to-video with LongLive

Plain LongLive, no VACE: no reference, no VACE weights needed. 161 frames = 10 s at 16 fps; raise
*length* for longer videos: the cost per chunk stays flat, and **Save Video (streaming decode)**
writes the mp4 a few frames at a time, so minutes of video never sit in memory as images.

{_model_list([BASE, LORA, UMT5, WAN_VAE])}
""")
    g.note("Sampler settings", SAMPLER_NOTE)
    return g


SWITCH_PROMPTS = (
    "A 3D animated scene. A small red panda walks along a forest path towards the camera on a spring day.",
    "A 3D animated scene. A small red panda sits down on a forest path and looks up at falling cherry blossoms.",
    "A 3D animated scene. A small red panda stands up on a forest path and raises its arms to catch a blossom.",
)


@workflow
def prompt_switch() -> Graph:
    g = Graph("longlive_prompt_switch")
    model = _loader(g)
    clip, positive, vae = _text_and_vae(g, SWITCH_PROMPTS[0], "Prompt 1 (from frame 0)")
    schedule = None
    for number, (prompt, start) in enumerate(zip(SWITCH_PROMPTS[1:], (160, 320)), start=2):
        text = g.add("CLIPTextEncode", f"Prompt {number} (from frame {start})", text=prompt, clip=clip)
        extra = {"previous": schedule} if schedule is not None else {}
        schedule = g.add("LongLivePromptSchedule", f"Switch to prompt {number}", conditioning=text,
                         start_frame=start, **extra)
    samples = _sampler(g, model, positive, 481, 42, prompt_schedule=schedule)
    _save_mp4(g, samples, vae, "LongLive_prompt_switch")
    g.note("LongLive: prompt switching", f"""
# A long video that follows a sequence of prompts

481 frames = 30 s at 16 fps. **Prompt 1** runs from the start; each **LongLive Prompt Schedule**
node adds a prompt from its *start_frame* on (chain them through *previous*). At a switch LongLive
resets its text cache and re-caches its recent frames under the new prompt, so the scene changes
smoothly instead of cutting. Keep the subject and setting in every prompt for continuity.

**Save Video (streaming decode)** decodes and writes the mp4 a few frames at a time, so even
minutes of video never sit in memory as images.

{_model_list([BASE, LORA, UMT5, WAN_VAE])}
""")
    g.note("Sampler settings", SAMPLER_NOTE)
    return g


@workflow
def v2v() -> Graph:
    g = Graph("longlive_vace_v2v")
    loader = _loader(g)
    model = g.add("LongLiveVaceGraft", model=loader, vace_checkpoint=VACE.name)
    _, positive, vae = _text_and_vae(g, "A robot made of polished brass dances in a dim jazz club, warm spotlights, "
                                     "smoke in the air, the camera slowly circling.")
    video = g.add("LoadVideo", "Control video", file="longlive_control.mp4")
    frames = g.add("GetVideoComponents", video=video)
    vace = g.add("LongLiveVaceEncode", vae=vae, width=WIDTH, height=HEIGHT, length=81, reference_fit="pad",
                 control_video=frames)
    samples = _sampler(g, model, positive, 81, 42, vace_context=vace)
    _save_mp4(g, samples, vae, "LongLive_v2v")
    g.note("LongLive + VACE: video to video", f"""
# Video-to-video with a control video

**Load Video**: a control video, e.g. a depth, pose or edge video, or a plain video whose motion and
layout the new video should follow. Its frames are centre-cropped to the frame; a shorter video is
padded with gray (the rest is generated freely), a longer one is cut to *length*.

Add a reference image on **reference_images** to also fix the subject's look, and masks on
**control_masks** (1 = generate, 0 = keep the control pixels) for inpainting.

{_model_list([BASE, LORA, VACE, UMT5, WAN_VAE])}
""")
    g.note("Sampler settings", SAMPLER_NOTE)
    return g



@workflow
def i2v() -> Graph:
    g = Graph("longlive_i2v")
    model = _loader(g)
    _, positive, vae = _text_and_vae(g, "A sailing boat glides across a calm bay at golden hour, gulls circling "
                                     "the mast, the camera slowly following from the shore.")
    start = g.add("LoadImage", "Start image", image="longlive_start.png")
    samples = _sampler(g, model, positive, 81, 42, start_images=start, vae=vae)
    _save_mp4(g, samples, vae, "LongLive_i2v")
    g.note("LongLive: image to video", f"""
# Image-to-video with LongLive

**Load Image**: the video's first frame. The sampler centre-crops it to the frame, encodes it with
the VAE and starts the video from it: it is the first frame of the mp4, it sits in LongLive's
attention sink for the whole video, and the prompt describes what happens next. A clip of 4k+1
images (Load Video → Get Video Components) works too and becomes the first 4k+1 frames.

Add **Load VACE Weights** and **VACE Encode References** for a reference image on top.

{_model_list([BASE, LORA, UMT5, WAN_VAE])}
""")
    g.note("Sampler settings", SAMPLER_NOTE)
    return g


@workflow
def continue_video() -> Graph:
    g = Graph("longlive_continue")
    model = _loader(g)
    _, positive, vae = _text_and_vae(g, "A hot air balloon drifts over green hills and small villages in the "
                                     "morning haze, the camera flying slowly beside it.")
    first = _sampler(g, model, positive, 81, 42)
    extended = g.add("LongLiveContinue", "Continue Video (+80 frames)", model=model, positive=positive,
                     samples=first, seed=42, length=80, output="earlier + continuation",
                     **{k: v for k, v in SAMPLER_DEFAULTS.items() if k != "vace_scale_end"})
    _save_mp4(g, extended, vae, "LongLive_continued")
    g.note("LongLive: continue a video", f"""
# Continue a video, exactly

**Continue Video** takes the latents of a finished video and generates *length* more frames after
it. It replays the clean pass of every earlier chunk, which rebuilds exactly the KV caches the
first run had (sink and window), and draws the noise one longer run would have drawn: with the same
model, settings, seed and prompt, 81 frames + 80 more is the 161-frame video.

Give it the earlier run's seed and settings. For a video with reference images, connect the
same VACE context, encoded for the whole length (earlier + new frames); for a prompt schedule, the
whole video's schedule. *output*: **earlier + continuation** decodes seamlessly; **continuation**
returns only the new latent frames.

{_model_list([BASE, LORA, UMT5, WAN_VAE])}
""")
    g.note("Sampler settings", SAMPLER_NOTE)
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

COLUMN_GAP, ROW_GAP = 60, 40
SLOT_HEIGHT, WIDGET_HEIGHT = 22, 24
NODE_WIDTHS = {"CLIPTextEncode": 420, "LongLiveSampler": 340, "LoadImage": 300, "LoadVideo": 300,
               "LongLiveSaveVideo": 340, "LongLiveModelLoader": 340, "LongLiveVaceGraft": 380}
MIN_HEIGHTS = {"CLIPTextEncode": 180, "LoadImage": 330, "LoadVideo": 330}
NOTE_WIDTH, NOTE_HEIGHTS = 460, {"Sampler settings": 380}
DEFAULT_WIDTH, DEFAULT_NOTE_HEIGHT = 320, 600


def _node_size(node: Node, interface: Interface) -> list[int]:
    sockets = sum(not p.widget for p in interface.inputs)
    widgets = sum(p.widget + p.control + p.upload for p in interface.inputs)
    height = max(sockets, len(interface.outputs)) * SLOT_HEIGHT + widgets * WIDGET_HEIGHT + 12
    return [NODE_WIDTHS.get(node.type, DEFAULT_WIDTH), max(height, MIN_HEIGHTS.get(node.type, 0))]


def _sources(node: Node) -> list[int]:
    return [v.node for v in node.inputs.values() if isinstance(v, Ref)]


def _depths(graph: Graph) -> dict[int, int]:
    """Longest path from a node without links: the column of each node."""
    depth: dict[int, int] = {}

    def visit(node_id: int) -> int:
        if node_id not in depth:
            sources = _sources(graph.nodes[node_id])
            depth[node_id] = 1 + max(map(visit, sources)) if sources else 0
        return depth[node_id]

    for node_id in graph.nodes:
        visit(node_id)
    return depth


def layout(graph: Graph, interfaces: dict[str, Interface]) -> dict[int, tuple[list[int], list[int]]]:
    """Node id -> (pos, size): one column per dependency depth, each column ordered by where its
    sources sit (so links run mostly left to right without crossing), notes in a column on the left."""
    depths = _depths(graph)
    sizes = {i: _node_size(n, interfaces[n.type]) for i, n in graph.nodes.items()}
    placed: dict[int, tuple[list[int], list[int]]] = {}
    x = 0
    for column in range(max(depths.values()) + 1):
        members = [i for i in graph.nodes if depths[i] == column]

        def anchor(node_id: int) -> tuple[float, int]:
            ys = [placed[s][0][1] + placed[s][1][1] / 2 for s in _sources(graph.nodes[node_id])]
            return (sum(ys) / len(ys) if ys else 0.0, node_id)

        y = 0
        for node_id in sorted(members, key=anchor):
            placed[node_id] = ([x, y], sizes[node_id])
            y += sizes[node_id][1] + ROW_GAP + 30  # 30: the title bar sits above pos
        x += max(sizes[i][0] for i in members) + COLUMN_GAP
    return placed


def _topological(graph: Graph) -> list[int]:
    depths = _depths(graph)
    return sorted(graph.nodes, key=lambda i: (depths[i], i))


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

    order = {node_id: n for n, node_id in enumerate(_topological(graph), start=len(graph.notes))}
    ui_nodes = []
    for node in graph.nodes.values():
        interface = interfaces[node.type]
        inputs, widgets_values = [], []
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
            widgets_values.append(node.inputs.get(port.name))
            if port.control:
                widgets_values.append("fixed")
        if any(p.upload for p in interface.inputs):
            widgets_values.append("image")  # the upload button's stored value
        outputs = [{"name": name, "type": type_, "links": out_links.get((node.id, slot), []), "slot_index": slot}
                   for slot, (name, type_) in enumerate(interface.outputs)]
        properties: dict[str, Any] = {"Node name for S&R": node.type}
        models = [MODEL_FILES[node.inputs[name]] for (type_, name), _ in MODEL_INPUTS.items()
                  if type_ == node.type and node.inputs.get(name) in MODEL_FILES]
        if models:  # the editor offers to download missing files listed here
            properties["models"] = [{"name": m.name, "url": m.url, "directory": m.folder} for m in models]
        pos, size = placed[node.id]
        ui_node = {"id": node.id, "type": node.type, "pos": pos, "size": size, "flags": {}, "order": order[node.id],
                   "mode": 0, "inputs": inputs, "outputs": outputs}
        # always explicit: each editor would otherwise show (and queue) its own display name
        ui_node["title"] = _title(node, interfaces)
        ui_node["properties"] = properties
        ui_node["widgets_values"] = widgets_values
        ui_nodes.append(ui_node)

    note_x = -NOTE_WIDTH - COLUMN_GAP * 2
    y = 0
    for n, note in enumerate(graph.notes):
        height = NOTE_HEIGHTS.get(note.title, DEFAULT_NOTE_HEIGHT)
        ui_nodes.append({"id": len(graph.nodes) + n + 1, "type": NOTE_TYPE, "pos": [note_x, y],
                         "size": [NOTE_WIDTH, height], "flags": {}, "order": n, "mode": 0, "inputs": [],
                         "outputs": [], "title": note.title, "properties": {}, "widgets_values": [note.text],
                         "color": "#432", "bgcolor": "#653"})
        y += height + ROW_GAP + 30

    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-longlive-vace/{graph.name}")),
        "revision": 0,
        "last_node_id": len(ui_nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.7, "offset": [-note_x + 40, 80]}, "frontendVersion": FRONTEND_VERSION},
        "version": 0.4,
    }


# ---------------------------------------------------------------------------------------------
# files


def _dump(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


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
        files[WORKFLOW_DIR / f"{name}.json"] = _dump(to_ui(graph, interfaces))
    return files


def stale_files() -> list[Path]:
    """Generated files whose committed text differs (or that are missing)."""
    return [path for path, text in render_all().items()
            if not path.is_file() or path.read_text(encoding="utf-8") != text]


def write_all() -> list[Path]:
    written = []
    for path, text in render_all().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


FILE_COMBOS = {("CLIPLoader", "clip_name"), ("VAELoader", "vae_name"), ("LoadImage", "image"), ("LoadVideo", "file")}
SNAPSHOT_KEYS = ("input", "input_order", "output", "output_name", "name", "display_name", "output_node")


def snapshot_core(server: str) -> Path:
    """Write the /object_info entries of CORE_NODE_TYPES as tests/data/comfyui_core_nodes/<version>.json
    (file lists emptied: they depend on the machine)."""
    base = server.rstrip("/")
    with urllib.request.urlopen(base + "/object_info", timeout=60) as response:
        info = json.loads(response.read().decode("utf-8"))
    with urllib.request.urlopen(base + "/system_stats", timeout=60) as response:
        version = json.loads(response.read().decode("utf-8"))["system"]["comfyui_version"]
    snapshot = {}
    for name in sorted(CORE_NODE_TYPES):
        entry = {key: info[name][key] for key in SNAPSHOT_KEYS if key in info[name]}
        for section in entry["input"].values():
            for input_name, spec in section.items():
                if (name, input_name) in FILE_COMBOS:
                    if isinstance(spec[0], list):
                        spec[0] = []
                    elif len(spec) > 1 and "options" in spec[1]:
                        spec[1]["options"] = []
        snapshot[name] = entry
    path = CORE_SNAPSHOTS / f"{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_dump(snapshot), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    parser.add_argument("--snapshot-core", metavar="SERVER",
                        help="refresh the core-node snapshot from a running ComfyUI (e.g. http://127.0.0.1:8188)")
    args = parser.parse_args(argv)
    if args.snapshot_core:
        print(f"wrote {snapshot_core(args.snapshot_core).relative_to(ROOT)}")
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
