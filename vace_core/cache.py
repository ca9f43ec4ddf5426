"""Bounded self-attention KV cache with a permanent sink and a rolling window.

The latent timeline is `[reference frames | generated frames]`. Frames before `sink_end`
(the references plus LongLive's first `sink_frames` generated frames) keep a slot for the whole
video; later frames share a ring of `rolling_frames` slots, so memory never grows with length.

A block [start, end) attends to the sink plus the most recent `rolling_frames` frames ending at
`end` (itself included). Its own K/V are written into the ring slots of the frames that just left
the window, so every denoising pass overwrites them and the final clean pass leaves the clean K/V
behind for later blocks. Keys are stored after RoPE at absolute positions, so the order of slots
does not matter to attention and the usual case reads one contiguous view (no copy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import WanConfig


@dataclass(frozen=True)
class CacheLayout:
    tokens_per_frame: int
    sink_end: int  # absolute frame index where the rolling part starts (refs + sink frames)
    rolling_frames: int  # ring size: window frames minus sink frames

    @property
    def capacity_frames(self) -> int:
        return self.sink_end + self.rolling_frames

    def slot_of(self, frame: int) -> int:
        if frame < self.sink_end:
            return frame
        return self.sink_end + (frame - self.sink_end) % self.rolling_frames

    def visible_frames(self, end: int, rolling_start: int | None = None) -> list[int]:
        """Frames a block ending (exclusively) at `end` attends to; `rolling_start` limits the
        rolling part from below (used while the window is rebuilt after a prompt switch)."""
        low = max(self.sink_end, end - self.rolling_frames)
        if rolling_start is not None:
            low = max(low, rolling_start)
        return list(range(min(self.sink_end, end))) + list(range(low, end))


def kv_cache_bytes(config: WanConfig, *, tokens_per_frame: int, ref_frames: int, window_frames: int,
                   element_size: int) -> int:
    """Memory of the cache a run allocates: keys and values of every main block for the references
    plus the window (all heads together span `dim` channels)."""
    return config.num_layers * 2 * (ref_frames + window_frames) * tokens_per_frame * config.dim * element_size


class KVCache:
    """Keys and values of every main block, for the frames the next block may see."""

    def __init__(self, *, num_layers: int, batch: int, num_heads: int, head_dim: int,
                 layout: CacheLayout, dtype: torch.dtype, device: torch.device | str) -> None:
        if layout.rolling_frames < 1:
            raise ValueError("the rolling window must hold at least one frame")
        self.layout = layout
        tokens = layout.capacity_frames * layout.tokens_per_frame
        # [layers, k|v, B, heads, capacity tokens, head_dim], allocated once for the whole video
        self.buffer = torch.zeros(num_layers, 2, batch, num_heads, tokens, head_dim, dtype=dtype, device=device)
        self.slot_frame = [-1] * layout.capacity_frames
        self.rolling_start: int | None = None

    @classmethod
    def for_model(cls, model: torch.nn.Module, *, batch: int, tokens_per_frame: int, ref_frames: int,
                  sink_frames: int, window_frames: int, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> "KVCache":
        config = model.config
        layout = CacheLayout(tokens_per_frame=tokens_per_frame, sink_end=ref_frames + sink_frames,
                             rolling_frames=window_frames - sink_frames)
        weight = model.blocks[0].self_attn.k.weight
        return cls(num_layers=config.num_layers, batch=batch, num_heads=config.num_heads,
                   head_dim=config.head_dim, layout=layout, dtype=dtype or weight.dtype,
                   device=device or weight.device)

    def nbytes(self) -> int:
        return self.buffer.numel() * self.buffer.element_size()

    def cached_frames(self) -> list[int]:
        return sorted(f for f in self.slot_frame if f >= 0)

    def reset_rolling(self, rolling_start: int) -> None:
        """Forget the rolling part (the sink stays); frames before `rolling_start` stay invisible
        until the window has moved past them. Used to rebuild the window under a new prompt."""
        for slot in range(self.layout.sink_end, self.layout.capacity_frames):
            self.slot_frame[slot] = -1
        self.rolling_start = rolling_start

    def begin_block(self, start_frame: int, num_frames: int) -> "BlockCacheAccess":
        """Claim the slots of frames [start_frame, start_frame + num_frames) for this pass."""
        layout = self.layout
        end = start_frame + num_frames
        if end - max(start_frame, layout.sink_end) > layout.rolling_frames:
            raise ValueError(f"a block of {num_frames} frames does not fit a rolling window of "
                             f"{layout.rolling_frames} frames")
        write_slots = [layout.slot_of(f) for f in range(start_frame, start_frame + num_frames)]
        for slot, frame in zip(write_slots, range(start_frame, start_frame + num_frames)):
            self.slot_frame[slot] = frame
        visible = set(layout.visible_frames(end, self.rolling_start))
        read_slots = [s for s, f in enumerate(self.slot_frame) if f in visible]
        missing = visible - {self.slot_frame[s] for s in read_slots}
        if missing:
            raise RuntimeError(f"KV cache is missing frames {sorted(missing)} needed by block "
                               f"[{start_frame}, {end})")
        return BlockCacheAccess(self, write_slots, read_slots)


class BlockCacheAccess:
    """Slot bookkeeping of one block pass, shared by all layers of that pass."""

    def __init__(self, cache: KVCache, write_slots: list[int], read_slots: list[int]) -> None:
        self.cache = cache
        per_frame = cache.layout.tokens_per_frame
        device = cache.buffer.device
        self._write = _contiguous_range(write_slots, per_frame)
        self._write_index = None if self._write else _token_index(write_slots, per_frame, device)
        self._read = _contiguous_range(read_slots, per_frame)
        if self._read and self._read.start != 0:
            self._read = None
        self._read_index = None if self._read else _token_index(read_slots, per_frame, device)

    def write_and_read(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this block's k, v [B, heads, S, head_dim]; return the visible keys and values."""
        kv = self.cache.buffer[layer]  # [2, B, heads, tokens, head_dim]
        for stored, new in zip(kv, (k, v)):
            if self._write is not None:
                stored[:, :, self._write] = new
            else:
                stored.index_copy_(2, self._write_index, new.to(stored.dtype))
        if self._read is not None:
            visible = kv[:, :, :, self._read]
        else:
            visible = kv.index_select(3, self._read_index)
        return visible[0], visible[1]


def _contiguous_range(slots: list[int], per_frame: int) -> slice | None:
    if slots != list(range(slots[0], slots[0] + len(slots))):
        return None
    return slice(slots[0] * per_frame, (slots[0] + len(slots)) * per_frame)


def _token_index(slots: list[int], per_frame: int, device: torch.device) -> torch.Tensor:
    return torch.tensor([s * per_frame + i for s in slots for i in range(per_frame)], device=device)
