"""Streaming (chunk-by-chunk) decoders for the VAE object a node receives.

ComfyUI's Wan 2.1 VAE (`comfy.ldm.wan.vae.WanVAE`, held by `comfy.sd.VAE` as `first_stage_model`)
is causal in time: its decoder runs over the latent frames in order, threading a `feat_map` list
through the calls, one slot per causal 3D convolution, holding the last two input frames that
convolution needs next time. Keeping that list from one chunk to the next makes chunked decoding
give exactly the frames of a whole decode.

The host's internals around that list change between ComfyUI versions:
- 0.8 calls the decoder one latent frame at a time; each convolution keeps two frames itself and
  the decoder returns a tensor;
- 0.33 calls it on the first frame, then on pairs: a convolution keeps only the frames of the
  current call, and the decoder returns a list of tensors.
`WanFeatMapDecoder` calls the decoder one latent frame at a time and, after each call, tops up any
slot left holding a single frame with the last frame it held before, which 0.8 does itself and 0.33
needs. Because the next ComfyUI may change them again, `exact_streaming_problem` probes the
host's class once per process: a small random copy decodes a few latent frames whole and chunk by
chunk, and the exact path is used only when both agree. Otherwise the nodes fall back to
`OverlapChunkDecoder` (bounded, approximate) with one warning line naming the reason.

An out-of-memory error while decoding a chunk exactly falls back to the host's tiled decode for
that chunk (with a little latent context before it); the exact state is then rebuilt from that
context for the next chunk.

The decoders only receive the VAE object and call its attributes; `streaming_decoder` (at the end)
hands them the host's model management, tiled decoding and out-of-memory test as callables.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable

import torch

from ...vace_core.encoding import LATENT_CHANNELS, VAE_STRIDE_S
from ...vace_core.streaming import ChunkDecoder, OverlapChunkDecoder, frames_for_chunk
from .comfyui import log, model_management
from .devices import soft_empty_cache

CACHE_FRAMES = 2  # frames a causal convolution of kernel 3 keeps between calls
PROBE_TOLERANCE = 1e-4  # float32 on the CPU: the exact path agrees to ~1e-7 on both known hosts
# latent frames per call in the probe: the video's first frame alone, a pair, single frames and a
# triple, so every way a host may group frames (or defer one) between calls is exercised
PROBE_SPLIT = (1, 2, 1, 3)
PROBE_WIDTH = 8  # channel width of the probe's copy (the real VAE: 96)
CONTEXT_FRAMES = 2  # latent frames decoded before a chunk on the approximate and tiled paths
# ComfyUI's Wan 2.1 VAE network (comfy.ldm.wan.vae.WanVAE): a torch Module whose parts and settings
# (decoder, conv2, z_dim, ...) ComfyUI does not type
WanNetwork = Any

DecodeFn = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# the network


def _count_causal_convs(module: torch.nn.Module) -> int:
    return sum(type(m).__name__ == "CausalConv3d" for m in module.modules())


def _cache_slots(wan: WanNetwork) -> int:
    """Length of the decoder's feat_map, counted by the host's own function when it has one."""
    host_module = sys.modules.get(type(wan).__module__)
    for name in ("count_cache_layers", "count_conv3d"):  # 0.33, 0.8
        count = getattr(host_module, name, None)
        if callable(count):
            return int(count(wan.decoder))
    return _count_causal_convs(wan.decoder)


def is_wan21_module(model: Any) -> bool:
    """True for ComfyUI's Wan 2.1 VAE network (not the Wan 2.2 one, whose decoder differs)."""
    cls = type(model)
    return (cls.__name__ == "WanVAE" and cls.__module__.endswith("wan.vae")
            and isinstance(getattr(model, "decoder", None), torch.nn.Module)
            and isinstance(getattr(model, "conv2", None), torch.nn.Module)
            and getattr(model, "z_dim", None) == LATENT_CHANNELS)


def _as_tensor(out: Any) -> torch.Tensor:
    # 0.8 returns a tensor, 0.33 a list of tensors along time
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out and all(isinstance(t, torch.Tensor) for t in out):
        return torch.cat(list(out), dim=2)
    empty = " (empty)" if isinstance(out, (list, tuple)) and not out else ""
    raise TypeError(f"the Wan decoder returned {type(out).__name__}{empty} instead of frames")


