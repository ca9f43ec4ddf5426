#!/usr/bin/env python3
"""Write the example inputs the example workflows load, into ComfyUI's input folder.

    cd ComfyUI && python custom_nodes/comfyui-longlive-vace/scripts/make_example_inputs.py
    python3 scripts/make_example_inputs.py --out /path/to/ComfyUI/input     # any folder

Every picture is drawn here from plain shapes (no third-party content), small and deterministic:

- longlive_reference.png          a red toy robot on white (reference-to-video)
- longlive_reference_subject.png  the same robot, for the two-reference workflow
- longlive_reference_scene.png    a street of stone houses (its second reference)
- longlive_start.png              a sailing boat in a bay at sunset (image-to-video)
- longlive_control.mp4            a stick figure dancing on black, 49 frames (video-to-video)

Without --out the files go to the `input` folder of the ComfyUI this pack is installed in
(custom_nodes/<pack>/scripts/ -> ../../../input). A file that already exists is left alone (a
user's own file of that name is never overwritten). Needs numpy, Pillow and PyAV, which every
ComfyUI install has: run it with ComfyUI's python.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "longlive_reference.png"
SUBJECT = "longlive_reference_subject.png"
SCENE = "longlive_reference_scene.png"
START = "longlive_start.png"
CONTROL = "longlive_control.mp4"
CONTROL_FRAMES, CONTROL_FPS, CONTROL_SIZE = 49, 16, (416, 240)


def comfyui_input_dir() -> Path | None:
    """ComfyUI's input folder when this pack sits in ComfyUI/custom_nodes/, else None."""
    if ROOT.parent.name == "custom_nodes":
        return ROOT.parent.parent / "input"
    return None


# ---------------------------------------------------------------------------------------------
# the pictures (Pillow drawings; imported lazily so the names above cost nothing to import)


def robot(size: int = 512):
    """A red toy robot with round blue eyes, standing on white."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(image)
    s = size / 512
    red, dark, blue, grey = (205, 40, 45), (120, 20, 25), (40, 110, 220), (160, 160, 170)

    def box(x0, y0, x1, y1, **kw):
        d.rounded_rectangle([x0 * s, y0 * s, x1 * s, y1 * s], radius=int(18 * s), **kw)

    d.line([256 * s, 70 * s, 256 * s, 105 * s], fill=grey, width=int(8 * s))  # antenna
    d.ellipse([240 * s, 52 * s, 272 * s, 84 * s], fill=(250, 200, 40))
    box(166, 105, 346, 235, fill=red, outline=dark, width=int(6 * s))  # head
    for cx in (216, 296):
        d.ellipse([(cx - 28) * s, 140 * s, (cx + 28) * s, 196 * s], fill="white", outline=dark, width=int(4 * s))
        d.ellipse([(cx - 15) * s, 153 * s, (cx + 15) * s, 183 * s], fill=blue)
    d.rectangle([226 * s, 210 * s, 286 * s, 218 * s], fill=dark)  # mouth
    box(150, 250, 362, 400, fill=red, outline=dark, width=int(6 * s))  # body
    d.ellipse([231 * s, 295 * s, 281 * s, 345 * s], fill=(250, 200, 40), outline=dark, width=int(4 * s))
    for x0, x1 in ((100, 145), (367, 412)):  # arms
        box(x0, 265, x1, 380, fill=red, outline=dark, width=int(5 * s))
    for x0, x1 in ((185, 240), (272, 327)):  # legs and feet
        box(x0, 405, x1, 470, fill=grey, outline=(90, 90, 100), width=int(5 * s))
    return image


def street(width: int = 640, height: int = 448):
    """A quiet street of old stone houses under a grey sky, in a loose perspective."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (185, 195, 205))
    d = ImageDraw.Draw(image)
    horizon = int(height * 0.52)
    d.polygon([(0, height), (width, height), (width * 0.56, horizon), (width * 0.44, horizon)], fill=(120, 118, 112))
    d.line([(width * 0.5, height), (width * 0.5, horizon)], fill=(160, 158, 150), width=3)
    stones = ((150, 135, 115), (170, 150, 125), (140, 128, 112))
    for side in (-1, 1):  # left row, right row
        for k in range(5):  # nearest house first; each further one is smaller and closer to the middle
            near = 1 - k / 5
            w, h = 150 * near + 30, 230 * near + 50
            inner = width / 2 - k * 58 - 10 * k  # distance of the house's outer edge from the middle
            x0 = width / 2 - inner if side < 0 else width / 2 + inner - w
            y1 = horizon + (height - horizon) * near * 0.55
            colour = stones[(k + (side > 0)) % 3]
            d.rectangle([x0, y1 - h, x0 + w, y1], fill=colour, outline=(95, 85, 75), width=2)
            d.polygon([(x0 - 6, y1 - h), (x0 + w + 6, y1 - h), (x0 + w / 2, y1 - h - h * 0.35)], fill=(120, 60, 50))
            for row in range(2):
                for col in range(2):
                    wx = x0 + w * (0.2 + 0.45 * col)
                    wy = y1 - h * (0.8 - 0.4 * row)
                    d.rectangle([wx, wy, wx + w * 0.2, wy + h * 0.18], fill=(240, 215, 140), outline=(80, 70, 60))
    return image


