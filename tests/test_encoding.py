import pytest
import torch
import torch.nn.functional as F

from vace_core.encoding import (TAIL_PROBE_LATENT_FRAMES, VaceContext, decode_normalized_without_references,
                                decode_without_references, encode_vace_context, prepare_reference,
                                strip_reference_frames)
from vace_core.latents import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, normalize_latents
from vace_core.testing.probes import fold_mask

MEAN = torch.tensor(WAN21_LATENTS_MEAN).view(1, 16, 1, 1, 1)
STD = torch.tensor(WAN21_LATENTS_STD).view(1, 16, 1, 1, 1)


class LinearVAE:
    """Stand-in with ComfyUI's Wan VAE conventions that is linear, so expectations can be
    computed by hand: latent frame i = frame 4i, 8x8 average pool, fixed 3->16 channel matrix."""

    def __init__(self, decode_batched: bool = True):
        g = torch.Generator().manual_seed(1)
        self.A = torch.randn(16, 3, generator=g)
        self.b = torch.randn(16, generator=g)
        self.encode_shapes: list[tuple[int, ...]] = []
        self.decode_batched = decode_batched

    def raw(self, pixels: torch.Tensor) -> torch.Tensor:
        # pixels [T, H, W, 3] -> [1, 16, (T-1)//4+1, H/8, W/8]
        frames = pixels[0::4].permute(0, 3, 1, 2)              # [t, 3, H, W]
        pooled = F.avg_pool2d(frames, 8)                       # [t, 3, h, w]
        lat = torch.einsum("oc,tchw->othw", self.A, pooled) + self.b.view(16, 1, 1, 1)
        return lat.unsqueeze(0)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        self.encode_shapes.append(tuple(pixels.shape))
        return self.raw(pixels)

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        # [1, 16, t, h, w] -> [1, 4t-3, 8h, 8w, 3]: output frame j shows channels 0..2 of latent (j+3)//4
        t = raw.shape[2]
        idx = torch.tensor([(j + 3) // 4 for j in range(4 * t - 3)])
        frames = raw[0, :3, idx]                               # [3, T, h, w]
        frames = frames.repeat_interleave(8, -1).repeat_interleave(8, -2).permute(1, 2, 3, 0)
        return frames.unsqueeze(0) if self.decode_batched else frames


def norm(raw):
    return (raw - MEAN) / STD


# --- masks ---------------------------------------------------------------------------------


def test_fold_single_pixel_sets_one_channel():
    # 5 video frames -> 2 latent frames; nearest-exact picks frames floor((i + .5) * 5 / 2) = 1, 3
    mask = torch.zeros(5, 16, 24)
    mask[3, 8 + 3, 16 + 5] = 0.7   # patch (row 1, col 2), dy 3, dx 5, above the 0.5 threshold
    mask[1, 0, 0] = 0.4            # below the threshold: dropped
    out = fold_mask(mask, 2)
    assert out.shape == (64, 2, 2, 3)
    assert out.sum() == 1
    assert out[3 * 8 + 5, 1, 1, 2] == 1


def test_fold_time_axis_nearest_exact():
    # 9 frames -> 3 latent frames read frames floor((i + .5) * 3) = 1, 4, 7
    for frame, latent in ((1, 0), (4, 1), (7, 2)):
        mask = torch.zeros(9, 8, 8)
        mask[frame] = 1
        out = fold_mask(mask, 3)
        expected = torch.zeros(64, 3, 1, 1)
        expected[:, latent] = 1
        assert torch.equal(out, expected)
    for unused in (0, 2, 3, 5, 6, 8):
        mask = torch.zeros(9, 8, 8)
        mask[unused] = 1
        assert fold_mask(mask, 3).sum() == 0


# --- reference geometry --------------------------------------------------------------------


def test_pad_wide_image_into_square_frame_has_white_bars():
    img = torch.zeros(16, 32, 3)                      # black, 32 wide, 16 high
    out = prepare_reference(img, 32, 32, "pad")       # fits at scale 1: rows 8..23
    assert out.shape == (32, 32, 3)
    assert torch.all(out[:8] == 1) and torch.all(out[24:] == 1)
    assert torch.all(out[8:24] == 0)


def test_pad_scales_up_and_centres_horizontally():
    img = torch.zeros(8, 8, 3)
    out = prepare_reference(img, 32, 16, "pad")       # scale min(16/8, 32/8) = 2 -> 16x16 at x 8..23
    assert out.shape == (16, 32, 3)
    assert torch.all(out[:, :8] == 1) and torch.all(out[:, 24:] == 1)
    assert torch.all(out[:, 8:24] == 0)


def test_pad_same_aspect_fills_frame():
    img = torch.rand(10, 20, 3)
    out = prepare_reference(img, 32, 16, "pad")
    expected = F.interpolate(img.permute(2, 0, 1)[None], size=(16, 32), mode="bilinear",
                             align_corners=False)[0].permute(1, 2, 0)
    torch.testing.assert_close(out, expected)


def test_crop_drops_the_sides_and_has_no_white():
    img = torch.zeros(16, 32, 3)
    img[:, :8] = torch.tensor([1.0, 0.0, 0.0])        # red margins that the centre crop removes
    img[:, 24:] = torch.tensor([1.0, 0.0, 0.0])
    out = prepare_reference(img, 32, 32, "crop")
    assert out.shape == (32, 32, 3)
    assert torch.all(out == 0)


def test_crop_tall_image_keeps_the_middle_rows():
    img = torch.zeros(40, 10, 3)
    img[:15] = 1.0
    img[25:] = 1.0
    out = prepare_reference(img, 16, 16, "crop")      # keep rows 15..24, scale 10 -> 16
    assert torch.all(out == 0)


def test_stretch_is_plain_resize():
    img = torch.zeros(16, 48, 3)
    img[8:] = 1.0                                     # bottom half white
    out = prepare_reference(img[..., :3], 16, 32, "stretch")
    assert out.shape == (32, 16, 3)
    assert torch.all(out[:15] == 0) and torch.all(out[17:] == 1)


def test_prepare_reference_rejects_bad_input():
    with pytest.raises(ValueError, match="reference_fit"):
        prepare_reference(torch.zeros(8, 8, 3), 16, 16, "zoom")
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        prepare_reference(torch.zeros(8, 8), 16, 16)


def test_alpha_channel_is_ignored():
    img = torch.zeros(16, 16, 4)
    img[..., 3] = 1
    assert torch.all(prepare_reference(img, 16, 16, "stretch") == 0)


# --- the context ---------------------------------------------------------------------------


def test_default_is_gray_with_mask_one():
    vae = LinearVAE()
    ctx = encode_vace_context(vae, width=32, height=16, video_frames=9)
    assert (ctx.ref_frames, ctx.latent_frames, ctx.video_frames) == (0, 3, 9)
    assert ctx.context.shape == (1, 96, 3, 2, 4)
    assert ctx.ref_latents.shape == (1, 16, 0, 2, 4)
    gray = norm((vae.A.sum(1) * 0.5 + vae.b).view(1, 16, 1, 1, 1)).expand(1, 16, 3, 2, 4)
    torch.testing.assert_close(ctx.context[:, :16], gray)
    torch.testing.assert_close(ctx.context[:, 16:32], gray)
    assert torch.all(ctx.context[:, 32:] == 1)
    assert vae.encode_shapes == [(9, 16, 32, 3), (9, 16, 32, 3)]


def test_control_video_with_mask_splits_inactive_and_reactive():
    vae = LinearVAE()
    g = torch.Generator().manual_seed(2)
    video = torch.rand(9, 16, 32, 3, generator=g)
    mask = torch.zeros(9, 16, 32)
    mask[:, :8, 8:16] = 1.0                           # generate patch (0, 1), keep the rest
    mask[4, 8:, :] = 0.9                              # frame 4: also the whole bottom row of patches
    ctx = encode_vace_context(vae, 32, 16, 9, control_video=video, control_masks=mask)

    m = mask.unsqueeze(-1).round()
    x = video * 2 - 1
    inactive = vae.raw((x * (1 - m) + 1) / 2)
    reactive = vae.raw((x * m + 1) / 2)
    # spelled out in 0..1: kept pixels stay in the inactive half, gray fills the rest
    torch.testing.assert_close((x * (1 - m) + 1) / 2, video * (1 - m) + 0.5 * m)
    torch.testing.assert_close(ctx.context[:, :16], norm(inactive))
    torch.testing.assert_close(ctx.context[:, 16:32], norm(reactive))

    folded = ctx.context[0, 32:]                      # [64, 3, 2, 4]; latent frame i reads frame 1, 4, 7
    expected = torch.zeros(64, 3, 2, 4)
    expected[:, :, 0, 1] = 1
    expected[:, 1, 1, :] = 1
    assert torch.equal(folded, expected)


def test_control_video_without_masks_is_all_reactive():
    vae = LinearVAE()
    video = torch.rand(5, 16, 16, 3, generator=torch.Generator().manual_seed(3))
    ctx = encode_vace_context(vae, 16, 16, 5, control_video=video)
    torch.testing.assert_close(ctx.context[:, :16], norm(vae.raw(torch.full_like(video, 0.5))))
    torch.testing.assert_close(ctx.context[:, 16:32], norm(vae.raw(video)))
    assert torch.all(ctx.context[:, 32:] == 1)


def test_short_control_video_padded_gray_and_short_masks_padded_one():
    # first-frame conditioning as in ComfyUI: one kept frame, then gray frames to generate
    vae = LinearVAE()
    first = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(4))
    keep = torch.zeros(1, 16, 16)
    ctx = encode_vace_context(vae, 16, 16, 9, control_video=first, control_masks=keep)
    padded = torch.cat([first, torch.full((8, 16, 16, 3), 0.5)])
    m = torch.cat([torch.zeros(1, 16, 16, 1), torch.ones(8, 16, 16, 1)])
    torch.testing.assert_close(ctx.context[:, :16], norm(vae.raw(padded * (1 - m) + 0.5 * m)))
    torch.testing.assert_close(ctx.context[:, 16:32], norm(vae.raw(padded * m + 0.5 * (1 - m))))
    assert torch.all(ctx.context[:, 32:] == 1)        # frames 1, 4, 7 are all "generate"


def test_long_control_video_is_cut_and_2d_mask_broadcasts():
    vae = LinearVAE()
    video = torch.rand(12, 16, 16, 3, generator=torch.Generator().manual_seed(5))
    mask2d = torch.zeros(16, 16)
    mask2d[8:] = 1
    ctx = encode_vace_context(vae, 16, 16, 5, control_video=video, control_masks=mask2d)
    assert ctx.latent_frames == 2 and vae.encode_shapes[0][0] == 5
    m = mask2d.view(1, 16, 16, 1)
    torch.testing.assert_close(ctx.context[:, :16], norm(vae.raw(video[:5] * (1 - m) + 0.5 * m)))
    expected_mask = torch.zeros(64, 2, 2, 2)
    expected_mask[:, :, 1, :] = 1
    assert torch.equal(ctx.context[0, 32:], expected_mask)


def test_control_video_is_centre_cropped_to_the_frame():
    vae = LinearVAE()
    video = torch.zeros(1, 16, 32, 3)
    video[:, :, :8] = 1.0                             # left/right margins removed by the crop
    video[:, :, 24:] = 1.0
    ctx = encode_vace_context(vae, 16, 16, 1, control_video=video)
    torch.testing.assert_close(ctx.context[:, 16:32], norm(vae.raw(torch.zeros(1, 16, 16, 3))))


@pytest.mark.parametrize("n_refs", [1, 2, 3])
def test_references_come_first_with_zero_reactive_and_mask(n_refs):
    vae = LinearVAE()
    g = torch.Generator().manual_seed(6)
    refs = [torch.rand(16, 32, 3, generator=g) for _ in range(n_refs)]
    ctx = encode_vace_context(vae, 32, 16, 5, reference_images=refs, require_references=True)
    assert ctx.ref_frames == n_refs and ctx.latent_frames == 2 and ctx.total_frames == n_refs + 2
    assert ctx.context.shape == (1, 96, n_refs + 2, 2, 4)
    for i, ref in enumerate(refs):
        torch.testing.assert_close(ctx.context[:, :16, i:i + 1], norm(vae.raw(ref[None])))
    torch.testing.assert_close(ctx.ref_latents, ctx.context[:, :16, :n_refs])
    assert torch.all(ctx.context[:, 16:, :n_refs] == 0)
    # video part unchanged by the references: gray, mask 1
    assert torch.all(ctx.context[:, 32:, n_refs:] == 1)
    # every reference was encoded on its own, as one frame
    assert vae.encode_shapes.count((1, 16, 32, 3)) == n_refs


def test_reference_batch_tensor_and_fit_are_used():
    vae = LinearVAE()
    batch = torch.zeros(2, 8, 8, 3)                   # black squares into a 32x16 frame
    ctx = encode_vace_context(vae, 32, 16, 1, reference_images=batch, reference_fit="pad")
    assert ctx.ref_frames == 2
    padded = prepare_reference(batch[0], 32, 16, "pad")
    assert torch.all(padded[:, :8] == 1)              # white bars are what got encoded
    torch.testing.assert_close(ctx.ref_latents[:, :, :1], norm(vae.raw(padded[None])))


def test_requires_references_when_asked():
    for refs in (None, [], torch.zeros(0, 16, 16, 3)):
        vae = LinearVAE()
        with pytest.raises(ValueError, match="R2V needs at least one reference image"):
            encode_vace_context(vae, 16, 16, 5, reference_images=refs, require_references=True)
        assert vae.encode_shapes == []
    assert encode_vace_context(LinearVAE(), 16, 16, 5).ref_frames == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(width=20, height=16, video_frames=5), "width 20"),
    (dict(width=16, height=40, video_frames=5), "height 40"),
    (dict(width=16, height=16, video_frames=0), "video_frames"),
    (dict(width=16, height=16, video_frames=5, reference_fit="zoom"), "reference_fit"),
    (dict(width=16, height=16, video_frames=5, control_video=torch.zeros(5, 16, 16)), "control_video"),
    (dict(width=16, height=16, video_frames=5, control_masks=torch.zeros(1, 5, 16, 16)), "control_masks"),
    (dict(width=16, height=16, video_frames=5, reference_images=[torch.zeros(16, 16)]), "reference image"),
])
def test_invalid_input_fails_before_the_vae(kwargs, match):
    vae = LinearVAE()
    with pytest.raises(ValueError, match=match):
        encode_vace_context(vae, **kwargs)
    assert vae.encode_shapes == []


