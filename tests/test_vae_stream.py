"""nodes/host/vae_stream.py without ComfyUI: the exact streaming decoder, its one-time probe and the
fallbacks, on a small stand-in written in the style of ComfyUI 0.33's Wan VAE.

`WanVAE` below follows the call conventions the streaming decoder relies on (a `conv2`, a decoder
called as `decoder(x, feat_cache=list, feat_idx=[0])` with one slot per `CausalConv3d`, a temporal
upsample that turns the video's first latent frame into 1 frame and every later one into 4) and
0.33's habits: each convolution caches only the frames of the current call, the decoder returns a
list, and the whole-video `decode` runs the first frame alone and then pairs. So the exact path
must top up single-frame cache slots to be exact; the real hosts are tested in
tests/integration/test_comfy_vae_streaming.py.
"""
from __future__ import annotations

import importlib
import logging
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import load_pack_standalone

PACK = "longlive_vace_vae_stream_test"
pack = load_pack_standalone(PACK)
vae_stream = importlib.import_module(f"{PACK}.nodes.host.vae_stream")
streaming = importlib.import_module(f"{PACK}.vace_core.streaming")
TOLERANCE = 1e-5  # float32, the same convolutions on the same frames: measured ~1e-7


class CausalConv3d(nn.Conv3d):
    """Kernel 3 in time, causal: pads with the cached frames (or zeros) in front."""

    def forward(self, x, cache_x=None):
        need = 2 - (0 if cache_x is None else cache_x.shape[2])
        parts = ([x.new_zeros(*x.shape[:2], need, *x.shape[3:])] if need > 0 else []) + \
            ([cache_x] if cache_x is not None else []) + [x]
        return super().forward(torch.cat(parts, dim=2))


class Decoder(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv_in = CausalConv3d(16, dim, 3, padding=(0, 1, 1))
        self.time_up = CausalConv3d(dim, 4 * dim, (3, 1, 1))
        self.conv_out = CausalConv3d(dim, 3 * 64, (3, 1, 1))

    def _conv(self, conv, x, cache, idx):
        new = x[:, :, -2:]  # 0.33: only the frames of this call
        out = conv(x, cache[idx[0]] if isinstance(cache[idx[0]], torch.Tensor) else None)
        cache[idx[0]] = new
        idx[0] += 1
        return out

    def forward(self, x, feat_cache=None, feat_idx=[0]):
        x = F.silu(self._conv(self.conv_in, x, feat_cache, feat_idx))
        slot = feat_idx[0]
        if feat_cache[slot] is None:  # the video's first frame: no temporal upsampling
            feat_cache[slot] = "Rep"
            feat_idx[0] += 1
        else:
            b, c, t, h, w = x.shape
            x = self._conv(self.time_up, x, feat_cache, feat_idx).view(b, 4, c, t, h, w)
            x = x.permute(0, 2, 3, 1, 4, 5).reshape(b, c, 4 * t, h, w)
        x = self._conv(self.conv_out, x, feat_cache, feat_idx)  # [b, 192, T, h, w]
        b, _, t, h, w = x.shape
        pixels = F.pixel_shuffle(x.permute(0, 2, 1, 3, 4).reshape(b * t, 192, h, w), 8)
        pixels = torch.tanh(pixels).view(b, t, 3, 8 * h, 8 * w).permute(0, 2, 1, 3, 4)
        return [pixels[:, :, i:i + 1] for i in range(t)]  # a list, as 0.33's decoder returns


class WanVAE(nn.Module):
    def __init__(self, dim=8, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2, attn_scales=(),
                 temperal_downsample=(False, True, True)):
        super().__init__()
        self.z_dim, self.dim_mult, self.num_res_blocks = z_dim, list(dim_mult), num_res_blocks
        self.attn_scales, self.temperal_downsample = list(attn_scales), list(temperal_downsample)
        self.conv2 = nn.Conv3d(z_dim, z_dim, 1)
        self.decoder = Decoder(dim)

    def decode(self, z):
        cache = [None] * 4
        x, out = self.conv2(z), []
        for start, stop in [(0, 1)] + [(i, i + 2) for i in range(1, z.shape[2], 2)]:
            out += self.decoder(x[:, :, start:stop], feat_cache=cache, feat_idx=[0])
        return torch.cat(out, dim=2)


WanVAE.__module__ = "standin.ldm.wan.vae"  # where the streaming decoder recognises a Wan 2.1 VAE


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(max(1, param[0].numel())))
    return module.eval().requires_grad_(False)


