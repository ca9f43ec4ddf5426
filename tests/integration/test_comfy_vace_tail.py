"""A long gray VACE context stored as a short head plus a repeated tail equals the full encode,
with ComfyUI's own Wan 2.1 VAE (random weights, dim 8).

`encode_vace_context` encodes only the informative frames plus a few constant ones and repeats the
last latent frame, trusting the causal VAE to reach a steady state on constant input. This checks
that trust on the real network: the child (ComfyUI's python) encodes a long gray clip and a short
control clip padded with gray both ways and reports the largest difference.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
TOLERANCE = 1e-5


def test_repeated_tail_equals_full_encode_with_comfyui_wan_vae(comfy_install):
    done = comfy_install.run_python([str(Path(__file__).resolve()), "--child"], timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for case, result in report.items():
        assert result["repeated_tail"] > 0, f"{case}: the tail shortcut was not taken"
        assert result["max_error"] < TOLERANCE, f"{case}: {result}"


def _child() -> None:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(REPO_ROOT))
    import make_tiny_wan_vae

    make_tiny_wan_vae._import_comfy(make_tiny_wan_vae._default_comfyui_dir())
    import torch
    import comfy.sd

    from vace_core.encoding import encode_vace_context
    from vace_core.latents import normalize_latents
    from vace_core.testing.probes import fold_mask

    torch.set_num_threads(1)
    vae = comfy.sd.VAE(sd=make_tiny_wan_vae.build_state_dict(dim=8, seed=3))
    size, latent_frames = 16, 48  # longer than the VAE's ~28-latent-frame receptive field + probe
    video_frames = 4 * (latent_frames - 1) + 1
    first = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(1))
    cases = {
        "r2v_gray": (None, None),
        "first_frame_kept": (first, torch.zeros(1, size, size)),
    }
    report = {}
    with torch.inference_mode():
        for name, (video, masks) in cases.items():
            ctx = encode_vace_context(vae, size, size, video_frames, control_video=video, control_masks=masks)
            pixels = torch.full((video_frames, size, size, 3), 0.5)
            mask = torch.ones(video_frames, size, size)
            if video is not None:
                pixels[: video.shape[0]] = video
                mask[: masks.shape[0]] = masks
            x, m = pixels * 2 - 1, mask.unsqueeze(-1)
            full = torch.cat([normalize_latents(vae.encode((x * (1 - m) + 1) / 2).float()),
                              normalize_latents(vae.encode((x * m + 1) / 2).float()),
                              fold_mask(mask, latent_frames).unsqueeze(0)], dim=1)
            error = (ctx.frames(0, latent_frames) - full).abs().max().item()
            report[name] = {"repeated_tail": ctx.repeated_tail, "max_error": error}
    print(json.dumps(report))


if __name__ == "__main__" and "--child" in sys.argv:
    _child()
