"""The text metadata of an mp4 (what ComfyUI and this pack record: the workflow, the steering), and a
record read from either such an mp4 or a JSON file.

A small reader of ISO boxes rather than PyAV, which ComfyUI's python has but a bare python3 does not
(docs/scripts.md); tests check it against files PyAV writes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

from .errors import ClientError, read_local

def is_mp4(path: str | Path) -> bool:
    """True for an ISO media file (mp4, mov): its first box is 'ftyp'."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8)[4:8] == b"ftyp"
    except OSError:
        return False


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the ISO boxes in data[start:end]."""
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[start + 8:start + 16])[0], 16
        elif size == 0:
            size = end - start
        if size < header or start + size > end:
            return
        yield kind, start + header, start + size
        start += size


def mp4_metadata(path: str | Path) -> dict[str, str]:
    """The text metadata of an mp4 as ffmpeg writes it with `use_metadata_tags` (what ComfyUI and
    this pack write: moov/udta/meta with 'mdta' keys and an ilst of UTF-8 values)."""
    data = read_local(Path(path))
    found: dict[str, str] = {}
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind != b"moov":
            continue
        containers = [(start, end)] + [(s, e) for k, s, e in _boxes(data, start, end) if k == b"udta"]
        for c_start, c_end in containers:
            for meta_kind, m_start, m_end in _boxes(data, c_start, c_end):
                if meta_kind == b"meta":
                    found.update(_meta_items(data, m_start, m_end))
    return found


def _meta_items(data: bytes, start: int, end: int) -> dict[str, str]:
    if data[start + 4:start + 8] not in (b"hdlr", b"keys", b"ilst"):
        start += 4  # an ISO 'meta' full box: version and flags first
    keys: list[str] = []
    values: dict[int, str] = {}
    for kind, s, e in _boxes(data, start, end):
        if kind == b"keys":
            offset = s + 8  # version/flags, entry count
            while offset + 8 <= e:
                size = struct.unpack(">I", data[offset:offset + 4])[0]
                if size < 8:
                    break
                keys.append(data[offset + 8:offset + size].decode("utf-8", "replace"))
                offset += size
        elif kind == b"ilst":
            for item, i_start, i_end in _boxes(data, s, e):
                for box, d_start, d_end in _boxes(data, i_start, i_end):
                    if box == b"data" and data[d_start:d_start + 4] == b"\x00\x00\x00\x01":  # UTF-8 text
                        values[struct.unpack(">I", item)[0]] = data[d_start + 8:d_end].decode("utf-8", "replace")
    return {keys[index - 1]: value for index, value in values.items() if 1 <= index <= len(keys)}


def read_json_or_mp4_record(source: str | Path, key: str, what: str, missing: str) -> object:
    """The JSON held by a file, or by an mp4's `key` metadata (ClientError `missing` when it has none);
    `what` names the thing in the other errors."""
    if is_mp4(source):
        text = mp4_metadata(source).get(key)
        if text is None:
            raise ClientError(missing)
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as error:
            raise ClientError(f"cannot read {what} {source}: {error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ClientError(f"cannot read {what} {source}: it is not JSON ({error})") from None
