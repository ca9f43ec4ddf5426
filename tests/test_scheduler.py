import pytest
import torch

from vace_core.scheduler import (
    FewStepSchedule,
    parse_steps,
    renoise,
    shift_sigma,
    validate_steps,
    warp_step,
    x0_from_flow,
)


def upstream_style_table(shift: float, n: int = 1000) -> torch.Tensor:
    """Independent rebuild of the warping table: n sigmas linspace(1, 0, n+1) without the last,
    shifted, times n, with a trailing 0; step s reads entry n - s."""
    s = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    return torch.cat([s * n, torch.zeros(1, dtype=torch.float64)])


def test_default_schedule_matches_longlive_numbers():
    sched = FewStepSchedule()
    assert sched.steps == (1000, 750, 500, 250)
    assert sched.shift == 5.0
    torch.testing.assert_close(sched.timesteps,
                               torch.tensor([1000.0, 937.5, 2500.0 / 3.0, 625.0], dtype=torch.float64))
    table = upstream_style_table(5.0)
    idx = 1000 - torch.tensor(sched.steps)
    torch.testing.assert_close(sched.timesteps, table[idx], rtol=0, atol=1e-9)
    torch.testing.assert_close(sched.sigmas, sched.timesteps / 1000)


@pytest.mark.parametrize("shift", [1.0, 3.0, 8.0])
def test_other_shifts_and_steps_match_table(shift):
    steps = (1000, 800, 333, 17, 1)
    sched = FewStepSchedule(steps, shift)
    table = upstream_style_table(shift)
    torch.testing.assert_close(sched.timesteps, table[1000 - torch.tensor(steps)], rtol=0, atol=1e-9)


def test_shift_one_is_identity():
    steps = (1000, 750, 500, 250, 3)
    assert FewStepSchedule(steps, 1.0).timesteps.tolist() == [float(s) for s in steps]
    assert shift_sigma(0.3, 1.0) == pytest.approx(0.3)
    assert warp_step(600, 1.0) == pytest.approx(600.0)


def test_iteration_gives_next_sigma_and_zero_at_end():
    items = list(FewStepSchedule())
    assert [i.index for i in items] == [0, 1, 2, 3]
    assert items[0].timestep == pytest.approx(1000.0) and items[0].sigma == pytest.approx(1.0)
    assert items[0].next_sigma == pytest.approx(0.9375)
    assert items[2].next_sigma == pytest.approx(0.625)
    assert items[3].next_sigma == 0.0
    assert len(FewStepSchedule()) == 4


def test_flow_round_trip():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 16, 3, 4, 4, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    sigma = 0.8333
    x_t = (1 - sigma) * x0 + sigma * noise
    flow = noise - x0  # what a perfect flow model predicts
    torch.testing.assert_close(x0_from_flow(x_t, flow, sigma), x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(renoise(x0, noise, sigma), x_t)
    torch.testing.assert_close(renoise(x0, noise, 0.0), x0)


def test_per_frame_sigma_broadcasts_and_dtype_kept():
    x0 = torch.ones(1, 16, 2, 2, 2, dtype=torch.bfloat16)
    noise = torch.zeros_like(x0)
    sigma = torch.tensor([0.25, 0.75]).view(1, 1, 2, 1, 1)
    out = renoise(x0, noise, sigma)
    assert out.dtype == torch.bfloat16
    assert out[0, 0, :, 0, 0].float().tolist() == [0.75, 0.25]
    x0_back = x0_from_flow(out, -x0, sigma)  # flow = noise - x0 = -x0
    assert x0_back.dtype == torch.bfloat16
    torch.testing.assert_close(x0_back.float(), torch.full(x0.shape, 1.0) * (1 - sigma) + sigma)


def test_parse_steps_valid():
    assert parse_steps("1000,750,500,250") == (1000, 750, 500, 250)
    assert parse_steps(" 1000 , 500 ") == (1000, 500)
    assert parse_steps("1") == (1,)


@pytest.mark.parametrize("text, words", [
    ("", "at least one"),
    ("1000,abc", "integers"),
    ("1000,,500", "integers"),
    ("1000,750.5", "integers"),
    ("250,500", "strictly decreasing"),
    ("1000,1000", "strictly decreasing"),
    ("1000,0", "outside 1..1000"),
    ("1001,500", "outside 1..1000"),
    ("-5", "outside 1..1000"),
])
def test_parse_steps_errors_name_the_input(text, words):
    with pytest.raises(ValueError) as err:
        parse_steps(text)
    assert repr(text) in str(err.value)
    assert words in str(err.value)


def test_schedule_validates():
    with pytest.raises(ValueError, match="strictly decreasing"):
        FewStepSchedule((500, 750))
    with pytest.raises(ValueError, match="shift"):
        FewStepSchedule(shift=0.0)
    with pytest.raises(ValueError, match="not an integer"):
        validate_steps((1000, 2.5))
    assert FewStepSchedule([1000, 500]).steps == (1000, 500)