def test_wrong_vae_is_named():
    class Wan22Like(LinearVAE):
        def encode(self, pixels):
            return torch.zeros(1, 48, (pixels.shape[0] - 1) // 4 + 1, pixels.shape[1] // 16, pixels.shape[2] // 16)
    with pytest.raises(ValueError, match="Wan 2.1 VAE"):
        encode_vace_context(Wan22Like(), 32, 32, 5)


def test_context_slicing_and_device_dtype():
    ctx = encode_vace_context(LinearVAE(), 16, 16, 9, reference_images=[torch.rand(16, 16, 3)])
    assert ctx.total_frames == 4
    torch.testing.assert_close(ctx.frames(1, 3), ctx.context[:, :, 1:3])
    for start, stop in ((0, 0), (2, 1), (-1, 2), (0, 5)):
        with pytest.raises(IndexError):
            ctx.frames(start, stop)
    half = ctx.to(dtype=torch.float16)
    assert half.context.dtype == half.ref_latents.dtype == torch.float16
    assert half.ref_frames == 1 and half.latent_frames == 3
    with pytest.raises(ValueError, match="expected"):
        VaceContext(ctx.context[:, :, 1:], ctx.ref_latents, 1, 3, 9, 16, 16)


# --- decoding ------------------------------------------------------------------------------


def test_strip_reference_frames():
    lat = torch.arange(5.0).view(1, 1, 5, 1, 1).expand(1, 16, 5, 2, 2)
    assert strip_reference_frames(lat, 2)[0, 0, :, 0, 0].tolist() == [2.0, 3.0, 4.0]
    assert strip_reference_frames(lat, 0).shape[2] == 5
    with pytest.raises(ValueError, match="strip 5"):
        strip_reference_frames(lat, 5)


@pytest.mark.parametrize("batched", [True, False])
def test_decode_drops_references_before_decoding(batched):
    vae = LinearVAE(decode_batched=batched)
    raw = torch.arange(5.0).view(1, 1, 5, 1, 1).expand(1, 16, 5, 2, 2).clone()
    video = decode_without_references(vae, raw, ref_frames=2)
    assert video.shape == (9, 16, 16, 3)              # 3 latent frames -> 4*3-3 frames
    # frame 0 shows latent 2 (the first generated one), frames 1..4 latent 3, 5..8 latent 4
    assert video[:, 0, 0, 0].tolist() == [2.0] + [3.0] * 4 + [4.0] * 4
    via_norm = decode_normalized_without_references(vae, normalize_latents(raw), ref_frames=2)
    torch.testing.assert_close(via_norm, video)


class SettlingVAE(LinearVAE):
    """Causal stand-in whose latent frame i mixes input frames 4i and 4(i-1), 4(i-2): a constant
    input gives a constant latent only from latent frame 2 on (like the Wan VAE's receptive field)."""

    def raw(self, pixels: torch.Tensor) -> torch.Tensor:
        lat = super().raw(pixels)                               # [1, 16, t, h, w]
        shifted1 = torch.cat([torch.zeros_like(lat[:, :, :1]), lat[:, :, :-1]], dim=2)
        shifted2 = torch.cat([torch.zeros_like(lat[:, :, :2]), lat[:, :, :-2]], dim=2)
        return lat + 0.5 * shifted1 + 0.25 * shifted2


class NeverSettlingVAE(LinearVAE):
    def raw(self, pixels: torch.Tensor) -> torch.Tensor:
        lat = super().raw(pixels)
        ramp = torch.arange(lat.shape[2], dtype=lat.dtype).view(1, 1, -1, 1, 1)
        return lat + 0.01 * ramp


def _full_length_expectation(vae, pixels, mask, latent_frames):
    # the whole clip encoded at once, computed without the encoder's tail shortcut
    x = pixels * 2 - 1
    m = mask.unsqueeze(-1)
    inactive = norm(vae.raw((x * (1 - m) + 1) / 2))
    reactive = norm(vae.raw((x * m + 1) / 2))
    return torch.cat([inactive, reactive, fold_mask(mask, latent_frames).unsqueeze(0)], dim=1)


@pytest.mark.parametrize("refs", [0, 2])
def test_long_gray_video_stores_a_short_context_that_equals_the_full_one(refs):
    vae = SettlingVAE()
    video_frames = 4 * 59 + 1                                   # 60 latent frames
    images = [torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(i)) for i in range(refs)]
    ctx = encode_vace_context(vae, 16, 16, video_frames, reference_images=images or None)
    assert ctx.latent_frames == 60 and ctx.total_frames == 60 + refs
    stored = 1 + TAIL_PROBE_LATENT_FRAMES
    assert ctx.context.shape[2] == refs + stored and ctx.repeated_tail == 60 - stored
    assert max(shape[0] for shape in vae.encode_shapes) == 4 * stored - 3   # never the 237-frame clip
    expected = _full_length_expectation(vae, torch.full((video_frames, 16, 16, 3), 0.5),
                                        torch.ones(video_frames, 16, 16), 60)
    torch.testing.assert_close(ctx.frames(refs, refs + 60), expected, rtol=0, atol=1e-6)
    for start, stop in ((refs + 3, refs + 9), (refs + 40, refs + 60), (0, refs + 1)):
        torch.testing.assert_close(ctx.frames(start, stop), torch.cat(
            [ctx.context[:, :, :refs], expected], dim=2)[:, :, start:stop], rtol=0, atol=1e-6)


