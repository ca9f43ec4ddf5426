"""The ComfyUI side of test_comfy_vae_streaming.py: run with ComfyUI's python,

    COMFYUI_DIR=... python stream_decode_child.py OUT_DIR

it builds ComfyUI's own Wan 2.1 VAE small with seeded weights, decodes it whole and chunk by chunk
through the pack, saves mp4s into OUT_DIR and prints one JSON report (see the test for what each
entry means). It imports `comfy` and the pack, never pytest.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
SPLITS = [[1] * 8, [3, 3, 2], [1, 3, 3, 1], [2, 6], [8]]
LATENT_FRAMES = 8
CHILD_PACK = "longlive_vace_comfy_child"
OOM_CALL = 5  # the decoder call (one per latent frame) that runs out of memory: mid chunk 2
FALLBACK_VARIANTS = ("raises", "defers", "stateless", "drifts")




def _import_comfy() -> None:
    comfyui_dir = os.environ.get("COMFYUI_DIR", "/opt/ComfyUI")
    sys.path.insert(0, comfyui_dir)
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management probes the device
    import torch

    torch.set_num_threads(1)  # tiny convolutions: threads only add contention on a shared CI machine


WAN_CONFIG = dict(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                  temperal_downsample=[False, True, True])


def _tiny_wan_state(seed: int = 0) -> dict:
    """Every tensor of a dim-8 Wan 2.1 VAE, set from a seeded generator (RMS gains near 1, small
    biases, fan-in scaled weights so activations stay O(1) through the stacked convolutions)."""
    import torch
    import comfy.ldm.wan.vae

    model = comfy.ldm.wan.vae.WanVAE(**WAN_CONFIG, image_channels=3, dropout=0.0)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, template in sorted(model.state_dict().items()):
        shape = tuple(template.shape)
        values = torch.randn(shape, generator=generator)
        if name.endswith("gamma"):
            state[name] = 1.0 + 0.05 * values
        elif name.endswith("bias"):
            state[name] = 0.02 * values
        else:
            state[name] = values * 0.7 / math.sqrt(math.prod(shape[1:]))
    return state


def _load_pack():
    import importlib
    import importlib.util

    spec = importlib.util.spec_from_file_location(CHILD_PACK, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[CHILD_PACK] = module
    spec.loader.exec_module(module)
    return (importlib.import_module(f"{CHILD_PACK}.nodes.host"),
            importlib.import_module(f"{CHILD_PACK}.nodes.host.vae_stream"),
            importlib.import_module(f"{CHILD_PACK}.nodes.video"))


def _chunks(decode, latents, split):
    import torch

    outs, start = [], 0
    for size in split:
        outs.append(decode(latents[:, :, start:start + size]))
        start += size
    return torch.cat(outs, dim=-4 if outs[0].ndim == 4 else 2)


def _frames(out):
    """A decoder call's output as one tensor (0.8: a tensor, 0.33: a list of tensors)."""
    import torch

    return torch.cat(out, dim=2) if isinstance(out, list) else out


# how a variant's decoder answers a call from outside its own decode(): (vae, inner, x, cache, idx)
def _lists(vae, inner, x, cache, idx):
    out = _frames(inner(x, feat_cache=cache, feat_idx=idx))
    return [out[:, :, i:i + 1] for i in range(out.shape[2])]


def _raises(vae, inner, x, cache, idx):
    raise TypeError("expected Tensor as element 0 in argument 0, but got list")


def _defers(vae, inner, x, cache, idx):
    held, vae.held = vae.held, _frames(inner(x, feat_cache=cache, feat_idx=idx))
    return [] if held is None else [held]


def _stateless(vae, inner, x, cache, idx):
    return inner(x, feat_cache=[None] * len(cache), feat_idx=[0])


def _drifts(vae, inner, x, cache, idx):
    return _frames(inner(x, feat_cache=cache, feat_idx=idx)) + 1e-3


def _oom_once(vae, inner, x, cache, idx):
    import torch

    if vae.calls == vae.oom_at:
        vae.raised += 1
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated by the test)")
    return inner(x, feat_cache=cache, feat_idx=idx)


BEHAVIOURS = {"lists": _lists, "raises": _raises, "defers": _defers, "stateless": _stateless,
              "drifts": _drifts, "oom_once": _oom_once}


def _variant_class(name: str):
    """A subclass of the host's WanVAE that passes as one (class name, module ending in wan.vae)
    and whose decoder misbehaves when called from outside its own decode()."""
    import comfy.ldm.wan.vae

    behaviour = BEHAVIOURS[name]

    class Variant(comfy.ldm.wan.vae.WanVAE):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.own_decode, self.calls, self.oom_at, self.raised, self.held = False, 0, None, 0, None
            inner = self.decoder.forward

            def forward(x, feat_cache=None, feat_idx=[0], **extra):
                if self.own_decode:
                    return inner(x, feat_cache=feat_cache, feat_idx=feat_idx, **extra)
                self.calls += 1
                return behaviour(self, inner, x, feat_cache, feat_idx)

            self.decoder.forward = forward

        def decode(self, z):
            self.own_decode = True
            try:
                return super().decode(z)
            finally:
                self.own_decode = False

    Variant.__name__ = Variant.__qualname__ = "WanVAE"
    Variant.__module__ = f"longlive_test_hosts.{name}.wan.vae"
    return Variant


def _vae_with(state: dict, network_class=None):
    """comfy.sd.VAE built as VAELoader builds it, optionally holding a variant network."""
    import comfy.sd

    vae = comfy.sd.VAE(sd=dict(state))
    if network_class is not None:
        network = network_class(**WAN_CONFIG).eval()
        network.load_state_dict(state, strict=True)
        vae.first_stage_model = network
    return vae


