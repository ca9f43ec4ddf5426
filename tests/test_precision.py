"""The weight / compute dtype and fp8-matmul decision: the library (`load_longlive`) and the node path
(Load LongLive Model through the standalone host) must decide the same for the same choice, device
and file.

GPUs are simulated: torch.cuda reports the capability and bf16 support of the GPU named, and the
library's weights stay on the CPU (this machine has none); everything else runs as for a CUDA device.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import PACK, load_pack_standalone

pack = load_pack_standalone()
model_ref = importlib.import_module(f"{PACK}.nodes.host.model_ref")
ckpt = importlib.import_module(f"{PACK}.vace_core.checkpoints")
fx = importlib.import_module(f"{PACK}.vace_core.testing.fixtures")
config_mod = importlib.import_module(f"{PACK}.vace_core.config")

E4M3 = torch.float8_e4m3fn
# name -> (compute capability, native bf16)
GPUS = {"sm75": ((7, 5), False), "sm80": ((8, 0), True), "sm90": ((9, 0), True)}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """diffusion_models/ with the tiny weights as a scaled-fp8 file, and as one whose marker asks for
    matmuls in full precision (two elements, as ComfyUI reads it)."""
    root = tmp_path_factory.mktemp("precision_models")
    diffusion = root / "diffusion_models"
    diffusion.mkdir()
    state = fx.main_only(fx.make_state_dict(config_mod.architecture("tiny"), seed=0))
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


def simulate_gpu(monkeypatch, name: str) -> None:
    capability, native_bf16 = GPUS[name]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16)
    monkeypatch.setattr(ckpt, "_converted", lambda tensor, dtype, device: tensor.to(dtype=dtype, copy=True))


def library(file: str, device: str, **choice):
    return ckpt.load_longlive(Path(model_ref.model_path("diffusion_models", file)), device=device, **choice)


def node_path(file: str, dtype: str):
    return model_ref.load_model(model_ref.FileRef.resolve("diffusion_models", file), dtype).shared.network


@pytest.mark.xfail(strict=True, reason="today the node path builds its fp8 layers before reading the file")
def test_a_file_asking_for_full_precision_matmuls_gets_them_in_the_library_and_the_node_path(monkeypatch):
    simulate_gpu(monkeypatch, "sm90")  # a GPU with fp8 tensor cores
    ours = library("full_precision.safetensors", "cuda", dtype=E4M3, fp8_matmul=True).blocks[0].ffn[0]
    theirs = node_path("full_precision.safetensors", "fp8_e4m3fn_fast").blocks[0].ffn[0]
    assert (ours.fp8_matmul, theirs.fp8_matmul) == (False, False)


@pytest.mark.xfail(strict=True, reason="today the library computes fp8 weights in bf16 on every GPU")
def test_fp8_weights_compute_in_fp16_where_bf16_is_not_native_in_the_library_and_the_node_path(monkeypatch):
    simulate_gpu(monkeypatch, "sm75")
    ours = library("scaled_fp8.safetensors", "cuda", dtype=E4M3)
    theirs = node_path("scaled_fp8.safetensors", "fp8_e4m3fn")
    assert (ours.compute_dtype, theirs.compute_dtype) == (torch.float16, torch.float16)
