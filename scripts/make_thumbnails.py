#!/usr/bin/env python3
"""Draw the template browser's picture of every example workflow: example_workflows/<title>.jpg.

    python3 scripts/make_thumbnails.py

The editors show a custom node's template with its file name as the title and a picture of the
same name (both editors; no other title or description is read for a custom node's template), so
the picture carries what the name cannot: what goes in (the example input itself, or the prompt),
what comes out (a film strip with the length), and a one-line description. Drawn with Pillow from
make_workflows.py (titles, descriptions, lengths) and make_example_inputs.py (the pictures).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_example_inputs as inputs  # noqa: E402  the pictures the workflows load
from make_workflows import WorkflowFiles, workflow_files  # noqa: E402  titles, descriptions, file names

SIZE = (640, 480)
BACKGROUND, PANEL, TEXT, MUTED = (24, 27, 34), (38, 43, 54), (240, 240, 245), (170, 176, 190)
# per workflow: an accent colour, what goes in, and the frames that come out
CARDS = {
    "longlive_t2v": ((230, 120, 60), ["prompt"], "161 frames"),
    "longlive_i2v": ((70, 160, 220), ["start"], "81 frames"),
    "longlive_vace_r2v": ((220, 60, 70), ["robot"], "81 frames"),
    "longlive_vace_r2v_multi_ref": ((220, 60, 70), ["robot", "street"], "81 frames"),
    "longlive_vace_v2v": ((160, 90, 220), ["dancer"], "81 frames"),
    "longlive_prompt_switch": ((90, 180, 110), ["prompt", "prompt", "prompt"], "481 frames"),
    "longlive_continue": ((230, 180, 50), ["strip"], "81 + 80 frames"),
    "longlive_distributed": ((60, 190, 200), ["prompt"], "81 frames on each GPU"),
}
STRIPS = {"longlive_distributed": 3}  # videos drawn coming out (default 1)


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # Pillow's own scalable font: the same on every machine


def _picture(kind: str, box: tuple[int, int]):
    """One input, drawn to fit `box`: an example picture, a prompt card or a short film strip."""
    from PIL import Image, ImageDraw

    if kind == "robot":
        image = inputs.robot(256)
    elif kind == "street":
        image = inputs.street(320, 224)
    elif kind == "start":
        image = inputs.sunset_boat(416, 240)
    elif kind == "dancer":
        image = inputs.dancer_frame(0.1, 320, 240)
    else:
        image = Image.new("RGB", (320, 240), PANEL)
        draw = ImageDraw.Draw(image)
        if kind == "prompt":  # lines of text
            draw.text((24, 22), "Aa", fill=TEXT, font=_font(56))
            for row in range(4):
                draw.rounded_rectangle([24, 110 + row * 30, 300 - (row % 2) * 70, 124 + row * 30], radius=6,
                                       fill=MUTED)
        else:  # an earlier video: a strip of frames
            _film_strip(draw, (10, 40, 310, 200), frames=3)
    image.thumbnail(box)
    return image


def _film_strip(draw, rect: tuple[int, int, int, int], frames: int, accent: tuple[int, int, int] = MUTED) -> None:
    x0, y0, x1, y1 = rect
    draw.rounded_rectangle(rect, radius=10, fill=(12, 12, 16))
    hole = (y1 - y0) // 10
    for x in range(x0 + hole, x1 - hole, hole * 2):
        for y in (y0 + hole // 2, y1 - hole - hole // 2):
            draw.rectangle([x, y, x + hole, y + hole], fill=(70, 70, 80))
    width = (x1 - x0 - 2 * hole) / frames
    for k in range(frames):
        fx = x0 + hole + k * width
        shade = tuple(int(c * (0.55 + 0.45 * (k + 1) / frames)) for c in accent)
        draw.rectangle([fx + 4, y0 + 2 * hole, fx + width - 4, y1 - 2 * hole], fill=shade)


def draw_card(files: WorkflowFiles):
    """The picture of one workflow: inputs -> frames, its title and its one-line description."""
    from PIL import Image, ImageDraw

    accent, kinds, frames = CARDS[files.name]
    card = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(card)
    draw.rectangle([0, 0, SIZE[0], 10], fill=accent)
    # what goes in, on the left
    slot_h = (250 - 10 * (len(kinds) - 1)) // len(kinds)
    for k, kind in enumerate(kinds):
        picture = _picture(kind, (250, slot_h))
        top = 40 + k * (slot_h + 10) + (slot_h - picture.height) // 2
        card.paste(picture, (40 + (250 - picture.width) // 2, top))
    # an arrow, then what comes out
    draw.polygon([(312, 150), (342, 165), (312, 180)], fill=accent)
    draw.rectangle([296, 160, 314, 170], fill=accent)
    strips = STRIPS.get(files.name, 1)
    if strips == 1:
        _film_strip(draw, (360, 90, 610, 240), frames=4, accent=accent)
    for k in range(strips if strips > 1 else 0):  # several videos at once, stacked
        _film_strip(draw, (360, 40 + k * 72, 610, 100 + k * 72), frames=4, accent=accent)
    draw.text((485, 262), frames, fill=MUTED, font=_font(22), anchor="mm")
    # the title (the template's name) and the description
    title = files.title.removeprefix("LongLive ")
    draw.text((40, 300), "LongLive", fill=accent, font=_font(26))
    _wrapped(draw, title, (40, 334), _font(38), TEXT, width=560, lines=2)
    _wrapped(draw, files.description, (40, 426), _font(20), MUTED, width=560, lines=2)
    return card


def _wrapped(draw, text: str, origin: tuple[int, int], font, fill, width: int, lines: int) -> None:
    """`text` broken at spaces into at most `lines` lines no wider than `width` pixels."""
    words, rows = text.split(), [""]
    for word in words:
        candidate = f"{rows[-1]} {word}".strip()
        if draw.textlength(candidate, font=font) <= width or not rows[-1]:
            rows[-1] = candidate
        elif len(rows) < lines:
            rows.append(word)
        else:
            rows[-1] = rows[-1].rstrip(".") + "..."
            break
    height = font.size + 6
    for n, row in enumerate(rows):
        draw.text((origin[0], origin[1] + n * height), row, fill=fill, font=font)


def main() -> int:
    for files in workflow_files():
        draw_card(files).save(files.thumbnail, quality=88, optimize=True)
        print(f"wrote {files.thumbnail.relative_to(files.thumbnail.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
