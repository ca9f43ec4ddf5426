"""The base-checkpoint guard: which files the loader takes as a causal base (vace_core/base_kind.py)
and what Load LongLive Model does with the others.

Every file is a tiny checkpoint in a real layout (vace_core.testing.fixtures): the trainer pickles LongLive,
Self-Forcing and CausVid write, ComfyUI's causal_ar safetensors, and the bidirectional layouts
Wan2.1 and Wan2.1-VACE ship in (original names, ComfyUI-repackaged, diffusers).
"""

from __future__ import annotations

import importlib
import logging

import pytest

from helpers import PACK, load_pack_standalone, load_script, run_node

from vace_core.testing import fixtures as fx
from vace_core.base_kind import base_kind
from vace_core.checkpoints import CheckpointError
from vace_core.config import architecture

TINY = architecture("tiny-vace")
STATE = fx.make_state_dict(TINY, seed=0)
BASE = fx.main_only(STATE)


def write(kind: str, path):
    """One base file per layout under test."""
    writers = {
        "longlive": lambda: fx.write_longlive_pt(path, BASE, "generator"),
        "longlive_ema_fsdp": lambda: fx.write_longlive_pt(path, BASE, "generator_ema", fsdp=True),
        "self_forcing": lambda: fx.write_trainer_pt(path, {"generator": BASE, "critic": BASE, "generator_ema": BASE}),
        "causvid": lambda: fx.write_trainer_pt(path, {"generator": BASE, "critic": BASE}),
        "comfy_causal_ar": lambda: fx.write_wan_safetensors(path, BASE, "model.diffusion_model.", causal_ar=True),
        "wan_t2v": lambda: fx.write_wan_safetensors(path, BASE),
        "wan_t2v_repackaged": lambda: fx.write_wan_safetensors(path, BASE, "model.diffusion_model."),
        "wan_t2v_diffusers": lambda: fx.write_diffusers_safetensors(path, BASE),
        "wan_vace": lambda: fx.write_wan_safetensors(path, STATE),
        "wan_vace_repackaged": lambda: fx.write_wan_safetensors(path, STATE, "model.diffusion_model."),
        "wan_vace_diffusers": lambda: fx.write_diffusers_safetensors(path, STATE),
    }
    return writers[kind]()


CAUSAL = ["longlive", "longlive_ema_fsdp", "self_forcing", "causvid", "comfy_causal_ar"]
BIDIRECTIONAL = ["wan_t2v", "wan_t2v_repackaged", "wan_t2v_diffusers"]
VACE = ["wan_vace", "wan_vace_repackaged", "wan_vace_diffusers"]


def suffix(kind: str) -> str:
    return ".pt" if kind in ("longlive", "longlive_ema_fsdp", "self_forcing", "causvid") else ".safetensors"


@pytest.mark.parametrize("kind", CAUSAL + BIDIRECTIONAL + VACE)
def test_the_rule_on_every_layout(tmp_path, kind):
    found = base_kind(write(kind, tmp_path / f"{kind}{suffix(kind)}"))
    expected = "causal" if kind in CAUSAL else "vace" if kind in VACE else "bidirectional"
    assert found.kind == expected, found
    assert found.is_causal == (expected == "causal")
    if expected == "vace":
        assert found.what == f"a Wan2.1-VACE checkpoint ({TINY.num_vace_blocks} VACE blocks)"


def test_reasons_say_what_was_seen(tmp_path):
    assert base_kind(write("self_forcing", tmp_path / "sf.pt")).what == \
        "a trainer checkpoint (entries: generator, generator_ema)"
    assert base_kind(write("comfy_causal_ar", tmp_path / "ar.safetensors")).what == \
        "a causal checkpoint (causal_ar metadata)"
    bare = tmp_path / "bare_trainer_keys.pt"  # a state dict saved without entries, trainer key names kept
    import torch
    torch.save({f"model.{k}": v for k, v in BASE.items()}, bare)
    assert base_kind(bare).what == "a trainer checkpoint (keys named 'model.*')"
    plain = tmp_path / "plain_wan.pt"  # Wan weights pickled in their own names: bidirectional
    torch.save(dict(BASE), plain)
    assert base_kind(plain).kind == "bidirectional"