def test_short_control_clip_in_a_long_video_keeps_its_frames_and_repeats_the_gray_tail():
    vae = SettlingVAE()
    first = torch.rand(5, 16, 16, 3, generator=torch.Generator().manual_seed(9))
    keep = torch.zeros(5, 16, 16)
    video_frames = 4 * 59 + 1
    ctx = encode_vace_context(vae, 16, 16, video_frames, control_video=first, control_masks=keep)
    assert ctx.repeated_tail > 0
    pixels = torch.cat([first, torch.full((video_frames - 5, 16, 16, 3), 0.5)])
    mask = torch.cat([keep, torch.ones(video_frames - 5, 16, 16)])
    expected = _full_length_expectation(vae, pixels, mask, 60)
    torch.testing.assert_close(ctx.frames(0, 60), expected, rtol=0, atol=1e-6)


def test_a_vae_that_never_settles_is_encoded_in_full():
    vae = NeverSettlingVAE()
    latent_frames = TAIL_PROBE_LATENT_FRAMES + 10
    video_frames = 4 * (latent_frames - 1) + 1
    ctx = encode_vace_context(vae, 16, 16, video_frames)
    assert ctx.repeated_tail == 0 and ctx.context.shape[2] == latent_frames
    expected = _full_length_expectation(vae, torch.full((video_frames, 16, 16, 3), 0.5),
                                        torch.ones(video_frames, 16, 16), latent_frames)
    torch.testing.assert_close(ctx.frames(0, latent_frames), expected, rtol=0, atol=1e-6)
