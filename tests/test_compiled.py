"""torch.compile of the blocks (vace_core.compiled) over the sampler's real runs.

The run: R2V with one reference, a prompt switch after the window has rolled (LongLive's recache of
the rolling frames) and a shorter last chunk, so passes of four shapes occur: the reference block
(1 frame), full chunks (2 frames, compiled), the recache (3 frames) and the last chunk (1 frame).

Most tests trace with dynamo and run the graphs through AOTAutograd without generating code
("aot_eager", or "eager"): a graph break, a recompile or a complex-valued graph shows there as it
would with inductor, in seconds. One test (marked slow, ~1 min on 2 cores) compiles with inductor,
the backend users get. Compiled and eager outputs: aot_eager runs the same kernels (measured max abs
difference 0); inductor fuses and reorders float32 arithmetic (measured 1.2e-6 on latents of std
~1.3); the bound is the issue's 1e-4.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend
from torch._dynamo.utils import counters

from helpers import random_text, random_vace_context, tiny_model
from vace_core.compiled import BlockCompiler
from vace_core.latents import video_frames_for
from vace_core.logs import LOGGER_NAME
from vace_core.sampler import PromptSegment, SamplerSettings, generate

HEIGHT, WIDTH = 32, 48
REFS, FRAMES = 1, 9
SETTINGS = SamplerSettings(chunk_frames=2, window_frames=4, sink_frames=1, denoising_steps=(1000, 500))
COMPILED_FRAMES = SETTINGS.chunk_frames
TOKENS = (HEIGHT // 16) * (WIDTH // 16) * COMPILED_FRAMES
PARTS = 3  # graphs per compiled shape: the block parts around the two attention kernels
TOL = 1e-4


def r2v_with_a_switch(model, height: int = HEIGHT, width: int = WIDTH, batch: int = 1) -> torch.Tensor:
    prompts = [PromptSegment(0, random_text(seed=1)), PromptSegment(24, random_text(seed=2))]  # latent 6
    return generate(model, prompts, video_frames=video_frames_for(FRAMES), height=height, width=width, seed=0,
                    vace=random_vace_context(REFS, FRAMES, height, width, seed=3), settings=SETTINGS,
                    batch=batch).latents


class RecordingBackend:
    """A dynamo backend that keeps every graph it is given and hands it to `inner`."""

    def __init__(self, inner: str) -> None:
        self.inner = lookup_backend(inner)
        self.graphs: list[torch.fx.GraphModule] = []
        self.__name__ = f"recording {inner}"

    def __call__(self, graph: torch.fx.GraphModule, example_inputs):
        self.graphs.append(graph)
        return self.inner(graph, example_inputs)

    def complex_nodes(self) -> list[str]:
        return [f"{node.op} {node.target}" for graph in self.graphs for node in graph.graph.nodes
                if isinstance(node.meta.get("example_value"), torch.Tensor) and node.meta["example_value"].is_complex()]


def run_twice_compiled(model, compiler: BlockCompiler) -> tuple[torch.Tensor, dict, torch.Tensor, dict]:
    """The run twice with `compiler`: each run's output and dynamo's counters during it."""
    model.compiler = compiler
    try:
        counters.clear()
        compiled = r2v_with_a_switch(model)
        first = {key: dict(value) for key, value in counters.items()}
        counters.clear()
        again = r2v_with_a_switch(model)
        second = {key: dict(value) for key, value in counters.items()}
    finally:
        model.compiler = None
    return compiled, first, again, second


@pytest.fixture(scope="module")
def model():
    return tiny_model("tiny-vace", seed=5)


@pytest.fixture(scope="module")
def eager(model):
    return r2v_with_a_switch(model)


def test_compiled_parts_equal_eager_in_whole_graphs_compiled_once(model, eager, monkeypatch):
    backend = RecordingBackend("aot_eager")
    compiler = BlockCompiler(backend)
    shapes = []
    pass_parts = BlockCompiler.pass_parts
    monkeypatch.setattr(BlockCompiler, "pass_parts",
                        lambda self, frames, *rest: shapes.append(frames) or pass_parts(self, frames, *rest))
    compiled, first, again, second = run_twice_compiled(model, compiler)
    assert "graph_break" not in first and first["stats"]["unique_graphs"] == PARTS
    assert len(backend.graphs) == PARTS and backend.complex_nodes() == []
    assert second == {}  # an identical second run compiles nothing
    assert compiler.shapes == [(COMPILED_FRAMES, TOKENS, "float32", 1)] and compiler.fallbacks == []
    # only full-chunk passes asked for compiled parts: 4 chunks x (2 steps + clean pass) per run;
    # the reference block, the recache and the 1-frame last chunk ran eagerly
    assert shapes == [COMPILED_FRAMES] * (4 * 3) * 2
    assert (compiled - eager).abs().max().item() == 0.0 and torch.equal(compiled, again)


def test_a_shape_beyond_the_recompile_limit_warns_and_runs_eagerly(model, eager, caplog):
    compiler = BlockCompiler("eager", recompile_limit=1)
    model.compiler = compiler
    try:
        first = r2v_with_a_switch(model)
        with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
            other_size = r2v_with_a_switch(model, height=48)
    finally:
        model.compiler = None
    assert torch.equal(first, eager)
    assert torch.equal(other_size, r2v_with_a_switch(model, height=48))
    assert compiler.shapes == [(COMPILED_FRAMES, TOKENS, "float32", 1)]
    assert len(compiler.fallbacks) == PARTS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "EAGERLY" in r.getMessage()]
    assert len(warnings) == PARTS
    assert "for passes of 2 frames x 9 tokens in float32: it was already compiled for 1 shapes" in warnings[0]


def test_a_compile_failure_warns_and_runs_eagerly(model, eager, caplog):
    def broken(graph, example_inputs):
        raise RuntimeError("no C++ compiler found")

    model.compiler = BlockCompiler(broken)
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
            out = r2v_with_a_switch(model)
    finally:
        fallbacks, model.compiler = model.compiler.fallbacks, None
    assert torch.equal(out, eager)
    assert len(fallbacks) == PARTS and all("no C++ compiler found" in line for line in fallbacks)
    assert sum("EAGERLY" in r.getMessage() for r in caplog.records) == PARTS


def test_a_batch_compiles_in_whole_graphs_and_equals_its_eager_run(model):
    """A batch of 2 videos (issue 25): the batch is one more static dimension of the same graphs, no
    graph break, compiled once; aot_eager runs the same kernels as eager (measured difference 0)."""
    eager = r2v_with_a_switch(model, batch=2)
    model.compiler = BlockCompiler(RecordingBackend("aot_eager"))
    try:
        counters.clear()
        compiled = r2v_with_a_switch(model, batch=2)
        first = {key: dict(value) for key, value in counters.items()}
    finally:
        compiler, model.compiler = model.compiler, None
    assert "graph_break" not in first and first["stats"]["unique_graphs"] == PARTS
    assert compiler.fallbacks == [] and compiler.shapes == [(COMPILED_FRAMES, TOKENS, "float32", 2)]
    assert torch.equal(compiled, eager)


@pytest.mark.slow
def test_inductor_compiles_the_blocks_without_breaks_recompiles_or_complex_fallbacks(model, eager):
    """The acceptance run (issue 16): CPU inductor, ~1 min on 2 cores (three C++ graphs). A batch is
    one more static dimension of the same graphs: its tracing (no graph break, compiled once) is the
    aot_eager test above; inductor's code generation is proven here once, at the usual batch of 1."""
    from torch._inductor import lowering

    compiler = BlockCompiler("inductor")
    compiled, first, again, second = run_twice_compiled(model, compiler)
    err = (compiled - eager).abs().max().item()
    print(f"inductor vs eager: max abs err {err:.2e}; counters {first}")
    assert "graph_break" not in first or not first["graph_break"]
    assert first["stats"]["unique_graphs"] == PARTS and first["inductor"]
    assert lowering._warn_complex_not_supported.cache_info().currsize == 0  # no complex-op fallback
    assert second == {} and torch.equal(compiled, again)
    assert compiler.fallbacks == [] and compiler.shapes == [(COMPILED_FRAMES, TOKENS, "float32", 1)]
    assert err <= TOL
