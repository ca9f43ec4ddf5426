"""The shipped workflows and the tiny stand-ins of the files they name (the `tiny_server` fixture of
conftest.py writes them into a server; test_workflows_e2e.py runs the workflows).

Real weights cannot be downloaded here, so each model file a workflow names is written as a tiny
checkpoint in the real format under that very name (vace_core.testing.fixtures: the LongLive trainer
pickle, a PEFT LoRA, a ComfyUI-repackaged VACE checkpoint; the tiny Wan VAE of the harness as the VAE),
and each input file as the example inputs the README's command makes (scripts/make_example_inputs.py).
"""
from __future__ import annotations

import json
from pathlib import Path

from comfy_harness import TINY_VAE_NAME, ComfyClient
from helpers import load_script

from vace_core.testing import fixtures as fx
from vace_core.config import architecture

TINY = architecture("tiny-vace")

mw = load_script("make_workflows")
examples = load_script("make_example_inputs")
FILES = {f.name: f for f in mw.workflow_files()}
# the workflows that run on this pack alone (one needing another node pack is run by its own test:
# test_distributed.py)
API_FILES = sorted(f.api for f in FILES.values() if not f.needs)


def _named(kind: str, key: str) -> set[str]:
    names = set()
    for path in API_FILES:
        for node in json.loads(path.read_text()).values():
            if node["class_type"] == kind and isinstance(node["inputs"].get(key), str):
                names.add(node["inputs"][key])
    return names


def add_workflow_files(server: ComfyClient, work: Path) -> None:
    """Give `server` every model and input file the workflows name, written under `work` first."""
    state = fx.make_state_dict(TINY, seed=0)
    for name in _named("LongLiveModelLoader", "base_checkpoint"):
        server.add_model("diffusion_models", fx.write_longlive_pt(work / name, fx.main_only(state)))
    for name in _named("LongLiveModelLoader", "lora"):
        server.add_model("loras", fx.write_peft_lora(work / name, fx.make_lora(TINY, rank=4, seed=1)))
    for name in _named("LongLiveVaceGraft", "vace_checkpoint"):
        server.add_model("diffusion_models", fx.write_wan_safetensors(work / name, state, prefix="model.diffusion_model."))
    for name in _named("VAELoader", "vae_name"):
        server.add_model("vae", server.models_dir("vae") / TINY_VAE_NAME, name)
    # the example inputs, as after the README's command: every size unlike the frame
    written, _ = examples.write_examples(work / "input", sorted(_named("LoadImage", "image") | _named("LoadVideo", "file")))
    for path in written:
        server.add_input(path)
