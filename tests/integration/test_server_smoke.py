"""A real ComfyUI starts with our pack and the test pack, registers the nodes the team contract
names, lists the tiny VAE, serves our example workflows, and runs a core-node graph end to end.

Tests that need our nodes FAIL (not skip) while the nodes are missing from /object_info, and show
the import section of the server log so the cause is visible.
"""
from __future__ import annotations

import json
import re
import urllib.parse

import pytest
from PIL import Image

from comfy_harness import PACK_DIR_NAME, REPO_ROOT, TEST_PACK_DIR_NAME

# INPUT_TYPES order (required, then optional) and outputs from the team contract. UI-format
# workflows store widget values by position, so the order is part of the interface.
OUR_NODES = {
    "LongLiveModelLoader": (["base_checkpoint", "lora", "lora_strength", "dtype"],
                            ["entry", "compile", "non_causal_base"],
                            ["LONGLIVE_MODEL"]),
    "LongLiveLoraLoader": (["model", "lora", "strength"], [], ["LONGLIVE_MODEL"]),
    "LongLiveVaceGraft": (["model", "vace_checkpoint"], [], ["LONGLIVE_MODEL"]),
    "LongLiveVaceEncode": (["vae", "width", "height", "length", "reference_fit"],
                           ["reference_images", "more_reference_images", "control_video", "control_masks", "batch_size"],
                           ["VACE_CONTEXT", "LATENT"]),
    "LongLivePromptSchedule": (["conditioning", "start_frame"], ["previous"], ["LONGLIVE_PROMPTS"]),
    "LongLiveSampler": (["model", "positive", "latent", "seed", "vace_scale", "preset"],
                        ["vace_context", "prompt_schedule", "start_images", "vae", "settings", "clip"], ["LATENT"]),
    "LongLiveSteeringSchedule": (["clip", "steering"], ["previous"], ["LONGLIVE_PROMPTS"]),
    "LongLiveSamplerSettings": (["chunk_frames", "window_frames", "sink_frames", "steps", "shift", "recache",
                                 "reference_mode", "vace_attention", "hint_chunks", "hints_in_clean_pass",
                                 "vace_scale_at_end", "vace_block_scales"], [], ["LONGLIVE_SETTINGS"]),
    "LongLiveDecode": (["samples", "vae"], [], ["IMAGE"]),
}
CATEGORY = "LongLive/VACE"


def _import_report(client) -> str:
    """The 'Import times for custom nodes' block and any traceback lines of the server log."""
    log = client.log_path.read_text(errors="replace")
    start = log.find("Import times for custom nodes")
    block = log[start:start + 2000] if start >= 0 else "(no custom-node import report in the log)"
    tracebacks = re.findall(r"Traceback \(most recent call last\):.*?(?=\n\S|\Z)", log, re.S)
    return block + ("\n\n" + "\n\n".join(tracebacks[-3:]) if tracebacks else "")


def require_nodes(client, names) -> dict:
    """object_info entries for `names`; fails the test (never skips) when any is missing."""
    info = client.get_object_info()
    missing = [name for name in names if name not in info]
    if missing:
        pytest.fail(f"nodes missing from /object_info: {missing}\n{_import_report(client)}")
    return {name: info[name] for name in names}


def test_custom_nodes_import_without_failure(comfy_server):
    log = comfy_server.log_path.read_text(errors="replace")
    assert "IMPORT FAILED" not in log, _import_report(comfy_server)
    for folder in (PACK_DIR_NAME, TEST_PACK_DIR_NAME):
        assert re.search(r"seconds: .*custom_nodes/" + re.escape(folder), log), _import_report(comfy_server)


def test_test_pack_node_registered(comfy_server):
    node = comfy_server.get_object_info("LongLiveTestConditioning")["LongLiveTestConditioning"]
    assert node["input_order"]["required"] == ["text", "dim"]
    assert node["output"] == ["CONDITIONING"]


def test_our_nodes_registered(comfy_server):
    require_nodes(comfy_server, OUR_NODES)


