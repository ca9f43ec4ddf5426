"""The shipped example workflows, checked without a server.

- the committed files are what scripts/make_workflows.py generates from its definitions and our
  nodes' current INPUT_TYPES (so a changed node interface shows up here);
- every UI-format workflow, converted by the independent converter in scripts/queue_workflow.py
  (positional widgets_values -> input names, links -> [node_id, slot]) with the node definitions of
  each tested ComfyUI version, equals its API twin;
- node types exist, links join outputs and inputs of one type, inputs are valid values, and the
  notes name every model file with its folder and download address;
- each video's width, height and length are set on exactly one node, which feeds the samplers;
- the layout opens readable (the editor's fit of the graph into 1600x1000 at >= 0.6), the
  thumbnails can be told apart, the example inputs the workflows load are made by the script.

Interfaces come from our node classes (as ComfyUI's /object_info would show them) and from
tests/data/comfyui_core_nodes/<version>.json, snapshots of each tested ComfyUI's /object_info for
the core nodes the workflows use (the integration tests compare them with the live servers, and
scripts/check_workflows_in_editor.py loads the files in the real editors).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "example_workflows"
CORE_SNAPSHOTS = ROOT / "tests" / "data" / "comfyui_core_nodes"
PACK = "longlive_vace_workflow_test"
EDITOR_ONLY = {"MarkdownNote", "Note"}
TESTED_VERSIONS = ["0.8.0", "0.33.0"]
# loader inputs that name a model file, and the model folder it lives in
MODEL_FILE_INPUTS = {
    ("LongLiveModelLoader", "base_checkpoint"): "diffusion_models",
    ("LongLiveModelLoader", "lora"): "loras",
    ("LongLiveLoraLoader", "lora"): "loras",
    ("LongLiveVaceGraft", "vace_checkpoint"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
}
# combo inputs whose options are the files of a folder (empty in the snapshot)
FILE_INPUTS = set(MODEL_FILE_INPUTS) | {("LoadImage", "image"), ("LoadVideo", "file")}


qw = load_script("queue_workflow")
mw = load_script("make_workflows")
pack = mw.load_pack(PACK)


OURS = {name: mw.object_info_of_class(cls, pack.NODE_DISPLAY_NAME_MAPPINGS[name])
        for name, cls in pack.NODE_CLASS_MAPPINGS.items()}
# the other node packs' nodes (ComfyUI-Distributed), snapshotted from a server that has them
EXTENSION_NODES = {name: entry for extension in mw.EXTENSIONS.values()
                   for name, entry in json.loads(extension.snapshot.read_text()).items()}
OBJECT_INFO_BY_VERSION = {path.stem: {**json.loads(path.read_text()), **EXTENSION_NODES, **OURS}
                          for path in sorted(CORE_SNAPSHOTS.glob("*.json"))}
OBJECT_INFO = OBJECT_INFO_BY_VERSION["0.8.0"]  # the oldest tested version
FILES = {f.name: f for f in mw.workflow_files()}
NAMES = sorted(FILES)  # the API names


def ui(name: str) -> dict:
    return json.loads(FILES[name].ui.read_text())


def api(name: str) -> dict:
    return json.loads(FILES[name].api.read_text())


def input_spec(class_type: str, name: str) -> tuple[list | str, dict]:
    definition = OBJECT_INFO[class_type]["input"]
    for section in ("required", "optional"):
        if name in definition.get(section, {}):
            spec = definition[section][name]
            return spec[0], (spec[1] if len(spec) > 1 else {})
    raise KeyError(f"{class_type} has no input {name}")


def notes_text(workflow: dict) -> str:
    return "\n".join(str(v) for n in workflow["nodes"] if n["type"] in EDITOR_ONLY for v in n["widgets_values"])


# ---------------------------------------------------------------------------------------------
# the files


def test_eight_workflows_each_in_both_formats_with_a_thumbnail():
    assert NAMES == sorted(["longlive_vace_r2v", "longlive_vace_r2v_multi_ref", "longlive_t2v",
                            "longlive_prompt_switch", "longlive_vace_v2v", "longlive_i2v", "longlive_continue",
                            "longlive_distributed"])
    assert sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json")) == NAMES
    # the template browser lists every *.json of the folder, by file name: one readable name each
    assert sorted(p.name for p in WORKFLOWS.glob("*.json")) == sorted(f.ui.name for f in FILES.values())
    assert sorted(p.name for p in WORKFLOWS.glob("*.jpg")) == sorted(f.thumbnail.name for f in FILES.values())
    for files in FILES.values():
        assert files.title.startswith("LongLive ") and not set("_-") & set(files.title), files.title
        assert files.description.endswith(".") and len(files.description) < 90, files.description


def test_committed_files_match_the_generator():
    """Regenerating from the definitions and the nodes' current INPUT_TYPES changes nothing."""
    stale = mw.stale_files()
    assert not stale, f"stale workflow files {stale}: run python3 scripts/make_workflows.py"


