"""torch.compile of the transformer blocks, the way that pays off for chunk-by-chunk generation.

What is compiled: the three parts of every block around its attention kernels (`layers.BlockParts`):
norms, modulation, q/k/v/o projections, real-valued RoPE, the FFN and the gated residuals, which eager
PyTorch runs as dozens of memory-bound kernels per block. What stays eager: the KV cache's writes
and reads (their slots change from pass to pass) and the attention kernels (one fused kernel each
already, and the host's choice, e.g. sage inside ComfyUI).

- Whole graphs: `fullgraph=True`, so a graph break is an error, never a silent split.
- Static shapes (`dynamic=False`). Only passes over a full chunk, the shape every chunk repeats,
  run compiled: one compile per resolution and dtype. One-off passes (the reference block, a
  shorter last chunk, a recache after a prompt switch) run eagerly, because compiling a shape used
  once costs more than it saves.
- No silent fallback: each part may compile at most `recompile_limit` times (kept apart from other
  compiled code where torch.compile takes `isolate_recompiles`); a part that would exceed it, or
  fails to compile, logs a warning naming the shape and the reason and then runs that shape eagerly.
- Every shape compiled is logged once, with what was compiled and how long the first pass took.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from typing import Any, Callable, Iterator

import torch

from .layers import EAGER_PARTS, BlockParts
from .logs import log


# per part: resolutions x dtypes x batch sizes x (main, VACE block class) before the loud fallback
RECOMPILE_LIMIT = 8


def _compile_errors() -> tuple[type[BaseException], ...]:
    """What a compiled call raises when it could not compile (as opposed to a fault of the model)."""
    from torch._dynamo import exc

    errors: list[type[BaseException]] = [exc.TorchDynamoException]
    if hasattr(exc, "FailOnRecompileLimitHit"):
        errors.append(exc.FailOnRecompileLimitHit)
    return tuple(errors)


def _canonical(value: Any) -> Any:
    """A contiguous tensor with the strides of a fresh one (a view, no copy). PyTorch calls a tensor
    contiguous whatever the strides of its size-1 dimensions, but compiled code is guarded on exact
    strides: without this, x of batch 1 coming from different ops would compile again."""
    if isinstance(value, torch.Tensor) and value.is_contiguous():
        return value.view(-1).view(value.shape)
    return value


class BlockCompiler:
    """Compiled block parts with `backend`, for the static shapes of full-chunk passes."""

    def __init__(self, backend: str | Callable = "inductor", recompile_limit: int = RECOMPILE_LIMIT) -> None:
        self.backend = getattr(backend, "__name__", backend)
        options: dict[str, Any] = {"backend": backend, "fullgraph": True, "dynamic": False}
        accepted = inspect.signature(torch.compile).parameters
        if "recompile_limit" in accepted:
            options["recompile_limit"] = recompile_limit
        else:  # older torch: the global limit, shared with every other compiled function
            from torch._dynamo import config as dynamo_config

            recompile_limit = dynamo_config.cache_size_limit
        if "isolate_recompiles" in accepted:
            options["isolate_recompiles"] = True
        self.recompile_limit = recompile_limit
        self._compiled = [torch.compile(part, **options) for part in EAGER_PARTS]
        self._errors = _compile_errors()
        self.shapes: list[tuple] = []  # (frames, tokens, dtype) of every shape compiled, in order
        self.fallbacks: list[str] = []  # one line per (part, shape) that runs eagerly, and why
        self._eager: set[tuple[int, tuple]] = set()  # (part index, shape) that failed to compile

    def describe(self) -> str:
        return (f"torch.compile ({self.backend}) of the blocks' norms, projections, RoPE and FFN for full-chunk "
                "passes (static shapes, compiled at first use); attention kernels, KV cache and one-off passes eager")

    @contextlib.contextmanager
    def pass_parts(self, frames: int, tokens: int, dtype: torch.dtype, videos: int = 1) -> Iterator[BlockParts]:
        """The parts for one pass over `frames` frames of `tokens` tokens in `dtype`, for a batch of
        `videos` (a dimension of the static shape too); a new shape is logged when its first pass,
        which compiles it, is over."""
        shape = (frames, tokens, str(dtype).replace("torch.", ""), videos)
        started = time.perf_counter()
        yield BlockParts(*(self._guarded(index, shape) for index in range(len(EAGER_PARTS))))
        compiled_any = any((index, shape) not in self._eager for index in range(len(EAGER_PARTS)))
        if shape not in self.shapes and compiled_any:
            self.shapes.append(shape)
            log.info("LongLive: compiled the blocks' norms, projections, RoPE and FFN with torch.compile (%s) for "
                     "%s; first pass %.1f s (attention kernels and KV cache stay eager)", self.backend,
                     _passes(shape), time.perf_counter() - started)

    def _guarded(self, index: int, shape: tuple) -> Callable:
        if (index, shape) in self._eager:
            return EAGER_PARTS[index]
        compiled, eager = self._compiled[index], EAGER_PARTS[index]

        def run(*args: Any) -> Any:
            if (index, shape) in self._eager:
                return eager(*args)
            try:
                return compiled(*(_canonical(a) for a in args))
            except self._errors as error:  # raised before the part ran: running it eagerly is safe
                self._fall_back(index, shape, error)
                return eager(*args)

        return run

    def _fall_back(self, index: int, shape: tuple, error: BaseException) -> None:
        self._eager.add((index, shape))
        if type(error).__name__ == "FailOnRecompileLimitHit":
            reason = f"it was already compiled for {self.recompile_limit} shapes, its recompile limit"
        else:
            root = getattr(error, "inner_exception", None) or error  # what a backend raised
            text = str(root).strip()
            reason = f"{type(root).__name__}: {text.splitlines()[0] if text else ''}"
        line = f"{EAGER_PARTS[index].__name__} for {_passes(shape)}: {reason}"
        self.fallbacks.append(line)
        log.warning("LongLive: torch.compile could not compile the blocks' %s; this part runs EAGERLY (slower) for "
                    "that shape from now on. Turn compile off to skip the attempt.", line)


def _passes(shape: tuple) -> str:
    """"passes of 2 frames x 9 tokens in float32" (", 3 videos" for a batch) of a compiled shape."""
    frames, tokens, dtype, videos = shape
    return f"passes of {frames} frames x {tokens // frames} tokens in {dtype}" + (f", {videos} videos" if videos > 1
                                                                                 else "")


_SHARED: dict[str, BlockCompiler] = {}


def shared_compiler(backend: str = "inductor") -> BlockCompiler:
    """The process's compiler for `backend`. Compiled code is kept per function, whatever compiler
    asks for it, so every model shares one set of compiled shapes (and one recompile budget)."""
    if backend not in _SHARED:
        _SHARED[backend] = BlockCompiler(backend)
    return _SHARED[backend]
