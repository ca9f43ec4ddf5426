"""Checkpoint loading: every supported layout, the full-size key set, LoRA merging, errors, dtypes.

One set of tiny random weights (vace_core.testing.fixtures) is written in every layout; loading any of them
must give bit-identical tensors (DESIGN invariant 4).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vace_core import checkpoints
from vace_core.checkpoint_files import AUTO_ENTRY_ORDER, CheckpointError, TensorFile
from vace_core.checkpoints import expected_shapes, graft_vace, load_longlive
from vace_core.key_names import detect_format, is_vace_key, wan_names
from vace_core.logs import LOGGER_NAME
from vace_core.lora import LORA_ENTRIES, apply_lora, lora_targets, plan_lora
from vace_core.testing import fixtures as fx
from vace_core.config import WanConfig, infer_config, architecture
from vace_core.model import CausalWanModel, param_dtype
from vace_core.precision import resolve_dtype

TINY = architecture("tiny-vace")
RANK = 4

BASE_FILES = ["longlive_generator.pt", "longlive_ema_fsdp.pt", "longlive_model.pt", "wan.safetensors",
              "wan_prefixed.safetensors"]
VACE_FILES = ["vace_full.safetensors", "vace_module.safetensors", "vace_prefixed.safetensors",
              "vace_diffusers.safetensors"]
LORA_FILES = ["lora_peft.pt", "lora_peft_wrapped.pt", "lora_peft.safetensors", "lora_comfy_ab.safetensors",
              "lora_comfy_down_up.safetensors", "lora_kohya.safetensors", "lora_diffusers.safetensors"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return fx.write_all_formats(tmp_path_factory.mktemp("formats"), TINY, seed=0, lora_rank=RANK)


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return fx.make_state_dict(TINY, seed=0)


@pytest.fixture(scope="module")
def pairs() -> fx.LoraPairs:
    return fx.make_lora(TINY, rank=RANK, seed=1)  # what write_all_formats wrote


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        assert torch.equal(actual[key], value), key


def has_vace_modules(model: CausalWanModel) -> bool:
    return any(is_vace_key(k) for k in model.state_dict()) or hasattr(model, "vace_blocks")


def expected_merge(state, pairs, strength=1.0, scale=1.0) -> dict[str, torch.Tensor]:
    """W + strength * scale * B @ A in float64, independent of the loader's arithmetic."""
    merged = dict(state)
    for name, (down, up) in pairs.items():
        key = f"{name}.weight"
        merged[key] = (state[key].double() + strength * scale * (up.double() @ down.double())).float()
    return merged


# ---------------------------------------------------------------------------------------------
# 1. invariant 4: every layout loads to identical tensors


@pytest.mark.parametrize("name", BASE_FILES)
def test_base_layouts_load_identical_tensors(files, state, name):
    model = load_longlive(files[name], dtype=torch.float32)
    assert not model.has_vace
    assert model.config == TINY.without_vace()
    assert_same(model.state_dict(), fx.main_only(state))


def test_base_layouts_agree_in_bf16(files, state):
    loaded = [load_longlive(files[name], dtype="bf16").state_dict() for name in BASE_FILES]
    expected = {k: v.to(param_dtype(k, torch.bfloat16)) for k, v in fx.main_only(state).items()}
    for sd in loaded:
        assert_same(sd, expected)


@pytest.mark.parametrize("name", VACE_FILES)
def test_vace_layouts_graft_identical_tensors(files, state, name):
    model = load_longlive(files["wan.safetensors"], dtype=torch.float32)
    assert graft_vace(model, files[name]) is model
    assert model.config == TINY
    assert_same(model.state_dict(), state)


def test_full_vace_checkpoint_contributes_only_vace_weights(tmp_path, state):
    other_main = fx.main_only(fx.make_state_dict(TINY, seed=5))
    path = fx.write_wan_safetensors(tmp_path / "vace_full.safetensors", {**other_main, **fx.vace_only(state)})
    model = load_longlive(fx.write_wan_safetensors(tmp_path / "base.safetensors", fx.main_only(state)),
                          dtype=torch.float32)
    graft_vace(model, path)
    assert_same(model.state_dict(), state)  # main blocks still the base's, VACE from the file


def test_full_vace_checkpoint_as_base_gives_vace_model(files, state):
    model = load_longlive(files["vace_full.safetensors"], dtype=torch.float32)
    assert model.config == TINY
    assert_same(model.state_dict(), state)


