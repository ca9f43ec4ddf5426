"""Shared test helpers: a seeded tiny model, random conditioning, a linear stand-in VAE, loaders
for the scripts and for the pack imported the way ComfyUI imports it, and the scaffolding of the
node tests (a models folder in real file layouts, running a node as ComfyUI's executor does).

Imported by test modules as `from helpers import ...` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Iterator

import torch
import torch.nn.functional as F

from vace_core.testing import fixtures
from vace_core.config import WanConfig, architecture
from vace_core.encoding import CONTEXT_CHANNELS, VaceContext
from vace_core.latents import LATENT_CHANNELS, video_frames_for
from vace_core.model import CausalWanModel

NORM_WEIGHT_SUFFIXES = ("norm_q.weight", "norm_k.weight", "norm3.weight")
# A causal Wan DiT small enough for a 1000-latent-frame run in seconds (same structure as the real one).
MICRO = WanConfig(dim=128, ffn_dim=256, num_layers=2, num_heads=1, freq_dim=32, text_dim=32)


def tiny_model(name: str = "tiny-vace", seed: int = 0, modulation_std: float = 0.3,
               bias_std: float = 0.02) -> CausalWanModel:
    """A float32 model of preset `name` with seeded random weights that keep activations O(1).

    Weight matrices and kernels get std 1/sqrt(fan_in): the released model's ~0.02 is that rule at
    width 1536, and at the tiny width of 256 a flat 0.02 would shrink every linear map 3x, leaving
    the text and attention paths to move outputs by ~1e-3, too little to test anything. Biases get
    `bias_std`, norm weights 1 + `bias_std` * noise, and the modulation vectors (which hold the
    residual gates) `modulation_std`.
    """
    model = CausalWanModel(architecture(name))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in sorted(model.named_parameters()):
            if param_name.endswith("modulation"):  # [1, 6 or 2, dim]
                spread = modulation_std
            elif param.ndim >= 2:  # [out, in, ...]: fan_in = everything but the output axis
                spread = 1.0 / math.sqrt(param[0].numel())
            else:
                spread = bias_std
            values = torch.randn(param.shape, generator=generator) * spread
            if param_name.endswith(NORM_WEIGHT_SUFFIXES):
                values += 1.0
            param.copy_(values)
    return model.eval()


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def random_text(seed: int, length: int = 7, text_dim: int = 64) -> torch.Tensor:
    """A stand-in for umT5 conditioning: [1, length, text_dim] (the model pads it to 512)."""
    return randn(1, length, text_dim, seed=seed)


def random_vace_context(ref_frames: int, latent_frames: int, height: int, width: int,
                        seed: int) -> VaceContext:
    """A VaceContext laid out like `encode_vace_context` makes it, with random values: reference
    frames carry their latent in the inactive half and zeros elsewhere; generated frames carry a
    random control signal (all 96 channels), so hints differ from frame to frame."""
    h, w = height // 8, width // 8
    refs = randn(1, LATENT_CHANNELS, ref_frames, h, w, seed=seed)
    ref_part = torch.cat([refs, torch.zeros(1, CONTEXT_CHANNELS - LATENT_CHANNELS, ref_frames, h, w)], dim=1)
    video_part = randn(1, CONTEXT_CHANNELS, latent_frames, h, w, seed=seed + 1)
    return VaceContext(context=torch.cat([ref_part, video_part], dim=2), ref_latents=refs,
                       ref_frames=ref_frames, latent_frames=latent_frames,
                       video_frames=video_frames_for(latent_frames), height=height, width=width)


class LinearFakeVAE:
    """ComfyUI Wan-VAE conventions with trivial maths, recording what it is given.

    encode: pixels [T, H, W, 3] -> [1, 16, (T-1)//4+1, H/8, W/8]: every 4th frame (from 0),
    8x8 mean-pooled, mixed 3 -> 16 channels by a fixed matrix.
    decode: [1, 16, t, h, w] -> [1, 4t-3, 8h, 8w, 3]: video frame j shows channels 0..2 of
    latent frame ceil(j/4), upsampled by repetition.
    """

    def __init__(self, seed: int = 7) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.mix = torch.randn(LATENT_CHANNELS, 3, generator=generator)
        self.decoded: list[torch.Tensor] = []

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        kept = pixels[0::4].permute(0, 3, 1, 2).float()  # [t, 3, H, W]
        pooled = F.avg_pool2d(kept, 8)  # [t, 3, h, w]
        return torch.einsum("lc,tchw->lthw", self.mix, pooled).unsqueeze(0)

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        self.decoded.append(raw.clone())
        t = raw.shape[2]
        source = torch.tensor([-(-j // 4) for j in range(4 * t - 3)])
        frames = raw[0, :3, source]  # [3, 4t-3, h, w]
        frames = frames.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
        return frames.permute(1, 2, 3, 0).unsqueeze(0)


PACK = "longlive_vace_under_test"
ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """Import scripts/<name>.py (e.g. "queue_workflow", "bench/bench") as a module named after its file
    (scripts are not a package; scripts/ and the script's folder go on sys.path, as when one runs, for
    the modules it imports beside it)."""
    path = ROOT / "scripts" / f"{name}.py"
    for folder in (ROOT / "scripts", path.parent):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    if path.stem not in sys.modules:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[path.stem]


def load_pack_standalone(name: str = PACK) -> ModuleType:
    """The repository imported as ComfyUI imports a custom-node pack, under the package name
    `name`, with the standalone host (scripts/pack_loader.py)."""
    return load_script("pack_loader").load_pack(name, standalone=True)


@contextmanager
def standalone_host(models_dir: Path, monkeypatch, pack: str = PACK) -> Iterator[None]:
    """The standalone host of the pack imported as `pack` reading model files from `models_dir`, with
    no model value kept from an earlier test and no Cancel pending, and both cleared again after (the
    autouse fixture of the node test modules)."""
    model_ref = importlib.import_module(f"{pack}.nodes.model_ref")
    monkeypatch.setenv("LONGLIVE_MODELS_DIR", str(models_dir))
    model_ref.clear_cache()
    request_interrupt(False, pack)
    try:
        yield
    finally:
        model_ref.clear_cache()
        request_interrupt(False, pack)


def request_interrupt(value: bool = True, pack: str = PACK) -> None:
    """Set (or clear) the standalone host's interrupt flag, as a user's Cancel sets ComfyUI's."""
    flag = importlib.import_module(f"{pack}.nodes.host.progress").STANDALONE_INTERRUPT
    if value:
        flag.set()
    else:
        flag.clear()


def write_node_models(root: Path, config_name: str = "tiny-vace", other_base: bool = False) -> Path:
    """models/diffusion_models + models/loras under `root`, with one set of tiny weights in real
    layouts: longlive_base.pt, vace_module.safetensors, lora.pt (PEFT) and style.safetensors
    (ComfyUI down/up); with `other_base`, other_base.safetensors holds different base weights (marked causal)."""
    config = architecture(config_name)
    diffusion, loras = root / "diffusion_models", root / "loras"
    diffusion.mkdir(parents=True)
    loras.mkdir()
    state = fixtures.make_state_dict(config, seed=0)
    fixtures.write_longlive_pt(diffusion / "longlive_base.pt", fixtures.main_only(state))
    if other_base:
        fixtures.write_wan_safetensors(diffusion / "other_base.safetensors",
                                       fixtures.main_only(fixtures.make_state_dict(config, seed=9)), causal_ar=True)
    fixtures.write_vace_module(diffusion / "vace_module.safetensors", state)
    fixtures.write_peft_lora(loras / "lora.pt", fixtures.make_lora(config, rank=4, seed=1), wrapped=True)
    fixtures.write_comfy_lora(loras / "style.safetensors", fixtures.make_lora(config, rank=2, seed=2), "down_up")
    return root


def video_latent(width: int, height: int, length: int) -> dict:
    """The LATENT core's EmptyHunyuanLatentVideo makes for this size (batch 1): what gives the sampler
    nodes their video's size."""
    return {"samples": torch.zeros(1, LATENT_CHANNELS, (length - 1) // 4 + 1, height // 8, width // 8)}


def sampler_settings(nodes: dict, **widgets):
    """The LONGLIVE_SETTINGS of a 'LongLive Sampler Settings' node with these widgets, the others at
    their defaults (e.g. `steps="1000,500"`; the rest follows the sampler's preset)."""
    spec = nodes["LongLiveSamplerSettings"].INPUT_TYPES()["required"]
    return run_node(nodes, "LongLiveSamplerSettings", **{**{k: v[1]["default"] for k, v in spec.items()},
                                                          **widgets})[0]


def run_node(nodes: dict, name: str, **inputs):
    """Call a node's function as ComfyUI's executor does (it runs every node under inference mode)."""
    cls = nodes[name]
    with torch.inference_mode():
        return getattr(cls(), cls.FUNCTION)(**inputs)


def assert_same_weights(a: torch.nn.Module | dict, b: torch.nn.Module) -> None:
    """Bit-identical state dicts (`a` may be a state dict already)."""
    sa, sb = a if isinstance(a, dict) else a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def comfyui_for_scripts(needs: str) -> tuple[Path, str, bool]:
    """(checkout, python, found) for the benchmark scripts that run with ComfyUI's python: the first
    checkout in COMFYUI_DIR (':'-separated; default /opt/ComfyUI) that has `needs`, and
    COMFYUI_PYTHON (default /opt/comfy-venv/bin/python)."""
    checkouts = [Path(p) for p in (os.environ.get("COMFYUI_DIR") or "/opt/ComfyUI").split(os.pathsep) if p]
    checkout = next((p for p in checkouts if (p / needs).is_file()), checkouts[0])
    python = os.environ.get("COMFYUI_PYTHON") or "/opt/comfy-venv/bin/python"
    return checkout, python, (checkout / needs).is_file() and Path(python).is_file()
