"""The cache-free reference: every pass recomputes the keys it attends to from the latents that
produced them.

With a KV cache, the keys a pass reads for frame f are those written by the last pass over f
(its clean pass; after a prompt switch, the recache pass; for VACE keys kept from a denoising pass,
that pass). Here each pass becomes a `PassRecord` that remembers its inputs and, for every frame
it attends to, the record that was live for that frame when it ran. Evaluating a pass runs ONE
masked forward over every record it depends on, directly or through other records: each record's
tokens at its own positions, timestep and prompt, attending exactly to the tokens of the records it
depended on (a frame-level mask), VACE tokens likewise. No slot, ring or buffer is involved, so
the sampler's cached path can be tested against this one: `generate(..., executor=RecomputedPasses.
for_run)`. Its cost grows with the video: it is a baseline, not a way to generate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count
from typing import Callable, Iterable, Sequence

import torch

from ..device import to_device
from ..model import CausalWanModel, TextState, token_mask
from ..passes import ModelPass, RunView
from ..rope import RopeTable
from ..vace import VaceStream, layer_scales

_ORDER = count()


@dataclass(eq=False)
class PassRecord:
    """The inputs of one pass and, per frame it attended to, the record holding that frame."""
    start: int
    frames: int
    latents: torch.Tensor
    timestep: float
    prompt: int
    hint_weight: torch.Tensor | None
    main_deps: dict[int, "PassRecord"] = field(default_factory=dict)
    vace_deps: dict[int, "PassRecord"] = field(default_factory=dict)
    order: int = field(default_factory=lambda: next(_ORDER))

    @property
    def own(self) -> range:
        return range(self.start, self.start + self.frames)


class RecomputedPasses:
    """Runs passes without any KV cache (see the module docstring). Only passes whose output is
    used are evaluated; cache-writing passes are recorded for the passes that depend on them."""

    def __init__(self, model: CausalWanModel, text: Callable[[int], TextState],
                 vace_frames: Callable[[int, int], torch.Tensor], layer_scale: float | Sequence[float]) -> None:
        self.model = model
        self._encode = text
        self._texts: dict[int, TextState] = {}  # every prompt: a pass may re-run frames of an earlier one
        self.vace_frames = vace_frames
        self.layer_scale = layer_scale
        self.live_main: dict[int, PassRecord] = {}
        self.live_vace: dict[int, PassRecord] = {}
        self.evaluations = 0  # model evaluations so far

    @classmethod
    def for_run(cls, run: RunView) -> "RecomputedPasses":
        return cls(run.model, run.text, run.vace_frames, run.layer_scale)

    def text(self, index: int) -> TextState:
        if index not in self._texts:
            self._texts[index] = self._encode(index)
        return self._texts[index]

    def nbytes(self) -> int:
        return 0

    def run(self, p: ModelPass) -> torch.Tensor | None:
        record = PassRecord(p.start, p.frames, p.latents, p.timestep, p.prompt, p.hint_weight)
        record.main_deps = self._deps(record, p.visible, self.live_main, "main")
        if p.hint_weight is not None:
            assert p.vace_visible is not None  # set with hint_weight (ModelPass)
            record.vace_deps = self._deps(record, p.vace_visible, self.live_vace, "VACE")
        flow = self._evaluate(record) if p.needs_output else None
        for frame in record.own:
            self.live_main[frame] = record
            if p.hint_weight is not None and p.vace_writes:
                self.live_vace[frame] = record
        return flow

    @staticmethod
    def _deps(record: PassRecord, visible: Iterable[int], live: dict[int, PassRecord],
              stream: str) -> dict[int, PassRecord]:
        deps = {}
        for frame in visible:
            if frame in record.own:
                deps[frame] = record
            elif frame in live:
                deps[frame] = live[frame]
            else:
                raise RuntimeError(f"no earlier pass computed the {stream} keys of frame {frame}, needed by the "
                                   f"pass over frames [{record.start}, {record.start + record.frames})")
        return deps

    def _evaluate(self, target: PassRecord) -> torch.Tensor:
        self.evaluations += 1
        model = self.model
        main = _closure([target], lambda r: r.main_deps.values())
        hinted = [r for r in main if r.hint_weight is not None]
        vace = _closure(hinted, lambda r: r.vace_deps.values()) if hinted else []
        grid_h, grid_w = (s // p for s, p in zip(target.latents.shape[-2:], model.config.patch_size[1:]))
        tokens = grid_h * grid_w
        prompts = sorted({r.prompt for r in main + vace})
        texts = {index: self.text(index) for index in prompts}

        x, time_emb, time_mod, rope = _embed(model, main, grid_h, grid_w)
        attn_mask = token_mask(_frame_mask(main, main, "main_deps"), tokens, x.device)
        text_kv = [_joined(texts, prompts, lambda t: t.block_kv[i]) for i in range(len(model.blocks))]
        text_mask = _text_mask(main, prompts, tokens, texts, x.device, model.compute_dtype)

        stream = hint_index = hint_weight = None
        scales = layer_scales(self.layer_scale, model.config.num_vace_blocks) if vace else []
        if vace:
            xv, _, vace_mod, vace_rope = _embed(model, vace, grid_h, grid_w)
            context = torch.cat([self.vace_frames(r.start, r.start + r.frames) for r in vace], dim=2)
            vace_kv = [_joined(texts, prompts, lambda t: t.vace_kv[k]) for k in range(len(model.vace_blocks))]
            stream = VaceStream(model.vace_patch_embedding, model.vace_blocks, context.to(x.device), xv, vace_mod,
                                vace_kv, vace_rope,
                                attn_mask=token_mask(_frame_mask(vace, vace, "vace_deps"), tokens, x.device),
                                text_mask=_text_mask(vace, prompts, tokens, texts, x.device, model.compute_dtype),
                                kernels=model.attention)
            hint_index, hint_weight = _hint_gather(main, vace, tokens, x.device)
        hint_after = {layer: k for k, layer in enumerate(model.config.vace_layers)} if stream else {}

        for index, block in enumerate(model.blocks):
            x = block(x, time_mod, text_kv[index], rope, None, index, attn_mask, text_mask, model.attention)
            k = hint_after.get(index)
            if k is not None:
                assert stream is not None and hint_weight is not None  # hints come only with the stream
                hint = stream.hint(k)
                if scales[k] != 0.0:
                    x = x + hint[:, hint_index] * hint_weight * scales[k]

        out = model.head(x, time_emb)
        first = sum(r.frames for r in main[:-1]) * tokens  # the target is the last record
        grid = (target.frames, grid_h, grid_w)
        return model.unpatchify(out[:, first:], grid)


def _closure(roots: Sequence[PassRecord], deps: Callable[[PassRecord], Iterable[PassRecord]]) -> list[PassRecord]:
    """Every record reachable from `roots`, in the order they ran (dependencies first)."""
    seen: dict[int, PassRecord] = {}
    stack = list(roots)
    while stack:
        record = stack.pop()
        if id(record) in seen:
            continue
        seen[id(record)] = record
        stack.extend(deps(record))
    return sorted(seen.values(), key=lambda r: r.order)


def _embed(model: CausalWanModel, records: Sequence[PassRecord], grid_h: int, grid_w: int):
    """Embedded tokens [1, S, dim], time embedding [1, F, dim], modulation [1, F, 6, dim] and RoPE
    tables of the records laid one after another."""
    x = model.embed(torch.cat([r.latents for r in records], dim=2))
    timesteps = torch.cat([torch.full((r.frames,), float(r.timestep)) for r in records])[None]
    time_emb, time_mod = model.time_modulation(timesteps, timesteps.shape[1])
    tables = [model.rope.table(r.start, r.frames, grid_h, grid_w, device=model.device) for r in records]
    rope = RopeTable(torch.cat([t.cos for t in tables]), torch.cat([t.sin for t in tables]))
    return x, time_emb, time_mod, rope


def _frame_mask(rows: Sequence[PassRecord], cols: Sequence[PassRecord], deps_name: str) -> torch.Tensor:
    """[F_rows, F_cols]: each record's frames see the frames of the records it depended on."""
    offset, position = {}, 0
    for record in cols:
        offset[id(record)] = position
        position += record.frames
    mask = torch.zeros(sum(r.frames for r in rows), position, dtype=torch.bool)
    row = 0
    for record in rows:
        for frame, holder in getattr(record, deps_name).items():
            mask[row:row + record.frames, offset[id(holder)] + frame - holder.start] = True
        row += record.frames
    return mask


