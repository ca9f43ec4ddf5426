"""LONGLIVE_MODEL as a memory-managed model, through the standalone host on the CPU.

What is checked: values made from one base file share one network; LoRAs and VACE are patches on
patcher clones, so a new strength or another LoRA reads only the LoRA file (reads are counted at
vace_core's one entry to checkpoint files, `TensorFile`) and never changes an upstream value; a
replaced file is read again (IS_CHANGED follows the file stamp); dropping the values frees the
network; 'auto' dtype; layers built from injected operations; the run's memory request.
(tests/integration/test_comfy_memory.py checks the same against ComfyUI's own ModelPatcher.)
"""

from __future__ import annotations

import gc
import importlib
import os
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import (PACK, assert_same_weights, load_pack_standalone, run_node, sampler_settings, video_latent,
                     write_node_models)

pack = load_pack_standalone()
host = importlib.import_module(f"{PACK}.nodes.host")
host_memory = importlib.import_module(f"{PACK}.nodes.host.memory")
host_patcher = importlib.import_module(f"{PACK}.nodes.host.patcher")
model_ref = importlib.import_module(f"{PACK}.nodes.model_ref")
precision = importlib.import_module(f"{PACK}.vace_core.precision")
ckpt = importlib.import_module(f"{PACK}.vace_core.checkpoints")
lora = importlib.import_module(f"{PACK}.vace_core.lora")
files = importlib.import_module(f"{PACK}.vace_core.checkpoint_files")
cache_mod = importlib.import_module(f"{PACK}.vace_core.cache")
passes_mod = importlib.import_module(f"{PACK}.vace_core.passes")
config_mod = importlib.import_module(f"{PACK}.vace_core.config")
core_memory = importlib.import_module(f"{PACK}.vace_core.memory")

NODES = pack.NODE_CLASS_MAPPINGS
TINY = config_mod.architecture("tiny-vace")
SIZE, FRAMES = 32, 9
SAMPLER = dict(seed=5, latent=video_latent(SIZE, SIZE, FRAMES), vace_scale=1.0,
               settings=sampler_settings(NODES, steps="1000,500"))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return write_node_models(tmp_path_factory.mktemp("memory_models"), other_base=True)


@pytest.fixture(autouse=True)
def standalone(models_dir, monkeypatch):
    monkeypatch.setenv("LONGLIVE_MODELS_DIR", str(models_dir))
    model_ref.clear_cache()
    yield
    model_ref.clear_cache()


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """File names of every checkpoint file opened through vace_core from now on."""
    opened: list[str] = []
    original = files.TensorFile.__init__

    def counting(self, path, *args, **kwargs):
        opened.append(Path(path).name)
        original(self, path, *args, **kwargs)

    monkeypatch.setattr(files.TensorFile, "__init__", counting)
    return opened


def run(name: str, **inputs):
    return run_node(NODES, name, **inputs)


def load(lora: str = "none", strength: float = 1.0, base: str = "longlive_base.pt", dtype: str = "fp32"):
    return run("LongLiveModelLoader", base_checkpoint=base, lora=lora, lora_strength=strength, dtype=dtype)[0]


def extra_lora(model, strength: float, lora: str = "style.safetensors"):
    return run("LongLiveLoraLoader", model=model, lora=lora, strength=strength)[0]


def graft(model):
    return run("LongLiveVaceGraft", model=model, vace_checkpoint="vace_module.safetensors")[0]


def network(ref) -> nn.Module:
    return ref.load_for_run().network


def fresh(*steps) -> nn.Module:
    """The weights built straight from the files with vace_core's merging loaders."""
    root = Path(os.environ["LONGLIVE_MODELS_DIR"])
    model = ckpt.load_longlive(root / "diffusion_models" / "longlive_base.pt", dtype=torch.float32)
    for op, name, strength in steps:
        if op == "lora":
            lora.apply_lora(model, root / "loras" / name, strength)
        else:
            ckpt.graft_vace(model, root / "diffusion_models" / name)
    return model


def conditioning(seed: int = 1) -> list:
    return [[torch.randn(1, 12, TINY.text_dim, generator=torch.Generator().manual_seed(seed)), {}]]


def sample(model, **extra) -> torch.Tensor:
    return run("LongLiveSampler", model=model, positive=conditioning(), **{**SAMPLER, **extra})[0]["samples"]


def vace_context():
    refs = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(4))

    class PoolVAE:  # ComfyUI's VAE conventions with trivial maths
        def encode(self, pixels):
            kept = pixels[0::4].permute(0, 3, 1, 2).float()
            pooled = torch.nn.functional.avg_pool2d(kept, 8)
            return pooled.repeat(1, 6, 1, 1)[:, :16].permute(1, 0, 2, 3).unsqueeze(0)

    return run("LongLiveVaceEncode", vae=PoolVAE(), width=SIZE, height=SIZE, length=FRAMES, reference_fit="pad",
               reference_images=refs)[0]


