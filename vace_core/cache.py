"""Bounded self-attention KV cache with a permanent sink and a rolling window.

The latent timeline is `[reference frames | generated frames]`. Frames before `sink_end`
(the references plus LongLive's first `sink_frames` generated frames) keep a slot for the whole
video; later frames share a ring of `rolling_frames` slots, so memory never grows with length.

Two things are kept apart here:
- the attention *policy*, `CacheLayout.visible_frames`: which frames a pass ending at `end`
  attends to (the sink plus the most recent `rolling_frames` frames ending at `end`);
- the *storage*, `KVCache`: a buffer allocated once, slots claimed per pass, keys and values
  written and read by frame number. Callers pass the frames a pass sees, so the same storage
  serves the main blocks, the VACE blocks and the passes that rebuild the window after a prompt
  switch.

A pass that writes (`write=True`) stores its own K/V in the slots of its frames — every denoising
pass overwrites them and the final clean pass leaves the clean K/V behind — and then reads every
visible frame from the buffer. A pass that does not write reads the visible frames it does not
own from the buffer and appends its own fresh K/V. Keys are stored after RoPE at absolute
positions, so the order of slots does not matter to attention and the usual case reads one
contiguous view (no copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .device import to_device


@dataclass(frozen=True)
class CacheLayout:
    tokens_per_frame: int
    sink_end: int  # absolute frame index where the rolling part starts (refs + sink frames)
    rolling_frames: int  # ring size: window frames minus sink frames (0: a sink-only cache)

    @property
    def capacity_frames(self) -> int:
        return self.sink_end + self.rolling_frames

    def slot_of(self, frame: int) -> int:
        if frame < self.sink_end:
            return frame
        if self.rolling_frames == 0:
            raise ValueError(f"frame {frame} lies after the sink of a cache without a rolling part")
        return self.sink_end + (frame - self.sink_end) % self.rolling_frames

    def visible_frames(self, end: int, rolling_start: int | None = None) -> list[int]:
        """Frames a pass ending (exclusively) at `end` attends to: the sink frames before `end`
        and the last `rolling_frames` frames ending at `end`; `rolling_start` limits the rolling
        part from below (while the window is rebuilt block by block after a prompt switch)."""
        low = max(self.sink_end, end - self.rolling_frames)
        if rolling_start is not None:
            low = max(low, rolling_start)
        return list(range(min(self.sink_end, end))) + list(range(low, end))


def kv_cache_bytes(*, num_layers: int, dim: int, tokens_per_frame: int, capacity_frames: int,
                   element_size: int) -> int:
    """Memory of a cache: keys and values of `num_layers` blocks for `capacity_frames` frames
    (all heads together span `dim` channels)."""
    return num_layers * 2 * capacity_frames * tokens_per_frame * dim * element_size


class KVCache:
    """Keys and values of `num_layers` attention blocks, for the frames later passes may see."""

    def __init__(self, *, num_layers: int, batch: int, num_heads: int, head_dim: int,
                 layout: CacheLayout, dtype: torch.dtype, device: torch.device | str) -> None:
        if layout.capacity_frames < 1:
            raise ValueError("a KV cache must hold at least one frame")
        self.layout = layout
        tokens = layout.capacity_frames * layout.tokens_per_frame
        # [layers, k|v, B, heads, capacity tokens, head_dim], allocated once for the whole video
        self.buffer = torch.zeros(num_layers, 2, batch, num_heads, tokens, head_dim, dtype=dtype, device=device)
        self.slot_frame = [-1] * layout.capacity_frames

    def nbytes(self) -> int:
        return self.buffer.numel() * self.buffer.element_size()

    def begin_block(self, start_frame: int, num_frames: int, visible: Sequence[int],
                    write: bool = True) -> "BlockCacheAccess":
        """Bookkeeping of one pass over frames [start_frame, start_frame + num_frames) that attends
        to `visible` (its own frames included). With `write` the pass stores its K/V first."""
        own = range(start_frame, start_frame + num_frames)
        if not set(own) <= set(visible):
            raise ValueError(f"a pass over frames [{own.start}, {own.stop}) must see its own frames")
        if write:
            self._claim(own)
        cached = [f for f in visible if write or f not in own]
        slot_of_frame = {f: s for s, f in enumerate(self.slot_frame) if f >= 0}
        missing = [f for f in cached if f not in slot_of_frame]
        if missing:
            raise RuntimeError(f"KV cache is missing frames {missing} needed by the pass over frames "
                               f"[{own.start}, {own.stop})")
        read_slots = sorted(slot_of_frame[f] for f in cached)
        write_slots = [self.layout.slot_of(f) for f in own] if write else []
        return BlockCacheAccess(self, write_slots, read_slots)

    def _claim(self, frames: range) -> None:
        layout = self.layout
        rolling = [f for f in frames if f >= layout.sink_end]
        if len(rolling) > layout.rolling_frames:
            raise ValueError(f"a pass over {len(frames)} frames does not fit a rolling window of "
                             f"{layout.rolling_frames} frames")
        for frame in frames:
            self.slot_frame[layout.slot_of(frame)] = frame


class BlockCacheAccess:
    """Slot bookkeeping of one pass, shared by all layers of that pass."""

    def __init__(self, cache: KVCache, write_slots: list[int], read_slots: list[int]) -> None:
        self.cache = cache
        per_frame = cache.layout.tokens_per_frame
        device = cache.buffer.device
        self.writes = bool(write_slots)
        self._write = _contiguous_range(write_slots, per_frame) if write_slots else None
        self._write_index = (_token_index(write_slots, per_frame, device)
                             if write_slots and self._write is None else None)
        self._read = _contiguous_range(read_slots, per_frame) if read_slots else slice(0, 0)
        if self._read is not None and self._read.start != 0:
            self._read = None
        self._read_index = None if self._read is not None else _token_index(read_slots, per_frame, device)

    # called between a block's compiled parts, never traced: the slots change from pass to pass
    def write_and_read(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this pass's k, v [B, heads, S, head_dim] (when it writes); return the keys and
        values of every visible frame [B, heads, S_visible, head_dim]."""
        kv = self.cache.buffer[layer]  # [2, B, heads, tokens, head_dim]
        if self.writes:
            for stored, new in zip(kv, (k, v)):
                if self._write is not None:
                    stored[:, :, self._write] = new
                else:
                    stored.index_copy_(2, self._write_index, new.to(stored.dtype))
        if self._read_index is not None:  # exactly when the slots are not one slice from 0
            visible = kv.index_select(3, self._read_index)
        else:
            visible = kv[:, :, :, self._read]
        if self.writes:
            return visible[0], visible[1]
        return (torch.cat([visible[0], k.to(visible.dtype)], dim=2),
                torch.cat([visible[1], v.to(visible.dtype)], dim=2))


def _contiguous_range(slots: list[int], per_frame: int) -> slice | None:
    if slots != list(range(slots[0], slots[0] + len(slots))):
        return None
    return slice(slots[0] * per_frame, (slots[0] + len(slots)) * per_frame)


def _token_index(slots: list[int], per_frame: int, device: torch.device) -> torch.Tensor:
    index = torch.tensor([s * per_frame + i for s in slots for i in range(per_frame)], dtype=torch.long)
    return to_device(index, device)  # built on the host, copied without a sync