def test_graft_replaces_existing_vace(files, tmp_path, state):
    model = load_longlive(files["vace_full.safetensors"], dtype=torch.float32)
    newer = fx.make_state_dict(TINY, seed=9)
    graft_vace(model, fx.write_vace_module(tmp_path / "newer.safetensors", newer))
    assert_same(model.state_dict(), {**fx.main_only(state), **fx.vace_only(newer)})


@pytest.mark.parametrize("name", LORA_FILES)
def test_lora_layouts_merge_identically(files, state, pairs, name):
    model = load_longlive(files["wan.safetensors"], dtype=torch.float32)
    reference = load_longlive(files["wan.safetensors"], lora_path=files["lora_peft.pt"], dtype=torch.float32)
    apply_lora(model, files[name], 1.0)
    assert_same(model.state_dict(), reference.state_dict())
    expected = expected_merge(fx.main_only(state), pairs)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6)


def test_lora_alpha_from_file_equals_override(tmp_path, files, state, pairs):
    half = fx.write_comfy_lora(tmp_path / "alpha2.safetensors", pairs, "down_up", alpha=2.0)  # 2 / rank 4
    from_file = apply_lora(load_longlive(files["wan.safetensors"], dtype=torch.float32), half, 0.8)
    override = apply_lora(load_longlive(files["wan.safetensors"], dtype=torch.float32), files["lora_peft.pt"],
                          0.8, alpha=2.0)
    assert_same(from_file.state_dict(), override.state_dict())
    expected = expected_merge(fx.main_only(state), pairs, strength=0.8, scale=0.5)
    for key, value in from_file.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6)


def test_lora_strength_zero_is_no_lora(files, state):
    model = load_longlive(files["wan.safetensors"], lora_path=files["lora_peft.pt"], lora_strength=0.0,
                          dtype=torch.float32)
    assert_same(model.state_dict(), fx.main_only(state))


def test_lora_merge_in_bf16_is_float32_merge_cast_back(files, state, pairs):
    model = load_longlive(files["wan.safetensors"], lora_path=files["lora_kohya.safetensors"], dtype="bf16")
    for name, (down, up) in pairs.items():
        key = f"{name}.weight"
        expected = (state[key].to(torch.bfloat16).float() + up @ down).to(torch.bfloat16)
        assert torch.equal(model.state_dict()[key], expected), key


def test_lora_leaves_vace_blocks_alone(files, state):
    model = load_longlive(files["vace_full.safetensors"], dtype=torch.float32)
    apply_lora(model, files["lora_peft.pt"], 1.0)
    merged = model.state_dict()
    for key, value in fx.vace_only(state).items():
        assert torch.equal(merged[key], value), key
    assert not torch.equal(merged["blocks.0.self_attn.q.weight"], state["blocks.0.self_attn.q.weight"])


def test_detect_format_names_every_layout(files):
    expected = {
        "longlive_generator.pt": "longlive-pt", "longlive_ema_fsdp.pt": "longlive-pt",
        "longlive_model.pt": "longlive-pt", "wan.safetensors": "wan", "wan_prefixed.safetensors": "wan-prefixed",
        "vace_full.safetensors": "wan", "vace_module.safetensors": "vace-module",
        "vace_prefixed.safetensors": "wan-prefixed", "vace_diffusers.safetensors": "diffusers",
        "lora_peft.pt": "peft-lora", "lora_peft_wrapped.pt": "peft-lora", "lora_peft.safetensors": "peft-lora",
        "lora_comfy_ab.safetensors": "comfy-lora", "lora_comfy_down_up.safetensors": "comfy-lora",
        "lora_kohya.safetensors": "comfy-lora", "lora_diffusers.safetensors": "comfy-lora",
    }
    assert expected.keys() == files.keys()
    for name, layout in expected.items():
        entries = LORA_ENTRIES if name.startswith("lora") else AUTO_ENTRY_ORDER
        with TensorFile(files[name], entries) as source:
            assert detect_format(source.shapes) == layout, name


# ---------------------------------------------------------------------------------------------
# 2. the full-size key set maps completely (meta device, no memory)

FULL = architecture("wan2.1-vace-1.3B")


def test_full_size_key_set_is_the_meta_model():
    spec = fx.full_size_state_dict("wan2.1-vace-1.3B")
    model_shapes = expected_shapes(FULL)  # CausalWanModel built on the meta device
    assert len(spec) == 1264  # Wan2.1-VACE-1.3B: 825 main tensors + 439 VACE tensors
    assert len([k for k in spec if not is_vace_key(k)]) == 825
    assert model_shapes == {k: tuple(v.shape) for k, v in spec.items()}
    assert infer_config(spec) == FULL


