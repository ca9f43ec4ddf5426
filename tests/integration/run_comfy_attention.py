"""Which attention functions serve our model inside ComfyUI, and its video against PyTorch's SDPA.

Runs with ComfyUI's python (`COMFYUI_DIR` names the checkout), forced onto the CPU, with ComfyUI's
own attention flags after the three arguments:

    python run_comfy_attention.py PACK_DIR WORK_DIR OUT_JSON [--use-split-cross-attention ...]

It imports ComfyUI, then our pack the way ComfyUI imports a custom node folder, loads a tiny base +
VACE through the pack's loader path (nodes/model_ref.py, so the network gets the host's attention
kernels as a real load does), and records, as JSON:

- the host kernels' name and the name of the function ComfyUI's `optimized_attention` is;
- over an R2V run with a prompt switch: how many self-attention calls reached ComfyUI's
  `optimized_attention` (a recording wrapper put in its place; the host looks it up per call) and
  how many calls reached torch's scaled_dot_product_attention with a mask, and that mask's dtype
  against the queries' (cross-attention with its padding bias);
- the run's latents against the same weights run standalone with PyTorch's SDPA (max abs diff);
- the same run with the blocks compiled (vace_core.compiled, dynamo's "eager" backend) through
  ComfyUI's comfy.ops layers: the shapes compiled, any fallback, the difference to eager.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_child import import_comfy, import_pack  # noqa: E402


def main(pack_dir: str, work_dir: str, out_path: str, *flags: str) -> None:
    torch.set_num_threads(1)
    [attention] = import_comfy("comfy.ldm.modules.attention", flags=flags)
    mods = import_pack(pack_dir, "nodes.model_ref", "nodes.model_files", "vace_core.testing.fixtures",
                       "vace_core.checkpoints", "vace_core.config", "vace_core.encoding", "vace_core.sampler",
                       "vace_core.attention", "vace_core.compiled")
    model_ref, fx, ckpt = (mods[k] for k in ("nodes.model_ref", "vace_core.testing.fixtures", "vace_core.checkpoints"))
    encoding, sampler, core_attention = mods["vace_core.encoding"], mods["vace_core.sampler"], mods["vace_core.attention"]
    compiled = mods["vace_core.compiled"]
    tiny = mods["vace_core.config"].architecture("tiny-vace")
    work = Path(work_dir)
    state = fx.make_state_dict(tiny, seed=0)
    files = {"base": fx.write_longlive_pt(work / "longlive_base.pt", fx.main_only(state)),
             "vace": fx.write_vace_module(work / "vace_module.safetensors", state)}

    def ref(kind: str, key: str):
        path = str(files[key])
        stat = os.stat(path)
        return mods["nodes.model_files"].FileRef(kind, Path(path).name, path, (stat.st_size, stat.st_mtime_ns))

    generator = torch.Generator().manual_seed(3)
    prompts = [sampler.PromptSegment(0, torch.randn(1, 12, tiny.text_dim, generator=generator)),
               sampler.PromptSegment(16, torch.randn(1, 20, tiny.text_dim, generator=generator))]
    frames, refs = 8, 1
    context = torch.randn(1, 96, refs + frames, 4, 6, generator=generator)
    vace = encoding.VaceContext(context=context, ref_latents=context[:, :16, :refs].clone(), ref_frames=refs,
                                latent_frames=frames, video_frames=encoding.video_frames_for(frames),
                                height=32, width=48)
    settings = sampler.SamplerSettings(chunk_frames=2, window_frames=4, sink_frames=1, denoising_steps=(1000, 500))

    def r2v(network) -> torch.Tensor:
        return sampler.generate(network, prompts, video_frames=vace.video_frames, height=32, width=48, seed=0,
                                vace=vace, settings=settings).latents

    calls: Counter = Counter()
    comfy_function = attention.optimized_attention

    def recording_optimized(q, k, v, *args, **kwargs):
        calls[f"optimized_attention -> {comfy_function.__name__}"] += 1
        return comfy_function(q, k, v, *args, **kwargs)

    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(q, k, v, attn_mask=None, *args, **kwargs):
        if attn_mask is not None:
            same = attn_mask.dtype == q.dtype or attn_mask.dtype == torch.bool
            calls[f"sdpa with a {'fitting' if same else 'MISMATCHED'} mask"] += 1
        else:
            calls["sdpa without a mask"] += 1
        return sdpa(q, k, v, attn_mask, *args, **kwargs)

    out: dict = {"comfy_optimized_attention": comfy_function.__name__}
    with torch.inference_mode():
        model = model_ref.load_model(ref("diffusion_models", "base"), "fp32").with_vace(ref("diffusion_models", "vace"))
        network = model.load_for_run(1 << 20).network
        out["kernels"] = network.attention.name
        attention.optimized_attention = recording_optimized
        torch.nn.functional.scaled_dot_product_attention = recording_sdpa
        try:
            hosted = r2v(network)
        finally:
            attention.optimized_attention = comfy_function
            torch.nn.functional.scaled_dot_product_attention = sdpa
        out["calls"] = dict(calls)
        counted = Counter()  # the model's own count of its self-attention and masked calls
        kernels = network.attention

        def counting_unmasked(q, k, v):
            counted["self"] += 1
            return kernels.unmasked(q, k, v)

        def counting_masked(q, k, v, mask):
            counted["masked"] += 1
            return kernels.masked(q, k, v, mask)

        network.attention = core_attention.AttentionKernels(counting_unmasked, counting_masked, "counting")
        r2v(network)
        network.attention = kernels
        out["block_calls"] = dict(counted)

        # the loader's compile choice over comfy.ops layers: dynamo traces whole graphs ("eager"
        # backend: no code generated, so this stays quick)
        network.compiler = compiled.BlockCompiler("eager")
        compiled_video = r2v(network)
        out["compile"] = {"shapes": network.compiler.shapes, "fallbacks": network.compiler.fallbacks,
                          "max_abs_diff_vs_eager": (compiled_video - hosted).abs().max().item()}
        network.compiler = None

        standalone = ckpt.load_longlive(files["base"], dtype=torch.float32)
        ckpt.graft_vace(standalone, files["vace"])
        out["standalone_kernels"] = standalone.attention.name
        out["max_abs_diff_vs_sdpa"] = (hosted - r2v(standalone)).abs().max().item()
    Path(out_path).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