def test_a_safetensors_file_is_judged_from_its_header_alone(tmp_path):
    """Cheap: the tensor data is never read. A file cut right after its header (the data missing)
    is judged the same, while loading it fails."""
    path = write("wan_vace", tmp_path / "vace.safetensors")
    data = path.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:header_end + 16])
    assert base_kind(cut).kind == "vace"
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        from vace_core.checkpoints import load_longlive
        load_longlive(cut, dtype="fp32")


@pytest.mark.parametrize("kind", ["longlive", "longlive_ema_fsdp", "self_forcing", "causvid"])
def test_a_pt_converted_to_safetensors_stays_causal(tmp_path, kind):
    """scripts/convert_to_safetensors.py, the way out for a PyTorch < 2.6, writes the state dict the
    loader takes with the trainer's key names: the converted base passes as the .pt did."""
    source = write(kind, tmp_path / f"{kind}.pt")
    converted = tmp_path / f"{kind}.safetensors"
    load_script("convert_to_safetensors").convert(source, converted)
    found = base_kind(converted)
    assert found.kind == "causal" and found.what == "a trainer checkpoint's weights (keys named 'model.*')", found


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    junk = tmp_path / "notes.safetensors"
    junk.write_text("hello")
    with pytest.raises(CheckpointError, match="neither a safetensors file nor a PyTorch checkpoint"):
        base_kind(junk)


# ---------------------------------------------------------------------------------------------
# Load LongLive Model


@pytest.fixture
def nodes(tmp_path, monkeypatch):
    diffusion = tmp_path / "diffusion_models"
    diffusion.mkdir()
    (tmp_path / "loras").mkdir()
    monkeypatch.setenv("LONGLIVE_MODELS_DIR", str(tmp_path))
    pack = load_pack_standalone()
    importlib.import_module(f"{PACK}.nodes.model_ref").clear_cache()
    for kind in CAUSAL + ["wan_t2v", "wan_vace_repackaged"]:
        write(kind, diffusion / f"{kind}{suffix(kind)}")
    return pack.NODE_CLASS_MAPPINGS


def load(nodes, name: str, **extra):
    return run_node(nodes, "LongLiveModelLoader", base_checkpoint=name, lora="none", lora_strength=1.0,
                    dtype="fp32", **extra)[0]


@pytest.mark.parametrize("kind", CAUSAL)
def test_causal_checkpoints_load_without_a_message(nodes, kind, caplog):
    with caplog.at_level(logging.WARNING):
        model = load(nodes, f"{kind}{suffix(kind)}")
    assert model.facts.text_dim == TINY.text_dim
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_vace_checkpoint_as_the_base_is_refused_naming_the_file(nodes):
    with pytest.raises(ValueError) as refused:
        load(nodes, "wan_vace_repackaged.safetensors")
    message = str(refused.value)
    assert message.startswith(f"base_checkpoint 'wan_vace_repackaged.safetensors' is a Wan2.1-VACE checkpoint "
                              f"({TINY.num_vace_blocks} VACE blocks): a bidirectional model")
    assert "graft this file with 'Load VACE Weights (graft)'" in message
    assert "set non_causal_base to 'load anyway'" in message


def test_a_bidirectional_wan_checkpoint_is_refused_naming_the_file(nodes):
    with pytest.raises(ValueError, match=r"base_checkpoint 'wan_t2v.safetensors' is a plain Wan2.1 checkpoint without "
                                         r"causal metadata \(such as Wan2.1-T2V-1.3B\): a bidirectional model, "):
        load(nodes, "wan_t2v.safetensors")


@pytest.mark.parametrize("name, has_vace", [("wan_t2v.safetensors", False), ("wan_vace_repackaged.safetensors", True)])
def test_load_anyway_loads_it_with_one_warning(nodes, name, has_vace, caplog):
    with caplog.at_level(logging.WARNING, logger="longlive_vace"):
        model = load(nodes, name, non_causal_base="load anyway")
    assert model.has_vace == has_vace
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and name in warnings[0] and "loading it anyway" in warnings[0]
