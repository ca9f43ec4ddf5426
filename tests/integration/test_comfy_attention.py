"""Inside ComfyUI (in-process, ComfyUI's python, --cpu), the host's attention serves our model.

run_comfy_attention.py loads a tiny base + VACE through the pack's loader path and runs an R2V video
with a prompt switch; these tests check what it recorded, with ComfyUI's default attention on the
CPU (sub-quadratic) and with --use-split-cross-attention, i.e. that the user's attention flag
reaches this model:

- every self-attention call of the blocks went through ComfyUI's `optimized_attention`, which is
  the function the flag selects;
- every cross-attention call (the prompt's merged padding bias) went to PyTorch's SDPA with its
  mask in the queries' dtype, as flash and sage take no mask (docs/how-it-works.md#the-gpu-path);
- the video equals the same weights run standalone on SDPA: measured 2.5-2.7e-7 max abs difference
  (float32 rounding of other kernels); tolerance 2e-5, as for the injected-kernel unit test, where a
  kernel that drops the mask moves the video by more than 1e-1;
- the loader's compile choice traces the blocks' parts through comfy.ops layers in whole graphs.
"""

from __future__ import annotations

import json

import pytest

from comfy_harness import HERE, REPO_ROOT

TOLERANCE = 2e-5
FLAGS = {"default": ([], "attention_sub_quad"),
         "split": (["--use-split-cross-attention"], "attention_split")}


@pytest.fixture(scope="module", params=list(FLAGS))
def report(request, comfy_install, tmp_path_factory) -> tuple[dict, str]:
    flags, expected = FLAGS[request.param]
    work = tmp_path_factory.mktemp(f"comfy_attention_{comfy_install.label}_{request.param}")
    out = work / "report.json"
    result = comfy_install.run_python([str(HERE / "run_comfy_attention.py"), str(REPO_ROOT), str(work), str(out),
                                       *flags], timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return json.loads(out.read_text()), expected


def test_self_attention_runs_on_comfyui_attention_cross_attention_on_sdpa(report, report_figure):
    found, expected = report
    assert found["comfy_optimized_attention"] == expected
    assert found["kernels"] == f"ComfyUI {expected} (self-attention), sdpa (masked)"
    blocks = found["block_calls"]
    assert blocks["self"] > 0 and blocks["masked"] > 0
    assert found["calls"] == {f"optimized_attention -> {expected}": blocks["self"],
                              "sdpa with a fitting mask": blocks["masked"]}
    report_figure(f"attention: self -> ComfyUI {expected} ({blocks['self']} calls), cross -> sdpa with the "
                  f"bias in q's dtype ({blocks['masked']} calls)")


def test_the_video_equals_the_standalone_sdpa_one(report, report_figure):
    found, expected = report
    assert found["standalone_kernels"] == "sdpa"
    assert found["max_abs_diff_vs_sdpa"] <= TOLERANCE
    report_figure(f"attention {expected} vs sdpa: max abs diff {found['max_abs_diff_vs_sdpa']:.1e}")


def test_compiled_blocks_trace_through_comfy_ops_layers(report):
    """The loader's compile choice inside ComfyUI: whole graphs through comfy.ops' Linear and
    LayerNorm (fully loaded; a --lowvram stream that dynamo cannot trace would warn and run eagerly),
    the same video."""
    found, _ = report
    assert found["compile"]["fallbacks"] == [] and len(found["compile"]["shapes"]) == 1
    assert found["compile"]["max_abs_diff_vs_eager"] <= 1e-6
