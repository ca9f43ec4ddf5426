"""The weight / compute dtype and fp8-matmul decision (vace_core.precision), made once: its rules, the
one table of dtype names, torch's report of a device, and the same decision in the library
(`load_longlive`) and in the node path (Load LongLive Model through the standalone host) for every
loader choice x device kind x file kind.

GPUs are simulated: torch.cuda reports the compute capability and bf16 support of the GPU named, and
the library's weights stay on the CPU (this machine has none); everything else runs as for a CUDA
device. The expected precisions are written out below from the rules, not computed by the module.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import PACK, load_pack_standalone

pack = load_pack_standalone()
model_ref = importlib.import_module(f"{PACK}.nodes.model_ref")
model_files = importlib.import_module(f"{PACK}.nodes.model_files")
pack_host = importlib.import_module(f"{PACK}.nodes.host")
ckpt = importlib.import_module(f"{PACK}.vace_core.checkpoints")
fx = importlib.import_module(f"{PACK}.vace_core.testing.fixtures")
config_mod = importlib.import_module(f"{PACK}.vace_core.config")
precision = importlib.import_module(f"{PACK}.vace_core.precision")

E4M3, BF16, FP16, FP32 = torch.float8_e4m3fn, torch.bfloat16, torch.float16, torch.float32
# device kind -> (CUDA compute capability, native bf16); None: the CPU
DEVICES = {"cpu": None, "sm75": ((7, 5), False), "sm80": ((8, 0), True), "sm90": ((9, 0), True)}
AUTO_COMPUTE = {"cpu": FP32, "sm75": FP16, "sm80": BF16, "sm90": BF16}  # the rule for "auto"
FP8_MATMUL_DEVICES = {"sm90"}  # compute capability 8.9 and up
FILES = ("plain.safetensors", "scaled_fp8.safetensors", "full_precision.safetensors")
# the loader's choices as a library user writes them
LIBRARY_CALLS = {"auto": dict(dtype="auto"), "bf16": dict(dtype=BF16), "fp16": dict(dtype=FP16),
                 "fp32": dict(dtype=FP32), "fp8_e4m3fn": dict(dtype=E4M3),
                 "fp8_e4m3fn_fast": dict(dtype=E4M3, fp8_matmul=True)}
MICRO = config_mod.WanConfig(dim=128, ffn_dim=256, num_layers=1, num_heads=1, freq_dim=32, text_dim=32)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """diffusion_models/ with one set of small weights as a plain bf16 file, a scaled-fp8 file, and
    a scaled-fp8 file whose marker asks for matmuls in full precision (two elements, as ComfyUI reads it)."""
    root = tmp_path_factory.mktemp("precision_models")
    diffusion = root / "diffusion_models"
    diffusion.mkdir()
    state = fx.make_state_dict(MICRO, seed=0)
    fx.write_wan_safetensors(diffusion / "plain.safetensors", {k: v.to(BF16) for k, v in state.items()})
    fx.write_fp8_safetensors(diffusion / "scaled_fp8.safetensors", state, "scaled_fp8")
    path = fx.write_fp8_safetensors(diffusion / "full_precision.safetensors", state, "scaled_fp8")
    raw = load_file(str(path))
    raw["model.diffusion_model.scaled_fp8"] = torch.zeros(2, dtype=E4M3)
    save_file(raw, str(path))
    return root


@pytest.fixture(autouse=True)
def standalone(models_dir, monkeypatch):
    monkeypatch.setenv("LONGLIVE_MODELS_DIR", str(models_dir))
    model_ref.clear_cache()
    yield
    model_ref.clear_cache()


def simulate(monkeypatch, device: str) -> str:
    """Make torch report `device`; returns the device a library user passes for it."""
    gpu = DEVICES[device]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu is not None)
    if gpu is None:
        return "cpu"
    capability, native_bf16 = gpu
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16)
    monkeypatch.setattr(ckpt, "_converted", lambda tensor, dtype, device: tensor.to(dtype=dtype, copy=True))
    return "cuda"


def library(file: str, device: str, **choice):
    return ckpt.load_longlive(Path(pack_host.model_path("diffusion_models", file)), device=device, **choice)


def node_path(file: str, dtype: str):
    return model_ref.load_model(model_files.FileRef.resolve("diffusion_models", file), dtype).shared.network


def made(network) -> tuple:
    """(block weight storage, compute dtype, fp8 matmuls, layer class) of a loaded network."""
    layer = network.blocks[0].ffn[0]
    return layer.weight.dtype, network.compute_dtype, getattr(layer, "fp8_matmul", False), type(layer)


# ---------------------------------------------------------------------------------------------
# the decision, the same in the library and in the node path


def test_a_file_asking_for_full_precision_matmuls_gets_them_in_the_library_and_the_node_path(monkeypatch):
    """The node path built its fp8 layers before it read the file (fp8 matmuls in ComfyUI, not in the
    library; failed before the decision was made once)."""
    device = simulate(monkeypatch, "sm90")  # a GPU with fp8 tensor cores
    ours = library("full_precision.safetensors", device, dtype=E4M3, fp8_matmul=True).blocks[0].ffn[0]
    theirs = node_path("full_precision.safetensors", "fp8_e4m3fn_fast").blocks[0].ffn[0]
    assert (ours.fp8_matmul, theirs.fp8_matmul) == (False, False)


def test_fp8_weights_compute_in_fp16_where_bf16_is_not_native_in_the_library_and_the_node_path(monkeypatch):
    """The library computed fp8 weights in bf16 on every GPU, the nodes in fp16 where bf16 is not
    native (failed before the decision was made once)."""
    device = simulate(monkeypatch, "sm75")
    ours = library("scaled_fp8.safetensors", device, dtype=E4M3)
    theirs = node_path("scaled_fp8.safetensors", "fp8_e4m3fn")
    assert (ours.compute_dtype, theirs.compute_dtype) == (FP16, FP16)


@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("choice", LIBRARY_CALLS)
def test_the_library_and_the_node_path_decide_the_same(monkeypatch, choice, device, file):
    user_device = simulate(monkeypatch, device)
    ours, theirs = made(library(file, user_device, **LIBRARY_CALLS[choice])), made(node_path(file, choice))
    weights = {"auto": AUTO_COMPUTE[device], "bf16": BF16, "fp16": FP16, "fp32": FP32}.get(choice, E4M3)
    compute = AUTO_COMPUTE[device] if weights == E4M3 else weights
    fp8_matmul = choice == "fp8_e4m3fn_fast" and device in FP8_MATMUL_DEVICES and file != "full_precision.safetensors"
    assert ours[:3] == theirs[:3] == (weights, compute, fp8_matmul)
    assert ours[3] is theirs[3]  # the very same layer class


# ---------------------------------------------------------------------------------------------
# the rules


def caps(kind: str = "cuda", native_bf16: bool = True, fp8_matmul: bool = True, host_dtype=None):
    return precision.DeviceCapabilities(kind, native_bf16, fp8_matmul, host_dtype)


def test_a_host_choice_decides_auto():
    """ComfyUI's choice for diffusion models (its --fp32-unet, say) is what auto stands for."""
    chosen = precision.choose_precision("auto", caps(host_dtype=FP32))
    assert (chosen.weights, chosen.compute) == (FP32, FP32)
    fp8 = precision.choose_precision("fp8_e4m3fn", caps(host_dtype=FP16))
    assert (fp8.weights, fp8.compute, fp8.casts) == (E4M3, FP16, True)