def _read_mp4(path: Path) -> dict:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {"frames": sum(1 for _ in container.decode(stream)), "width": stream.width, "height": stream.height}


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _max_error(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


def child(out_dir: str) -> dict:
    _import_comfy()
    import torch
    import comfy.ldm.wan.vae
    import folder_paths

    host, vae_stream, video = _load_pack()
    assert vae_stream.model_management is not None, "the host did not pick up ComfyUI"
    warnings = _Warnings()
    logging.getLogger("longlive_vace").addHandler(warnings)
    folder_paths.set_output_directory(out_dir)
    state = _tiny_wan_state()
    latents = torch.randn(1, 16, LATENT_FRAMES, 4, 4, generator=torch.Generator().manual_seed(1)) * 1.5
    samples = {"samples": latents, "longlive_ref_frames": 1}
    report: dict = {"module_errors": {}, "wrapper_errors": {}, "variants": {}}

    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        # the network itself
        wan = comfy.ldm.wan.vae.WanVAE(**WAN_CONFIG).eval()
        wan.load_state_dict(state, strict=True)
        report["probe"] = vae_stream.exact_streaming_problem(wan)
        whole = wan.decode(latents)  # [1, 3, 29, 32, 32]
        report["whole_frames"] = whole.shape[2]
        for split in SPLITS:
            stream = vae_stream.WanFeatMapDecoder(wan)
            report["module_errors"][str(split)] = _max_error(_chunks(stream.decode_raw, latents, split), whole)
        tail = vae_stream.WanFeatMapDecoder(wan).decode_raw(latents[:, :, 3:])
        report["state_matters"] = _max_error(tail[:, :, -16:], whole[:, :, -16:])  # last 4 latent frames

        # the wrapper VAELoader makes, through the host's decoder choice
        vae = _vae_with(state)
        reference = vae.decode(latents)[0]  # [29, 32, 32, 3]
        for split in SPLITS:
            decoder = host.streaming_decoder(vae)
            report["wrapper_errors"][str(split)] = _max_error(_chunks(decoder.decode_chunk, latents, split), reference)
        report["decoder_class"] = type(host.streaming_decoder(vae)).__name__

        # the Save Video node into ComfyUI's output folder
        node = video.LongLiveSaveVideo()
        result = node.save(samples, vae, "LongLive", 16, 19)
        second = node.save(samples, vae, "LongLive", 16, 19)
        report["saved"] = {"ui": result["ui"], "second": second["ui"]["images"][0]["filename"],
                           **_read_mp4(Path(out_dir) / result["ui"]["images"][0]["filename"])}
        report["warnings"] = list(warnings.lines)

        # hosts whose decoder internals behave differently
        for name in ("lists", *FALLBACK_VARIANTS):
            variant = _vae_with(state, _variant_class(name))
            warnings.lines.clear()
            saved = node.save(samples, variant, f"variant_{name}", 16, 19)  # one video: one warning
            lines = list(warnings.lines)
            decoder = host.streaming_decoder(variant)
            first = decoder.decode_chunk(latents[:, :, :3])
            entry = {"decoder_class": type(decoder).__name__, "warnings": lines,
                     "first_chunk_error": _max_error(first, reference[:first.shape[0]]),
                     **_read_mp4(Path(out_dir) / saved["ui"]["images"][0]["filename"])}
            if name == "lists":
                entry["max_error"] = _max_error(_chunks(host.streaming_decoder(variant).decode_chunk, latents,
                                                        [3, 3, 2]), reference)
            report["variants"][name] = entry

        report["oom"] = _out_of_memory(vae_stream, state, latents, reference, samples, node, warnings, out_dir)
    return report


def _out_of_memory(vae_stream, state, latents, reference, samples, node, warnings, out_dir) -> dict:
    """A decoder that runs out of memory once, at its OOM_CALL-th call (in the second chunk)."""
    vae = _vae_with(state, _variant_class("oom_once"))
    tiled_calls = []
    comfy_tiled = vae.decode_tiled

    def spy(latents_in, **kwargs):
        tiled_calls.append(list(latents_in.shape))
        return comfy_tiled(latents_in, **kwargs)

    vae.decode_tiled = spy
    network = vae.first_stage_model
    network.oom_at = OOM_CALL
    warnings.lines.clear()
    decoder = vae_stream.streaming_decoder(vae)
    chunks = [decoder.decode_chunk(latents[:, :, a:b]) for a, b in ((0, 3), (3, 6), (6, 8))]
    lines, calls, raised = list(warnings.lines), list(tiled_calls), network.raised
    # the failed chunk, independently: ComfyUI's tiled decode of latent frames 1..5, its last 12 frames
    independent = vae_stream.tiled_decode(vae, latents[:, :, 1:6])[-12:]

    network.calls, network.oom_at = 0, OOM_CALL  # once more, through the node, for the mp4
    saved = node.save(samples, vae, "oom", 16, 19)
    return {"decoder_class": type(decoder).__name__, "decoder_calls_raised": raised,
            "tiled_calls": calls, "warnings": lines, "frames_per_chunk": [c.shape[0] for c in chunks],
            "before_error": _max_error(chunks[0], reference[:9]),
            "tiled_chunk_error": _max_error(chunks[1], reference[9:21]),
            "tiled_chunk_vs_comfy_tiled": _max_error(chunks[1], independent),
            "after_error": _max_error(chunks[2], reference[21:]),
            "saved_frames": _read_mp4(Path(out_dir) / saved["ui"]["images"][0]["filename"])["frames"]}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    print(json.dumps(child(sys.argv[1])))