def test_a_snapshot_for_every_tested_comfyui():
    assert sorted(OBJECT_INFO_BY_VERSION) == sorted(TESTED_VERSIONS)
    for version, info in OBJECT_INFO_BY_VERSION.items():
        assert set(mw.CORE_NODE_TYPES) <= set(info), version


def test_generator_core_interfaces_agree_with_every_snapshot():
    """The interfaces make_workflows derives (positions of widget values, sockets, outputs) are
    those of every tested ComfyUI."""
    interfaces = mw.core_interfaces()
    for version, info in OBJECT_INFO_BY_VERSION.items():
        for name, interface in interfaces.items():
            entry = info[name]
            order = entry["input_order"].get("required", []) + entry["input_order"].get("optional", [])
            assert [p.name for p in interface.inputs] == order, (version, name)
            assert [n for n in qw.widget_slots(entry) if n] == [p.name for p in interface.inputs if p.widget], \
                (version, name)
            assert {p.name for p in interface.inputs if p.optional} == set(entry["input_order"].get("optional", []))
            assert [t for _, t in interface.outputs] == entry["output"][:len(interface.outputs)], (version, name)


def test_generator_refuses_a_core_node_that_changed_between_versions(monkeypatch):
    """Core SaveVideo changed its widgets between 0.8.0 and 0.33.0: the generator will not put it in
    a workflow. Checked on a copy of the snapshots with SaveVideo as each version reported it."""
    snapshots = mw.core_snapshots()
    save_video = {
        "0.8.0": {"input": {"required": {"video": ["VIDEO", {}], "filename_prefix": ["STRING", {}],
                                         "format": ["COMBO", {"options": ["auto", "mp4"]}],
                                         "codec": ["COMBO", {"options": ["auto", "h264"]}]}},
                  "input_order": {"required": ["video", "filename_prefix", "format", "codec"]},
                  "output": [], "output_name": [], "display_name": "Save Video", "output_node": True},
        "0.33.0": {"input": {"required": {"video": ["VIDEO", {}], "filename_prefix": ["STRING", {}],
                                          "format": ["COMFY_DYNAMICCOMBO_V3", {}]},
                             "optional": {"codec": ["COMBO", {"options": ["auto"]}]}},
                   "input_order": {"required": ["video", "filename_prefix", "format"], "optional": ["codec"]},
                   "output": ["VIDEO"], "output_name": ["video"], "display_name": "Save Video", "output_node": True},
    }
    changed = {version: {**entries, "SaveVideo": save_video[version]} for version, entries in snapshots.items()}
    monkeypatch.setattr(mw, "CORE_NODE_TYPES", (*mw.CORE_NODE_TYPES, "SaveVideo"))
    with pytest.raises(ValueError, match="SaveVideo differs between ComfyUI 0.8.0 and 0.33.0"):
        mw.core_interfaces(changed)
    unchanged = {version: {**entries, "SaveVideo": save_video["0.8.0"]} for version, entries in snapshots.items()}
    assert [p.name for p in mw.core_interfaces(unchanged)["SaveVideo"].inputs][-1] == "codec"


def test_workflows_use_no_core_node_outside_the_checked_list():
    """Our nodes, the checked core nodes, and the nodes of the extensions a workflow says it needs."""
    for name in NAMES:
        allowed = {*OURS, *mw.CORE_NODE_TYPES, *(t for e in FILES[name].needs for t in e.node_types)}
        for node in api(name).values():
            assert node["class_type"] in allowed, (name, node["class_type"])
    assert [e.name for e in FILES["longlive_distributed"].needs] == ["ComfyUI-Distributed"]
    assert all(not FILES[name].needs for name in NAMES if name != "longlive_distributed")


