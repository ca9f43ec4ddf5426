"""3D rotary position embedding (RoPE) over (frame, row, column) at absolute positions, in real
arithmetic.

Each head's `head_dim / 2` rotation pairs are split between the three axes like upstream Wan: time
gets `hd/2 - 2*(hd//6)` pairs, rows and columns `hd//6` each. Rotating the pair (a, b) by angle t
gives (a cos t - b sin t, a sin t + b cos t): the complex product upstream computes, written with
real cos/sin tables because inductor generates no code for complex operators (it falls back to eager
kernels) and some devices have no complex support.

The angles are computed once, in float64 on the CPU (upstream's precision; MPS, Intel Arc and
DirectML have no float64), for every position of each axis; their cos/sin move to the compute device
once as float32 (`axis_tables`). A pass's table is assembled on the device from slices of those: no
host computation and no host-to-device copy per pass.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

MAX_GRID = 1024  # row and column positions with angles, as upstream Wan's tables (8192 pixels)


class RopeTable(NamedTuple):
    """Rotations of one pass's tokens (f, h, w order), each value repeated for both members of
    its pair: cos [S, 1, head_dim] and sin [S, 1, head_dim] with the sign of the pair's first
    member flipped, so that rotate(x) = x * cos + swap_pairs(x) * sin."""
    cos: torch.Tensor
    sin: torch.Tensor


def apply_rope(x: torch.Tensor, rope: RopeTable) -> torch.Tensor:
    """Rotate consecutive channel pairs of x [B, S, heads, head_dim] by the table's angles, in
    float32 (returned in x's dtype)."""
    x32 = x.float()
    swapped = x32.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (a, b) -> (b, a)
    return torch.addcmul(x32 * rope.cos, swapped, rope.sin).to(x.dtype)


class RotaryEmbedding:
    """The tables of a model with `head_dim`-wide heads and `max_frames` frame positions.

    Tables of recent pass grids are kept, so the passes of one chunk (and its 45 blocks) share one;
    only a few, because every chunk starts at a new frame position and a large cache would grow
    with the video (4.8 MB per chunk at 480x832).
    """

    def __init__(self, head_dim: int, max_frames: int = 1024, theta: float = 10000.0, max_cached: int = 4) -> None:
        third = head_dim // 6
        self.axis_dims = (head_dim - 4 * third, 2 * third, 2 * third)
        self.axis_positions = (max_frames, MAX_GRID, MAX_GRID)
        self.theta = theta
        self.max_cached = max_cached
        self._axes: dict[str, tuple[RopeTable, RopeTable, RopeTable]] = {}
        self._tables: dict[tuple, RopeTable] = {}

    def _axis_angles(self, axis: int) -> torch.Tensor:
        """[positions, pairs] float64 angles of one axis, on the CPU."""
        dim = self.axis_dims[axis]
        inv_freq = 1.0 / torch.pow(self.theta, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        return torch.outer(torch.arange(self.axis_positions[axis], dtype=torch.float64), inv_freq)

    def axis_tables(self, device: torch.device) -> tuple[RopeTable, RopeTable, RopeTable]:
        """Per axis, cos and signed sin [positions, 2 * pairs] float32 on `device`, built once."""
        key = str(device)
        if key not in self._axes:
            # normal tensors even under the sampler's inference mode, so a table can later serve a
            # forward that autograd tracks
            with torch.inference_mode(False):
                self._axes[key] = (self._axis_table(0, device), self._axis_table(1, device),
                                   self._axis_table(2, device))
        return self._axes[key]

    def _axis_table(self, axis: int, device: torch.device) -> RopeTable:
        angles = self._axis_angles(axis)
        cos = angles.cos().repeat_interleave(2, dim=1)
        sin = torch.stack([-angles.sin(), angles.sin()], dim=-1).flatten(1)
        return RopeTable(cos.to(device, torch.float32), sin.to(device, torch.float32))

    def table(self, start_frame: int, frames: int, height: int, width: int, device: torch.device) -> RopeTable:
        """The table of a pass over frames start_frame .. start_frame+frames-1 of a height x width
        token grid: [frames*height*width, 1, head_dim] cos and signed sin, on `device`."""
        if start_frame + frames > self.axis_positions[0] or max(height, width) > MAX_GRID:
            raise ValueError(f"a grid of {frames}x{height}x{width} tokens at frame {start_frame} lies outside the "
                             f"RoPE tables ({self.axis_positions[0]} frames, {MAX_GRID} rows and columns)")
        key = (start_frame, frames, height, width, str(device))
        cached = self._tables.get(key)
        if cached is not None:
            return cached
        time, rows, cols = self.axis_tables(device)
        shape = (frames, height, width)

        def grid(t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            parts = [t[start_frame:start_frame + frames, None, None, :].expand(*shape, -1),
                     h[None, :height, None, :].expand(*shape, -1),
                     w[None, None, :width, :].expand(*shape, -1)]
            return torch.cat(parts, dim=-1).reshape(frames * height * width, 1, -1)

        with torch.inference_mode(False):
            table = RopeTable(grid(time.cos, rows.cos, cols.cos), grid(time.sin, rows.sin, cols.sin))
        if len(self._tables) >= self.max_cached:
            self._tables.clear()
        self._tables[key] = table
        return table