# ---------------------------------------------------------------------------------------------
# reads


def test_a_second_loader_run_reads_only_its_lora(reads):
    first = load("lora.pt")
    assert reads == ["longlive_base.pt", "lora.pt"]
    second = load("lora.pt", 0.5)
    assert reads[2:] == ["lora.pt"]  # the base network of the live first value is shared
    load()
    assert reads[3:] == []
    assert second.shared is first.shared
    assert_same_weights(network(second), fresh(("lora", "lora.pt", 0.5)))


def test_a_new_extra_lora_strength_reads_only_the_lora(reads):
    upstream = load("lora.pt")
    del reads[:]
    weaker, stronger = extra_lora(upstream, 0.5), extra_lora(upstream, 0.8)
    assert reads == ["style.safetensors", "style.safetensors"]
    loaded = [network(stronger).state_dict(), network(weaker).state_dict(), network(upstream).state_dict()]
    assert reads == ["style.safetensors", "style.safetensors"]  # switching between them reads nothing
    assert weaker.shared is stronger.shared is upstream.shared
    expected = [fresh(("lora", "lora.pt", 1.0), ("lora", "style.safetensors", 0.8)),
                fresh(("lora", "lora.pt", 1.0), ("lora", "style.safetensors", 0.5)), fresh(("lora", "lora.pt", 1.0))]
    for state, model in zip(loaded, expected):
        assert_same_weights(state, model)


def test_vace_graft_reads_only_the_vace_file_and_shares_the_base(reads):
    upstream = load()
    base_weight = upstream.shared.network.blocks[0].ffn[0].weight
    del reads[:]
    grafted = graft(upstream)
    assert reads == ["vace_module.safetensors"]
    assert network(grafted).blocks[0].ffn[0].weight is base_weight  # no copy of the base weights
    assert network(grafted).has_vace and not network(upstream).has_vace


# ---------------------------------------------------------------------------------------------
# values are never changed by downstream nodes


def test_upstream_samples_the_same_after_downstream_models_ran():
    base = load()
    plain = sample(base)
    styled = extra_lora(base, 0.8)
    grafted = graft(styled)
    assert not torch.equal(sample(styled), plain)
    assert torch.equal(sample(base), plain)
    with_vace = sample(grafted, vace_context=vace_context())
    assert not torch.equal(with_vace, sample(styled))
    assert torch.equal(sample(base), plain)
    assert torch.equal(sample(grafted, vace_context=vace_context()), with_vace)


def test_one_model_is_loaded_at_a_time():
    first, other = load(), load(base="other_base.safetensors")
    styled = extra_lora(first, 0.8)
    network(first)
    assert host_memory.is_loaded(first.patcher)
    network(styled)  # a clone of the same network: its patches replace the first's
    assert host_memory.is_loaded(styled.patcher) and not host_memory.is_loaded(first.patcher)
    network(other)
    assert host_memory.is_loaded(other.patcher) and not host_memory.is_loaded(styled.patcher)
    host_memory.unload_models()
    assert not host_memory.is_loaded(other.patcher)
    assert_same_weights(first.shared.network, fresh())  # unloading restored the original weights


def test_dropping_every_value_frees_the_network():
    upstream = load("lora.pt")
    grafted = graft(extra_lora(upstream, 0.5))
    loaded = grafted.load_for_run()
    freed = weakref.ref(upstream.shared.network)
    del upstream, grafted, loaded
    gc.collect()
    assert freed() is None


# ---------------------------------------------------------------------------------------------
# IS_CHANGED, dtype, layer operations, memory request


def test_is_changed_follows_the_file_stamp(models_dir):
    loader, lora_node, vace_node = (NODES[n] for n in ("LongLiveModelLoader", "LongLiveLoraLoader",
                                                       "LongLiveVaceGraft"))

    def stamps() -> tuple[str, str, str]:
        return (loader.IS_CHANGED(base_checkpoint="longlive_base.pt", lora="lora.pt", lora_strength=1.0,
                                  dtype="auto", entry="auto"),
                lora_node.IS_CHANGED(lora="style.safetensors", strength=1.0),
                vace_node.IS_CHANGED(vace_checkpoint="vace_module.safetensors"))

    before = stamps()
    assert stamps() == before
    for path in (models_dir / "loras" / "lora.pt", models_dir / "loras" / "style.safetensors",
                 models_dir / "diffusion_models" / "vace_module.safetensors"):
        os.utime(path, ns=(7, 7))
    after = stamps()
    assert all(a != b for a, b in zip(after, before))
    assert "missing" in lora_node.IS_CHANGED(lora="gone.safetensors", strength=1.0)


