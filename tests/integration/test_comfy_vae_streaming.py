"""Streaming decode with ComfyUI's own Wan 2.1 VAE equals its whole-video decode.

The checks need `comfy`, so they run in a subprocess with ComfyUI's python: this file is also that
subprocess's script (`python test_comfy_vae_streaming.py --child OUT_DIR`), which prints one JSON
report. It builds ComfyUI's `comfy.ldm.wan.vae.WanVAE` small (dim 8, dim_mult [1, 2, 4, 4], 2
residual blocks, temporal downsampling [False, True, True], z_dim 16) with every tensor set
explicitly (ComfyUI's layers skip initialisation), then compares, for several chunk splits:

- the network: `WanFeatMapDecoder` (feat_map kept across calls) vs `WanVAE.decode`;
- the wrapper `comfy.sd.VAE` (built from the same state dict, as VAELoader does): the host's
  streaming decoder vs `VAE.decode`;
- the "Save Video (streaming decode)" node writing into ComfyUI's output folder.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
SPLITS = [[1] * 8, [3, 3, 2], [1, 3, 3, 1], [2, 6], [8]]
LATENT_FRAMES = 8
TOLERANCE = 1e-4
CHILD_PACK = "longlive_vace_comfy_child"


# ---------------------------------------------------------------------------------------------
# the test (dev python)


def test_streaming_decode_matches_comfyui_wan_vae(tmp_path):
    from comfy_harness import run_comfy_python

    done = run_comfy_python([str(Path(__file__).resolve()), "--child", str(tmp_path)], timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))
    for split, error in report["module_errors"].items():
        assert error < TOLERANCE, f"WanVAE network, split {split}: max error {error}"
    for split, error in report["wrapper_errors"].items():
        assert error < TOLERANCE, f"comfy.sd.VAE, split {split}: max error {error}"
    assert report["decoder_class"] == "ComfyWanStreamingDecoder"
    assert report["whole_frames"] == 4 * LATENT_FRAMES - 3
    assert report["state_matters"] > 1e-3  # a fresh decoder on a later chunk differs: the state is real
    saved = report["saved"]
    assert saved["ui"]["images"] == [{"filename": "LongLive_00001_.mp4", "subfolder": "", "type": "output"}]
    assert saved["second"] == "LongLive_00002_.mp4"
    assert saved["frames"] == 4 * (LATENT_FRAMES - 1) - 3  # one reference frame dropped
    assert (saved["width"], saved["height"]) == (32, 32)


# ---------------------------------------------------------------------------------------------
# the child (ComfyUI's python)


def _import_comfy() -> None:
    comfyui_dir = os.environ.get("COMFYUI_DIR", "/opt/ComfyUI")
    sys.path.insert(0, comfyui_dir)
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management probes the device
    import torch

    torch.set_num_threads(1)  # tiny convolutions: threads only add contention on a shared CI machine


def _tiny_wan_state(seed: int = 0) -> dict:
    """Every tensor of a dim-8 Wan 2.1 VAE, set from a seeded generator (RMS gains near 1, small
    biases, fan-in scaled weights so activations stay O(1) through the stacked convolutions)."""
    import torch
    import comfy.ldm.wan.vae

    model = comfy.ldm.wan.vae.WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                     temperal_downsample=[False, True, True], image_channels=3, dropout=0.0)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, template in sorted(model.state_dict().items()):
        shape = tuple(template.shape)
        values = torch.randn(shape, generator=generator)
        if name.endswith("gamma"):
            state[name] = 1.0 + 0.05 * values
        elif name.endswith("bias"):
            state[name] = 0.02 * values
        else:
            state[name] = values * 0.7 / math.sqrt(math.prod(shape[1:]))
    return state


def _load_pack():
    import importlib
    import importlib.util

    spec = importlib.util.spec_from_file_location(CHILD_PACK, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[CHILD_PACK] = module
    spec.loader.exec_module(module)
    return (importlib.import_module(f"{CHILD_PACK}.nodes.host"),
            importlib.import_module(f"{CHILD_PACK}.nodes.vae_stream"),
            importlib.import_module(f"{CHILD_PACK}.nodes.video"))


def _chunks(decode, latents, split):
    import torch

    outs, start = [], 0
    for size in split:
        outs.append(decode(latents[:, :, start:start + size]))
        start += size
    return torch.cat(outs, dim=-4 if outs[0].ndim == 4 else 2)


def child(out_dir: str) -> dict:
    _import_comfy()
    import av
    import torch
    import comfy.ldm.wan.vae
    import comfy.sd
    import folder_paths

    host, vae_stream, video = _load_pack()
    assert host.IN_COMFYUI, "the host did not pick up ComfyUI"
    state = _tiny_wan_state()
    latents = torch.randn(1, 16, LATENT_FRAMES, 4, 4, generator=torch.Generator().manual_seed(1)) * 1.5
    report: dict = {"module_errors": {}, "wrapper_errors": {}}

    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        # the network itself
        wan = comfy.ldm.wan.vae.WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                       temperal_downsample=[False, True, True]).eval()
        wan.load_state_dict(state, strict=True)
        whole = wan.decode(latents)  # [1, 3, 29, 32, 32]
        report["whole_frames"] = whole.shape[2]
        report["whole_std"] = float(whole.std())
        for split in SPLITS:
            stream = vae_stream.WanFeatMapDecoder(wan)
            chunked = _chunks(stream.decode_raw, latents, split)
            report["module_errors"][str(split)] = float((chunked - whole).abs().max())
        tail = vae_stream.WanFeatMapDecoder(wan).decode_raw(latents[:, :, 3:])
        report["state_matters"] = float((tail[:, :, -16:] - whole[:, :, -16:]).abs().max())  # last 4 latent frames

        # the wrapper VAELoader makes, through the host's decoder choice
        vae = comfy.sd.VAE(sd=dict(state))
        reference = vae.decode(latents)[0]  # [29, 32, 32, 3]
        for split in SPLITS:
            decoder = host.streaming_decoder(vae)
            chunked = _chunks(decoder.decode_chunk, latents, split)
            report["wrapper_errors"][str(split)] = float((chunked - reference).abs().max())
        report["decoder_class"] = type(host.streaming_decoder(vae)).__name__

        # the Save Video node into ComfyUI's output folder
        folder_paths.set_output_directory(out_dir)
        samples = {"samples": latents, "longlive_ref_frames": 1}
        node = video.LongLiveSaveVideo()
        result = node.save(samples, vae, "LongLive", 16, 19)
        second = node.save(samples, vae, "LongLive", 16, 19)
    path = Path(out_dir) / result["ui"]["images"][0]["filename"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        report["saved"] = {"ui": result["ui"], "second": second["ui"]["images"][0]["filename"], "frames": frames,
                           "width": stream.width, "height": stream.height}
    return report


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--child":
        sys.exit(f"usage: {sys.argv[0]} --child OUT_DIR")
    print(json.dumps(child(sys.argv[2])))