class ComfyLikeVAE:
    """The comfy.sd.VAE attributes the streaming decoder uses, around a network."""

    def __init__(self, network: nn.Module):
        self.first_stage_model = network
        self.vae_dtype, self.device, self.output_device = torch.float32, torch.device("cpu"), torch.device("cpu")
        self.tiled_calls: list[tuple] = []

    def process_output(self, image):
        return ((image + 1) / 2).clamp(0, 1)

    def decode(self, latents):
        return self.process_output(self.first_stage_model.decode(latents)).movedim(1, -1)  # [1, T, H, W, 3]

    def decode_tiled(self, latents):
        self.tiled_calls.append(tuple(latents.shape))
        return self.decode(latents)


def latents(frames: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 16, frames, 2, 2, generator=torch.Generator().manual_seed(seed))


def decode_in_chunks(decoder, z, split):
    out, start = [], 0
    for size in split:
        out.append(decoder.decode_chunk(z[:, :, start:start + size]))
        start += size
    return out


def host_decoder(vae):
    """What nodes/host/vae_stream.py builds outside ComfyUI, with the VAE's tiled decode on out-of-memory."""
    return vae_stream.streaming_decoder_for(vae, tiled_decode=lambda z: vae.decode_tiled(z)[0])


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [[1] * 8, [3, 3, 2], [1, 3, 3, 1], [8]])
def test_streaming_equals_the_whole_decode_of_a_033_style_vae(split, caplog):
    vae = ComfyLikeVAE(seeded(WanVAE()))
    with caplog.at_level(logging.WARNING, logger="longlive_vace"):
        decoder = host_decoder(vae)
    assert isinstance(decoder, vae_stream.ComfyWanStreamingDecoder) and caplog.text == ""
    chunks = decode_in_chunks(decoder, latents(), split)
    whole = vae.decode(latents())[0]
    assert [c.shape[0] for c in chunks] == [streaming.frames_for_chunk(n, i == 0) for i, n in enumerate(split)]
    assert float((torch.cat(chunks) - whole).abs().max()) < TOLERANCE


def test_without_topping_up_the_cache_the_033_style_vae_is_not_exact(monkeypatch):
    """The broken variant the test above would catch: keep the host's one-frame cache slots."""
    monkeypatch.setattr(vae_stream.WanFeatMapDecoder, "_keep_two_frames", lambda self, before: None)
    network = seeded(WanVAE())
    stream = vae_stream.WanFeatMapDecoder(network)
    error = float((stream.decode_raw(latents()) - network.decode(latents())).abs().max())
    assert error > 1e-2
    assert vae_stream._probe(network) is not None  # and the probe would refuse it


