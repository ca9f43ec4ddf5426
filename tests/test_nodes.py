"""The node pack through the standalone host on the CPU: every node's function, with tiny real-format
checkpoints (vace_core.testing.fixtures), a small stand-in VAE with ComfyUI's conventions, and real tensors.

The pack is imported the way ComfyUI imports a custom node folder (a package named by its path,
loaded from its __init__.py), so the relative imports are exercised as they run in ComfyUI.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import (PACK, assert_same_weights, load_pack_standalone, request_interrupt, run_node, sampler_settings,
                     standalone_host, video_latent, write_node_models)

pack = load_pack_standalone()
sampler_node = importlib.import_module(f"{PACK}.nodes.sampler")
settings_node = importlib.import_module(f"{PACK}.nodes.sampler_settings")
host = importlib.import_module(f"{PACK}.nodes.host")
model_ref = importlib.import_module(f"{PACK}.nodes.model_ref")
progress = importlib.import_module(f"{PACK}.nodes.host.progress")
comfyui = importlib.import_module(f"{PACK}.nodes.host.comfyui")
fx = importlib.import_module(f"{PACK}.vace_core.testing.fixtures")
ckpt = importlib.import_module(f"{PACK}.vace_core.checkpoints")
core_sampler = importlib.import_module(f"{PACK}.vace_core.sampler")
core_plan = importlib.import_module(f"{PACK}.vace_core.plan")
core_streaming = importlib.import_module(f"{PACK}.vace_core.streaming")
encoding = importlib.import_module(f"{PACK}.vace_core.encoding")
config_mod = importlib.import_module(f"{PACK}.vace_core.config")

NODES = pack.NODE_CLASS_MAPPINGS
TINY = config_mod.architecture("tiny-vace")
SIZE = 64
FRAMES = 9  # 3 latent frames = one chunk of 3
SAMPLER_DEFAULTS = dict(seed=7, vace_scale=1.0)  # and the LongLive preset: chunk 3, window 12, sink 3


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """models/diffusion_models + models/loras with one set of tiny weights in real layouts."""
    return write_node_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(autouse=True)
def standalone(models_dir, monkeypatch):
    with standalone_host(models_dir, monkeypatch):
        yield


class TinyVAE:
    """Stand-in for ComfyUI's Wan VAE object: encode(pixels [T,H,W,3] in 0..1) -> raw latents
    [1,16,(T-1)//4+1,H/8,W/8] and decode(raw [1,16,t,h,w]) -> [1,4t-3,H,W,3], both deterministic.
    Latent channel c holds colour channel c % 3 of each 8x8 block, scaled by (1 + c); decoding
    reverses that from channels 0..2 and repeats latent frame 0 once and later ones 4 times."""

    def __init__(self) -> None:
        self.encoded: list[tuple[int, ...]] = []

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        self.encoded.append(tuple(pixels.shape))
        t = pixels.shape[0]
        keep = pixels[[0] + list(range(4, t, 4))] if t > 1 else pixels[:1]  # one frame per latent frame
        x = F.avg_pool2d(keep.permute(0, 3, 1, 2).float(), 8)  # [t', 3, h, w]
        channels = torch.stack([x[:, c % 3] * (1 + c) for c in range(16)], dim=1)  # [t', 16, h, w]
        return channels.permute(1, 0, 2, 3).unsqueeze(0)

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        rgb = raw[0, :3].permute(1, 0, 2, 3) / torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)  # [t, 3, h, w]
        repeats = torch.tensor([1] + [4] * (rgb.shape[0] - 1))
        frames = rgb.repeat_interleave(repeats, dim=0)  # [4t-3, 3, h, w]
        pixels = F.interpolate(frames, scale_factor=8, mode="nearest")
        return pixels.permute(0, 2, 3, 1).unsqueeze(0).clamp(0, 1)


def conditioning(seed: int, tokens: int = 12) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, TINY.text_dim, generator=generator), {"pooled_output": None}]]


def images(n: int, seed: int = 3, height: int = 48, width: int = 80) -> torch.Tensor:
    return torch.rand(n, height, width, 3, generator=torch.Generator().manual_seed(seed))


def run(name: str, **inputs):
    return run_node(NODES, name, **inputs)


def reference_context(length: int = FRAMES):
    """VACE Encode References on one random reference image (TinyVAE, pad fit)."""
    return run("LongLiveVaceEncode", vae=TinyVAE(), width=SIZE, height=SIZE, length=length, reference_fit="pad",
               reference_images=images(1))[0]


def load(lora: str = "none", strength: float = 1.0):
    return run("LongLiveModelLoader", base_checkpoint="longlive_base.pt", lora=lora, lora_strength=strength,
               dtype="fp32")[0]


def vace_model():
    return run("LongLiveVaceGraft", model=load("lora.pt"), vace_checkpoint="vace_module.safetensors")[0]


def fresh(lora: str | None = None, steps=()) -> torch.nn.Module:
    """The same weights built directly with vace_core, bypassing the nodes and their cache."""
    loras = Path(os.environ["LONGLIVE_MODELS_DIR"]) / "loras"
    diffusion = Path(os.environ["LONGLIVE_MODELS_DIR"]) / "diffusion_models"
    model = ckpt.load_longlive(diffusion / "longlive_base.pt", loras / lora if lora else None, dtype=torch.float32)
    for op, name, strength in steps:
        if op == "lora":
            ckpt.apply_lora(model, loras / name, strength)
        else:
            ckpt.graft_vace(model, diffusion / name)
    return model


# ---------------------------------------------------------------------------------------------
# registration and node definitions


CONTRACT_NAMES = {
    "LongLiveModelLoader": "Load LongLive Model",
    "LongLiveLoraLoader": "LongLive Extra LoRA",
    "LongLiveVaceGraft": "Load VACE Weights (graft)",
    "LongLiveVaceEncode": "VACE Encode References",
    "LongLivePromptSchedule": "LongLive Prompt Schedule",
    "LongLiveSampler": "LongLive Sampler",
    "LongLiveDecode": "Decode (strip references)",
}


def test_pack_registers_every_node_with_display_name():
    assert set(CONTRACT_NAMES) <= set(NODES)
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(NODES)
    for name, display in CONTRACT_NAMES.items():
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[name] == display


@pytest.mark.parametrize("name", sorted(NODES))
def test_node_definition_is_complete(name):
    cls = NODES[name]
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    inputs = {**spec["required"], **spec.get("optional", {})}
    for input_name, entry in inputs.items():
        assert len(entry) == 2 and entry[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
    assert cls.CATEGORY == "LongLive/VACE"
    assert cls.DESCRIPTION
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
    parameters = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    named = {p for p, v in parameters.items() if v.kind is not inspect.Parameter.VAR_KEYWORD} - {"self"}
    # the settings node takes its override and option widgets as one group (**widgets)
    grouped = set(settings_node.OVERRIDES) | set(settings_node.CAUSAL_OPTIONS) if len(named) < len(parameters) - 1 \
        else set()
    assert set(inputs) | set(spec.get("hidden", {})) == named | grouped
    for optional in set(spec.get("optional", {})) | set(spec.get("hidden", {})):
        assert parameters[optional].default is not inspect.Parameter.empty


def test_no_widget_default_reads_like_an_error():
    """No -1, -1.0 or empty box anywhere: a value meaning "the preset's" reads "preset"."""
    for name, cls in NODES.items():
        spec = cls.INPUT_TYPES()
        for input_name, (kind, options) in {**spec["required"], **spec.get("optional", {})}.items():
            default = options.get("default")
            if default is None:
                continue
            where = f"{name}.{input_name}"
            assert not (isinstance(default, (int, float)) and not isinstance(default, bool) and default < 0), where
            assert default != "", where


def test_widget_order_and_defaults_follow_the_contract():
    sampler = NODES["LongLiveSampler"].INPUT_TYPES()
    # what most runs change, on the sampler; the rest on the optional settings node
    assert list(sampler["required"]) == ["model", "positive", "latent", "seed", "vace_scale", "preset"]
    assert list(sampler["optional"]) == ["vace_context", "prompt_schedule", "start_images", "vae", "settings",
                                         "clip"]
    assert sampler["required"]["latent"][0] == "LATENT" and sampler["optional"]["settings"][0] == "LONGLIVE_SETTINGS"
    req = sampler["required"]
    assert req["seed"][1]["control_after_generate"] is True
    assert (req["vace_scale"][1]["min"], req["vace_scale"][1]["max"], req["vace_scale"][1]["step"]) == (0.0, 2.0, 0.05)
    assert req["preset"][1]["default"] == "LongLive"
    settings_spec = NODES["LongLiveSamplerSettings"].INPUT_TYPES()
    assert list(settings_spec["required"]) == ["chunk_frames", "window_frames", "sink_frames", "steps", "shift",
                                               "recache", "reference_mode", "vace_attention", "hint_chunks",
                                               "hints_in_clean_pass", "vace_scale_at_end", "vace_block_scales"]
    widgets = settings_spec["required"]
    assert [widgets[k][1]["default"] for k in ("chunk_frames", "window_frames", "sink_frames", "steps", "shift")] \
        == ["preset"] * 5
    assert (widgets["vace_attention"][1]["default"], widgets["recache"][1]["default"]) == ("causal", "longlive")
    assert widgets["vace_attention"][0] == ["causal", "references", "block"]
    assert widgets["recache"][0] == ["longlive", "causal"]
    assert (widgets["vace_scale_at_end"][1]["default"], widgets["vace_block_scales"][1]["default"]) == (1.0, "1.0")
    assert "LongLive 12; Self-Forcing, CausVid (AR), Causal Forcing (chunkwise) 21" in \
        widgets["window_frames"][1]["tooltip"]
    loader_inputs = NODES["LongLiveModelLoader"].INPUT_TYPES()
    loader = loader_inputs["required"]
    assert list(loader) == ["base_checkpoint", "lora", "lora_strength", "dtype"]
    assert loader_inputs["optional"]["entry"] == (["auto", "generator", "generator_ema", "model"],
                                                  loader_inputs["optional"]["entry"][1])
    assert loader_inputs["optional"]["entry"][1]["default"] == "auto"
    assert list(loader_inputs["optional"]) == ["entry", "compile", "non_causal_base"]
    assert loader_inputs["optional"]["compile"] == ("BOOLEAN", loader_inputs["optional"]["compile"][1])
    assert loader_inputs["optional"]["compile"][1]["default"] is False
    assert loader_inputs["optional"]["non_causal_base"][0] == ["refuse", "load anyway"]
    assert loader_inputs["optional"]["non_causal_base"][1]["default"] == "refuse"
    assert loader["base_checkpoint"][0] == ["longlive_base.pt", "vace_module.safetensors"]
    assert loader["lora"][0] == ["none", "lora.pt", "style.safetensors"]
    assert loader["lora"][1]["default"] == "lora.pt" and loader["dtype"][1]["default"] == "auto"
    assert loader["dtype"][0] == ["auto", "bf16", "fp16", "fp32", "fp8_e4m3fn", "fp8_e4m3fn_fast"]
    encode = NODES["LongLiveVaceEncode"]
    assert list(encode.INPUT_TYPES()["required"]) == ["vae", "width", "height", "length", "reference_fit"]
    assert list(encode.INPUT_TYPES()["optional"]) == ["reference_images", "more_reference_images", "control_video",
                                                      "control_masks", "batch_size"]
    assert encode.INPUT_TYPES()["optional"]["batch_size"][1]["default"] == 1
    assert encode.RETURN_TYPES == ("VACE_CONTEXT", "LATENT")


# ---------------------------------------------------------------------------------------------
# host


def test_host_resolves_names_inside_the_model_folders(models_dir):
    assert host.list_models("loras") == ["lora.pt", "style.safetensors"]
    assert host.model_path("loras", "lora.pt") == str(models_dir / "loras" / "lora.pt")
    # a name cannot climb out of its folder
    with pytest.raises(FileNotFoundError):
        host.model_path("loras", "../diffusion_models/longlive_base.pt")
    with pytest.raises(FileNotFoundError):
        host.model_path("loras", "missing.safetensors")
    with pytest.raises(ValueError, match="unknown model folder"):
        host.list_models("checkpoints")


def test_host_standalone_defaults():
    assert not comfyui.IN_COMFYUI
    assert host.offload_device() == torch.device("cpu")
    bar = host.progress_bar(4)
    bar.update(1)
    bar.update_absolute(9)
    assert (bar.current, bar.total) == (4, 4)
    assert host.make_previewer() is None
    request_interrupt()
    assert host.is_interrupted()
    with pytest.raises(host.InterruptProcessingException):
        host.check_interrupt()
    assert not host.is_interrupted()  # consumed, as ComfyUI does


# ---------------------------------------------------------------------------------------------
# loaders and graft


def network(ref) -> torch.nn.Module:
    """The network as a run of `ref` sees it: loaded by the host with `ref`'s patches applied."""
    return ref.load_for_run().network


def test_loader_without_lora_gives_the_base_weights():
    ref = load()
    assert (ref.base.name, ref.dtype, ref.loras, ref.vace, ref.has_vace) == ("longlive_base.pt", "fp32", [], None,
                                                                             False)
    assert_same_weights(network(ref), fresh())


def test_loader_with_lora_applies_it():
    ref = load("lora.pt", 0.5)
    assert ref.loras == [("lora.pt", 0.5)]
    assert_same_weights(network(ref), fresh(steps=[("lora", "lora.pt", 0.5)]))
    base = fresh()
    assert not torch.equal(network(ref).blocks[0].self_attn.q.weight, base.blocks[0].self_attn.q.weight)


def test_extra_lora_shares_the_base_and_leaves_upstream_unchanged():
    upstream = load("lora.pt")
    described = upstream.describe()
    extended = run("LongLiveLoraLoader", model=upstream, lora="style.safetensors", strength=0.8)[0]
    assert extended is not upstream
    assert extended.shared is upstream.shared  # one network: the base was not loaded again
    assert_same_weights(network(extended), fresh("lora.pt", [("lora", "style.safetensors", 0.8)]))
    # the upstream value still describes, and runs, exactly the model it stood for
    assert upstream.describe() == described and upstream.loras == [("lora.pt", 1.0)]
    assert_same_weights(network(upstream), fresh("lora.pt"))
    assert network(upstream) is network(extended)


def test_extra_lora_with_strength_zero_is_the_same_model():
    upstream = load("lora.pt")
    assert run("LongLiveLoraLoader", model=upstream, lora="style.safetensors", strength=0.0)[0] is upstream


def test_graft_adds_vace_and_leaves_upstream_without():
    upstream = load("lora.pt")
    grafted = run("LongLiveVaceGraft", model=upstream, vace_checkpoint="vace_module.safetensors")[0]
    assert grafted.has_vace and grafted.vace == "vace_module.safetensors" and not upstream.has_vace
    assert grafted.facts.num_vace_blocks == TINY.num_vace_blocks
    assert grafted.shared is upstream.shared
    assert_same_weights(network(grafted), fresh("lora.pt", [("vace", "vace_module.safetensors", 1.0)]))
    assert not network(upstream).has_vace
    assert_same_weights(network(upstream), fresh("lora.pt"))


def test_fp8_loader_lora_and_graft_give_vace_core_fp8_weights():
    """dtype fp8_e4m3fn: the LoRA patch merges into the fp8 weights at their scale, as vace_core's
    apply_lora does (one LoRA: bit-identical), the VACE blocks are fp8 too, and a run completes."""
    ref = run("LongLiveModelLoader", base_checkpoint="longlive_base.pt", lora="lora.pt", lora_strength=0.5,
              dtype="fp8_e4m3fn")[0]
    grafted = run("LongLiveVaceGraft", model=ref, vace_checkpoint="vace_module.safetensors")[0]
    diffusion = Path(os.environ["LONGLIVE_MODELS_DIR"]) / "diffusion_models"
    direct = ckpt.load_longlive(diffusion / "longlive_base.pt", Path(os.environ["LONGLIVE_MODELS_DIR"]) / "loras"
                                / "lora.pt", 0.5, dtype=torch.float8_e4m3fn)
    ckpt.graft_vace(direct, diffusion / "vace_module.safetensors")
    net = network(grafted)
    assert (net.weight_dtype, net.compute_dtype) == (torch.float8_e4m3fn, torch.float32)
    assert net.vace_blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn
    ours, theirs = net.state_dict(), direct.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key].view(torch.uint8) if ours[key].dtype == torch.float8_e4m3fn else ours[key],
                           theirs[key].view(torch.uint8) if theirs[key].dtype == torch.float8_e4m3fn
                           else theirs[key]), key
    latent = run("LongLiveSampler", model=grafted, positive=conditioning(1), latent=video_latent(SIZE, SIZE, FRAMES),
                 vace_context=reference_context(), **SAMPLER_DEFAULTS)[0]
    assert torch.isfinite(latent["samples"]).all()


