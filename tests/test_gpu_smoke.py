"""scripts/gpu_smoke.py in CI: its smoke mode (CPU, tiny sizes) runs every part a CPU can run and
writes its figures; the attention check catches a kernel that drops the prompt's padding bias."""

import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench" / "gpu_smoke.py"
smoke = load_script("bench/gpu_smoke")


def test_smoke_mode_runs_every_cpu_part(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--out", str(tmp_path)],
                         check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads((tmp_path / "gpu-smoke-cpu-smoke.json").read_text())
    assert data["checks"] and all(data["checks"].values())
    for case in ("self_attention", "cross_attention"):
        backends = data["parts"]["attention"][case]["backends"]
        assert set(backends) == {"flash", "cudnn", "efficient", "math", "pack"}
        for name in ("flash", "math", "pack"):  # the CPU has these two, and the pack's kernels run
            assert backends[name]["ran"] and 0 < backends[name]["relative_rms_vs_fp32"] <= smoke.ATTENTION_TOLERANCE
            assert backends[name]["tflops"] >= 0 and backends[name]["ms"] > 0
        assert not backends["cudnn"]["ran"] and backends["cudnn"]["why"]
    for name in ("t2v", "r2v"):
        r = data["parts"]["runs"][name]
        assert r["chunks"] == smoke.CHUNKS and r["finite"] and r["steady_fps"] > 0
        assert any("scaled_dot_product" in kernel for kernel in r["kernels"])  # the profiled steady chunk
        assert r["sync_sites"] == "needs CUDA"
    markdown = (tmp_path / "gpu-smoke-cpu-smoke.md").read_text()
    assert "## cross_attention" in markdown and "| r2v |" in markdown


def test_the_attention_check_catches_a_kernel_that_drops_the_bias(monkeypatch):
    """Planted fault: SDPA on half-precision inputs ignores the mask (how a kernel misreading the
    bias shows); float32 math (the reference) still applies it."""
    sdpa = F.scaled_dot_product_attention

    def dropping(q, k, v, attn_mask=None, **kwargs):
        return sdpa(q, k, v, attn_mask=None if q.dtype != torch.float32 else attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", dropping)
    figures, checks = smoke.part_attention(smoke.Plan(smoke=True), torch.device("cpu"))
    assert checks["attention_self_attention_math_within_tolerance"]  # no mask there: unaffected
    assert not checks["attention_cross_attention_math_within_tolerance"]
    assert figures["cross_attention"]["backends"]["math"]["relative_rms_vs_fp32"] > smoke.ATTENTION_TOLERANCE


def test_the_kernel_report_names_sdpas_math_fallback():
    """The GPU check "no math attention" reads the SDPA op names the profiler records (the math
    fallback's own kernels are plain matmuls): a math call shows up, a flash call does not."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    q = torch.randn(1, 2, 8, 16)
    for backend, math_seen in ((SDPBackend.MATH, True), (SDPBackend.FLASH_ATTENTION, False)):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with sdpa_kernel([backend]):
                F.scaled_dot_product_attention(q, q, q)
        names = smoke.attention_kernels(prof, on_gpu=False)
        assert any(name.startswith("aten::_scaled_dot_product") for name in names)
        assert any("math" in name for name in names) is math_seen
