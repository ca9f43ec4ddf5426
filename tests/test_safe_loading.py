"""Safe on old PyTorch: before 2.6, torch.load(weights_only=True) can run code from a file
(CVE-2025-32434), so .pt checkpoints are refused there with one message naming the risk and the
ways out; safetensors load everywhere; scripts/convert_to_safetensors.py converts a .pt file to a
safetensors file that loads as the same model. The old PyTorch is simulated (torch.__version__).
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from helpers import load_script
from vace_core.testing import fixtures
from vace_core.checkpoint_files import torch_load_is_safe
from vace_core.checkpoints import CheckpointError, apply_lora, graft_vace, load_longlive
from vace_core.config import architecture

converter = load_script("convert_to_safetensors")
TINY = architecture("tiny-vace")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("safe")
    state = fixtures.make_state_dict(TINY, seed=0)
    critic = fixtures.make_state_dict(TINY, seed=3)
    return {
        "trainer": fixtures.write_trainer_pt(folder / "trainer.pt", {"generator": fixtures.main_only(state),
                                                                      "critic": fixtures.main_only(critic)}),
        "base": fixtures.write_longlive_pt(folder / "longlive_base.pt", fixtures.main_only(state)),
        "lora": fixtures.write_peft_lora(folder / "lora.pt", fixtures.make_lora(TINY, rank=4, seed=1), wrapped=True),
        "safetensors": fixtures.write_wan_safetensors(folder / "base.safetensors", fixtures.main_only(state)),
        "vace": fixtures.write_vace_module(folder / "vace.safetensors", state),
    }


@pytest.fixture
def old_torch(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.5.1+cu124")


@pytest.mark.parametrize("version, safe", [("2.5.1+cu124", False), ("2.4.0", False), ("1.13.1", False),
                                           ("2.6.0", True), ("2.13.0+cpu", True), ("3.0.0a0", True)])
def test_the_version_rule(monkeypatch, version, safe):
    monkeypatch.setattr(torch, "__version__", version)
    assert torch_load_is_safe() is safe


def test_a_pt_checkpoint_is_refused_on_old_torch_with_the_risk_and_the_ways_out(files, old_torch):
    with pytest.raises(CheckpointError) as error:
        load_longlive(files["base"], dtype=torch.float32)
    message = str(error.value)
    for part in (str(files["base"]), "2.5.1+cu124", "CVE-2025-32434", "weights_only=True",
                 "upgrade PyTorch to 2.6 or newer", "scripts/convert_to_safetensors.py", "not ComfyUI's",
                 "safetensors files load with every PyTorch"):
        assert part in message, part


def test_a_pt_lora_is_refused_too(files, old_torch):
    model = load_longlive(files["safetensors"], dtype=torch.float32)
    with pytest.raises(CheckpointError, match="CVE-2025-32434"):
        apply_lora(model, files["lora"])


def test_safetensors_load_on_old_torch(files, old_torch):
    model = graft_vace(load_longlive(files["safetensors"], dtype=torch.float32), files["vace"])
    assert model.has_vace


def test_the_converted_file_has_the_same_keys_and_tensors_and_loads_as_the_same_model(files, tmp_path):
    target = tmp_path / "trainer.safetensors"
    assert converter.main([str(files["trainer"]), "--out", str(target)]) == 0
    source = torch.load(files["trainer"], weights_only=True)["generator"]  # the loader's pick: no EMA here
    converted = load_file(str(target))
    assert converted.keys() == source.keys()
    assert all(torch.equal(converted[k], source[k]) and converted[k].dtype == source[k].dtype for k in source)
    with safe_open(str(target), "pt") as handle:
        assert handle.metadata() == {"converted_from": "trainer.pt", "entry": "auto"}
    ours, theirs = load_longlive(target, dtype=torch.float32), load_longlive(files["trainer"], dtype=torch.float32)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())


def test_a_named_entry_and_a_lora_convert(files, tmp_path):
    assert converter.main([str(files["trainer"]), "--out", str(tmp_path / "critic.safetensors"),
                           "--entry", "critic"]) == 0
    critic = torch.load(files["trainer"], weights_only=True)["critic"]
    assert all(torch.equal(load_file(str(tmp_path / "critic.safetensors"))[k], v) for k, v in critic.items())
    assert converter.main([str(files["lora"]), "--out", str(tmp_path / "lora.safetensors")]) == 0
    base = load_longlive(files["safetensors"], dtype=torch.float32)
    with_pt = apply_lora(load_longlive(files["safetensors"], dtype=torch.float32), files["lora"])
    with_st = apply_lora(base, tmp_path / "lora.safetensors")
    assert all(torch.equal(v, with_pt.state_dict()[k]) for k, v in with_st.state_dict().items())


def test_the_default_output_sits_beside_and_nothing_is_overwritten(files, tmp_path, capsys):
    source = tmp_path / "longlive_base.pt"
    source.write_bytes(files["base"].read_bytes())
    assert converter.main([str(source)]) == 0
    target = tmp_path / "longlive_base.safetensors"
    written = target.read_bytes()
    assert converter.main([str(source)]) == 1
    assert "exists; it is not overwritten" in capsys.readouterr().err
    assert target.read_bytes() == written


def test_the_converter_itself_refuses_to_run_on_old_torch(files, tmp_path, old_torch, capsys):
    assert converter.main([str(files["base"]), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "PyTorch 2.6 or newer" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