def test_the_extension_snapshot_is_the_extensions_source():
    """The snapshot's inputs and outputs are what ComfyUI-Distributed 1.4.4 declares (its source,
    when the shared copy is beside the repository; the integration test compares the live servers)."""
    source = ROOT.parent / "shared" / "comfyui-extensions" / "ComfyUI-Distributed-1.4.4" / "nodes"
    if not source.is_dir():
        pytest.skip(f"no ComfyUI-Distributed source at {source}")
    text = (source / "utilities.py").read_text() + (source / "collector.py").read_text()
    seed, collector = EXTENSION_NODES["DistributedSeed"], EXTENSION_NODES["DistributedCollector"]
    assert seed["input_order"]["required"] == ["seed"] and seed["output"] == ["INT"]
    assert collector["input_order"] == {"required": ["images", "load_balance"], "optional": ["audio"],
                                        "hidden": ["multi_job_id", "is_worker", "master_url", "enabled_worker_ids",
                                                   "worker_batch_size", "worker_id", "pass_through",
                                                   "delegate_only"]}
    assert collector["output"] == ["IMAGE", "AUDIO"]
    assert 'RETURN_TYPES = ("IMAGE", "AUDIO")' in text and '"load_balance": (' in text and '"seed": ("INT"' in text


def test_the_distributed_workflow_is_wired_as_the_extension_expects():
    """Distributed Seed feeds the sampler's seed (each participant its own); the decoded frames go
    through the Distributed Collector to Save Videos, which cuts them into whole videos of the
    sampler's length; load_balance is off (every participant makes a video). In the UI file the
    seed is a widget fed by a link, as the editor stores one."""
    graph = api("longlive_distributed")
    by_type = {n["class_type"]: i for i, n in graph.items()}
    sampler, decode = graph[by_type["LongLiveSampler"]], graph[by_type["LongLiveDecode"]]
    collector, save = graph[by_type["DistributedCollector"]], graph[by_type["LongLiveSaveFrames"]]
    assert sampler["inputs"]["seed"] == [by_type["DistributedSeed"], 0]
    assert decode["inputs"]["samples"] == [by_type["LongLiveSampler"], 0]
    assert collector["inputs"] == {"images": [by_type["LongLiveDecode"], 0], "load_balance": False}
    assert save["inputs"]["images"] == [by_type["DistributedCollector"], 0]
    assert save["inputs"]["samples"] == [by_type["LongLiveSampler"], 0]
    node = next(n for n in ui("longlive_distributed")["nodes"] if n["type"] == "LongLiveSampler")
    seed_input = [i for i in node["inputs"] if i["name"] == "seed"]
    assert seed_input == [{"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": seed_input[0]["link"]}]
    assert node["widgets_values"][:2] == [0, "fixed"]  # the widget keeps its default, the link overrides it
    note = notes_text(ui("longlive_distributed"))
    for needed in ("[ComfyUI-Distributed](https://github.com/robertvoy/ComfyUI-Distributed)", "same version",
                   "model files", "**Distributed**", "*load_balance*", "seed + *k*"):
        assert needed in note, needed


def test_new_optional_sampler_inputs_reach_the_workflows(monkeypatch):
    """A widget a node gains (an optional sampler input, say) appears in every regenerated
    workflow that uses the node, with its default, in both formats."""
    sampler = mw.load_pack().NODE_CLASS_MAPPINGS["LongLiveSampler"]  # the generator's own import
    original = sampler.INPUT_TYPES

    def with_new_input():
        spec = original()
        return {**spec, "optional": {**spec.get("optional", {}),
                                     "brand_new": ("FLOAT", {"default": 0.25, "tooltip": "test"})}}

    monkeypatch.setattr(sampler, "INPUT_TYPES", classmethod(lambda cls: with_new_input()))
    files = mw.render_all()
    info = {**OBJECT_INFO, "LongLiveSampler": mw.object_info_of_class(sampler, "LongLive Sampler")}
    for name in NAMES:
        graph = json.loads(files[FILES[name].api])
        samplers = [n for n in graph.values() if n["class_type"] == "LongLiveSampler"]
        assert samplers and all(n["inputs"]["brand_new"] == 0.25 for n in samplers), name
        ui_doc = json.loads(files[FILES[name].ui])
        assert qw.ui_to_api(ui_doc, info) == graph, name


# ---------------------------------------------------------------------------------------------
# UI format == API format


@pytest.mark.parametrize("version", TESTED_VERSIONS)
@pytest.mark.parametrize("name", NAMES)
def test_ui_converts_to_its_api_twin(name, version):
    assert qw.ui_to_api(ui(name), OBJECT_INFO_BY_VERSION[version]) == api(name)