def test_graft_of_a_file_without_vace_fails_and_keeps_the_model():
    upstream = load()
    with pytest.raises(ValueError, match="No VACE-specific weights"):
        run("LongLiveVaceGraft", model=upstream, vace_checkpoint="longlive_base.pt")
    assert not network(upstream).has_vace
    assert_same_weights(network(upstream), fresh())


def test_loader_errors_name_the_file():
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        run("LongLiveModelLoader", base_checkpoint="missing.pt", lora="none", lora_strength=1.0, dtype="fp32")
    with pytest.raises(ValueError, match="VACE"):  # a VACE module is not a base model
        run("LongLiveModelLoader", base_checkpoint="vace_module.safetensors", lora="none", lora_strength=1.0,
            dtype="fp32")


def test_changed_file_on_disk_is_reloaded(tmp_path, monkeypatch):
    diffusion = tmp_path / "diffusion_models"
    diffusion.mkdir()
    (tmp_path / "loras").mkdir()
    monkeypatch.setenv("LONGLIVE_MODELS_DIR", str(tmp_path))
    fx.write_longlive_pt(diffusion / "longlive_base.pt", fx.main_only(fx.make_state_dict(TINY, seed=0)))
    before = load()  # still alive: a replaced file must be read again all the same
    first = network(before).blocks[0].ffn[0].weight.clone()
    fx.write_longlive_pt(diffusion / "longlive_base.pt", fx.main_only(fx.make_state_dict(TINY, seed=5)))
    os.utime(diffusion / "longlive_base.pt", ns=(1, 1))  # a new stamp even on coarse clocks
    after = load()
    assert after.shared is not before.shared
    assert not torch.equal(network(after).blocks[0].ffn[0].weight, first)


