"""LongLive's few-step flow-matching schedule.

LongLive (like Self-Forcing) is distilled to denoise in a handful of steps named on a 0..1000
scale, by default 1000, 750, 500, 250. Those names are not the timesteps the model sees: they
index a 1000-entry flow-matching table whose sigmas run linearly from 1 down to (but excluding)
sigma_min = 0 and are then warped by the timestep shift, so step s is fed to the model as

    t(s) = 1000 * shift(s / 1000),   shift(x) = k * x / (1 + (k - 1) * x)

which for k = 5 gives 1000, 937.5, 833.33, 625.0. The model predicts the flow v = noise - x0 at
sigma = t / 1000, so x0 = x_t - sigma * v; the next step starts from fresh noise mixed in at the
next sigma: x_t' = (1 - sigma') * x0 + sigma' * noise.

Some checkpoints were distilled with steps that are fed to the model as they are (CausVid's
1000, 757, 522: `warp_denoising_step: false`). Then `warp=False`: the step is the timestep, and
its sigma is that of the table entry nearest to it, as upstream's flow-matching scheduler looks a
timestep up (with CausVid's shift 8, 757 -> sigma 0.756757, the entry of unshifted sigma 0.28).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple, Sequence

import torch

NUM_TRAIN_TIMESTEPS = 1000
DEFAULT_STEPS: tuple[int, ...] = (1000, 750, 500, 250)
DEFAULT_SHIFT = 5.0


def shift_sigma(sigma: float, shift: float) -> float:
    """Warp a sigma in [0, 1] towards the noisy end: shift * s / (1 + (shift - 1) * s)."""
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def warp_step(step: int, shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> float:
    """Timestep (0..num_train_timesteps) the model sees for the nominal denoising step `step`.

    Upstream builds the table as linspace(1, 0, N + 1)[:-1] (so entry i has sigma 1 - i/N),
    shifts it, appends 0 and reads entry N - step; that entry's unshifted sigma is step / N,
    which is what is evaluated here directly (in double precision instead of a float32 table).
    """
    return num_train_timesteps * shift_sigma(step / num_train_timesteps, shift)


def table_sigma(timestep: float, shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> float:
    """Sigma of the entry of the shifted table (see `warp_step`) whose timestep is nearest to
    `timestep`; a tie goes to the noisier entry, as an argmin over the table does."""
    n = num_train_timesteps
    x = timestep / n
    unshifted = x / (shift - (shift - 1.0) * x)  # inverse of shift_sigma
    position = n * (1.0 - unshifted)  # fractional table index; entry i has unshifted sigma 1 - i/n
    below = min(max(int(position), 0), n - 1)
    candidates = sorted({below, min(below + 1, n - 1)})
    sigmas = [shift_sigma(1.0 - i / n, shift) for i in candidates]
    return min(sigmas, key=lambda s: (abs(n * s - timestep), -s))


def parse_steps(text: str, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> tuple[int, ...]:
    """Parse a widget string like "1000,750,500,250" into validated denoising steps."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise ValueError(f"denoising steps {text!r}: give at least one step, e.g. '1000,750,500,250'")
    try:
        steps = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"denoising steps {text!r}: expected comma-separated integers, e.g. '1000,750,500,250'"
        ) from None
    validate_steps(steps, num_train_timesteps, source=repr(text))
    return steps


def validate_steps(steps: Sequence[int], num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
                   source: str | None = None) -> None:
    """Steps must be strictly decreasing integers in 1..num_train_timesteps (0 is the clean end
    every step list implicitly finishes at, so it is never a step itself)."""
    name = f"denoising steps {source if source is not None else list(steps)}"
    if len(steps) == 0:
        raise ValueError(f"{name}: give at least one step")
    for s in steps:
        if isinstance(s, bool) or not isinstance(s, int):
            raise ValueError(f"{name}: step {s!r} is not an integer")
        if not 1 <= s <= num_train_timesteps:
            raise ValueError(f"{name}: step {s} lies outside 1..{num_train_timesteps}")
    for a, b in zip(steps, steps[1:]):
        if b >= a:
            raise ValueError(f"{name}: steps must be strictly decreasing ({a} is followed by {b})")


class DenoisingStep(NamedTuple):
    """One step of the schedule: its index, the timestep the model is given and the noise levels."""
    index: int  # type: ignore[assignment]  # a field may shadow tuple.index; mypy types it as the method
    timestep: float    # what the model is given, 0..1000
    sigma: float       # timestep / 1000: noise level of the input
    next_sigma: float  # noise level to re-noise x0 to; 0.0 after the last step


@dataclass(frozen=True)
class FewStepSchedule:
    """The few-step schedule; iterate it for (index, timestep, sigma, next_sigma). `warp` False feeds
    the steps to the model as timesteps (see the module docstring)."""

    steps: tuple[int, ...] = DEFAULT_STEPS
    shift: float = DEFAULT_SHIFT
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    warp: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        validate_steps(self.steps, self.num_train_timesteps)
        if not self.shift > 0:
            raise ValueError(f"shift {self.shift} must be positive")

    @property
    def timesteps(self) -> torch.Tensor:
        """[n] float64 timesteps on the 0..num_train_timesteps scale (what the model is given)."""
        if not self.warp:
            return torch.tensor(self.steps, dtype=torch.float64)
        return torch.tensor([warp_step(s, self.shift, self.num_train_timesteps) for s in self.steps],
                            dtype=torch.float64)

    @property
    def sigmas(self) -> torch.Tensor:
        """[n] float64 noise levels in (0, 1]."""
        if not self.warp:
            return torch.tensor([table_sigma(s, self.shift, self.num_train_timesteps) for s in self.steps],
                                dtype=torch.float64)
        return self.timesteps / self.num_train_timesteps

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[DenoisingStep]:
        times, sig = self.timesteps.tolist(), self.sigmas.tolist()
        nxt = sig[1:] + [0.0]
        for i, (t, s, n) in enumerate(zip(times, sig, nxt)):
            yield DenoisingStep(i, t, s, n)


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    # Mixing x0 and noise in bf16/fp16 loses visible precision; upstream even uses float64 here.
    return torch.promote_types(dtype, torch.float32)


# Sigmas are Python floats (or tensors already where the latents are): a float enters the kernel as
# a scalar argument, while torch.as_tensor(sigma, device=cuda) would be a host-to-device copy and a
# host sync, twice per step.

def x0_from_flow(x_t: torch.Tensor, flow: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Clean estimate from the predicted flow: x0 = x_t - sigma * flow (sigma broadcastable)."""
    work = _working_dtype(x_t.dtype)
    return (x_t.to(work) - sigma * flow.to(work)).to(x_t.dtype)


def renoise(x0: torch.Tensor, noise: torch.Tensor, sigma_next: float | torch.Tensor) -> torch.Tensor:
    """Input of the next step: (1 - sigma') * x0 + sigma' * noise, noise freshly drawn by the caller."""
    work = _working_dtype(x0.dtype)
    return ((1 - sigma_next) * x0.to(work) + sigma_next * noise.to(work)).to(x0.dtype)