@pytest.mark.parametrize("name", NAMES)
def test_every_node_has_an_explicit_title_shared_by_both_formats(name):
    """Without a stored title each editor shows (and queues) its own display name, which changed
    between versions for some core nodes."""
    twin = api(name)
    for node in ui(name)["nodes"]:
        assert node.get("title"), (name, node["id"])
        if node["type"] not in EDITOR_ONLY:
            assert twin[str(node["id"])]["_meta"]["title"] == node["title"]


@pytest.mark.parametrize("name", NAMES)
def test_ui_document_structure(name):
    workflow = ui(name)
    assert workflow["version"] == 0.4
    ids = [n["id"] for n in workflow["nodes"]]
    assert len(ids) == len(set(ids)) and workflow["last_node_id"] >= max(ids)
    link_ids = [link[0] for link in workflow["links"]]
    assert len(link_ids) == len(set(link_ids)) and workflow["last_link_id"] >= max(link_ids)
    assert sorted(n["order"] for n in workflow["nodes"]) == list(range(len(ids)))
    for node in workflow["nodes"]:
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
                    "widgets_values"):
            assert key in node, (node["id"], key)
        if node["type"] in EDITOR_ONLY:
            continue
        assert node["properties"]["Node name for S&R"] == node["type"]
        assert len(node["widgets_values"]) == len(qw.widget_slots(OBJECT_INFO[node["type"]])), node["type"]


@pytest.mark.parametrize("name", NAMES)
def test_links_agree_with_nodes_and_types(name):
    workflow = ui(name)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, type_ in workflow["links"]:
        source, target = nodes[src], nodes[dst]
        assert link_id in source["outputs"][src_slot]["links"]
        assert target["inputs"][dst_slot]["link"] == link_id
        assert OBJECT_INFO[source["type"]]["output"][src_slot] == type_
        assert source["outputs"][src_slot]["type"] == type_ == target["inputs"][dst_slot]["type"]
        declared, _ = input_spec(target["type"], target["inputs"][dst_slot]["name"])
        assert declared == type_, (dst, target["inputs"][dst_slot]["name"])
    linked = {link[0] for link in workflow["links"]}
    for node in workflow["nodes"]:
        assert {i["link"] for i in node["inputs"] if i["link"] is not None} <= linked
        for output in node["outputs"]:
            assert set(output["links"] or []) <= linked


# ---------------------------------------------------------------------------------------------
# API format: what the server will validate


@pytest.mark.parametrize("name", NAMES)
def test_api_nodes_exist_and_inputs_are_valid(name):
    graph = api(name)
    for node_id, node in graph.items():
        class_type = node["class_type"]
        assert class_type in OBJECT_INFO, f"node {node_id}: unknown type {class_type}"
        info = OBJECT_INFO[class_type]
        known = set(info["input_order"].get("required", [])) | set(info["input_order"].get("optional", []))
        assert set(node["inputs"]) <= known, (node_id, set(node["inputs"]) - known)
        assert set(info["input_order"].get("required", [])) <= set(node["inputs"]), node_id
        for input_name, value in node["inputs"].items():
            kind, options = input_spec(class_type, input_name)
            if isinstance(value, list):  # a link: [source id, output slot] of the declared type
                source = graph[value[0]]
                assert OBJECT_INFO[source["class_type"]]["output"][value[1]] == kind, (node_id, input_name)
                continue
            if isinstance(kind, list) or kind == "COMBO":
                choices = kind if isinstance(kind, list) else options.get("options", [])
                if (class_type, input_name) not in FILE_INPUTS:
                    assert value in choices, (node_id, input_name, value)
            elif kind in ("INT", "FLOAT"):
                assert options.get("min", value) <= value <= options.get("max", value), (node_id, input_name)
                assert isinstance(value, int) or kind == "FLOAT"
            elif kind == "STRING":
                assert isinstance(value, str)
            elif kind == "BOOLEAN":
                assert isinstance(value, bool)
            else:
                pytest.fail(f"node {node_id}: socket input {input_name} ({kind}) holds a value")


@pytest.mark.parametrize("name", NAMES)
def test_notes_name_every_model_file_with_folder_and_address(name):
    workflow, text = api(name), notes_text(ui(name))
    files = {(node["inputs"][key], folder) for node in workflow.values()
             for (class_type, key), folder in MODEL_FILE_INPUTS.items()
             if node["class_type"] == class_type and key in node["inputs"]}
    assert files, "a workflow without model files?"
    for filename, folder in files:
        assert f"models/{folder}/" in text, (filename, folder)
        assert re.search(rf"\[{re.escape(filename)}\]\(https://[^)\s]+/{re.escape(filename)}\)", text), filename