def test_full_size_diffusers_names_map_back_exactly():
    spec = fx.full_size_state_dict("wan2.1-vace-1.3B")
    diffusers = {fx.to_diffusers_key(k): k for k in spec}
    assert len(diffusers) == 1264
    # spot checks of the diffusers spelling itself
    for name in ("condition_embedder.time_proj.weight", "scale_shift_table", "proj_out.bias",
                 "blocks.29.norm2.weight", "blocks.0.attn1.to_out.0.weight", "blocks.3.ffn.net.0.proj.weight",
                 "vace_blocks.0.proj_in.weight", "vace_blocks.14.proj_out.weight",
                 "vace_blocks.7.scale_shift_table", "vace_patch_embedding.weight"):
        assert name in diffusers, name
    mapped = wan_names(diffusers)
    assert mapped == diffusers  # every diffusers key back to its original, nothing missing or extra


def test_full_size_longlive_lora_maps_all_300_layers():
    weight_shapes = expected_shapes(FULL)
    main_linears = {m for m in lora_targets(weight_shapes) if m.startswith("blocks.")}
    assert len(main_linears) == 300 and set(fx.lora_target_shapes(FULL)) == main_linears
    lora = {}
    for name, (out_features, in_features) in fx.lora_target_shapes(FULL).items():
        lora[f"base_model.model.{name}.lora_A.weight"] = (256, in_features)
        lora[f"base_model.model.{name}.lora_B.weight"] = (out_features, 256)
    assert len(lora) == 600
    layers = plan_lora(lora, weight_shapes)
    assert {layer.target for layer in layers} == {f"{m}.weight" for m in main_linears}
    assert {k for layer in layers for k in (layer.down, layer.up)} == set(lora)
    assert all(layer.rank == 256 and layer.alpha_key is None for layer in layers)


# ---------------------------------------------------------------------------------------------
# 3. merged LoRA equals the unmerged computation


def test_merged_linear_equals_unmerged(files, pairs):
    base = load_longlive(files["wan.safetensors"], dtype=torch.float32)
    merged = load_longlive(files["wan.safetensors"], dtype=torch.float32)
    apply_lora(merged, files["lora_comfy_down_up.safetensors"], 0.7, alpha=2.0)
    down, up = pairs["blocks.1.ffn.0"]
    x = torch.randn(5, TINY.dim, generator=torch.Generator().manual_seed(3))
    unmerged = base.blocks[1].ffn[0](x) + 0.7 * 0.5 * (x @ down.T @ up.T)
    torch.testing.assert_close(merged.blocks[1].ffn[0](x), unmerged, rtol=0, atol=1e-5)