class Misbehaving(WanVAE):
    """Its decoder runs `misbehave` when called from outside the network's own decode()."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.own, self.calls, self.oom_at = False, 0, None
        inner = self.decoder.forward

        def forward(x, feat_cache=None, feat_idx=[0]):
            if self.own:
                return inner(x, feat_cache=feat_cache, feat_idx=feat_idx)
            self.calls += 1
            return self.misbehave(inner, x, feat_cache, feat_idx)

        self.decoder.forward = forward

    def misbehave(self, inner, x, cache, idx):
        raise NotImplementedError

    def decode(self, z):
        self.own = True
        try:
            return super().decode(z)
        finally:
            self.own = False


def _passes_as_wan(cls: type) -> type:
    cls.__name__ = cls.__qualname__ = "WanVAE"
    cls.__module__ = f"standin_{id(cls)}.ldm.wan.vae"
    return cls


@_passes_as_wan
class DecoderRaises(Misbehaving):
    def misbehave(self, inner, x, cache, idx):
        raise TypeError("expected Tensor as element 0 in argument 0, but got list")


@_passes_as_wan
class DecoderDrifts(Misbehaving):
    def misbehave(self, inner, x, cache, idx):
        return [t + 1e-3 for t in inner(x, feat_cache=cache, feat_idx=idx)]


@_passes_as_wan
class OutOfMemoryOnce(Misbehaving):
    """Raises torch.OutOfMemoryError at its `oom_at`-th outside call."""

    def misbehave(self, inner, x, cache, idx):
        if self.calls == self.oom_at:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return inner(x, feat_cache=cache, feat_idx=idx)


@pytest.mark.parametrize("network_class, reason", [
    (DecoderRaises, "TypeError: expected Tensor as element 0 in argument 0, but got list"),
    (DecoderDrifts, "differs from a whole decode by 0.001"),
])
def test_other_internals_fall_back_with_one_warning_and_the_right_frames(network_class, reason, caplog, tmp_path):
    vae = ComfyLikeVAE(seeded(network_class()))
    with caplog.at_level(logging.WARNING, logger="longlive_vace"):
        decoder = host_decoder(vae)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert isinstance(decoder, streaming.OverlapChunkDecoder)
    assert len(warnings) == 1 and reason in warnings[0] and "approximately" in warnings[0], warnings
    path = tmp_path / "fallback.mp4"
    with streaming.VideoWriter(path, 16, 16) as writer:
        stats = streaming.latents_to_video(latents(), 1, decoder, writer, chunk_frames=3)
    assert stats.frames == streaming.read_video_info(path)[0] == 4 * 7 - 3


def test_the_probe_runs_once_per_class(monkeypatch):
    calls = []
    original = vae_stream._probe
    monkeypatch.setattr(vae_stream, "_probe", lambda wan: calls.append(type(wan)) or original(wan))
    monkeypatch.setattr(vae_stream, "_PROBE_RESULTS", {})
    for _ in range(3):
        host_decoder(ComfyLikeVAE(seeded(WanVAE())))
    assert calls == [WanVAE]


def test_out_of_memory_in_a_chunk_uses_the_tiled_decode_for_that_chunk(caplog):
    network = seeded(OutOfMemoryOnce())
    network.oom_at = 5  # latent frame 4: the middle of the second chunk
    vae = ComfyLikeVAE(network)
    z = latents(9)
    whole = vae.decode(z)[0]
    with caplog.at_level(logging.WARNING, logger="longlive_vace"):
        chunks = decode_in_chunks(host_decoder(vae), z, [3, 3, 3])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "out of memory" in warnings[0] and "tiled" in warnings[0], warnings
    assert vae.tiled_calls == [(1, 16, 5, 2, 2)]  # 2 latent frames of context + the chunk
    assert [c.shape[0] for c in chunks] == [9, 12, 12]
    assert float((chunks[0] - whole[:9]).abs().max()) < TOLERANCE  # before the failure: exact
    tiled = vae.decode(z[:, :, 1:6])[0][-12:]  # the tail of the tiled decode of context + chunk
    assert float((chunks[1] - tiled).abs().max()) < TOLERANCE
    # the third chunk rebuilds the decoder's cache from the 2 latent frames before it, so it is the
    # tail of a decode of those 2 frames + the chunk (not of the whole video: the stand-in's 3 stacked
    # convolutions reach further back than 2 frames)
    rebuilt = vae.decode(z[:, :, 4:9])[0][-12:]
    assert float((chunks[2] - rebuilt).abs().max()) < TOLERANCE


def test_an_out_of_memory_error_without_a_tiled_decode_propagates():
    network = seeded(OutOfMemoryOnce())
    network.oom_at = 2
    decoder = vae_stream.streaming_decoder_for(ComfyLikeVAE(network))
    with pytest.raises(torch.OutOfMemoryError):
        decode_in_chunks(decoder, latents(), [3, 3, 2])


def test_other_errors_are_not_taken_for_out_of_memory():
    network = seeded(OutOfMemoryOnce())
    vae = ComfyLikeVAE(network)
    decoder = host_decoder(vae)
    network.decoder.forward = lambda *a, **k: (_ for _ in ()).throw(ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        decoder.decode_chunk(latents(3))
    assert vae.tiled_calls == []