def _joined(texts: dict[int, TextState], prompts: list[int],
            pick: Callable[[TextState], tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The K/V of every prompt side by side along the text axis [B, heads, P * L, head_dim]."""
    pairs = [pick(texts[index]) for index in prompts]
    return torch.cat([k for k, _ in pairs], dim=2), torch.cat([v for _, v in pairs], dim=2)


def _text_mask(records: Sequence[PassRecord], prompts: list[int], tokens: int, texts: dict[int, TextState],
               device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
    """[1, 1, S, sum L'] added to the cross-attention logits, in the queries' `dtype`: each token
    reads its own record's prompt (with that prompt's padding bias) and nothing else (-inf)."""
    if len(prompts) == 1:
        return texts[prompts[0]].bias
    lengths = [texts[index].length for index in prompts]
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    mask = torch.full((sum(r.frames for r in records) * tokens, sum(lengths)), float("-inf"))
    row = 0
    for record in records:
        i = prompts.index(record.prompt)
        bias = texts[record.prompt].bias
        own = bias.view(-1).cpu() if bias is not None else torch.zeros(lengths[i])
        mask[row:row + record.frames * tokens, starts[i]:starts[i] + lengths[i]] = own
        row += record.frames * tokens
    return to_device(mask, device, dtype)[None, None]


def _hint_gather(main: Sequence[PassRecord], vace: Sequence[PassRecord], tokens: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For every main token, the VACE token of the same record and frame, and the hint weight
    [1, S, 1] (0 for records whose VACE stream did not run)."""
    offset, position = {}, 0
    for record in vace:
        offset[id(record)] = position
        position += record.frames * tokens
    index, weight = [], []
    for record in main:
        n = record.frames * tokens
        if record.hint_weight is None:
            index.append(torch.zeros(n, dtype=torch.long))
            weight.append(torch.zeros(n))
        else:
            index.append(torch.arange(offset[id(record)], offset[id(record)] + n))
            weight.append(record.hint_weight.float().repeat_interleave(tokens))
    return torch.cat(index).to(device), torch.cat(weight).to(device)[None, :, None]