def test_vace_file_default_prefers_the_recommended_files(tmp_path, monkeypatch):
    diffusion = tmp_path / "diffusion_models"
    diffusion.mkdir()
    monkeypatch.setenv("LONGLIVE_MODELS_DIR", str(tmp_path))

    def default() -> str | None:
        return NODES["LongLiveVaceGraft"].INPUT_TYPES()["required"]["vace_checkpoint"][1].get("default")

    (diffusion / "longlive_base.pt").write_bytes(b"")
    assert default() is None  # nothing recommended is there: ComfyUI shows the first file
    (diffusion / "Wan2_1-VACE_module_1_3B_bf16.safetensors").write_bytes(b"")
    assert default() == "Wan2_1-VACE_module_1_3B_bf16.safetensors"
    (diffusion / "wan2.1_vace_1.3B_fp16.safetensors").write_bytes(b"")
    assert default() == "wan2.1_vace_1.3B_fp16.safetensors"


# ---------------------------------------------------------------------------------------------
# VACE encode


def test_vace_encode_references_prepends_one_frame_each():
    vae = TinyVAE()
    context = run("LongLiveVaceEncode", vae=vae, width=SIZE, height=SIZE, length=FRAMES, reference_fit="pad",
                  reference_images=images(2))[0]
    assert (context.ref_frames, context.latent_frames, context.video_frames) == (2, 3, FRAMES)
    assert tuple(context.context.shape) == (1, 96, 5, SIZE // 8, SIZE // 8)
    # the references are fitted to the frame and each encoded alone; then the two video halves
    assert vae.encoded == [(FRAMES, SIZE, SIZE, 3)] * 2 + [(1, SIZE, SIZE, 3)] * 2
    # reference frames: normalised VAE latents of the fitted image, zero reactive half and mask
    fitted = encoding.prepare_reference(images(2)[1], SIZE, SIZE, "pad")
    expected = encoding.normalize_latents(TinyVAE().encode(fitted.unsqueeze(0)))
    assert torch.allclose(context.context[:, :16, 1:2], expected)
    assert torch.count_nonzero(context.context[:, 16:, :2]) == 0


def test_vace_encode_takes_more_references_of_another_size():
    """reference_images (a batch of one size) then more_reference_images (another size): one
    reference frame each, in that order, each fitted on its own; the same as the core given both."""
    subject, scene = images(1, seed=3, height=48, width=80), images(1, seed=4, height=96, width=40)
    context = run("LongLiveVaceEncode", vae=TinyVAE(), width=SIZE, height=SIZE, length=FRAMES, reference_fit="pad",
                  reference_images=subject, more_reference_images=scene)[0]
    assert context.ref_frames == 2
    expected = encoding.encode_vace_context(TinyVAE(), SIZE, SIZE, FRAMES, reference_images=[subject, scene])
    assert torch.equal(context.context, expected.context)
    alone = run("LongLiveVaceEncode", vae=TinyVAE(), width=SIZE, height=SIZE, length=FRAMES, reference_fit="pad",
                more_reference_images=scene)[0]
    assert alone.ref_frames == 1 and torch.equal(alone.context[:, :, :1], context.context[:, :, 1:2])


def test_vace_encode_control_video_and_masks():
    masks = torch.zeros(FRAMES, SIZE, SIZE)
    masks[:, :, SIZE // 2:] = 1
    context = run("LongLiveVaceEncode", vae=TinyVAE(), width=SIZE, height=SIZE, length=FRAMES,
                  reference_fit="crop", control_video=images(FRAMES, height=SIZE, width=SIZE),
                  control_masks=masks)[0]
    assert context.ref_frames == 0 and context.latent_frames == 3
    mask_channels = context.context[0, 32:]  # [64, 3, 8, 8]
    assert torch.all(mask_channels[..., :, :4] == 0) and torch.all(mask_channels[..., :, 4:] == 1)


def test_vace_encode_errors():
    with pytest.raises(ValueError, match="reference_images and/or control_video"):
        run("LongLiveVaceEncode", vae=TinyVAE(), width=SIZE, height=SIZE, length=FRAMES, reference_fit="pad")
    with pytest.raises(ValueError, match="width 72"):
        run("LongLiveVaceEncode", vae=TinyVAE(), width=72, height=SIZE, length=FRAMES, reference_fit="pad",
            reference_images=images(1))


# ---------------------------------------------------------------------------------------------
# prompt schedule


def test_prompt_schedule_chains_without_changing_the_previous_value():
    a, b = conditioning(1), conditioning(2)
    first = run("LongLivePromptSchedule", conditioning=a, start_frame=40)[0]
    second = run("LongLivePromptSchedule", conditioning=b, start_frame=8, previous=first)[0]
    assert [p.start_frame for p in first] == [40]
    assert [p.start_frame for p in second] == [8, 40]
    assert torch.equal(second[0].context, b[0][0]) and torch.equal(second[1].context, a[0][0])
    with pytest.raises(ValueError, match="already has a prompt starting at frame 8"):
        run("LongLivePromptSchedule", conditioning=a, start_frame=8, previous=second)


# ---------------------------------------------------------------------------------------------
# sampler and decode


def sample(model, positive, length: int = FRAMES, width: int = SIZE, height: int = SIZE,
           node: str = "LongLiveSampler", **inputs) -> dict:
    """A sampler node's LATENT for a video of this size (given as core's empty video latent)."""
    return run(node, model=model, positive=positive, latent=video_latent(width, height, length),
               **{**SAMPLER_DEFAULTS, **inputs})[0]


def settings(**widgets):
    return sampler_settings(NODES, **widgets)


def direct_generate(model, prompts, vace=None, settings=None, length=FRAMES, width=SIZE, height=SIZE,
                    vace_scale=1.0):
    """The same run through vace_core alone: raw (denormalised) latents."""
    settings = settings or core_sampler.SamplerSettings()
    result = core_sampler.generate(model, prompts, video_frames=length, height=height, width=width,
                                   seed=SAMPLER_DEFAULTS["seed"], vace=vace, vace_scale=vace_scale,
                                   settings=settings)
    return encoding.denormalize_latents(result.latents)


def test_sampler_t2v_equals_the_core_and_counts_passes(monkeypatch):
    bars = []
    monkeypatch.setattr(host, "progress_bar",
                        lambda total: bars.append(progress.CountingProgressBar(total)) or bars[-1])
    positive = conditioning(1)
    latent = sample(load("lora.pt"), positive)
    assert set(latent) == {"samples", "longlive_ref_frames"}
    assert latent["longlive_ref_frames"] == 0
    assert tuple(latent["samples"].shape) == (1, 16, 3, SIZE // 8, SIZE // 8)
    expected = direct_generate(fresh("lora.pt"), positive[0][0])
    assert torch.equal(latent["samples"], expected)
    # one chunk: 4 denoising passes, no clean pass after the last block
    assert len(bars) == 1 and (bars[0].current, bars[0].total) == (4, 4)


def test_sampler_takes_width_height_and_length_from_the_latent():
    """The LATENT's shape is the video's: another size in it is another video of that size, its
    values are not used, and a LongLive output's reference frames do not count."""
    positive = conditioning(1)
    wide = sample(load(), positive, length=13, width=2 * SIZE, height=SIZE)
    assert tuple(wide["samples"].shape) == (1, 16, 4, SIZE // 8, 2 * SIZE // 8)
    assert torch.equal(wide["samples"], direct_generate(fresh(), positive[0][0], length=13, width=2 * SIZE))
    latent = video_latent(2 * SIZE, SIZE, 13)
    latent["samples"].normal_()  # values are not used, only the shape
    same = run("LongLiveSampler", model=load(), positive=positive, latent=latent, **SAMPLER_DEFAULTS)[0]
    assert torch.equal(same["samples"], wide["samples"])
    with_refs = {"samples": torch.zeros(1, 16, 2 + 4, SIZE // 8, 2 * SIZE // 8), "longlive_ref_frames": 2}
    again = run("LongLiveSampler", model=load(), positive=positive, latent=with_refs, **SAMPLER_DEFAULTS)[0]
    assert torch.equal(again["samples"], wide["samples"])


@pytest.mark.parametrize("latent, message", [
    ({"samples": torch.zeros(1, 4, 3, 8, 8)}, r"latent: expected a Wan 2.1 video latent .* got \(1, 4, 3, 8, 8\)"),
    ({"samples": torch.zeros(1, 16, 8, 8)}, r"latent: expected a Wan 2.1 video latent"),
    ({"samples": torch.zeros(0, 16, 3, 8, 8)}, r"latent: expected a Wan 2.1 video latent .* got \(0, 16, 3, 8, 8\)"),
    ({"samples": torch.zeros(1, 16, 3, 8, 9)}, "latent: width 72"),
])
def test_sampler_refuses_a_latent_that_is_not_a_video_latent(no_generation, latent, message):
    with pytest.raises(ValueError, match=message):
        run("LongLiveSampler", model=load(), positive=conditioning(1), latent=latent, **SAMPLER_DEFAULTS)


def test_sampler_ticks_every_pass_and_previews_denoising_passes(monkeypatch):
    bars, seen = [], []
    monkeypatch.setattr(host, "progress_bar",
                        lambda total: bars.append(progress.CountingProgressBar(total)) or bars[-1])
    monkeypatch.setattr(host, "make_previewer", lambda: lambda x0: seen.append(tuple(x0.shape)) or "preview")
    sample(load(), conditioning(1), length=17)
    # chunks of 3 and 2 latent frames: 4 denoising passes each, one clean pass between them
    assert (bars[0].current, bars[0].total, bars[0].previews) == (9, 9, 8)
    assert seen == [(1, 16, 3, SIZE // 8, SIZE // 8)] * 4 + [(1, 16, 2, SIZE // 8, SIZE // 8)] * 4


def test_sampler_r2v_with_the_encoder_latent_then_decode_strips_the_references():
    vae = TinyVAE()
    model = vace_model()
    context, size = run("LongLiveVaceEncode", vae=vae, width=SIZE, height=SIZE, length=FRAMES, reference_fit="pad",
                        reference_images=images(2))
    # the encoder's latent is core's empty video latent of its size: the size is set there only
    assert torch.equal(size["samples"], video_latent(SIZE, SIZE, FRAMES)["samples"])
    positive = conditioning(1)
    latent = run("LongLiveSampler", model=model, positive=positive, latent=size, vace_context=context,
                 **SAMPLER_DEFAULTS)[0]
    assert latent["longlive_ref_frames"] == 2
    assert tuple(latent["samples"].shape) == (1, 16, 5, SIZE // 8, SIZE // 8)
    expected = direct_generate(fresh("lora.pt", [("vace", "vace_module.safetensors", 1.0)]), positive[0][0],
                               vace=context)
    assert torch.equal(latent["samples"], expected)
    # the VACE context really conditions the run
    t2v = sample(model, positive)
    assert not torch.allclose(t2v["samples"], latent["samples"][:, :, 2:])

    video = run("LongLiveDecode", samples=latent, vae=vae)[0]
    assert tuple(video.shape) == (FRAMES, SIZE, SIZE, 3)
    assert torch.equal(video, vae.decode(latent["samples"][:, :, 2:])[0])
    # a LATENT without the key (e.g. from a native node) decodes whole
    whole = run("LongLiveDecode", samples={"samples": latent["samples"]}, vae=vae)[0]
    assert whole.shape[0] == 4 * 5 - 3


def test_sampler_vace_scale_zero_is_text_to_video():
    model = vace_model()
    context = run("LongLiveVaceEncode", vae=TinyVAE(), width=SIZE, height=SIZE, length=FRAMES,
                  reference_fit="pad", control_video=images(FRAMES, height=SIZE, width=SIZE))[0]
    positive = conditioning(1)
    with_context = sample(model, positive, vace_context=context, vace_scale=0.0)
    without = sample(model, positive, vace_scale=0.0)
    assert torch.equal(with_context["samples"], without["samples"])


def test_sampler_prompt_schedule_switches_prompt():
    positive, later = conditioning(1), conditioning(2)
    schedule = run("LongLivePromptSchedule", conditioning=later, start_frame=12)[0]
    # 17 frames = 5 latent frames: chunks [0,3) and [3,5)
    switched = sample(load(), positive, length=17, prompt_schedule=schedule)
    expected = direct_generate(fresh(), [core_sampler.PromptSegment(0, positive[0][0]),
                                         core_sampler.PromptSegment(12, later[0][0])], length=17)
    assert torch.equal(switched["samples"], expected)
    plain = sample(load(), positive, length=17)
    assert torch.equal(plain["samples"][:, :, :3], switched["samples"][:, :, :3])  # same first chunk
    assert not torch.equal(plain["samples"][:, :, 3:], switched["samples"][:, :, 3:])
    # a scheduled prompt at frame 0 replaces positive
    replaced = sample(load(), positive, length=17,
                      prompt_schedule=run("LongLivePromptSchedule", conditioning=later, start_frame=0)[0])
    assert torch.equal(replaced["samples"], sample(load(), later, length=17)["samples"])


def test_settings_vace_ramp_reaches_the_core():
    """vace_scale_at_end is a multiple of vace_scale: 0.5 at vace_scale 0.8 ramps 0.8 -> 0.4."""
    model = vace_model()
    context = reference_context(length=17)
    positive = conditioning(1)
    ramped = sample(model, positive, length=17, vace_context=context, vace_scale=0.8,
                    settings=settings(vace_scale_at_end=0.5))
    expected = direct_generate(fresh("lora.pt", [("vace", "vace_module.safetensors", 1.0)]), positive[0][0],
                               vace=context, length=17, vace_scale=core_sampler.VaceScaleRamp(0.8, 0.4))
    assert torch.equal(ramped["samples"], expected)
    constant = sample(model, positive, length=17, vace_context=context, vace_scale=0.8)
    assert not torch.equal(ramped["samples"], constant["samples"])


def test_settings_per_block_vace_scales_reach_the_core():
    """One strength per VACE block, times vace_scale; all zero is the model without VACE; a ramp
    multiplies them per chunk; a list of the wrong length is refused before any work."""
    model = vace_model()
    context = reference_context(length=17)
    positive = conditioning(1)
    blocks = TINY.num_vace_blocks
    per_block = [0.5 + 0.25 * k for k in range(blocks)]
    text = ", ".join(f"{v:g}" for v in per_block)
    latent = sample(model, positive, length=17, vace_context=context, vace_scale=0.8,
                    settings=settings(vace_block_scales=text))
    vace_model_direct = fresh("lora.pt", [("vace", "vace_module.safetensors", 1.0)])
    expected = direct_generate(vace_model_direct, positive[0][0], vace=context, length=17,
                               vace_scale=[0.8 * v for v in per_block])
    assert torch.equal(latent["samples"], expected)
    uniform = sample(model, positive, length=17, vace_context=context, vace_scale=0.8)
    assert not torch.equal(latent["samples"], uniform["samples"])
    control = run("LongLiveVaceEncode", vae=TinyVAE(), width=SIZE, height=SIZE, length=17, reference_fit="pad",
                  control_video=images(17, height=SIZE, width=SIZE))[0]
    off = sample(model, positive, length=17, vace_context=control,
                 settings=settings(vace_block_scales=", ".join(["0"] * blocks)))
    assert torch.equal(off["samples"], sample(model, positive, length=17)["samples"])
    ramped = sample(model, positive, length=17, vace_context=context, vace_scale=0.8,
                    settings=settings(vace_block_scales=text, vace_scale_at_end=0.5))
    expected = direct_generate(vace_model_direct, positive[0][0], vace=context, length=17,
                               vace_scale=core_sampler.VaceScaleRamp(0.8, 0.4, per_block))
    assert torch.equal(ramped["samples"], expected)


def test_settings_errors_name_the_widget(no_generation):
    with pytest.raises(ValueError, match=r"window_frames 'twelve': expected a whole number of latent frames, "
                                         r"or 'preset' for the preset's value"):
        settings(window_frames="twelve")
    with pytest.raises(ValueError, match=r"sink_frames '-1': expected .* \(at least 0\)"):
        settings(sink_frames="-1")
    with pytest.raises(ValueError, match=r"shift '0': expected a positive number"):
        settings(shift="0")
    with pytest.raises(ValueError, match="vace_block_scales 'strong'"):
        settings(vace_block_scales="strong")
    with pytest.raises(ValueError, match=r"vace_block_scales lists 3 values but the model has 2 VACE blocks"):
        sample(vace_model(), conditioning(1), vace_context=reference_context(),
               settings=settings(vace_block_scales="1, 1, 1"))


def test_settings_causal_options_reach_the_core():
    model = vace_model()
    context = reference_context(length=17)
    positive = conditioning(1)
    options = {"reference_mode": "clean", "hint_chunks": "first", "hints_in_clean_pass": False}
    latent = sample(model, positive, length=17, vace_context=context, settings=settings(**options))
    expected = direct_generate(fresh("lora.pt", [("vace", "vace_module.safetensors", 1.0)]), positive[0][0],
                               vace=context, settings=core_sampler.SamplerSettings(**options), length=17)
    assert torch.equal(latent["samples"], expected)
    default = sample(model, positive, length=17, vace_context=context)
    assert not torch.equal(latent["samples"], default["samples"])
    # the node with its defaults is the sampler without it
    assert torch.equal(sample(model, positive, length=17, vace_context=context, settings=settings())["samples"],
                       default["samples"])


def test_sampler_start_images_begin_the_video(monkeypatch):
    """Image-to-video: the start image is the first output frame (up to the VAE's round trip), the
    node equals the core with the same start latents, and another image changes what follows."""
    vae = TinyVAE()
    start = images(1, seed=5, height=SIZE, width=SIZE)
    # 17 frames = 5 latent frames: the start frame, then chunks of 3 and 1
    latent = sample(load(), conditioning(1), length=17, start_images=start, vae=vae)
    start_latents = encoding.encode_start_frames(TinyVAE(), start, SIZE, SIZE)
    assert torch.allclose(latent["samples"][:, :, :1], encoding.denormalize_latents(start_latents), atol=1e-6)
    video = run("LongLiveDecode", samples=latent, vae=vae)[0]
    round_trip = (vae.decode(vae.encode(start))[0] - start).abs().max()
    assert (video[0] - start[0]).abs().max() <= round_trip + 1e-5
    expected = core_sampler.generate(fresh(), conditioning(1)[0][0], video_frames=17, height=SIZE, width=SIZE,
                                     seed=SAMPLER_DEFAULTS["seed"], settings=core_sampler.SamplerSettings(),
                                     start_latents=start_latents).latents
    assert torch.equal(latent["samples"], encoding.denormalize_latents(expected))
    other = sample(load(), conditioning(1), length=17, vae=vae, start_images=images(1, seed=6, height=SIZE, width=SIZE))
    # the fixture's weights (init scale 0.02) make the history's pull small; identical inputs give identical
    # bits, so anything far above float32 rounding is the start image's doing
    assert (other["samples"][:, :, 1:4] - latent["samples"][:, :, 1:4]).abs().max() > 1e-4


def test_sampler_start_images_with_references_and_a_prompt_switch():
    vae = TinyVAE()
    model = vace_model()
    context, size = run("LongLiveVaceEncode", vae=vae, width=SIZE, height=SIZE, length=25, reference_fit="pad",
                        reference_images=images(1))  # 25 frames = 7 latent frames
    schedule = run("LongLivePromptSchedule", conditioning=conditioning(2), start_frame=4)[0]
    start = images(5, seed=8, height=SIZE, width=SIZE)  # a 5-frame clip: 2 latent frames
    latent = run("LongLiveSampler", model=model, positive=conditioning(1), latent=size, vace_context=context,
                 prompt_schedule=schedule, start_images=start, vae=vae, **SAMPLER_DEFAULTS)[0]
    assert latent["longlive_ref_frames"] == 1 and latent["samples"].shape[2] == 1 + 7
    start_latents = encoding.encode_start_frames(TinyVAE(), start, SIZE, SIZE)
    expected = core_sampler.generate(
        fresh("lora.pt", [("vace", "vace_module.safetensors", 1.0)]),
        [core_sampler.PromptSegment(0, conditioning(1)[0][0]), core_sampler.PromptSegment(4, conditioning(2)[0][0])],
        video_frames=25, height=SIZE, width=SIZE, seed=SAMPLER_DEFAULTS["seed"], vace=context,
        settings=core_sampler.SamplerSettings(), start_latents=start_latents).latents
    assert torch.equal(latent["samples"], encoding.denormalize_latents(expected))


@pytest.mark.parametrize("with_references", [False, True])
def test_continue_video_equals_one_longer_run(with_references):
    """Sampler (21 frames = 6 latent frames), then Continue Video (+24 frames = 6 latent frames) is the
    sampler's 45-frame run; 'continuation' is its new part."""
    model = vace_model() if with_references else load()
    rolling = settings(window_frames="6")  # sink 3 + 3 rolling: the window rolls
    extra, first_context = {}, {}
    if with_references:
        extra["vace_context"] = run("LongLiveVaceEncode", vae=TinyVAE(), width=SIZE, height=SIZE, length=45,
                                    reference_fit="pad", reference_images=images(1))[0]
        first_context["vace_context"] = run("LongLiveVaceEncode", vae=TinyVAE(), width=SIZE, height=SIZE, length=21,
                                            reference_fit="pad", reference_images=images(1))[0]
    positive = conditioning(1)
    whole = sample(model, positive, length=45, settings=rolling, **extra)
    first = sample(model, positive, length=21, settings=rolling, **first_context)
    refs = 1 if with_references else 0
    both = run("LongLiveContinue", model=model, positive=positive, samples=first, length=24,
               output="earlier + continuation", settings=rolling, **SAMPLER_DEFAULTS, **extra)[0]
    new = run("LongLiveContinue", model=model, positive=positive, samples=first, length=24, output="continuation",
              settings=rolling, **SAMPLER_DEFAULTS, **extra)[0]
    assert both["longlive_ref_frames"] == refs and new["longlive_ref_frames"] == 0
    assert both["samples"].shape == whole["samples"].shape == (1, 16, refs + 12, SIZE // 8, SIZE // 8)
    assert torch.allclose(both["samples"], whole["samples"], atol=1e-5)
    assert torch.equal(new["samples"], both["samples"][:, :, refs + 6:])


def test_continue_video_errors():
    first = sample(vace_model(), conditioning(1), length=21, vace_context=reference_context(21))
    with pytest.raises(ValueError, match="1 reference frame"):
        run("LongLiveContinue", model=vace_model(), positive=conditioning(1), samples=first, length=24,
            output="continuation", **SAMPLER_DEFAULTS)
    with pytest.raises(ValueError, match="multiple of 4"):
        run("LongLiveContinue", model=vace_model(), positive=conditioning(1), samples=first, length=10,
            output="continuation", vace_context=reference_context(45), **SAMPLER_DEFAULTS)
    with pytest.raises(ValueError, match=r"expected Wan 2.1 video latents \[videos, 16, frames, h, w\]"):
        run("LongLiveContinue", model=load(), positive=conditioning(1), samples={"samples": torch.zeros(1, 4, 8, 8)},
            length=8, output="continuation", **SAMPLER_DEFAULTS)
    # a context for another length names the earlier video's LATENT as where the size came from
    with pytest.raises(ValueError, match=r"samples and vace_context describe different videos: samples \(from the "
                                         r"samples input\) is 64x64, 45 frames"):
        run("LongLiveContinue", model=vace_model(), positive=conditioning(1), samples=first, length=24,
            output="continuation", vace_context=reference_context(21), **SAMPLER_DEFAULTS)


def test_start_images_errors():
    with pytest.raises(ValueError, match="connect the vae input"):
        sample(load(), conditioning(1), length=9, start_images=images(1))
    with pytest.raises(ValueError, match="leaving nothing to generate"):
        sample(load(), conditioning(1), length=9, start_images=images(9), vae=TinyVAE())


def test_sampler_interrupt_raises_comfy_exception():
    request_interrupt()
    with pytest.raises(host.InterruptProcessingException):
        sample(load(), conditioning(1))
    assert not host.is_interrupted()


@pytest.mark.parametrize("node", ["LongLiveSampler", "LongLiveSampleToVideo", "LongLiveContinue"])
def test_every_sampler_node_takes_the_one_path_to_the_sampler(node, monkeypatch, tmp_path):
    """Sampler, Sampler -> Video and Continue Video hand `sample` one request with the same hooks: the
    model kept loaded before every pass, Cancel asked of the host; the streaming node's chunks go to
    its mp4 sink and no latents are kept. Cancel pressed before the first pass ends each of them with
    ComfyUI's exception, the flag consumed."""
    calls = []
    original = sampler_node.sample

    def recording(network, request, **hooks):
        calls.append((request, hooks))
        return original(network, request, **hooks)

    monkeypatch.setattr(sampler_node, "sample", recording)
    monkeypatch.setenv("LONGLIVE_OUTPUT_DIR", str(tmp_path))
    model, positive = load(), conditioning(1)
    inputs = {"LongLiveSampler": dict(latent=video_latent(SIZE, SIZE, FRAMES)),
              "LongLiveSampleToVideo": dict(latent=video_latent(SIZE, SIZE, FRAMES), vae=TinyVAE(),
                                            filename_prefix="LongLive", fps=16, crf=19),
              "LongLiveContinue": dict(samples=sample(model, positive), length=4, output="continuation")}[node]
    run(node, model=model, positive=positive, **SAMPLER_DEFAULTS, **inputs)
    request, hooks = calls[-1]
    assert isinstance(request, core_plan.RunRequest) and request.seed == SAMPLER_DEFAULTS["seed"]
    assert hooks["should_cancel"] is host.is_interrupted
    assert hooks["before_pass"].__func__ is host.LoadedNetwork.keep_loaded
    streaming = node == "LongLiveSampleToVideo"
    assert hooks["keep_latents"] is not streaming
    assert isinstance(hooks["on_chunk"], core_streaming.BatchVideoSink) is streaming

    request_interrupt()
    with pytest.raises(host.InterruptProcessingException):
        run(node, model=model, positive=positive, **SAMPLER_DEFAULTS, **inputs)
    assert not host.is_interrupted()


# ---------------------------------------------------------------------------------------------
# clear errors, raised before any model work


@pytest.fixture
def no_generation(monkeypatch):
    """Fail the test if a bad input got as far as loading the model for a run or generating."""
    sampler_node = importlib.import_module(f"{PACK}.nodes.sampler")

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded for a run or sample() was reached")

    monkeypatch.setattr(sampler_node, "sample", refuse)
    monkeypatch.setattr(model_ref.LongLiveModel, "load_for_run", refuse)


@pytest.mark.parametrize("widgets, message", [
    ({"window_frames": "5"}, r"window_frames \(5\) must hold the sink \(3\) plus one chunk \(3\)"),
    ({"steps": "1000,1000"}, "strictly decreasing"),
    ({"steps": "fast"}, "comma-separated"),
])
def test_sampler_rejects_bad_settings(no_generation, widgets, message):
    with pytest.raises(ValueError, match=message):
        sample(load(), conditioning(1), settings=settings(**widgets))


def test_vace_context_on_a_model_without_vace(no_generation):
    context = reference_context()
    with pytest.raises(ValueError, match=r"no VACE weights: put a 'Load VACE Weights \(graft\)'"):
        sample(load(), conditioning(1), vace_context=context)


@pytest.mark.parametrize("encode, message", [
    ({"length": 17}, r"latent \(from the latent input\) is 64x64, 9 frames, vace_context \(from the vace_context "
                     r"input\) was encoded for 64x64, 17 frames"),
    ({"width": 128}, r"is 64x64, 9 frames, vace_context .* was encoded for 128x64, 9 frames"),
])
def test_a_latent_that_disagrees_with_the_vace_context_is_refused(no_generation, encode, message):
    args = {"width": SIZE, "height": SIZE, "length": FRAMES, **encode}
    context = run("LongLiveVaceEncode", vae=TinyVAE(), reference_fit="pad", reference_images=images(1), **args)[0]
    with pytest.raises(ValueError, match=message):
        sample(vace_model(), conditioning(1), vace_context=context)


def test_the_size_mismatch_names_both_nodes_of_the_queued_graph(no_generation):
    """Inside ComfyUI the sampler gets the queued graph (hidden PROMPT) and its own id: the message
    names the node of each input with its title and id."""
    context = run("LongLiveVaceEncode", vae=TinyVAE(), width=SIZE, height=SIZE, length=17, reference_fit="pad",
                  reference_images=images(1))[0]
    graph = {"5": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {}, "_meta": {"title": "Video size"}},
             "7": {"class_type": "LongLiveVaceEncode", "inputs": {}, "_meta": {"title": "VACE Encode References"}},
             "9": {"class_type": "LongLiveSampler", "inputs": {"latent": ["5", 0], "vace_context": ["7", 0]}}}
    with pytest.raises(ValueError) as refused:
        sample(vace_model(), conditioning(1), vace_context=context, prompt=graph, unique_id="9")
    message = str(refused.value)
    assert "latent (from node 5 'Video size') is 64x64, 9 frames" in message
    assert "vace_context (from node 7 'VACE Encode References') was encoded for 64x64, 17 frames" in message
    assert "Connect the latent output of 'VACE Encode References' to the sampler's latent" in message


def test_bad_conditioning_and_schedule(no_generation):
    wide = [[torch.zeros(1, 8, 32), {}]]
    with pytest.raises(ValueError, match="positive: the conditioning has 32 channels"):
        sample(load(), wide)
    with pytest.raises(ValueError, match="expected a CONDITIONING"):
        sample(load(), None)
    late = run("LongLivePromptSchedule", conditioning=conditioning(2), start_frame=FRAMES)[0]
    with pytest.raises(ValueError, match="at or after the end of the video"):
        sample(load(), conditioning(1), prompt_schedule=late)


def test_decode_rejects_image_latents():
    with pytest.raises(ValueError, match="expected video latents"):
        run("LongLiveDecode", samples={"samples": torch.zeros(1, 4, 8, 8)}, vae=TinyVAE())


# ---------------------------------------------------------------------------------------------
# presets and checkpoint entries (issue 11)


def test_sampler_preset_without_settings_and_single_values_typed_over_it():
    presets = importlib.import_module(f"{PACK}.vace_core.presets")
    positive = conditioning(1)
    latent = sample(load(), positive, preset="CausVid (AR)")
    expected = direct_generate(fresh(), positive[0][0], settings=presets.resolve_settings("CausVid (AR)"))
    assert torch.equal(latent["samples"], expected)
    # the settings node with its "preset" widgets changes nothing
    assert torch.equal(sample(load(), positive, preset="CausVid (AR)", settings=settings())["samples"],
                       latent["samples"])
    # a value typed there wins: the LongLive steps, still fed the CausVid way (unwarped, shift 8)
    explicit = sample(load(), positive, preset="CausVid (AR)", settings=settings(steps="1000,750,500,250"))
    expected = direct_generate(fresh(), positive[0][0], settings=presets.resolve_settings(
        "CausVid (AR)", denoising_steps=(1000, 750, 500, 250)))
    assert torch.equal(explicit["samples"], expected)
    assert not torch.equal(explicit["samples"], latent["samples"])


def test_sampler_rejects_an_unknown_preset(no_generation):
    with pytest.raises(ValueError, match="preset 'Wan'"):
        sample(load(), conditioning(1), preset="Wan")


def test_loader_entry_picks_the_state_dict(tmp_path, monkeypatch):
    diffusion = tmp_path / "diffusion_models"
    diffusion.mkdir()
    (tmp_path / "loras").mkdir()
    monkeypatch.setenv("LONGLIVE_MODELS_DIR", str(tmp_path))
    states = {name: fx.main_only(fx.make_state_dict(TINY, seed=seed))
              for name, seed in (("generator", 20), ("critic", 21), ("generator_ema", 22))}
    fx.write_trainer_pt(diffusion / "self_forcing_dmd.pt", states)

    def loaded(**entry):
        return run("LongLiveModelLoader", base_checkpoint="self_forcing_dmd.pt", lora="none", lora_strength=1.0,
                   dtype="fp32", **entry)[0]

    auto, named = loaded(), loaded(entry="generator")
    assert auto.base.entry is None and named.base.entry == "generator"
    assert auto.shared is not named.shared  # two entries of one file are two networks
    weights = {k: v.clone() for k, v in network(auto).state_dict().items()}
    assert all(torch.equal(weights[k], v) for k, v in states["generator_ema"].items())
    assert all(torch.equal(network(named).state_dict()[k], v) for k, v in states["generator"].items())
    with pytest.raises(ValueError, match="no 'model' entry; the state dicts it holds: 'generator', 'critic', "
                                         "'generator_ema'"):
        loaded(entry="model")
    with pytest.raises(ValueError, match="entry 'critic': expected one of auto, generator, generator_ema, model"):
        loaded(entry="critic")


def test_loader_compile_runs_full_chunks_compiled_and_keeps_the_video(monkeypatch, caplog):
    """compile=True: the value carries the block compiler as an object patch (kept by LoRA and VACE
    clones), its full chunks run through the compiled parts, one line logs what is compiled, and
    the video is the uncompiled one (dynamo's "eager" backend here, so no code is generated; the
    inductor path is tests/test_compiled.py's). The plain value, loaded after, runs uncompiled."""
    compiled_mod = importlib.import_module(f"{PACK}.vace_core.compiled")
    compiler = compiled_mod.BlockCompiler("eager")
    monkeypatch.setattr(model_ref, "shared_compiler", lambda: compiler)
    passes, pass_parts = [], compiler.pass_parts
    monkeypatch.setattr(compiler, "pass_parts", lambda *shape: passes.append(shape) or pass_parts(*shape))
    with caplog.at_level("INFO", logger="longlive_vace"):
        base = run("LongLiveModelLoader", base_checkpoint="longlive_base.pt", lora="lora.pt", lora_strength=1.0,
                   dtype="fp32", compile=True)[0]
    assert any("torch.compile (eager) of the blocks' norms, projections, RoPE and FFN" in r.getMessage()
               for r in caplog.records)
    compiled = run("LongLiveVaceGraft", model=base, vace_checkpoint="vace_module.safetensors")[0]
    assert compiled.compiled and compiled.describe().endswith("compiled")
    positive, context = conditioning(1), reference_context()
    video = sample(compiled, positive, vace_context=context)
    assert compiler.shapes == [(3, 3 * (SIZE // 16) ** 2, "float32", 1)] and compiler.fallbacks == []
    assert len(passes) == 4  # the one chunk's denoising passes (the reference block's 1 frame runs eagerly)
    plain = sample(vace_model(), positive, vace_context=context)
    assert len(passes) == 4 and network(vace_model()).compiler is None
    assert (video["samples"] - plain["samples"]).abs().max().item() <= 1e-6
