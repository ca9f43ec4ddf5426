"""The Wan 2.1 latent format (vace_core/latents.py): the statistics and normalisation, the frame
arithmetic of the VAE's strides, and the size check."""

import pytest
import torch

from vace_core.latents import (WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, check_size, denormalize_latents,
                               latent_frames_for, normalize_latents, video_frames_for)

MEAN = torch.tensor(WAN21_LATENTS_MEAN).view(1, 16, 1, 1, 1)
STD = torch.tensor(WAN21_LATENTS_STD).view(1, 16, 1, 1, 1)


# --- normalisation -------------------------------------------------------------------------


def test_latent_constants_and_normalisation():
    assert len(WAN21_LATENTS_MEAN) == len(WAN21_LATENTS_STD) == 16
    assert WAN21_LATENTS_MEAN[0] == -0.7571 and WAN21_LATENTS_MEAN[7] == 1.5508
    assert WAN21_LATENTS_STD[8] == 3.2687 and WAN21_LATENTS_STD[15] == 1.9160
    k = torch.arange(2 * 16 * 3 * 2 * 2, dtype=torch.float32).view(2, 16, 3, 2, 2) / 50
    raw = MEAN + STD * k
    torch.testing.assert_close(normalize_latents(raw), k)
    torch.testing.assert_close(denormalize_latents(k), raw)
    with pytest.raises(ValueError, match="16"):
        normalize_latents(torch.zeros(1, 48, 1, 2, 2))


# --- frame arithmetic and sizes ------------------------------------------------------------


def test_frame_arithmetic():
    assert [latent_frames_for(n) for n in (1, 2, 4, 5, 8, 9, 81)] == [1, 1, 1, 2, 2, 3, 21]
    assert [video_frames_for(n) for n in (1, 2, 21)] == [1, 5, 81]
    for bad in (0, -3):
        with pytest.raises(ValueError, match="video_frames"):
            latent_frames_for(bad)
    with pytest.raises(ValueError, match="latent_frames"):
        video_frames_for(0)


def test_check_size():
    check_size(832, 480)
    check_size(16, 16)
    with pytest.raises(ValueError, match=r"width 830\b") as err:
        check_size(830, 480)
    assert "height" not in str(err.value)
    with pytest.raises(ValueError, match=r"height 472\b"):
        check_size(832, 472)
    with pytest.raises(ValueError, match="width 0 and height 8"):
        check_size(0, 8)
