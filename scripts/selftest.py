#!/usr/bin/env python3
"""Self-test of the node pack without downloads or ComfyUI.

Writes tiny random checkpoints in the real file formats (vace_core.testing.fixtures) to a temporary
models folder, loads the pack the way ComfyUI loads a custom node folder, and runs the whole node
chain in-process through the standalone host:

    Load LongLive Model (+ LoRA) -> Extra LoRA -> Load VACE Weights -> VACE Encode References
    (tiny causal stand-in VAE) -> Prompt Schedule -> LongLive Sampler -> Decode (strip references) -> mp4

Each step is printed with its time; the last line is "OK ..." and the exit status is 0, or the
error is printed and the status is 1. The video is noise-like (random weights): the point is that
every step runs and every shape is right. A few seconds on a CPU.

    python3 scripts/selftest.py [--out selftest_output.mp4] [--keep-models DIR]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, TypeVar

import torch

from pack_loader import load_pack  # scripts/pack_loader.py

PACK = "longlive_vace_selftest"
T = TypeVar("T")

# latent frames = (FRAMES - 1) // 4 + 1 = 9: three chunks of 3 behind one reference frame; a window
# of 6 (3 sink + 3 rolling) makes the KV cache roll, and the prompt switch at frame 16 re-caches it
WIDTH, HEIGHT, FRAMES, FPS = 64, 48, 33, 16
SWITCH_FRAME = 16


class Steps:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def run(self, label: str, action: Callable[[], T]) -> T:
        began = time.perf_counter()
        result = action()
        print(f"[{time.perf_counter() - began:6.2f}s] {label}", flush=True)
        return result


def write_models(folder: Path, fixtures, config, files) -> None:
    """Tiny weights under the file names the loaders preselect (`files`: nodes/model_files.py)."""
    diffusion, loras = folder / "diffusion_models", folder / "loras"
    diffusion.mkdir(parents=True, exist_ok=True)
    loras.mkdir(parents=True, exist_ok=True)
    state = fixtures.make_state_dict(config, seed=0)
    fixtures.write_longlive_pt(diffusion / files.BASE_FILE, fixtures.main_only(state))
    fixtures.write_vace_module(diffusion / files.VACE_FILES[-1], state)
    fixtures.write_peft_lora(loras / files.LORA_FILE, fixtures.make_lora(config, rank=4, seed=1), wrapped=True)
    fixtures.write_comfy_lora(loras / "style.safetensors", fixtures.make_lora(config, rank=2, seed=2), "kohya")


def selftest(out: Path, models: Path) -> str:
    steps = Steps()
    os.environ["LONGLIVE_STANDALONE"] = "1"
    os.environ["LONGLIVE_MODELS_DIR"] = str(models)
    pack = steps.run("import the pack as ComfyUI does", lambda: load_pack(PACK, standalone=True))
    nodes = pack.NODE_CLASS_MAPPINGS
    fixtures = importlib.import_module(f"{PACK}.vace_core.testing.fixtures")
    config = importlib.import_module(f"{PACK}.vace_core.config").architecture("tiny-vace")
    files = importlib.import_module(f"{PACK}.nodes.model_files")

    def node(name: str, outputs: int = 1, **inputs):
        cls = nodes[name]
        result = getattr(cls(), cls.FUNCTION)(**inputs)
        return result[0] if outputs == 1 else result[:outputs]

    def widget_defaults(name: str) -> dict:
        return {k: spec[1]["default"] for k, spec in nodes[name].INPUT_TYPES()["required"].items()}

    steps.run(f"write tiny checkpoints to {models}", lambda: write_models(models, fixtures, config, files))
    model = steps.run(f"Load LongLive Model ({files.BASE_FILE} + {files.LORA_FILE})", lambda: node(
        "LongLiveModelLoader", base_checkpoint=files.BASE_FILE, lora=files.LORA_FILE, lora_strength=1.0,
        dtype="fp32"))
    model = steps.run("LongLive Extra LoRA (style.safetensors @ 0.5)", lambda: node(
        "LongLiveLoraLoader", model=model, lora="style.safetensors", strength=0.5))
    model = steps.run("Load VACE Weights (graft)", lambda: node(
        "LongLiveVaceGraft", model=model, vace_checkpoint=files.VACE_FILES[-1]))
    print(f"         model: {model.describe()}")

    stand_in = importlib.import_module(f"{PACK}.vace_core.testing.stand_in_vae")
    vae = stand_in.CausalStandInVAE()  # Wan 2.1 VAE interface and causal structure, random weights
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(1, 40, 40, 3, generator=generator)  # square image: padded onto white
    context, size = steps.run("VACE Encode References (stand-in VAE)", lambda: node(
        "LongLiveVaceEncode", vae=vae, width=WIDTH, height=HEIGHT, length=FRAMES, reference_fit="pad",
        reference_images=reference, outputs=2))
    first = [[torch.randn(1, 16, config.text_dim, generator=generator), {}]]
    second = [[torch.randn(1, 16, config.text_dim, generator=generator), {}]]
    schedule = steps.run(f"LongLive Prompt Schedule (switch at frame {SWITCH_FRAME})", lambda: node(
        "LongLivePromptSchedule", conditioning=second, start_frame=SWITCH_FRAME))
    settings = steps.run("LongLive Sampler Settings (window 6: the window rolls)", lambda: node(
        "LongLiveSamplerSettings", **{**widget_defaults("LongLiveSamplerSettings"), "window_frames": "6"}))
    latent = steps.run("LongLive Sampler", lambda: node(
        "LongLiveSampler", model=model, positive=first, latent=size, seed=42, vace_scale=1.0, preset="LongLive",
        vace_context=context, prompt_schedule=schedule, settings=settings))
    samples, refs = latent["samples"], latent["longlive_ref_frames"]
    expect = (1, 16, 1 + (FRAMES - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8)
    _require(tuple(samples.shape) == expect, f"latents {tuple(samples.shape)}, expected {expect}")
    _require(refs == 1, f"{refs} reference frames, expected 1")
    _require(bool(torch.isfinite(samples).all()), "latents contain NaN or inf")

    video = steps.run("Decode (strip references)", lambda: node("LongLiveDecode", samples=latent, vae=vae))
    _require(tuple(video.shape) == (FRAMES, HEIGHT, WIDTH, 3), f"video {tuple(video.shape)}")

    streaming = importlib.import_module(f"{PACK}.vace_core.streaming")

    def write_mp4() -> None:
        with streaming.VideoWriter(out, WIDTH, HEIGHT, fps=FPS) as writer:
            writer.write(video)

    steps.run(f"write {out}", write_mp4)
    written, width, height, _ = streaming.read_video_info(out)
    _require((written, width, height) == (FRAMES, WIDTH, HEIGHT),
             f"the mp4 holds {written} frames of {width}x{height}, expected {FRAMES} of {WIDTH}x{HEIGHT}")
    total = time.perf_counter() - steps.start
    return f"OK selftest: {FRAMES} frames {WIDTH}x{HEIGHT} -> {out} in {total:.1f}s"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("selftest_output.mp4"), help="mp4 to write")
    parser.add_argument("--keep-models", type=Path, default=None,
                        help="write the tiny checkpoints here and keep them (default: a temporary folder)")
    args = parser.parse_args()
    try:
        if args.keep_models is not None:
            print(selftest(args.out.resolve(), args.keep_models.resolve()))
        else:
            with tempfile.TemporaryDirectory(prefix="longlive_selftest_") as folder:
                print(selftest(args.out.resolve(), Path(folder)))
    except Exception:
        traceback.print_exc()
        print("FAILED selftest", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