def sunset_boat(width: int = 832, height: int = 480):
    """A sailing boat on a calm bay at sunset: banded sky, sun, sea, a white sail."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height))
    d = ImageDraw.Draw(image)
    horizon = int(height * 0.58)
    bands = 12  # flat colour bands keep the PNG small
    for b in range(bands):
        t = b / (bands - 1)
        colour = tuple(int(a + (c - a) * t) for a, c in zip((70, 60, 130), (250, 170, 90)))
        d.rectangle([0, horizon * b / bands, width, horizon * (b + 1) / bands], fill=colour)
    d.ellipse([width * 0.62, horizon - 70, width * 0.62 + 120, horizon + 50], fill=(255, 215, 120))
    for b in range(8):
        t = b / 7
        colour = tuple(int(a + (c - a) * t) for a, c in zip((200, 120, 90), (30, 50, 90)))
        d.rectangle([0, horizon + (height - horizon) * b / 8, width, horizon + (height - horizon) * (b + 1) / 8],
                    fill=colour)
    for k in range(6):  # the sun's reflection
        y = horizon + 12 + k * 18
        d.line([width * 0.62 + 20 + k * 4, y, width * 0.62 + 100 - k * 4, y], fill=(255, 200, 120), width=4)
    x, y = width * 0.3, horizon + 40
    d.polygon([(x - 90, y), (x + 110, y), (x + 80, y + 34), (x - 65, y + 34)], fill=(110, 60, 40))
    d.line([x + 5, y, x + 5, y - 220], fill=(60, 40, 30), width=6)
    d.polygon([(x + 10, y - 215), (x + 10, y - 12), (x + 120, y - 12)], fill=(245, 240, 230))
    d.polygon([(x, y - 190), (x, y - 12), (x - 80, y - 12)], fill=(230, 225, 215))
    return image


def dancer_frame(t: float, width: int, height: int):
    """One frame of the control clip: a white stick figure dancing on black (a pose video)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "black")
    d = ImageDraw.Draw(image)
    phase = 2 * math.pi * t
    cx = width / 2 + 30 * math.sin(phase)
    neck = (cx + 6 * math.sin(2 * phase), height * 0.40)
    hip = (cx, height * 0.64)
    reach = height * 0.15

    def limb(origin, angle, length):
        return origin[0] + length * math.sin(angle), origin[1] + length * math.cos(angle)

    arms = [limb(neck, math.pi * 0.75 + 0.9 * math.sin(phase), reach),
            limb(neck, -math.pi * 0.75 + 0.9 * math.sin(phase + math.pi), reach)]
    hands = [limb(a, math.pi * 0.6 + 1.2 * math.sin(phase + k), reach * 0.8) for k, a in enumerate(arms)]
    knees = [limb(hip, 0.35 * math.sin(phase) + s * 0.3, reach) for s in (-1, 1)]
    feet = [limb(k, 0.2 * math.sin(phase + math.pi / 2), reach) for k in knees]
    w = max(3, width // 80)
    d.line([neck, hip], fill="white", width=w)
    for start, mid, end in zip((neck, neck), arms, hands):
        d.line([start, mid, end], fill="white", width=w)
    for mid, end in zip(knees, feet):
        d.line([hip, mid, end], fill="white", width=w)
    head = height * 0.07
    d.ellipse([neck[0] - head, neck[1] - 2.2 * head, neck[0] + head, neck[1] - 0.2 * head], outline="white", width=w)
    return image


# ---------------------------------------------------------------------------------------------
# files


def _save_png(image, path: Path) -> None:
    image.save(path, optimize=True)


def _save_control(path: Path) -> None:
    import av
    import numpy as np

    width, height = CONTROL_SIZE
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=CONTROL_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "30"}
        for k in range(CONTROL_FRAMES):
            frame = np.asarray(dancer_frame(k / 24, width, height))
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


EXAMPLES: dict[str, Callable[[Path], None]] = {
    REFERENCE: lambda path: _save_png(robot(), path),
    SUBJECT: lambda path: _save_png(robot(), path),
    SCENE: lambda path: _save_png(street(), path),
    START: lambda path: _save_png(sunset_boat(), path),
    CONTROL: _save_control,
}


def write_examples(folder: Path, names: list[str] | None = None) -> tuple[list[Path], list[Path]]:
    """(written, kept): every example (or `names`) written into `folder`, except files that exist."""
    folder.mkdir(parents=True, exist_ok=True)
    written, kept = [], []
    for name in names or list(EXAMPLES):
        path = folder / name
        if path.exists():
            kept.append(path)
            continue
        EXAMPLES[name](path)
        written.append(path)
    return written, kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder to write into (default: this ComfyUI's input folder)")
    args = parser.parse_args(argv)
    folder = args.out or comfyui_input_dir()
    if folder is None:
        print("error: this pack is not inside ComfyUI/custom_nodes/; say where the files go with --out "
              "(ComfyUI's input folder)", file=sys.stderr)
        return 1
    written, kept = write_examples(folder)
    for path in written:
        print(f"wrote {path}")
    for path in kept:
        print(f"kept {path} (exists)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