def test_other_gpus_compute_in_fp16():
    assert precision.auto_dtype(caps("mps", native_bf16=False)) == FP16


def test_a_chosen_compute_dtype_wins_and_cannot_be_fp8():
    chosen = precision.choose_precision(E4M3, caps(), compute_dtype="fp32")
    assert (chosen.weights, chosen.compute) == (E4M3, FP32)
    assert precision.choose_precision(FP32, caps(), compute_dtype=BF16).casts
    with pytest.raises(ValueError, match="fp8 is a storage dtype"):
        precision.choose_precision(E4M3, caps(), compute_dtype=E4M3)


@pytest.mark.parametrize("dtype", [torch.float8_e5m2, BF16])
def test_fp8_matmuls_need_e4m3_weights(dtype):
    assert not precision.choose_precision(dtype, caps(), fp8_matmul=True).fp8_matmul


def test_declined_fp8_matmuls_say_why():
    on_cpu = precision.choose_precision("fp8_e4m3fn_fast", caps("cpu", False, False))
    assert not on_cpu.fp8_matmul and "cpu device has no fp8 matmuls" in on_cpu.note
    declined = precision.choose_precision("fp8_e4m3fn_fast", caps(), full_precision_matmul=True)
    assert not declined.fp8_matmul and "asks for matmuls in full precision" in declined.note
    assert precision.choose_precision("fp8_e4m3fn_fast", caps()).note is None


@pytest.mark.parametrize("capability, native, fp8", [((7, 5), False, False), ((8, 0), True, False),
                                                      ((8, 9), True, True), ((9, 0), True, True)])
def test_torch_reports_a_gpu(monkeypatch, capability, native, fp8):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
    assert precision.capabilities_of("cuda") == caps("cuda", native, fp8)
    assert precision.capabilities_of("cpu") == caps("cpu", False, False)


# ---------------------------------------------------------------------------------------------
# the table of names


def test_the_loader_offers_the_pack_names_in_order():
    assert model_ref.DTYPES == ("auto", "bf16", "fp16", "fp32", "fp8_e4m3fn", "fp8_e4m3fn_fast")


@pytest.mark.parametrize("names, dtype", [(("bf16", "bfloat16", "BF16"), BF16), (("fp16", "float16", "half"), FP16),
                                          (("fp32", "float32", "float"), FP32),
                                          (("fp8_e4m3fn", "float8_e4m3fn"), E4M3),
                                          (("fp8_e5m2", "float8_e5m2"), torch.float8_e5m2)])
def test_every_name_of_a_dtype_resolves_to_it_and_the_short_name_comes_back(names, dtype):
    assert [precision.resolve_dtype(name) for name in names] == [dtype] * len(names)
    assert precision.dtype_name(dtype) == names[0]


def test_an_unknown_name_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match="unknown dtype 'fp4'.*fp8_e4m3fn_fast"):
        precision.resolve_dtype("fp4")
    with pytest.raises(ValueError, match="depends on the device"):
        precision.resolve_dtype("auto")