class WanFeatMapDecoder:
    """Chunked decoding with ComfyUI's Wan 2.1 `WanVAE` network, feat_map carried across calls.

    `decode_raw(z [1, 16, t, h, w])` (on the network's device and dtype) returns the decoder's own
    output [1, 3, T, 8h, 8w] in about -1..1: T = 4t - 3 for the first chunk of a video, 4t after.
    """

    def __init__(self, wan: WanNetwork) -> None:
        if not is_wan21_module(wan):
            raise TypeError(f"{type(wan).__module__}.{type(wan).__name__} is not ComfyUI's Wan 2.1 WanVAE")
        self.wan = wan
        self.feat_map: list[Any] = [None] * _cache_slots(wan)
        self.frames_in = 0  # latent frames decoded so far

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        x = self.wan.conv2(z)  # a 1x1x1 convolution: no temporal state of its own
        frames = [self._decode_frame(x[:, :, i:i + 1]) for i in range(x.shape[2])]
        return torch.cat(frames, dim=2)

    def _decode_frame(self, x: torch.Tensor) -> torch.Tensor:
        before = list(self.feat_map)
        out = _as_tensor(self.wan.decoder(x, feat_cache=self.feat_map, feat_idx=[0]))
        self._keep_two_frames(before)
        expected = frames_for_chunk(1, first=self.frames_in == 0)
        if out.ndim != 5 or out.shape[2] != expected:
            raise RuntimeError(f"the Wan decoder gave {tuple(out.shape)} for latent frame {self.frames_in}, "
                               f"expected {expected} frames")
        self.frames_in += 1
        return out

    def _keep_two_frames(self, before: list[Any]) -> None:
        """A slot rewritten with one frame keeps the last frame it held before in front of it, so
        every causal convolution sees its two previous input frames on the next call."""
        for slot, (old, new) in enumerate(zip(before, self.feat_map)):
            if (new is not old and isinstance(new, torch.Tensor) and isinstance(old, torch.Tensor)
                    and new.ndim == 5 and new.shape[2] < CACHE_FRAMES):
                self.feat_map[slot] = torch.cat([old[:, :, -1:].to(new), new], dim=2)


# ---------------------------------------------------------------------------------------------
# the one-time probe


_PROBE_RESULTS: dict[type, str | None] = {}  # network class -> None (exact works) or why not


