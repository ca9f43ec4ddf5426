"""The causal Wan2.1 DiT (LongLive's generator), optionally with grafted VACE blocks.

`forward_block` runs one causal block of latent frames at absolute frame positions, reading and
writing KV caches through the accesses the sampler opens; `forward_full` is the single-block, cache-free (bidirectional) special case,
which equals upstream Wan / VACE.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import ContextManager, Iterable, Sequence, cast

import torch
from torch import nn

from .attention import SDPA, AttentionKernels
from .cache import BlockCacheAccess
from .casting import compute_dtype_of
from .compiled import BlockCompiler, shared_compiler
from .config import WanConfig
from .device import to_device
from .layers import BlockParts, Head, WanBlock, linear, sinusoidal_embedding
from .operations import LayerOperations, TorchOps
from .precision import is_fp8
from .rope import RotaryEmbedding
from .vace import VaceStream, build_vace_modules, layer_scales

# Parameters kept in float32 whatever the compute dtype: they feed the float32 modulation and
# norms (as upstream runs them under float32 autocast) and are small.
FLOAT32_PARAM_MARKERS = ("time_embedding.", "time_projection.", "modulation", "norm")
# The Linear weights of the transformer blocks (main and VACE): 99 % of the parameters, the ones a
# weight dtype other than the compute dtype (fp8) applies to. Embeddings and the head, small and
# the first and last maps of every pass, stay in the compute dtype.
BLOCK_LINEAR_WEIGHT = re.compile(r"^(vace_)?blocks\.\d+\.(self_attn\.[qkvo]|cross_attn\.[qkvo]|ffn\.[02]|"
                                 r"before_proj|after_proj)\.weight$")


def param_dtype(name: str, dtype: torch.dtype, weight_dtype: torch.dtype | None = None) -> torch.dtype:
    """Storage dtype of parameter `name` when the model computes in `dtype` and stores its block
    Linear weights in `weight_dtype` (default: `dtype`)."""
    if any(m in name for m in FLOAT32_PARAM_MARKERS):
        return torch.float32
    if weight_dtype is not None and BLOCK_LINEAR_WEIGHT.match(name):
        return weight_dtype
    return dtype


@dataclass
class TextState:
    """A prompt prepared once: embedded tokens and every block's cross-attention keys/values.

    The zero-padded rows of a prompt all embed to the same vector, so they give identical keys and
    values: attention over n copies of one key equals attention over that key once with ln(n)
    added to its logit. They are kept as one row with that `bias`, which gives exactly upstream's
    attention over all 512 rows at a fraction of the cost (a prompt is mostly padding).
    """
    tokens: torch.Tensor  # [B, L', dim]: the prompt's rows, then one row for all its padding
    block_kv: list[tuple[torch.Tensor, torch.Tensor]]
    vace_kv: list[tuple[torch.Tensor, torch.Tensor]]
    # [1, 1, 1, L'] added to the attention logits (0, ..., ln n), in the compute dtype on the compute
    # device: the kernels take a float mask only in q's dtype (vace_core.attention)
    bias: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return self.tokens.shape[1]


class CausalWanModel(nn.Module):
    """`operations` makes the layers with weights (see vace_core.operations; default plain torch.nn);
    `attention` holds the attention kernels the blocks call (vace_core.attention; default SDPA).
    Both are the host's choice. `compiler`, when set (`compile_blocks`, or a host's object patch),
    runs full-chunk passes through compiled block parts (vace_core.compiled).
    `compute_dtype` is what activations, attention and the KV cache run in; `weight_dtype` what the
    block Linear weights are stored in (`param_dtype`): the same, or fp8 with `operations` that cast
    per layer (vace_core.casting). The parameters are made in float32 here; the loader (or
    `set_dtype`) gives them their dtypes."""

    def __init__(self, config: WanConfig, operations: LayerOperations | None = None,
                 attention: AttentionKernels | None = None, *, compute_dtype: torch.dtype = torch.float32,
                 weight_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        ops = operations or TorchOps
        self.config = config
        self.operations = ops
        self.attention = attention or SDPA
        self.compiler: BlockCompiler | None = None
        self.compute_dtype = compute_dtype
        self.weight_dtype = weight_dtype or compute_dtype
        # set by a host that keeps some weights elsewhere and streams them (see `device`)
        self.compute_device: torch.device | None = None
        dim = config.dim
        self.patch_embedding = ops.Conv3d(config.in_channels, dim, kernel_size=config.patch_size,
                                          stride=config.patch_size)
        self.text_embedding = nn.Sequential(ops.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"),
                                            ops.Linear(dim, dim))
        self.time_embedding = nn.Sequential(ops.Linear(config.freq_dim, dim), nn.SiLU(), ops.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), ops.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(WanBlock(config, ops) for _ in range(config.num_layers))
        self.head = Head(config, ops)
        self.rope = RotaryEmbedding(config.head_dim, config.rope_max_frames)
        if config.has_vace:
            self.vace_patch_embedding, self.vace_blocks = build_vace_modules(config, ops)

    # ---- VACE grafting -------------------------------------------------------------------------

    @property
    def has_vace(self) -> bool:
        return self.config.has_vace

    def set_dtype(self, dtype: torch.dtype) -> "CausalWanModel":
        """Cast weights to `dtype` and compute in it, keeping the float32 parameters of
        `param_dtype` in float32. fp8 weights come from the loader (`load_longlive(dtype=...)`)."""
        if is_fp8(dtype) or self.weight_dtype != self.compute_dtype:
            raise ValueError("set_dtype casts a model that computes in its weights' dtype; for fp8 weights "
                             "load the checkpoint with load_longlive(dtype=torch.float8_e4m3fn)")
        for name, param in self.named_parameters():
            param.data = param.data.to(param_dtype(name, dtype))
        self.compute_dtype = self.weight_dtype = dtype
        return self

    def compile_blocks(self, backend: str | None = "inductor") -> "CausalWanModel":
        """Run the full-chunk passes of every block (main and VACE) through parts compiled with
        `backend` (see vace_core.compiled), or eagerly again with None. The first full chunk of
        each size compiles (minutes on a CPU); it pays off on a GPU over long videos."""
        self.compiler = shared_compiler(backend) if backend is not None else None
        return self

    @property
    def device(self) -> torch.device:
        """Where inputs, activations and caches live: the host's `compute_device` when it set one
        (its weights may then sit on another device, streamed per layer), else the weights' device."""
        return self.compute_device if self.compute_device is not None else self.patch_embedding.weight.device

    # ---- conditioning --------------------------------------------------------------------------

    def encode_text(self, context: torch.Tensor) -> TextState:
        """context [B, L, text_dim] -> TextState. Shorter prompts are zero-padded to `text_len`
        BEFORE the embedding (padded rows become text_embedding(0)); longer ones keep all tokens."""
        batch, length, width = context.shape
        if width != self.config.text_dim:
            raise ValueError(f"text conditioning has {width} channels but the model expects "
                             f"{self.config.text_dim} (use the umT5-XXL 'wan' text encoder)")
        if length < self.config.text_len:
            context = torch.cat([context, context.new_zeros(batch, self.config.text_len - length, width)], dim=1)
        context, bias = _merge_padding(context.cpu())  # on the CPU: no device sync for a prompt's length
        first = self.text_embedding[0]
        tokens = self.text_embedding[2](self.text_embedding[1](linear(first, to_device(context, self.device))))
        block_kv = [block.cross_attn.project_text(tokens) for block in _wan_blocks(self.blocks)]
        vace_kv = [block.cross_attn.project_text(tokens) for block in _wan_blocks(self.vace_blocks)] if self.has_vace else []
        if bias is not None:  # cast once per prompt, to the dtype of the queries it is added for
            bias = to_device(bias, tokens.device, self.compute_dtype).view(1, 1, 1, -1)
        return TextState(tokens=tokens, block_kv=block_kv, vace_kv=vace_kv, bias=bias)

    def time_modulation(self, timestep: torch.Tensor | float, frames: int,
                        batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """timestep scalar, [B] or [B, F] (0..1000) -> time embedding [B, F, dim] and block
        modulation [B, F, 6, dim]. A timestep shared by the frames is embedded once and expanded."""
        timestep = torch.as_tensor(timestep)
        if timestep.ndim == 0:
            timestep = timestep.expand(batch)
        per_frame = timestep.ndim == 2
        batch = timestep.shape[0]
        sinusoid = sinusoidal_embedding(self.config.freq_dim, timestep.reshape(-1))
        emb = self.time_embedding(to_device(sinusoid, self.device, torch.float32))  # [N, dim]
        mod = self.time_projection(emb).unflatten(1, (6, self.config.dim))  # [N, 6, dim]
        if per_frame:
            return emb.view(batch, frames, -1), mod.view(batch, frames, 6, -1)
        return (emb.view(batch, 1, -1).expand(-1, frames, -1),
                mod.view(batch, 1, 6, -1).expand(-1, frames, -1, -1))

    # ---- forward -------------------------------------------------------------------------------

    def forward_block(self, latents: torch.Tensor, timestep: torch.Tensor | float, text: TextState,
                      start_frame: int = 0, cache: BlockCacheAccess | None = None,
                      vace_context: torch.Tensor | None = None,
                      vace_scale: float | Sequence[float] = 1.0, *,
                      vace_cache: BlockCacheAccess | None = None,
                      frame_mask: torch.Tensor | None = None,
                      vace_frame_mask: torch.Tensor | None = None,
                      vace_frame_weight: torch.Tensor | None = None,
                      time: tuple[torch.Tensor, torch.Tensor] | None = None,
                      compiled: bool = False) -> torch.Tensor:
        """Flow prediction for one causal block.

        latents [B, C, F, H, W] (normalised latent space) at absolute frames
        start_frame .. start_frame+F-1; timestep scalar, [B] or [B, F] on 0..1000 (`time`: its
        `time_modulation` for one frame, [B, 1, dim] and [B, 1, 6, dim], or [1, ...] for every video of
        a batch, computed once by a caller that runs many passes at the same timestep).
        vace_context [B or 1, 96, F, H, W]: one context serves every video of a batch.
        `cache` / `vace_cache` are the block's accesses to the main / VACE KV caches
        (`KVCache.begin_block`): attention then covers the frames the access reads. Without one,
        attention covers the given frames, restricted by `frame_mask` / `vace_frame_mask`
        [F, F] (query frame, key frame) when given. `vace_frame_weight` [F] scales the hints per
        frame. Hints of scale 0 are never added; the VACE stream still runs when a `vace_cache`
        is given, since later blocks may read its keys. `compiled`: run the blocks through the
        compiled parts of `compiler`, if one is set (the sampler asks for it on full-chunk passes).
        """
        batch, _, frames, height, width = latents.shape
        pt, ph, pw = self.config.patch_size
        if frames % pt or height % ph or width % pw:
            raise ValueError(f"latent grid {frames}x{height}x{width} is not divisible by the patch size "
                             f"{self.config.patch_size}")
        grid = (frames // pt, height // ph, width // pw)
        if start_frame + grid[0] > self.config.rope_max_frames:
            raise ValueError(f"frame position {start_frame + grid[0]} exceeds the model's RoPE range of "
                             f"{self.config.rope_max_frames} latent frames")
        device = self.device
        if time is None:
            time_emb, time_mod = self.time_modulation(timestep, grid[0], batch)
        else:
            time_emb, time_mod = time[0].expand(batch, grid[0], -1), time[1].expand(batch, grid[0], -1, -1)

        x = self.embed(latents)
        tokens_per_frame = grid[1] * grid[2]
        rope = self.rope.table(start_frame, *grid, device=device)
        attn_mask = token_mask(frame_mask, tokens_per_frame, device)
        with self._block_parts(compiled, grid[0], x) as parts:
            stream, scales, weight = None, [], None
            if vace_context is not None:
                self._check_vace_context(vace_context, latents.shape, text)
                scales = layer_scales(vace_scale, self.config.num_vace_blocks)
            if vace_context is not None and (vace_cache is not None or any(s != 0.0 for s in scales)):
                stream = VaceStream(self.vace_patch_embedding, self.vace_blocks, to_device(vace_context, device), x,
                                    time_mod, text.vace_kv, rope, vace_cache,
                                    token_mask(vace_frame_mask, tokens_per_frame, device), text.bias,
                                    kernels=self.attention, parts=parts)
                if vace_frame_weight is not None:
                    weight = to_device(vace_frame_weight, device, torch.float32)
                    weight = weight.repeat_interleave(tokens_per_frame)[None, :, None]
            hint_after = {layer: k for k, layer in enumerate(self.config.vace_layers)} if stream else {}

            for index, block in enumerate(self.blocks):
                x = block(x, time_mod, text.block_kv[index], rope, cache, index, attn_mask, text.bias,
                          self.attention, parts)
                k = hint_after.get(index)
                if k is not None:
                    assert stream is not None  # hints come only with the stream
                    hint = stream.hint(k)
                    if scales[k] != 0.0:
                        x = x + (hint if weight is None else hint * weight) * scales[k]

        out = self.head(x, time_emb)  # [B, S, C * pt * ph * pw]
        return self.unpatchify(out, grid)

    def embed(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, F, H, W] -> the float32 residual stream's tokens [B, S, dim] (f, h, w order).
        Video by video: a convolution over a batch may pick another kernel than over one video (the
        CPU's does), and a video of a batch is to equal its single run bit for bit."""
        latents = latents.to(self.device, compute_dtype_of(self.patch_embedding))
        x = torch.cat([self.patch_embedding(video) for video in latents.split(1)])  # [B, dim, f, h, w]
        return x.flatten(2).transpose(1, 2).float().contiguous()

    def _block_parts(self, compiled: bool, frames: int, x: torch.Tensor) -> ContextManager[BlockParts | None]:
        """The compiler's parts for this pass shape, or None (eager) when not compiled."""
        if not compiled or self.compiler is None:
            return contextlib.nullcontext()
        return self.compiler.pass_parts(frames, x.shape[1], self.compute_dtype, x.shape[0])

    def forward_full(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor | TextState,
                     vace_context: torch.Tensor | None = None,
                     vace_scale: float | Sequence[float] = 1.0) -> torch.Tensor:
        """Bidirectional, cache-free flow prediction over all frames at once (upstream Wan/VACE).

        latents [B, 16, T, H, W] normalised, timestep [B] on 0..1000, context [B, L, text_dim]
        with L <= 512 (or a prepared TextState), vace_context [B, 96, T, H, W]. Scale 0 (every
        layer) is exactly the model without VACE: hints of scale 0 are never added.
        """
        text = context if isinstance(context, TextState) else self.encode_text(context)
        return self.forward_block(latents, timestep, text, start_frame=0, vace_context=vace_context,
                                  vace_scale=vace_scale)

    def _check_vace_context(self, vace_context: torch.Tensor, latent_shape: torch.Size, text: TextState) -> None:
        if not self.has_vace:
            raise ValueError("a VACE context was given but this model has no VACE weights: "
                             "add a 'Load VACE Weights (graft)' step first")
        expected = (self.config.vace_in_dim, *latent_shape[2:])
        if tuple(vace_context.shape[1:]) != expected or vace_context.shape[0] not in (1, latent_shape[0]):
            raise ValueError(f"VACE context has shape {tuple(vace_context.shape)}, expected "
                             f"{(latent_shape[0], *expected)} or one context for every video "
                             "(it was made for another size or length)")
        if len(text.vace_kv) != self.config.num_vace_blocks:
            raise ValueError("the prompt was encoded before VACE was grafted; encode it again")

    def unpatchify(self, out: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, S, C*pt*ph*pw] -> [B, C, F, H, W]; each patch's features are ordered (pt, ph, pw, C)."""
        frames, height, width = grid
        pt, ph, pw = self.config.patch_size
        channels = self.config.out_channels
        out = out.float().view(out.shape[0], frames, height, width, pt, ph, pw, channels)
        out = out.permute(0, 7, 1, 4, 2, 5, 3, 6)  # [B, C, f, pt, h, ph, w, pw]
        return out.reshape(out.shape[0], channels, frames * pt, height * ph, width * pw)


def _wan_blocks(blocks: nn.ModuleList) -> Iterable[WanBlock]:
    """`blocks` as what they hold (nn.ModuleList types its items as Module)."""
    return cast("Iterable[WanBlock]", blocks)


def _merge_padding(context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[B, L, C] -> the non-zero rows plus one zero row [B, L' , C] and the logit bias [L'] that
    stands for the zero rows' count (None when there is nothing to merge, or when the prompts of a
    batch have different amounts of padding)."""
    padding = (context == 0).all(dim=-1)  # [B, L]
    counts = padding.sum(dim=1)
    if int(counts.min()) < 2 or int(counts.max()) != int(counts.min()):
        return context, None
    batch, length, width = context.shape
    pad = int(counts[0])
    kept = context[~padding].view(batch, length - pad, width)
    merged = torch.cat([kept, context.new_zeros(batch, 1, width)], dim=1)
    bias = torch.zeros(length - pad + 1)
    bias[-1] = math.log(pad)
    return merged, bias


def token_mask(frame_mask: torch.Tensor | None, tokens_per_frame: int,
                device: torch.device) -> torch.Tensor | None:
    """Frame-level boolean mask [Fq, Fk] -> token-level [Sq, Sk] (True = may attend)."""
    if frame_mask is None:
        return None
    mask = to_device(frame_mask, device, torch.bool)
    return mask.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)
