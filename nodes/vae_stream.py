"""Streaming (chunk-by-chunk) decoders for the VAE object a node receives.

ComfyUI's Wan 2.1 VAE (`comfy.ldm.wan.vae.WanVAE`, held by `comfy.sd.VAE` as `first_stage_model`)
decodes a video by running `conv2` and then its decoder one latent frame at a time, threading a
`feat_map` list through the calls: one entry per causal 3D convolution, holding the last input
frames it needs next time. Keeping that list from one chunk to the next makes chunked decoding
give exactly the frames of a whole decode, which `WanFeatMapDecoder` does.

This module only receives the VAE object and calls its attributes; it never imports ComfyUI
(host.py supplies model management through the `prepare` callback).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from ..vace_core.encoding import LATENT_CHANNELS
from ..vace_core.streaming import ChunkDecoder, OverlapChunkDecoder

log = logging.getLogger("longlive_vace")


def _count_causal_convs(module: torch.nn.Module) -> int:
    # one feat_map slot per CausalConv3d, as ComfyUI's count_conv3d counts them
    return sum(type(m).__name__ == "CausalConv3d" for m in module.modules())


def is_wan21_module(model: Any) -> bool:
    """True for ComfyUI's Wan 2.1 VAE network (not the Wan 2.2 one, whose decoder differs)."""
    cls = type(model)
    return (cls.__name__ == "WanVAE" and cls.__module__.endswith("wan.vae")
            and isinstance(getattr(model, "decoder", None), torch.nn.Module)
            and isinstance(getattr(model, "conv2", None), torch.nn.Module)
            and getattr(model, "z_dim", None) == LATENT_CHANNELS)


class WanFeatMapDecoder:
    """Chunked decoding with ComfyUI's Wan 2.1 `WanVAE` network, feat_map carried across calls.

    `decode_raw(z [1, 16, t, h, w])` (on the network's device and dtype) returns the decoder's own
    output [1, 3, T, 8h, 8w] in about -1..1: T = 4t - 3 for the first chunk of a video, 4t after.
    """

    def __init__(self, wan: torch.nn.Module) -> None:
        if not is_wan21_module(wan):
            raise TypeError(f"{type(wan).__module__}.{type(wan).__name__} is not ComfyUI's Wan 2.1 WanVAE")
        self.wan = wan
        self.feat_map: list[Any] = [None] * _count_causal_convs(wan.decoder)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        x = self.wan.conv2(z)  # a 1x1x1 convolution: no temporal state of its own
        frames = [self.wan.decoder(x[:, :, i:i + 1], feat_cache=self.feat_map, feat_idx=[0])
                  for i in range(x.shape[2])]
        return torch.cat(frames, dim=2)


class ComfyWanStreamingDecoder:
    """`decode_chunk` for a `comfy.sd.VAE` holding a Wan 2.1 VAE: the same dtype, device and output
    processing as `VAE.decode`, with the causal state kept between chunks.

    `prepare(latent_shape)` runs before each chunk (the host loads the VAE onto its device there,
    as `VAE.decode` does through ComfyUI's model management).
    """

    def __init__(self, vae: Any, prepare: Callable[[tuple[int, ...]], None] | None = None) -> None:
        self.vae = vae
        self.prepare = prepare
        self.stream = WanFeatMapDecoder(vae.first_stage_model)

    def decode_chunk(self, latents_raw: torch.Tensor) -> torch.Tensor:
        """RAW latents [1, 16, t, h, w] -> pixels [T, 8h, 8w, 3] in 0..1 on the VAE's output device."""
        if latents_raw.ndim != 5 or latents_raw.shape[:2] != (1, LATENT_CHANNELS):
            raise ValueError(f"expected one chunk of Wan 2.1 latents [1, 16, t, h, w], got {tuple(latents_raw.shape)}")
        vae = self.vae
        if self.prepare is not None:
            self.prepare(tuple(latents_raw.shape))
        with torch.no_grad():
            z = latents_raw.to(vae.vae_dtype).to(vae.device)
            out = self.stream.decode_raw(z)
            pixels = vae.process_output(out.to(vae.output_device).float())  # [1, 3, T, H, W]
        return pixels[0].movedim(0, -1)  # [T, H, W, 3]


def is_comfy_wan21_vae(vae: Any) -> bool:
    model = getattr(vae, "first_stage_model", None)
    return model is not None and is_wan21_module(model) and all(
        hasattr(vae, name) for name in ("vae_dtype", "device", "output_device", "process_output"))


def streaming_decoder_for(vae: Any, prepare: Callable[[tuple[int, ...]], None] | None = None) -> ChunkDecoder:
    """The exact streaming decoder for `vae` when there is one, else a bounded approximate one.

    - ComfyUI's Wan 2.1 VAE: `ComfyWanStreamingDecoder` (frames identical to a whole decode);
    - an object with its own `streaming_decoder()` (the core's stand-in VAE): that one;
    - anything else with `decode`: `OverlapChunkDecoder`, with a warning that chunk borders may
      show small seams.
    """
    if is_comfy_wan21_vae(vae):
        return ComfyWanStreamingDecoder(vae, prepare)
    own = getattr(vae, "streaming_decoder", None)
    if callable(own):
        return own()
    model = getattr(vae, "first_stage_model", vae)
    log.warning("LongLive: %s is not a Wan 2.1 VAE, so it cannot be decoded exactly chunk by chunk; each "
                "chunk is decoded with the 2 latent frames before it as context, which may leave small seams "
                "every chunk. Use wan_2.1_vae.safetensors for an exact result.", type(model).__name__)
    return OverlapChunkDecoder(vae, context_frames=2)