SIZE_INPUTS = ("width", "height", "length")


@pytest.mark.parametrize("name", NAMES)
def test_each_video_size_is_set_on_exactly_one_node(name):
    """The video's width, height and length live on one node (core's empty video latent, or VACE
    Encode References), whose LATENT the sampler reads; no other node holds a width, height or
    length (Continue Video's length is the frames it adds)."""
    graph = api(name)
    holders = [i for i, n in graph.items() if any(k in n["inputs"] for k in SIZE_INPUTS)
               and n["class_type"] != "LongLiveContinue"]
    assert len(holders) == 1, holders
    holder = graph[holders[0]]
    assert holder["class_type"] in qw.SIZE_NODES
    assert all(isinstance(holder["inputs"][k], int) for k in SIZE_INPUTS)
    samplers = [n for n in graph.values() if n["class_type"] in ("LongLiveSampler", "LongLiveSampleToVideo")]
    assert samplers and all(n["inputs"]["latent"][0] == holders[0] for n in samplers)
    uses_vace = holder["class_type"] == "LongLiveVaceEncode"
    assert uses_vace == any("vace_context" in n["inputs"] for n in samplers)
    if uses_vace:  # the VACE context and the size come from the same node
        assert all(n["inputs"]["latent"] == [holders[0], 1] and n["inputs"]["vace_context"] == [holders[0], 0]
                   for n in samplers)
    inputs = holder["inputs"]
    assert inputs["width"] % 16 == 0 and inputs["height"] % 16 == 0 and inputs["length"] % 4 == 1
    for node in graph.values():
        if node["class_type"] == "LongLivePromptSchedule":
            assert 0 < node["inputs"]["start_frame"] < inputs["length"]
    assert uses_vace == any(n["class_type"] == "LongLiveVaceGraft" for n in graph.values())


