"""Build a tiny, randomly initialised Wan 2.1 VAE that ComfyUI's VAELoader accepts.

Run this with the ComfyUI python (it imports ``comfy``):

    $COMFYUI_PYTHON tests/integration/make_tiny_wan_vae.py OUT.safetensors [--verify]

The network is ComfyUI's own ``comfy.ldm.wan.vae.WanVAE`` built with the configuration that
``comfy.sd.VAE`` picks for a Wan 2.1 VAE (dim_mult [1, 2, 4, 4], 2 residual blocks, temporal
downsampling [False, True, True], 16 latent channels), only narrower (dim 8 instead of 96), so the
file is a few MB and a 64x64 clip encodes and decodes in about a second on a CPU. ``comfy.sd.VAE``
recognises a Wan 2.1 VAE by ``decoder.middle.0.residual.0.gamma`` and reads the width from
``decoder.head.0.gamma``, so the saved keys are exactly the module's own state-dict names.

ComfyUI's layers skip weight initialisation (``comfy.ops.disable_weight_init``), so every tensor is
written here from a seeded generator: the same seed always gives the same file.

With ``--verify`` the file is loaded back the way VAELoader does it (``comfy.utils.load_torch_file``
then ``comfy.sd.VAE``), a [5, 64, 64, 3] clip is encoded and decoded, and a JSON line with shapes
and timings is printed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time


def _import_comfy(comfyui_dir: str) -> None:
    """Make ``comfy`` importable and force CPU mode before model_management is first imported.

    Without ``args.cpu`` a CUDA build of torch on a machine without a GPU fails while
    ``comfy.model_management`` probes the device at import time.
    """
    if comfyui_dir not in sys.path:
        sys.path.insert(0, comfyui_dir)
    from comfy.cli_args import args

    args.cpu = True


def _default_comfyui_dir() -> str:
    return os.environ.get("COMFYUI_DIR", "/opt/ComfyUI")


# The Wan 2.1 settings comfy.sd.VAE uses; only `dim` differs from the real file (96).
WAN21_VAE_CONFIG = {
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "image_channels": 3,
    "dropout": 0.0,
}


def _fill(name: str, shape: tuple[int, ...], gen):
    """A deterministic value for one state-dict tensor.

    RMS-norm gains sit near 1 (as in a trained VAE), biases near 0, and weights get a fan-in
    scaled normal so activations stay O(1) through the ~60 convolutions instead of blowing up.
    """
    import torch

    if name.endswith("gamma"):
        return 1.0 + 0.05 * torch.randn(shape, generator=gen)
    if name.endswith("bias"):
        return 0.01 * torch.randn(shape, generator=gen)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return torch.randn(shape, generator=gen) / math.sqrt(fan_in)


def build_state_dict(dim: int = 8, seed: int = 0, dtype: str = "fp32") -> dict:
    """Instantiate ComfyUI's WanVAE at width `dim` and return a fully set state dict."""
    import torch
    import comfy.ldm.wan.vae

    model = comfy.ldm.wan.vae.WanVAE(dim=dim, **WAN21_VAE_CONFIG)
    gen = torch.Generator().manual_seed(seed)
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    # Sorted so the values do not depend on module registration order.
    template = model.state_dict()
    return {
        name: _fill(name, tuple(template[name].shape), gen).to(torch_dtype).contiguous()
        for name in sorted(template)
    }


def verify(path: str, frames: int = 5, size: int = 64) -> dict:
    """Load `path` like VAELoader does, encode and decode a clip, and report shapes and seconds."""
    import torch
    import comfy.sd
    import comfy.utils

    t0 = time.perf_counter()
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(path))
    vae.throw_exception_if_invalid()
    t_load = time.perf_counter() - t0

    gen = torch.Generator().manual_seed(1)
    pixels = torch.rand((frames, size, size, 3), generator=gen)  # IMAGE [T,H,W,C] in 0..1
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        t0 = time.perf_counter()
        latents = vae.encode(pixels)  # raw latents [1,16,(T-1)//4+1,H/8,W/8]
        t_encode = time.perf_counter() - t0
        t0 = time.perf_counter()
        decoded = vae.decode(latents)  # [1,4t-3,H,W,3]
        t_decode = time.perf_counter() - t0

    expected_latent = [1, 16, (frames - 1) // 4 + 1, size // 8, size // 8]
    report = {
        "latent_shape": list(latents.shape),
        "decoded_shape": list(decoded.shape),
        "latent_finite": bool(torch.isfinite(latents).all()),
        "latent_std": float(latents.std()),
        "decoded_range": [float(decoded.min()), float(decoded.max())],
        # share of decoded values clamped to 0 or 1: a sanity check that the random weights
        # give a usable signal rather than a saturated image
        "decoded_saturated": float(((decoded <= 0) | (decoded >= 1)).float().mean()),
        "load_s": round(t_load, 3),
        "encode_s": round(t_encode, 3),
        "decode_s": round(t_decode, 3),
    }
    ok = (
        report["latent_shape"] == expected_latent
        and report["decoded_shape"][-4:] == [frames, size, size, 3]
        and report["latent_finite"]
        and bool(torch.isfinite(decoded).all())
    )
    report["ok"] = ok
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output .safetensors path")
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--comfyui-dir", default=_default_comfyui_dir())
    parser.add_argument("--verify", action="store_true", help="load it back and encode/decode a clip")
    opts = parser.parse_args(argv)

    _import_comfy(opts.comfyui_dir)
    from safetensors.torch import save_file

    state = build_state_dict(opts.dim, opts.seed, opts.dtype)
    os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
    save_file(state, opts.out)
    if not opts.verify:
        return 0
    report = verify(opts.out)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