@pytest.mark.parametrize("name", sorted(OUR_NODES))
def test_our_node_interface_matches_contract(comfy_server, name):
    node = require_nodes(comfy_server, [name])[name]
    required, optional, outputs = OUR_NODES[name]
    assert node["input_order"].get("required", []) == required
    assert node["input_order"].get("optional", []) == optional
    assert node["output"] == outputs
    assert node["category"] == CATEGORY


def test_sampler_seed_has_control_after_generate(comfy_server):
    node = require_nodes(comfy_server, ["LongLiveSampler"])["LongLiveSampler"]
    assert node["input"]["required"]["seed"][1].get("control_after_generate") is True


def test_tiny_vae_listed_by_vae_loader(comfy_server):
    options = comfy_server.get_object_info("VAELoader")["VAELoader"]["input"]["required"]["vae_name"][0]
    assert comfy_server.tiny_vae_name in options


def test_example_workflows_served(comfy_server):
    """GET /api/workflow_templates lists every example_workflows/*.json under the pack's folder name
    (ComfyUI 0.33 prefers that folder name) and serves each file as committed."""
    shipped = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
    assert len(shipped) >= 5
    listed = comfy_server.get_json("/api/workflow_templates").get(PACK_DIR_NAME, [])
    assert sorted(listed) == sorted(p.stem for p in shipped)
    for path in shipped:
        served = comfy_server.get_json(
            f"/api/workflow_templates/{PACK_DIR_NAME}/" + urllib.parse.quote(path.name))
        assert served == json.loads(path.read_text())
    log = comfy_server.log_path.read_text(errors="replace")
    assert "consider renaming it to 'example_workflows'" not in log


def test_core_graph_runs_with_tiny_vae_and_test_conditioning(comfy_server, tmp_path):
    """LoadImage -> 5 frames -> VAEEncode -> VAEDecode -> SaveAnimatedWEBP, plus the fake text
    encoder into PreviewAny: proves the server executes graphs and the client reads results."""
    Image.new("RGB", (64, 64), (200, 80, 40)).save(tmp_path / "ref.png")
    image_name = comfy_server.add_input(tmp_path / "ref.png")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 5}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": comfy_server.tiny_vae_name}},
        "4": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["3", 0]}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["3", 0]}},
        "6": {"class_type": "SaveAnimatedWEBP",
              "inputs": {"images": ["5", 0], "filename_prefix": "smoke", "fps": 16.0,
                         "lossless": False, "quality": 80, "method": "default"}},
        "7": {"class_type": "LongLiveTestConditioning", "inputs": {"text": "a red fox", "dim": 8}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}},
    }
    entry = comfy_server.run(graph, timeout=120)
    files = comfy_server.output_files(entry)
    assert len(files) == 1 and files[0].suffix == ".webp" and files[0].is_file()
    with Image.open(files[0]) as webp:
        assert webp.n_frames == 5  # 2 latent frames decode to 4*2-3 frames
        assert webp.size == (64, 64)
    assert entry["outputs"]["8"]["text"][0].startswith("[[tensor(")


def test_core_empty_video_latent_has_the_shape_the_sampler_reads(comfy_server):
    """EmptyHunyuanLatentVideo, the workflows' 'Video size' node, gives [B, 16, (length-1)//4+1,
    H/8, W/8] on this ComfyUI, with the inputs the workflows set."""
    node = comfy_server.get_object_info("EmptyHunyuanLatentVideo")["EmptyHunyuanLatentVideo"]
    assert node["input_order"]["required"] == ["width", "height", "length", "batch_size"]
    assert node["output"] == ["LATENT"]
    graph = {"1": {"class_type": "EmptyHunyuanLatentVideo",
                   "inputs": {"width": 96, "height": 64, "length": 29, "batch_size": 1}},
             "2": {"class_type": "LongLiveTestLatentShape", "inputs": {"latent": ["1", 0]}}}
    entry = comfy_server.run(graph, timeout=60)
    assert entry["outputs"]["2"]["shape"] == [[1, 16, (29 - 1) // 4 + 1, 64 // 8, 96 // 8]]
