"""Streaming decode with ComfyUI's own Wan 2.1 VAE equals its whole-video decode, on every ComfyUI
version tested; on a VAE whose decoder internals behave differently it falls back with one warning;
a chunk that runs out of memory is decoded with ComfyUI's tiled decode.

The checks need `comfy`, so they run in a subprocess with ComfyUI's python (`stream_decode_child.py`),
which prints one JSON report. It builds ComfyUI's `comfy.ldm.wan.vae.WanVAE` small (dim 8, dim_mult
[1, 2, 4, 4], 2 residual blocks, temporal downsampling [False, True, True], z_dim 16) with every
tensor set explicitly (ComfyUI's layers skip initialisation), then:

- exact path: `WanFeatMapDecoder` on the network and the host's streaming decoder on the
  `comfy.sd.VAE` wrapper, for several chunk splits, against `WanVAE.decode` / `VAE.decode`; the
  "Save Video (streaming decode)" node writes into ComfyUI's output folder;
- host variants: subclasses of the host's `WanVAE` whose decoder, when driven from outside their
  own `decode`, returns lists (still exact), raises the TypeError ComfyUI 0.33 gave the old
  decoder, defers its output (a list, empty at first), ignores the cache, or drifts numerically.
  Each but the first must fall back to the approximate decoder with exactly one warning and still
  write an mp4 of the right length;
- out of memory: a decoder that raises `torch.OutOfMemoryError` once, in the middle of a chunk.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from stream_decode_child import FALLBACK_VARIANTS, LATENT_FRAMES, SPLITS

CHILD = Path(__file__).resolve().parent / "stream_decode_child.py"
# float32 on the CPU; the network's chunked and whole decodes run the same convolutions on the same
# frames, measured 0 on 0.8.0 and 0.33.0 (a wrong cache gives errors of ~1, see `state_matters`)
TOLERANCE = 1e-4
# variant -> what the single warning line must say
FALLBACKS = {
    "raises": "TypeError: expected Tensor as element 0 in argument 0, but got list",
    "defers": "returned list (empty)",
    "stateless": "expected 4 frames",
    "drifts": "differs from a whole decode by",
}


@pytest.fixture(scope="module")
def report(comfy_install, tmp_path_factory) -> dict:
    out_dir = tmp_path_factory.mktemp(f"streaming_{comfy_install.label}")
    done = comfy_install.run_python([str(CHILD), str(out_dir)], timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_streaming_decode_equals_the_whole_decode(report, report_figure):
    network = max(report["module_errors"].values())
    wrapper = max(report["wrapper_errors"].values())
    report_figure(f"streaming decode vs whole decode, max abs error: network {network:.3g}, "
                  f"comfy.sd.VAE {wrapper:.3g} (splits {SPLITS})")
    assert report["probe"] is None, f"the probe refused this ComfyUI's own WanVAE: {report['probe']}"
    for split, error in report["module_errors"].items():
        assert error < TOLERANCE, f"WanVAE network, split {split}: max error {error}"
    for split, error in report["wrapper_errors"].items():
        assert error < TOLERANCE, f"comfy.sd.VAE, split {split}: max error {error}"
    assert report["decoder_class"] == "ComfyWanStreamingDecoder"
    assert report["whole_frames"] == 4 * LATENT_FRAMES - 3
    assert report["state_matters"] > 1e-3  # a fresh decoder on a later chunk differs: the state is real
    assert report["warnings"] == []


def test_save_video_node_writes_every_frame_and_never_overwrites(report):
    saved = report["saved"]
    assert saved["ui"]["images"] == [{"filename": "LongLive_00001_.mp4", "subfolder": "", "type": "output"}]
    assert saved["second"] == "LongLive_00002_.mp4"
    assert saved["frames"] == 4 * (LATENT_FRAMES - 1) - 3  # one reference frame dropped
    assert (saved["width"], saved["height"]) == (32, 32)


def test_a_decoder_that_returns_lists_stays_exact(report):
    lists = report["variants"]["lists"]
    assert lists["decoder_class"] == "ComfyWanStreamingDecoder" and lists["warnings"] == []
    assert lists["max_error"] < TOLERANCE


def test_every_fallback_variant_is_checked():
    assert sorted(FALLBACKS) == sorted(FALLBACK_VARIANTS)


@pytest.mark.parametrize("variant", sorted(FALLBACKS))
def test_other_decoder_internals_fall_back_with_one_warning(report, variant):
    result = report["variants"][variant]
    assert result["decoder_class"] == "OverlapChunkDecoder"
    assert len(result["warnings"]) == 1, result["warnings"]
    warning = result["warnings"][0]
    assert "approximately" in warning and FALLBACKS[variant] in warning, warning
    assert "\n" not in warning
    assert result["frames"] == 4 * (LATENT_FRAMES - 1) - 3, result  # the mp4 has every frame
    assert (result["width"], result["height"]) == (32, 32)
    # the first chunk has no history to lose: the approximate decoder gives it exactly
    assert result["first_chunk_error"] < TOLERANCE, result


def test_out_of_memory_in_a_chunk_falls_back_to_comfyui_tiled_decode(report, report_figure):
    oom = report["oom"]
    report_figure(f"out of memory in chunk 2: tiled chunk differs from the whole decode by "
                  f"{oom['tiled_chunk_error']:.3g}, the chunk after it by {oom['after_error']:.3g}")
    assert oom["decoder_class"] == "ComfyWanStreamingDecoder"
    assert oom["decoder_calls_raised"] == 1
    assert oom["tiled_calls"] == [[1, 16, 5, 4, 4]]  # 2 latent frames of context + the 3-frame chunk
    assert len(oom["warnings"]) == 1 and "out of memory" in oom["warnings"][0] \
        and "tiled" in oom["warnings"][0], oom["warnings"]
    assert oom["frames_per_chunk"] == [9, 12, 8]
    assert oom["before_error"] < TOLERANCE  # the chunk before the failure is exact
    # the failed chunk is exactly the tail of ComfyUI's own tiled decode of context + chunk
    assert oom["tiled_chunk_vs_comfy_tiled"] < 1e-6
    assert math.isfinite(oom["after_error"])
    assert oom["saved_frames"] == 4 * (LATENT_FRAMES - 1) - 3