def test_merged_model_output_equals_unmerged_hooks(files, pairs):
    strength, scale = 0.7, 0.5
    base = load_longlive(files["wan.safetensors"], dtype=torch.float32)
    merged = load_longlive(files["wan.safetensors"], lora_path=files["lora_peft.safetensors"],
                           lora_strength=strength, dtype=torch.float32, lora_alpha=2.0)
    generator = torch.Generator().manual_seed(4)
    latents = torch.randn(1, 16, 2, 4, 4, generator=generator)
    context = torch.randn(1, 8, TINY.text_dim, generator=generator)
    timestep = torch.tensor([500.0])
    with torch.no_grad():
        plain = base.forward_full(latents, timestep, context)
        handles = []
        for name, (down, up) in pairs.items():
            def add_lora(module, inputs, output, down=down, up=up):
                return output + strength * scale * (inputs[0] @ down.T @ up.T)
            handles.append(base.get_submodule(name).register_forward_hook(add_lora))
        unmerged = base.forward_full(latents, timestep, context)
        for handle in handles:
            handle.remove()
        result = merged.forward_full(latents, timestep, context)
    assert (unmerged - plain).abs().max() > 1e-3  # the LoRA really changes the output
    torch.testing.assert_close(result, unmerged, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 4. errors: clear message naming the file; nothing half-loaded


@pytest.fixture()
def base_model(files) -> CausalWanModel:
    return load_longlive(files["wan.safetensors"], dtype=torch.float32)


def assert_untouched(model, before):
    assert not has_vace_modules(model) and not model.config.has_vace
    assert_same(model.state_dict(), before)


def test_vace_file_without_vace_keys(files, base_model):
    before = snapshot(base_model)
    with pytest.raises(CheckpointError, match="No VACE-specific weights found in") as error:
        graft_vace(base_model, files["wan.safetensors"])
    assert str(files["wan.safetensors"]) in str(error.value)
    assert_untouched(base_model, before)


@pytest.mark.parametrize("other", [
    WanConfig(dim=512, ffn_dim=512, num_layers=4, num_heads=4, freq_dim=32, text_dim=64).with_vace(2),
    WanConfig(dim=256, ffn_dim=1024, num_layers=4, num_heads=2, freq_dim=32, text_dim=64).with_vace(2),
    WanConfig(dim=256, ffn_dim=512, num_layers=4, num_heads=2, freq_dim=32, text_dim=128).with_vace(2),
], ids=["dim", "ffn", "text_dim"])
def test_vace_dims_must_match_base(tmp_path, base_model, other):
    path = fx.write_wan_safetensors(tmp_path / "other_vace.safetensors", fx.make_state_dict(other))
    before = snapshot(base_model)
    with pytest.raises(CheckpointError, match="do not match the base model") as error:
        graft_vace(base_model, path)
    assert str(path) in str(error.value)
    assert_untouched(base_model, before)


def test_vace_module_with_missing_tensor(tmp_path, base_model, state):
    vace = fx.vace_only(state)
    del vace["vace_blocks.1.after_proj.weight"]
    path = fx.write_wan_safetensors(tmp_path / "broken_vace.safetensors", vace)
    before = snapshot(base_model)
    with pytest.raises(CheckpointError, match="missing: 'vace_blocks.1.after_proj.weight'"):
        graft_vace(base_model, path)
    assert_untouched(base_model, before)


def test_failed_graft_after_attach_rolls_back(files, base_model, monkeypatch):
    before = snapshot(base_model)

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure while assigning")

    monkeypatch.setattr(torch.nn.Module, "load_state_dict", fail)  # the VACE blocks are built apart
    with pytest.raises(RuntimeError, match="simulated"):
        graft_vace(base_model, files["vace_module.safetensors"])
    monkeypatch.undo()
    assert_untouched(base_model, before)


def test_base_that_is_not_a_wan_dit(tmp_path):
    path = tmp_path / "vae.safetensors"
    fx.write_wan_safetensors(path, {"decoder.head.0.gamma": torch.ones(8), "encoder.conv1.weight": torch.ones(2)})
    with pytest.raises(CheckpointError, match="is not a Wan2.1 DiT checkpoint") as error:
        load_longlive(path)
    assert str(path) in str(error.value)


def test_vace_module_as_base_says_what_to_do(files):
    with pytest.raises(CheckpointError, match="graft this file with the VACE loader"):
        load_longlive(files["vace_module.safetensors"])


def test_base_with_missing_and_misshapen_tensors(tmp_path, state):
    broken = fx.main_only(state)
    del broken["blocks.2.ffn.2.bias"]
    broken["blocks.1.norm3.weight"] = torch.ones(7)
    path = fx.write_wan_safetensors(tmp_path / "broken.safetensors", broken)
    with pytest.raises(CheckpointError, match="missing: 'blocks.2.ffn.2.bias'") as error:
        load_longlive(path)
    assert "wrong shape: 'blocks.1.norm3.weight (7,) (expected (256,))'" in str(error.value)


def lora_file(tmp_path, name, pairs) -> Path:
    return fx.write_peft_lora(tmp_path / name, pairs)


def test_lora_matching_nothing(tmp_path, base_model):
    down, up = torch.zeros(RANK, 8), torch.zeros(8, RANK)
    path = fx.write_comfy_lora(tmp_path / "sdxl.safetensors", {"unet.down.0.attn.to_q": (down, up)}, "lora_ab")
    before = snapshot(base_model)
    with pytest.raises(CheckpointError, match="matches no layer of the model") as error:
        apply_lora(base_model, path, 1.0)
    assert str(path) in str(error.value)
    assert_untouched(base_model, before)


def test_lora_on_vace_blocks_matches_nothing(tmp_path, files, state):
    model = load_longlive(files["vace_full.safetensors"], dtype=torch.float32)
    pair = (torch.ones(RANK, TINY.dim), torch.ones(TINY.dim, RANK))
    path = lora_file(tmp_path, "vace_lora.pt", {"vace_blocks.0.self_attn.q": pair})
    with pytest.raises(CheckpointError, match="matches no layer"):
        apply_lora(model, path, 1.0)
    assert_same(model.state_dict(), state)


def test_lora_partly_unmatched_changes_nothing(tmp_path, base_model, pairs):
    bad = dict(pairs)
    bad["blocks.9.self_attn.q"] = pairs["blocks.0.self_attn.q"]  # the tiny model has 4 blocks
    path = lora_file(tmp_path, "partial.pt", bad)
    before = snapshot(base_model)
    with pytest.raises(CheckpointError, match="blocks.9.self_attn.q"):
        apply_lora(base_model, path, 1.0)
    assert_untouched(base_model, before)


def test_lora_with_wrong_shapes_changes_nothing(tmp_path, base_model):
    wide = fx.make_lora(WanConfig(dim=512, ffn_dim=512, num_layers=4, num_heads=4, freq_dim=32, text_dim=64))
    path = lora_file(tmp_path, "wide.pt", wide)
    before = snapshot(base_model)
    with pytest.raises(CheckpointError, match="do not fit") as error:
        apply_lora(base_model, path, 1.0)
    assert str(path) in str(error.value)
    assert_untouched(base_model, before)


def test_base_checkpoint_given_as_lora(files, base_model):
    with pytest.raises(CheckpointError, match="is not a LoRA"):
        apply_lora(base_model, files["wan.safetensors"], 1.0)


def truncated(tmp_path, source: Path) -> Path:
    data = source.read_bytes()
    path = tmp_path / ("truncated_" + source.name)
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


@pytest.mark.parametrize("name", ["wan.safetensors", "longlive_generator.pt"])
def test_truncated_base(tmp_path, files, name):
    path = truncated(tmp_path, files[name])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as error:
        load_longlive(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("name", ["vace_module.safetensors", "lora_peft.pt", "lora_comfy_ab.safetensors"])
def test_truncated_vace_or_lora_changes_nothing(tmp_path, files, base_model, name):
    path = truncated(tmp_path, files[name])
    before = snapshot(base_model)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        if name.startswith("lora"):
            apply_lora(base_model, path, 1.0)
        else:
            graft_vace(base_model, path)
    assert_untouched(base_model, before)


def test_garbage_file(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt, or not a checkpoint"):
        load_longlive(path)


CODE_RAN: list[str] = []


def _record(tag: str) -> list[str]:
    CODE_RAN.append(tag)
    return CODE_RAN


class Payload:
    """Pickles to a call of _record: loading it with plain pickle would run code."""

    def __reduce__(self):
        return (_record, ("unpickled",))


@pytest.mark.parametrize("loader", ["base", "lora", "vace"])
def test_pickle_that_needs_code_is_refused(tmp_path, base_model, loader):
    path = tmp_path / "payload.pt"
    torch.save({"generator": {"model.patch_embedding.weight": torch.zeros(1)}, "extra": Payload()}, path)
    before = snapshot(base_model)
    with pytest.raises(CheckpointError, match="not a plain tensor checkpoint.*will not be unpickled") as error:
        if loader == "base":
            load_longlive(path)
        elif loader == "lora":
            apply_lora(base_model, path, 1.0)
        else:
            graft_vace(base_model, path)
    assert str(path) in str(error.value)
    assert CODE_RAN == []
    assert_untouched(base_model, before)


# ---------------------------------------------------------------------------------------------
# 5. dtype choice and memory structure


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, "fp16"])
def test_dtype_choice(files, state, dtype):
    model = load_longlive(files["longlive_generator.pt"], dtype=dtype)
    graft_vace(model, files["vace_module.safetensors"])
    wanted = resolve_dtype(dtype)
    assert model.compute_dtype == wanted
    for name, value in model.state_dict().items():
        assert value.dtype == param_dtype(name, wanted), name
        assert torch.equal(value, state[name].to(value.dtype)), name
    assert model.blocks[0].modulation.dtype == torch.float32  # the model's float32 policy


def test_loading_builds_on_meta_and_assigns_each_tensor_once(files, monkeypatch):
    built_on: list[bool] = []

    class Recording(CausalWanModel):
        def __init__(self, config, *args, **kwargs):
            super().__init__(config, *args, **kwargs)
            built_on.append(all(p.is_meta for p in self.parameters()))

    taken: list[str] = []
    original_take = TensorFile.take

    def counting_take(self, key):
        taken.append(key)
        return original_take(self, key)

    monkeypatch.setattr(checkpoints, "CausalWanModel", Recording)
    monkeypatch.setattr(TensorFile, "take", counting_take)
    model = load_longlive(files["longlive_generator.pt"], dtype=torch.float32)
    assert built_on and all(built_on)  # only meta models were built: no random full-size weights
    assert sorted(taken) == sorted(set(taken)) and len(taken) == len(model.state_dict())
    params = list(model.parameters())
    assert not any(p.is_meta for p in params)
    assert len({p.data_ptr() for p in params}) == len(params)  # one storage per tensor, no aliasing


def test_grafted_vace_follows_base_requires_grad(files):
    model = load_longlive(files["wan.safetensors"], dtype=torch.float32)
    graft_vace(model, files["vace_module.safetensors"])
    assert not any(p.requires_grad for p in model.parameters())


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_longlive(tmp_path / "nowhere.pt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loading_onto_cuda_matches_cpu(files):
    cpu = load_longlive(files["longlive_generator.pt"], files["lora_peft.pt"], dtype="bf16")
    graft_vace(cpu, files["vace_diffusers.safetensors"])
    gpu = load_longlive(files["longlive_generator.pt"], files["lora_peft.pt"], dtype="bf16", device="cuda")
    graft_vace(gpu, files["vace_diffusers.safetensors"])
    assert all(p.is_cuda for p in gpu.parameters())
    for key, value in cpu.state_dict().items():
        # the merge runs on the weight's device: allow one bf16 rounding step of difference
        torch.testing.assert_close(gpu.state_dict()[key].cpu(), value, rtol=1e-2, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# trainer checkpoints with several state dicts: the `entry` choice


@pytest.fixture(scope="module")
def trainer_states() -> dict[str, dict[str, torch.Tensor]]:
    """Three different tiny generators, so the loaded weights show which entry was taken."""
    base = architecture("tiny")
    return {name: fx.make_state_dict(base, seed=seed)
            for name, seed in (("generator", 10), ("critic", 11), ("generator_ema", 12))}


@pytest.fixture(scope="module")
def self_forcing_pt(tmp_path_factory, trainer_states) -> Path:
    # Self-Forcing's trainer saves {generator, critic, generator_ema, optimizers, step}
    return fx.write_trainer_pt(tmp_path_factory.mktemp("trainer") / "self_forcing_dmd.pt", trainer_states)


def loaded(path: Path, **kwargs) -> dict[str, torch.Tensor]:
    return load_longlive(path, dtype="fp32", **kwargs).state_dict()


def test_auto_entry_takes_generator_ema_and_logs_it(self_forcing_pt, trainer_states, caplog):
    with caplog.at_level("INFO", logger=LOGGER_NAME):
        weights = loaded(self_forcing_pt)
    assert_same(weights, trainer_states["generator_ema"])
    assert not torch.equal(weights["head.head.weight"], trainer_states["generator"]["head.head.weight"])
    messages = [r.getMessage() for r in caplog.records]
    assert any("'generator_ema'" in m and "generator, critic, generator_ema" in m for m in messages), messages


@pytest.mark.parametrize("entry", ["generator", "generator_ema", "critic"])
def test_named_entry_loads_that_state_dict(self_forcing_pt, trainer_states, entry):
    assert_same(loaded(self_forcing_pt, entry=entry), trainer_states[entry])


def test_auto_entry_without_ema_takes_generator(tmp_path, trainer_states):
    # CausVid's trainer saves {generator, critic}; its inference loads generator
    path = fx.write_trainer_pt(tmp_path / "causvid.pt", {k: trainer_states[k] for k in ("generator", "critic")})
    assert_same(loaded(path), trainer_states["generator"])


def test_missing_entry_lists_the_entries_present(self_forcing_pt):
    with pytest.raises(CheckpointError) as error:
        load_longlive(self_forcing_pt, dtype="fp32", entry="model")
    message = str(error.value)
    assert "self_forcing_dmd.pt has no 'model' entry" in message
    assert "'generator', 'critic', 'generator_ema'" in message
    assert "generator_optimizer" not in message and "'step'" not in message  # not weights
    assert "'auto'" in message


def test_entry_of_a_plain_state_dict_or_a_safetensors_file(tmp_path, files, state):
    plain = tmp_path / "plain.pt"
    torch.save(fx.main_only(state), plain)
    with pytest.raises(CheckpointError, match="plain state dict without entries; use entry 'auto'"):
        load_longlive(plain, dtype="fp32", entry="generator")
    with pytest.raises(CheckpointError, match="safetensors file: it holds one state dict .* use entry 'auto'"):
        load_longlive(files["wan.safetensors"], dtype="fp32", entry="generator_ema")