def test_auto_dtype_is_fp32_on_the_cpu():
    ref = load(dtype="auto")
    assert ref.dtype == "fp32"
    assert network(ref).compute_dtype == torch.float32


@pytest.mark.parametrize("device, native_bf16, expected", [
    ("cuda", True, torch.bfloat16), ("cuda", False, torch.float16), ("mps", None, torch.float16),
    ("cpu", None, torch.float32)])
def test_standalone_auto_dtype_rules(monkeypatch, device, native_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a simulated GPU
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0) if native_bf16 else (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16)
    assert precision.auto_dtype(host.device_capabilities(torch.device(device))) == expected


def test_every_weighted_layer_comes_from_the_operations(models_dir):
    made: list[type] = []

    def recording(base: type) -> type:
        def init(self, *args, **kwargs):
            base.__init__(self, *args, **kwargs)
            made.append(base)
        return type(f"Recorded{base.__name__}", (base,), {"__init__": init})

    class Ops:
        Linear = recording(nn.Linear)
        Conv3d = recording(nn.Conv3d)
        LayerNorm = recording(nn.LayerNorm)

    diffusion = models_dir / "diffusion_models"
    model = ckpt.load_longlive(diffusion / "longlive_base.pt", dtype=torch.float32, operations=Ops)
    ckpt.graft_vace(model, diffusion / "vace_module.safetensors")
    weighted = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv3d, nn.LayerNorm))]
    assert weighted and all(type(m) in (Ops.Linear, Ops.Conv3d, Ops.LayerNorm) for m in weighted)
    assert len(made) == len(weighted)
    assert_same_weights(model, fresh(("vace", "vace_module.safetensors", 1.0)))


def test_a_set_compute_device_is_where_inputs_and_the_cache_go():
    ref = load()
    network = ref.shared.network
    wrapper = ref.patcher.model
    wrapper.device = torch.device("meta")  # what a patcher does when it streams weights from the CPU
    try:
        assert network.device == torch.device("meta")
        assert network.blocks[0].self_attn.q.weight.device == torch.device("cpu")
        layout = cache_mod.CacheLayout(tokens_per_frame=4, sink_end=3, rolling_frames=9)
        passes = passes_mod.CachedPasses(network, layout, ref_frames=0, vace_attention="causal", uses_vace=False,
                                         text=None, vace_frames=None, layer_scale=1.0)
        assert passes.cache.buffer.is_meta
    finally:
        wrapper.device = None
    assert network.device == torch.device("cpu")


def test_the_run_asks_for_its_kv_cache_and_activations(monkeypatch):
    requested: list[int] = []
    original = host.load_for_run

    def recording(patcher, memory_required):
        requested.append(memory_required)
        return original(patcher, memory_required)

    monkeypatch.setattr(host, "load_for_run", recording)
    model = graft(load())
    sample(model, vace_context=vace_context())
    tokens = (SIZE // 16) ** 2
    # keys + values of every main block and (vace_attention "causal") every VACE block, for the
    # reference frame plus the 12-frame window, float32
    cache = (TINY.num_layers + TINY.num_vace_blocks) * 2 * (1 + 12) * tokens * TINY.dim * 4
    activations = (core_memory.video_activation_bytes(TINY, torch.float32, tokens * 3)
                   + core_memory.text_kv_bytes(TINY, torch.float32))
    assert requested == [cache + activations]
    assert activations > tokens * 3 * TINY.ffn_dim * 4  # at least the FFN's hidden layer of a chunk


@pytest.mark.parametrize("version, warned", [((0, 8, 0), False), ((0, 33, 0), False), ((0, 33, 7), False),
                                             ((0, 38, 1), True), ((0, 7, 9), True), (None, True)])
def test_an_untested_comfyui_version_is_named_in_a_warning(caplog, version, warned):
    with caplog.at_level("WARNING", logger="longlive_vace"):
        host_patcher._warn_if_untested(version)
    assert bool(caplog.records) == warned
    if version is not None and warned:
        assert ".".join(map(str, version)) in caplog.text


def test_a_comfyui_without_the_known_memory_manager_degrades_with_a_warning(caplog, monkeypatch):
    # a host that has comfy.model_management but not the patcher, ops and LoRA adapter this pack uses
    with monkeypatch.context() as patched, caplog.at_level("WARNING", logger="longlive_vace"):
        patched.setattr(host_patcher, "model_management", object())
        assert host_patcher._comfy_memory() is None
    assert "kept outside it" in caplog.text