@pytest.mark.parametrize("name", NAMES)
def test_the_graph_opens_readable_and_tidy(name):
    """The editor's fit of the nodes into 1600x1000 (the template browser's rule, stored as the
    view for 1.35) is 0.6 or more with a margin; no two nodes overlap; every group holds its nodes
    and the note. scripts/check_workflows_in_editor.py measures the real editors."""
    workflow = ui(name)
    scale = workflow["extra"]["ds"]["scale"]
    assert scale >= 0.7, scale
    rects = [(n["pos"][0], n["pos"][1] - mw.TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in workflow["nodes"]]
    for a in range(len(rects)):
        for b in range(a + 1, len(rects)):
            ra, rb = rects[a], rects[b]
            assert ra[2] <= rb[0] or rb[2] <= ra[0] or ra[3] <= rb[1] or rb[3] <= ra[1], (a, b)
    groups = [g["bounding"] for g in workflow["groups"]]
    assert len(groups) >= 3
    for node, rect in zip(workflow["nodes"], rects):
        if node["type"] in EDITOR_ONLY:
            continue
        assert any(x <= rect[0] and y <= rect[1] and rect[2] <= x + w and rect[3] <= y + h
                   for x, y, w, h in groups), node["title"]
    notes = [n for n in workflow["nodes"] if n["type"] in EDITOR_ONLY]
    assert len(notes) == 1 and notes[0]["size"][1] >= mw.note_height(notes[0]["widgets_values"][0])


@pytest.mark.parametrize("name", NAMES)
def test_every_sampler_that_can_steer_has_its_clip_and_the_note_says_how(name):
    """Every node that takes a clip has the CLIP that encodes its positive prompt connected, so it can
    be steered as it runs; the note says how to steer and hold; the seed is stored fixed (so Run
    again is free and a steered run replays), and the note says so."""
    graph, workflow = api(name), ui(name)
    steerable = [(i, n) for i, n in graph.items() if "clip" in OBJECT_INFO[n["class_type"]]["input"].get("optional", {})
                 and n["class_type"] != "LongLiveSteeringSchedule"]
    assert steerable, "no sampler"
    for node_id, node in steerable:
        positive = graph[node["inputs"]["positive"][0]]
        assert positive["class_type"] == "CLIPTextEncode" and node["inputs"].get("clip") == positive["inputs"]["clip"], \
            (node_id, node["inputs"].get("clip"))
    note = notes_text(workflow)
    assert "**Steer**" in note and "**Hold**" in note and "Resume" in note and "*fixed*" in note
    for node in workflow["nodes"]:
        interface = mw.all_interfaces()[node["type"]] if node["type"] not in EDITOR_ONLY else None
        if interface is not None and any(p.control for p in interface.inputs):
            slot = [p.name for p in interface.inputs if p.widget for _ in range(1 + p.control)].index("seed") + 1
            assert node["widgets_values"][slot] == "fixed", node["title"]


def test_the_live_nodes_are_laid_out_with_room_for_the_panel_a_run_adds():
    """The panel web/longlive.js adds is PANEL_HEIGHT high; the layout gives the live nodes at least
    that much below their widgets (scripts/check_workflows_in_editor.py measures the real editors
    after a run)."""
    panel = int(re.search(r"const PANEL_HEIGHT = (\d+);", (ROOT / "web" / "longlive.js").read_text()).group(1))
    assert mw.LIVE_PANEL_HEIGHT >= panel
    for name in NAMES:
        live = [n for n in ui(name)["nodes"] if n["type"] in mw.LIVE_NODES]
        assert live and all(n["size"][1] >= panel + 100 for n in live), name  # widgets, then the panel


def test_thumbnails_can_be_told_apart():
    """Each thumbnail is a 640x480 picture, and any two differ in a large share of their pixels
    (not just a caption)."""
    from PIL import Image

    pictures = {name: np.asarray(Image.open(files.thumbnail).convert("L"), dtype=np.float32)
                for name, files in FILES.items()}
    for picture in pictures.values():
        assert picture.shape == (480, 640)
    names = sorted(pictures)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            differing = (np.abs(pictures[names[a]] - pictures[names[b]]) > 24).mean()
            assert differing > 0.04, (names[a], names[b], differing)


def test_thumbnails_are_what_the_script_draws():
    """The committed thumbnails are make_thumbnails.py's pictures (within JPEG and font rounding)."""
    from PIL import Image

    thumbnails = load_script("make_thumbnails")
    for files in FILES.values():
        committed = np.asarray(Image.open(files.thumbnail).convert("RGB"), dtype=np.float32)
        drawn = np.asarray(thumbnails.draw_card(files), dtype=np.float32)
        assert np.abs(committed - drawn).mean() < 3.0, files.name


def test_example_inputs_are_the_files_the_workflows_load(tmp_path):
    """scripts/make_example_inputs.py writes every picture and video the workflows name, of the
    stated sizes, and never overwrites a file that is there."""
    import av
    from PIL import Image

    examples = load_script("make_example_inputs")
    named = {n["inputs"][key] for name in NAMES for n in api(name).values()
             for key in ("image", "file") if n["class_type"] in ("LoadImage", "LoadVideo") and key in n["inputs"]}
    assert named == set(examples.EXAMPLES)
    mine = tmp_path / examples.START
    mine.write_bytes(b"the user's own picture")
    written, kept = examples.write_examples(tmp_path)
    assert kept == [mine] and mine.read_bytes() == b"the user's own picture"
    assert sorted(p.name for p in written) == sorted(set(examples.EXAMPLES) - {examples.START})
    assert Image.open(tmp_path / examples.REFERENCE).size == (512, 512)
    assert Image.open(tmp_path / examples.SCENE).size == (640, 448)
    with av.open(str(tmp_path / examples.CONTROL)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == examples.CONTROL_FRAMES and frames[0].shape == (240, 416, 3)
    assert 0 < np.mean(frames[0]) < 40  # white lines on black
    assert np.abs(frames[0].astype(int) - frames[12].astype(int)).max() > 100  # the figure moves
    assert sum(p.stat().st_size for p in written) < 100_000  # small enough to make in a second


def test_every_workflow_saves_a_video():
    for name in NAMES:
        types = {n["class_type"] for n in api(name).values()}
        assert types & {"LongLiveSaveVideo", "LongLiveSampleToVideo", "LongLiveSaveFrames"}, name


# ---------------------------------------------------------------------------------------------
# queue_workflow.py: the converter's rules on small hand-written graphs


def test_widget_slots_skip_editor_only_values():
    assert qw.widget_slots(OBJECT_INFO["LoadImage"]) == ["image", None]  # + the upload button
    sampler = qw.widget_slots(OBJECT_INFO["LongLiveSampler"])
    assert sampler == ["seed", None, "vace_scale", "preset"]  # + control_after_generate after the seed
    ksampler_like = {"input": {"required": {"noise_seed": ["INT", {}], "cfg": ["FLOAT", {}],
                                            "image": ["IMAGE", {}], "n": ["INT", {"forceInput": True}]}}}
    assert qw.widget_slots(ksampler_like) == ["noise_seed", None, "cfg"]


def _ui_node(node_id, type_, inputs=(), widgets=(), mode=0, title=None):
    node = {"id": node_id, "type": type_, "mode": mode, "inputs": list(inputs), "outputs": [],
            "widgets_values": list(widgets)}
    if title:
        node["title"] = title
    return node


def test_ui_to_api_handles_bypass_mute_reroute_and_primitives():
    info = {
        "Src": {"input": {"required": {"v": ["INT", {}]}}, "output": ["IMAGE"], "display_name": "Source"},
        "Filter": {"input": {"required": {"image": ["IMAGE"], "strength": ["FLOAT", {}]}}, "output": ["IMAGE"]},
        "Sink": {"input": {"required": {"images": ["IMAGE"], "size": ["INT", {}]},
                           "optional": {"extra": ["IMAGE"]}}, "output": []},
    }
    workflow = {"nodes": [
        _ui_node(1, "Src", widgets=[5]),
        _ui_node(2, "Filter", [{"name": "image", "type": "IMAGE", "link": 1}], [0.5], mode=4),  # bypassed
        _ui_node(3, "Reroute", [{"name": "", "type": "*", "link": 2}]),
        _ui_node(4, "Src", widgets=[6], mode=2),  # muted
        _ui_node(5, "PrimitiveNode", widgets=[64, "fixed"]),
        _ui_node(6, "Sink", [{"name": "images", "type": "IMAGE", "link": 3},
                             {"name": "extra", "type": "IMAGE", "link": 4, "shape": 7},
                             {"name": "size", "type": "INT", "widget": {"name": "size"}, "link": 5}], [64],
                 title="Out"),
        _ui_node(7, "MarkdownNote", widgets=["# notes"]),
    ], "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 6, 0, "IMAGE"],
                 [4, 4, 0, 6, 1, "IMAGE"], [5, 5, 0, 6, 2, "INT"]]}
    assert qw.ui_to_api(workflow, info) == {
        "1": {"inputs": {"v": 5}, "class_type": "Src", "_meta": {"title": "Source"}},
        "6": {"inputs": {"images": ["1", 0], "size": 64}, "class_type": "Sink", "_meta": {"title": "Out"}},
    }


def test_ui_to_api_rejects_unknown_types_and_subgraphs():
    with pytest.raises(qw.ClientError, match="no node type 'Mystery'"):
        qw.ui_to_api({"nodes": [_ui_node(1, "Mystery")], "links": []}, {})
    with pytest.raises(qw.ClientError, match="subgraphs"):
        qw.ui_to_api({"nodes": [], "links": [], "definitions": {"subgraphs": [{}]}}, {})


def test_link_objects_of_the_newer_schema_are_read():
    info = {"A": {"input": {}, "output": ["X"]}, "B": {"input": {"required": {"x": ["X"]}}, "output": []}}
    workflow = {"nodes": [_ui_node(1, "A"), _ui_node(2, "B", [{"name": "x", "type": "X", "link": 9}])],
                "links": [{"id": 9, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0,
                           "type": "X"}]}
    assert qw.ui_to_api(workflow, info)["2"]["inputs"] == {"x": ["1", 0]}


# ---------------------------------------------------------------------------------------------
# queue_workflow.py: command-line overrides


def test_overrides_on_the_multi_reference_workflow():
    graph = api("longlive_vace_r2v_multi_ref")
    encode = next(i for i, n in graph.items() if n["class_type"] == "LongLiveVaceEncode")
    sampler = next(i for i, n in graph.items() if n["class_type"] == "LongLiveSampler")
    prompt = qw.prompt_nodes(graph)[0]
    changes = qw.apply_overrides(graph, qw.Overrides(
        prompts=["a dog"], images=["a.png", "b.png"], seed=7, frames=17, width=64, height=48,
        sets=[f'{prompt}.text="second"', f"{sampler}.vace_scale=0.5"]))
    untouched = api("longlive_vace_r2v_multi_ref")
    assert [n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage"] == ["a.png", "b.png"]
    assert graph[sampler]["inputs"]["seed"] == 7
    # the size: only the node that holds it
    inputs = graph[encode]["inputs"]
    assert (inputs["length"], inputs["width"], inputs["height"]) == (17, 64, 48)
    changed = {(line.split()[1], line.split(")")[1].split(".")[1].split(" ")[0]) for line in changes}
    assert {node for node, name in changed if name in SIZE_INPUTS} == {encode}
    assert graph[prompt]["inputs"]["text"] == "second"
    assert graph[sampler]["inputs"]["vace_scale"] == 0.5
    assert graph[prompt]["inputs"]["clip"] == untouched[prompt]["inputs"]["clip"]  # links stay links


def test_size_overrides_leave_the_continuation_alone():
    graph = api("longlive_continue")
    qw.apply_overrides(graph, qw.Overrides(frames=41, width=64, height=64))
    size = next(n["inputs"] for n in graph.values() if n["class_type"] == "EmptyHunyuanLatentVideo")
    assert (size["length"], size["width"], size["height"]) == (41, 64, 64)
    assert next(n["inputs"]["length"] for n in graph.values() if n["class_type"] == "LongLiveContinue") == 80


@pytest.mark.parametrize("frames, nearest", [(30, "29 or 33"), (80, "77 or 81"), (2, "1 or 5"), (0, "1 or 5")])
def test_frames_that_are_not_4k_plus_1_are_refused_with_the_nearest_lengths(frames, nearest):
    graph = api("longlive_t2v")
    with pytest.raises(qw.ClientError, match=rf"--frames {frames}: a video is 4k\+1 frames long .*: use {nearest}$"):
        qw.apply_overrides(graph, qw.Overrides(frames=frames))
    assert graph == api("longlive_t2v")  # nothing changed
    with pytest.raises(qw.ClientError, match="--width 100: must be a positive multiple of 16: use 96 or 112"):
        qw.apply_overrides(graph, qw.Overrides(width=100))
    for good in (1, 5, 29, 81, 161):
        qw.apply_overrides(api("longlive_t2v"), qw.Overrides(frames=good))


def test_cli_refuses_30_frames_before_asking_the_server(tmp_path):
    """The client exits 1 with one line naming 29 and 33, without a server (none runs here)."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "queue_workflow.py"),
                           str(FILES["longlive_t2v"].api), "--frames", "30", "--server", "http://127.0.0.1:9",
                           "--dry-run"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --frames 30: a video is 4k+1 frames long (the Wan VAE turns the first frame and then every 4 "
        "frames into one latent frame): use 29 or 33")


def test_size_overrides_need_a_node_that_holds_the_size():
    graph = {"1": {"class_type": "LongLiveSampler", "inputs": {"seed": 1}, "_meta": {"title": "x"}}}
    with pytest.raises(qw.ClientError, match="--frames/--width: the workflow has no node that holds the video's size"):
        qw.apply_overrides(graph, qw.Overrides(frames=81, width=832))


def test_prompts_fill_prompt_nodes_in_id_order():
    original = api("longlive_prompt_switch")
    graph = api("longlive_prompt_switch")
    qw.apply_overrides(graph, qw.Overrides(prompts=["one", "two"]))
    first, second, third = qw.prompt_nodes(graph)
    assert int(first) < int(second) < int(third)
    assert (graph[first]["inputs"]["text"], graph[second]["inputs"]["text"]) == ("one", "two")
    assert graph[third]["inputs"] == original[third]["inputs"]


def test_override_errors_are_explained():
    with pytest.raises(qw.ClientError, match="only 1 node"):
        qw.apply_overrides(api("longlive_vace_r2v"), qw.Overrides(images=["a.png", "b.png"]))
    with pytest.raises(qw.ClientError, match="no node '99'"):
        qw.apply_overrides(api("longlive_vace_r2v"), qw.Overrides(sets=["99.seed=1"]))
    with pytest.raises(qw.ClientError, match="NODE_ID.INPUT=VALUE"):
        qw.parse_set("seed=1")
    assert qw.parse_set("3.text=hello world") == ("3", "text", "hello world")
    assert qw.parse_set("3.scale=0.25") == ("3", "scale", 0.25)


def test_rejection_message_names_node_and_input():
    graph = api("longlive_vace_r2v")
    graft = next(i for i, n in graph.items() if n["class_type"] == "LongLiveVaceGraft")
    answer = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                        "details": "", "extra_info": {}},
              "node_errors": {graft: {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                                   "details": "vace_checkpoint: 'x' not in []", "extra_info": {}}],
                                      "dependent_outputs": [], "class_type": "LongLiveVaceGraft"}}}
    text = qw.describe_rejection(answer, graph)
    assert "Prompt outputs failed validation" in text
    assert f"node {graft} (LongLiveVaceGraft, 'Load VACE Weights (graft)'): Value not in list: vace_checkpoint" in text