def _fill_like_a_trained_vae(module: torch.nn.Module, seed: int = 0) -> None:
    """Set every tensor (ComfyUI's layers skip initialisation): gains near 1, small biases,
    fan-in scaled weights, so activations stay O(1) through the stacked convolutions."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict().items()):
            if not tensor.is_floating_point():
                continue
            values = torch.randn(tuple(tensor.shape), generator=generator)
            if name.endswith("gamma"):
                values = 1.0 + 0.05 * values
            elif name.endswith("bias"):
                values = 0.02 * values
            else:
                values = values * 0.7 / math.sqrt(max(1, math.prod(tensor.shape[1:])))
            tensor.copy_(values)


def _small_copy(wan: WanNetwork) -> WanNetwork:
    """A narrow float32 CPU instance of the same class and layout, with seeded weights."""
    twin = type(wan)(dim=PROBE_WIDTH, z_dim=wan.z_dim, dim_mult=list(wan.dim_mult),
                     num_res_blocks=wan.num_res_blocks, attn_scales=list(wan.attn_scales),
                     temperal_downsample=list(wan.temperal_downsample))
    twin = twin.to(device="cpu", dtype=torch.float32).eval()
    _fill_like_a_trained_vae(twin)
    return twin


def _describe(error: BaseException, limit: int = 200) -> str:
    # one line for the one warning line
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _probe(wan: WanNetwork) -> str | None:
    name = f"{type(wan).__module__}.{type(wan).__name__}"
    try:
        twin = _small_copy(wan)
    except Exception as error:
        return f"could not build a small copy of {name} to test it ({_describe(error)})"
    z = torch.randn(1, wan.z_dim, sum(PROBE_SPLIT), 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        try:
            whole = _as_tensor(twin.decode(z))
            stream, parts, start = WanFeatMapDecoder(twin), [], 0
            for size in PROBE_SPLIT:
                parts.append(stream.decode_raw(z[:, :, start:start + size]))
                start += size
            chunked = torch.cat(parts, dim=2)
        except Exception as error:
            return f"its decoder fails when driven chunk by chunk ({_describe(error)})"
    if chunked.shape != whole.shape:
        return (f"chunk-by-chunk decoding gives shape {tuple(chunked.shape)}, a whole decode "
                f"{tuple(whole.shape)}")
    difference = float((chunked - whole).abs().max())
    if not difference <= PROBE_TOLERANCE:  # also catches NaN
        return f"chunk-by-chunk decoding differs from a whole decode by {difference:.3g} (> {PROBE_TOLERANCE:g})"
    return None


def exact_streaming_problem(wan: WanNetwork) -> str | None:
    """None when `WanFeatMapDecoder` decodes `wan`'s class exactly, else the reason it does not.

    Decided once per class and process by `_probe`.
    """
    cls = type(wan)
    if cls not in _PROBE_RESULTS:
        _PROBE_RESULTS[cls] = _probe(wan)
    return _PROBE_RESULTS[cls]


# ---------------------------------------------------------------------------------------------
# the decoder for a comfy.sd.VAE


class ComfyWanStreamingDecoder:
    """`decode_chunk` for a `comfy.sd.VAE` holding a Wan 2.1 VAE: the same dtype, device and output
    processing as `VAE.decode`, with the causal state kept between chunks.

    - `prepare(latent_shape)` runs before each chunk (the host loads the VAE onto its device there,
      as `VAE.decode` does through ComfyUI's model management);
    - `tiled_decode(raw [1, 16, t, h, w]) -> pixels [T, H, W, 3]` (the host's tiled decode) and
      `is_out_of_memory(error)`: a chunk that runs out of memory is decoded tiled instead, together
      with the CONTEXT_FRAMES latent frames before it; the next chunk rebuilds the causal state by
      decoding those frames first. Without `tiled_decode` the error propagates.
    """

    def __init__(self, vae: Any, prepare: Callable[[tuple[int, ...]], None] | None = None,
                 tiled_decode: DecodeFn | None = None,
                 is_out_of_memory: Callable[[BaseException], bool] | None = None) -> None:
        self.vae = vae
        self.prepare = prepare
        self.tiled_decode = tiled_decode
        self.is_out_of_memory = is_out_of_memory or (lambda error: isinstance(error, torch.OutOfMemoryError))
        self.stream = WanFeatMapDecoder(vae.first_stage_model)
        self.tiled_chunks = 0  # chunks that fell back to the tiled decode
        self._context: torch.Tensor | None = None  # the last latent frames seen (raw)
        self._rebuild_state = False

    def decode_chunk(self, latents_raw: torch.Tensor) -> torch.Tensor:
        """RAW latents [1, 16, t, h, w] -> pixels [T, 8h, 8w, 3] in 0..1 on the VAE's output device."""
        if latents_raw.ndim != 5 or latents_raw.shape[:2] != (1, LATENT_CHANNELS):
            raise ValueError(f"expected one chunk of Wan 2.1 latents [1, 16, t, h, w], got {tuple(latents_raw.shape)}")
        if self.prepare is not None:
            self.prepare(tuple(latents_raw.shape))
        failure = None
        try:
            if self._rebuild_state:
                assert self._context is not None  # the tiled decode before it was remembered
                self._decode_exact(self._context, fresh=True)  # output dropped: only the state counts
                self._rebuild_state = False
            pixels = self._decode_exact(latents_raw)
        except Exception as error:
            if self.tiled_decode is None or not self.is_out_of_memory(error):
                raise
            # leave the except block first so the failed attempt's tensors can be freed
            failure = _describe(error)
        if failure is not None:
            pixels = self._decode_tiled(latents_raw, failure)
        self._remember(latents_raw)
        return pixels

    def _decode_exact(self, latents_raw: torch.Tensor, fresh: bool = False) -> torch.Tensor:
        vae = self.vae
        if fresh:
            self.stream = WanFeatMapDecoder(vae.first_stage_model)
        with torch.no_grad():
            z = latents_raw.to(vae.vae_dtype).to(vae.device)
            out = self.stream.decode_raw(z)
            pixels = vae.process_output(out.to(vae.output_device).float())  # [1, 3, T, H, W]
        return pixels[0].movedim(0, -1)  # [T, H, W, 3]

    def _decode_tiled(self, latents_raw: torch.Tensor, failure: str) -> torch.Tensor:
        assert self.tiled_decode is not None  # decode_chunk falls back only to a tiled decode it has
        context = self._context
        first = context is None
        sequence = latents_raw if context is None else torch.cat([context.to(latents_raw), latents_raw], dim=2)
        self.tiled_chunks += 1
        if self.tiled_chunks == 1:
            log.warning("LongLive: out of memory decoding a chunk exactly (%s); decoding it with ComfyUI's tiled "
                        "VAE decode instead, with %d latent frames of context (this chunk and the next may differ "
                        "a little from an exact decode)", failure, CONTEXT_FRAMES)
        pixels = self.tiled_decode(sequence).float()
        self._rebuild_state = True
        return pixels[pixels.shape[0] - frames_for_chunk(latents_raw.shape[2], first):]

    def _remember(self, latents_raw: torch.Tensor) -> None:
        joined = latents_raw if self._context is None else torch.cat([self._context.to(latents_raw), latents_raw], 2)
        self._context = joined[:, :, -CONTEXT_FRAMES:].detach().clone()


def is_comfy_wan21_vae(vae: Any) -> bool:
    model = getattr(vae, "first_stage_model", None)
    return model is not None and is_wan21_module(model) and all(
        hasattr(vae, name) for name in ("vae_dtype", "device", "output_device", "process_output"))


def approximate_decoder(vae: Any, reason: str) -> OverlapChunkDecoder:
    """The bounded approximate decoder, announced with one warning line naming `reason`."""
    log.warning("LongLive: decoding the video chunk by chunk approximately, with %d latent frames of overlap "
                "(small seams are possible every chunk): %s", CONTEXT_FRAMES, reason)
    return OverlapChunkDecoder(vae, context_frames=CONTEXT_FRAMES)


def streaming_decoder_for(vae: Any, prepare: Callable[[tuple[int, ...]], None] | None = None,
                          tiled_decode: DecodeFn | None = None,
                          is_out_of_memory: Callable[[BaseException], bool] | None = None) -> ChunkDecoder:
    """The exact streaming decoder for `vae` when there is one, else a bounded approximate one.

    - ComfyUI's Wan 2.1 VAE whose class passes the probe: `ComfyWanStreamingDecoder` (frames
      identical to a whole decode);
    - an object with its own `streaming_decoder()` (the core's stand-in VAE): that one;
    - anything else with `decode`: `OverlapChunkDecoder`, with one warning naming the reason.
    """
    if is_comfy_wan21_vae(vae):
        problem = exact_streaming_problem(vae.first_stage_model)
        if problem is None:
            return ComfyWanStreamingDecoder(vae, prepare, tiled_decode, is_out_of_memory)
        return approximate_decoder(vae, f"this ComfyUI's Wan 2.1 VAE cannot be streamed exactly: {problem}")
    own = getattr(vae, "streaming_decoder", None)
    if callable(own):
        return own()
    model = getattr(vae, "first_stage_model", vae)
    return approximate_decoder(vae, f"{type(model).__name__} is not a Wan 2.1 VAE; use ComfyUI's Wan 2.1 VAE "
                                    "for an exact result")


# ---------------------------------------------------------------------------------------------
# the host's VAE: loading, tiled decode, out-of-memory test


def prepare_vae_decode(vae: Any, latent_shape: tuple[int, ...]) -> None:
    """Load a ComfyUI VAE onto its device for decoding `latent_shape`, as `VAE.decode` does."""
    if model_management is None or not hasattr(vae, "patcher"):
        return
    memory = vae.memory_used_decode(latent_shape, vae.vae_dtype)
    model_management.load_models_gpu([vae.patcher], memory_required=memory,
                                     force_full_load=getattr(vae, "disable_offload", False))


def is_out_of_memory(error: BaseException) -> bool:
    """True for an out-of-memory error, as ComfyUI tells them apart (its `is_oom` since 0.33 also
    recognises accelerator errors that report running out of memory)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    is_oom = getattr(model_management, "is_oom", None) if model_management is not None else None
    return bool(is_oom(error)) if callable(is_oom) else False


TILE_PIXELS, TILE_OVERLAP_PIXELS = 256, 64  # the tile ComfyUI's own VAE decode falls back to on OOM


def tiled_decode(vae: Any, latents_raw: torch.Tensor) -> torch.Tensor:
    """ComfyUI's tiled VAE decode of a short latent clip [1, 16, t, h, w] -> pixels [T, H, W, 3]:
    spatial tiles of 256 pixels (64 overlap), the clip's frames in one temporal tile."""
    if model_management is not None:
        soft_empty_cache()
    scale = vae.spacial_compression_decode() if hasattr(vae, "spacial_compression_decode") else VAE_STRIDE_S
    out = vae.decode_tiled(latents_raw, tile_x=TILE_PIXELS // scale, tile_y=TILE_PIXELS // scale,
                           overlap=TILE_OVERLAP_PIXELS // scale, tile_t=latents_raw.shape[2], overlap_t=1)
    return out[0] if out.ndim == 5 else out


def streaming_decoder(vae: Any) -> Any:
    """A chunk decoder (`decode_chunk`) for `vae`: exact for ComfyUI's Wan 2.1 VAE (see the module
    docstring). A chunk that runs out of memory is decoded with the VAE's tiled decode when it has one."""
    tiled = (lambda latents: tiled_decode(vae, latents)) if hasattr(vae, "decode_tiled") else None
    return streaming_decoder_for(vae, prepare=lambda shape: prepare_vae_decode(vae, shape), tiled_decode=tiled,
                                 is_out_of_memory=is_out_of_memory)
