"""Devices and the memory manager: where the network computes and waits, its dtype, and its
lifecycle as a model patcher.

Inside ComfyUI the network is a `comfy.model_patcher.ModelPatcher` built from `comfy.ops` layers (see
"the memory manager" below); standalone, `StandalonePatcher` (patcher.py) keeps one model loaded at
a time, on CUDA when available, else on the CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import json
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from ...vace_core.attention import SDPA, AttentionKernels, sdpa
from ...vace_core.casting import SCALE_SUFFIX, cast_operations, fp8_matmul_supported
from ...vace_core.checkpoints import VaceWeights
from ...vace_core.compiled import BlockCompiler
from ...vace_core.lora import LoraDelta
from ...vace_core.model import CausalWanModel
from .comfyui import log, model_management
from .patcher import PREFIX, LongLiveDiT, StandalonePatcher, module_bytes


def compute_device() -> torch.device:
    """Where sampling runs: ComfyUI's torch device, or CUDA when available, else the CPU."""
    if model_management is not None:
        return model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where the model waits between runs: ComfyUI's choice for diffusion models (the GPU itself
    in --highvram mode, else the CPU), or the CPU."""
    if model_management is not None:
        return model_management.unet_offload_device()
    return torch.device("cpu")


STANDALONE_RESERVE = 1 << 30  # bytes of a CUDA device a standalone run leaves to everything else


def run_memory_limit() -> int | None:
    """The most bytes a run's KV caches and activations can take on the compute device: its memory
    less what the memory manager keeps for everything else (ComfyUI's `minimum_inference_memory`;
    weights that do not fit too are streamed). None where no limit is known (standalone on the CPU)."""
    device = compute_device()
    if model_management is not None:
        return int(model_management.get_total_memory(device) - model_management.minimum_inference_memory())
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory - STANDALONE_RESERVE
    return None


def soft_empty_cache() -> None:
    """Return cached allocator blocks to the driver (after sampling, once the model is offloaded)."""
    if model_management is not None:
        model_management.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# the memory manager
#
# Inside ComfyUI the network is a ComfyUI ModelPatcher (the plain one, in 0.8 and 0.33 alike; 0.33's
# ModelPatcherDynamic needs layers registered with its own allocator), built from
# `comfy.ops.disable_weight_init` layers, so `load_models_gpu` can evict it, load it partially and
# stream the rest through the layers' cast path (--lowvram), and list it in `loaded_models()`.
# What this relies on, checked once below, in both versions:
# - ModelPatcher(model, load_device, offload_device, size): `clone()` shares the model and its
#   backups; `add_patches({key: patch}, strength)` with `comfy.weight_adapter.LoRAAdapter(keys,
#   (up, down, alpha, None, None, None))` patches, which apply `strength * alpha / rank * up @ down`
#   on load (or per call for streamed weights); `add_object_patch(name, value)` sets a model
#   attribute while the clone is loaded and restores it when it is unpatched; `size` and
#   `patches_uuid` attributes (a VACE clone gets its own of both, see `with_vace`);
# - the wrapped module (patcher.LongLiveDiT) takes a `device` assignment and the plain attributes
#   the patcher adds (model_loaded_weight_memory, model_lowvram, current_weight_patches_uuid, ...);
# - model_management.load_models_gpu(models, memory_required=...), loaded_models(),
#   unload_all_models(), unet_dtype(device, supported_dtypes=...).
# Anything missing: a warning, and the standalone patcher (the model then sits outside ComfyUI's
# manager, which cannot evict or stream it).

_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


_FP8_FORMATS = {torch.float8_e4m3fn: "float8_e4m3fn", torch.float8_e5m2: "float8_e5m2"}


def _comfy_fp8_operations(mixed_precision_ops: Callable[..., type]) -> Callable[[torch.dtype, bool], type]:
    """ComfyUI's mixed-precision ops for vace_core's fp8 weights: a weight with a `weight_scale`
    becomes ComfyUI's quantized weight (the per-layer config its loader reads from a file, added
    here); any other weight keeps the dtype the model gave it (ComfyUI would cast it to the compute
    dtype: the float32 time embedding too); `compute_dtype` on the Linear is what the model casts
    its input to."""

    @functools.lru_cache(maxsize=None)  # one class per choice, shared by every model built with it
    def operations(compute_dtype: torch.dtype, fp8_matmul: bool) -> type:
        disabled = [] if fp8_matmul else list(_FP8_FORMATS.values())
        mixed = mixed_precision_ops({}, compute_dtype, full_precision_mm=not fp8_matmul, disabled=disabled)

        class Linear(mixed.Linear):
            def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
                weight = state_dict.get(prefix + "weight")
                quantized = prefix + SCALE_SUFFIX in state_dict and weight is not None and weight.dtype in _FP8_FORMATS
                if quantized:
                    config = json.dumps({"format": _FP8_FORMATS[weight.dtype]}).encode()
                    state_dict[prefix + "comfy_quant"] = torch.tensor(list(config), dtype=torch.uint8)
                super()._load_from_state_dict(state_dict, prefix, *args)
                if not quantized and weight is not None:
                    self.weight = torch.nn.Parameter(weight, requires_grad=False)

        Linear.compute_dtype = compute_dtype
        return type("LongLiveFp8Ops", (mixed,), {"Linear": Linear})

    return operations


def _comfy_fp8_support(ops: Any) -> Callable[[torch.dtype, bool], type] | None:
    """ComfyUI's fp8 layers, when it has them (mixed_precision_ops, and comfy_kitchen for its
    quantized tensors); else a warning, and fp8 models are built from vace_core's cast layers
    (outside ComfyUI's weight streaming)."""
    try:
        import comfy.quant_ops
    except ImportError:
        quantized_tensors = False
    else:
        quantized_tensors = getattr(comfy.quant_ops, "_CK_AVAILABLE", True)
    mixed = getattr(ops, "mixed_precision_ops", None)
    if mixed is None or not quantized_tensors or not hasattr(model_management, "supports_fp8_compute"):
        log.warning("LongLive: this ComfyUI has no fp8 layers (comfy.ops.mixed_precision_ops with comfy_kitchen); "
                    "fp8 weights are cast by the pack's own layers, which --lowvram cannot stream")
        return None
    return _comfy_fp8_operations(mixed)


@dataclass(frozen=True)
class _ComfyMemory:
    ModelPatcher: type
    ops: type
    LoRAAdapter: type
    fp8_ops: Callable[[torch.dtype, bool], type] | None  # None: this ComfyUI cannot hold fp8 weights


def _comfy_memory() -> _ComfyMemory | None:
    if model_management is None:
        return None
    try:
        import comfy.model_patcher
        import comfy.ops
        from comfy.weight_adapter import LoRAAdapter

        api = _ComfyMemory(comfy.model_patcher.ModelPatcher, comfy.ops.disable_weight_init, LoRAAdapter,
                           _comfy_fp8_support(comfy.ops))
        missing = [name for owner, names in (
            (api.ModelPatcher, ("clone", "add_patches", "add_object_patch", "model_size")),
            (api.ops, ("Linear", "Conv3d", "LayerNorm")),
            (model_management, ("load_models_gpu", "loaded_models", "unload_all_models", "unet_dtype")),
        ) for name in names if not hasattr(owner, name)]
        if missing:
            raise ImportError(f"missing {', '.join(missing)}")
    except ImportError as error:
        log.warning("LongLive: this ComfyUI's memory manager is not the one this pack knows (%s); the "
                    "model is kept outside it: it cannot be evicted, partially loaded or unloaded by "
                    "'Unload models'", error)
        return None
    _warn_if_untested(_comfy_version())
    return api


TESTED_VERSIONS = ((0, 8), (0, 33))  # oldest and newest ComfyUI minor versions the integration was tested with


def _comfy_version() -> tuple[int, ...] | None:
    try:
        from comfyui_version import __version__
    except ImportError:
        return None
    try:
        return tuple(int(part) for part in __version__.split(".")[:3])
    except ValueError:
        return None


def _warn_if_untested(version: tuple[int, ...] | None) -> None:
    if version is None or not TESTED_VERSIONS[0] <= version[:2] <= TESTED_VERSIONS[-1]:
        shown = ".".join(map(str, version)) if version else "of unknown version"
        log.warning("LongLive: ComfyUI %s: the model uses ComfyUI's memory manager through interfaces "
                    "tested with ComfyUI 0.8 to 0.33 only; they were all found, but if loading, LoRAs or "
                    "'Unload models' misbehave, report it with this version", shown)


_MEMORY = _comfy_memory()


def layer_operations(weight_dtype: torch.dtype, compute_dtype: torch.dtype, fp8_matmul: bool = False) -> type | None:
    """The layer classes to build the network from. Weights computed in their own dtype: comfy.ops
    (which can stream weights) inside ComfyUI, None (plain torch.nn) standalone. fp8 weights cast per
    layer to `compute_dtype`: inside ComfyUI its mixed-precision comfy.ops, what its own loader
    builds for scaled-fp8 files (streamable, LoRA patches applied to the dequantized weight), else
    vace_core's cast-per-layer Linear. `fp8_matmul` (the `_fast` choice) runs fp8 matmuls where the
    GPU has them and casts per layer elsewhere, with a log line."""
    if weight_dtype == compute_dtype:
        return _MEMORY.ops if _MEMORY is not None else None
    device = compute_device()
    supported = (model_management.supports_fp8_compute(device) if _MEMORY is not None and _MEMORY.fp8_ops
                 else fp8_matmul_supported(device))
    if fp8_matmul and not supported:
        log.info("LongLive: fp8_e4m3fn_fast: %s has no fp8 matmuls (they need an NVIDIA GPU of compute "
                 "capability 8.9 or newer); the fp8 weights are cast per layer as with fp8_e4m3fn", device)
    fp8_matmul = fp8_matmul and supported
    if _MEMORY is not None and _MEMORY.fp8_ops is not None:
        return _MEMORY.fp8_ops(compute_dtype, fp8_matmul)
    return cast_operations(compute_dtype, fp8_matmul)


def auto_dtype(device: torch.device | None = None) -> torch.dtype:
    """The compute dtype 'auto' stands for on `device`: ComfyUI's choice for a diffusion model there
    (bf16 where supported, else fp16, fp32 on the CPU; --bf16-unet / --fp16-unet / --fp32-unet
    decide when given), or standalone bf16 on a CUDA GPU with native bf16, fp16 on other GPUs and
    fp32 on the CPU. fp16 relies on the sampler's overflow guard."""
    device = device or compute_device()
    if _MEMORY is not None:
        try:
            chosen = model_management.unet_dtype(device=device,
                                                 supported_dtypes=[torch.bfloat16, torch.float16, torch.float32])
        except Exception as error:  # an unknown device or ComfyUI version: choose without it
            chosen = f"nothing ({error})"
        if chosen in _DTYPE_NAMES:
            return chosen
        log.warning("LongLive: ComfyUI chose %s for diffusion models, which this model cannot compute in; "
                    "dtype 'auto' uses the device's default instead", chosen)
    return _standalone_dtype(device)


def _standalone_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cpu":
        return torch.float32
    if device.type == "cuda":
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch before 2.3 has no emulation flag
            native = torch.cuda.is_bf16_supported()
        return torch.bfloat16 if native else torch.float16
    return torch.float16


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES[dtype]


def make_patcher(network: CausalWanModel) -> Any:
    """A root patcher for a freshly loaded network: clones of it share the network's weights."""
    model = LongLiveDiT(network)
    _release_when_freed(network)
    if _MEMORY is not None:
        return _MEMORY.ModelPatcher(model, load_device=compute_device(), offload_device=offload_device(),
                                    size=module_bytes(model))
    return StandalonePatcher(model, compute_device(), offload_device())


def with_lora(patcher: Any, deltas: Iterable[LoraDelta], strength: float) -> Any:
    """A clone of `patcher` that also applies these LoRA layers at `strength`."""
    clone = patcher.clone()
    if isinstance(clone, StandalonePatcher):
        patches = {PREFIX + d.target: d for d in deltas}
    else:
        # alpha is given so that ComfyUI's alpha / rank is the delta's scale
        patches = {PREFIX + d.target: _MEMORY.LoRAAdapter(set(), (d.up, d.down, d.scale * d.down.shape[0],
                                                                  None, None, None)) for d in deltas}
    taken = clone.add_patches(patches, strength)
    if len(taken) != len(patches):
        raise RuntimeError(f"the model patcher took {len(taken)} of {len(patches)} LoRA layers")
    return clone


def with_vace(patcher: Any, weights: VaceWeights) -> Any:
    """A clone of `patcher` whose network carries these VACE blocks while it is loaded."""
    clone = patcher.clone()
    for name, value in weights.attributes().items():
        clone.add_object_patch(PREFIX + name, value)
    clone.size = patcher.model_size() + weights.nbytes()
    # A clone loaded after another unpatches the model only when their patch sets differ; a VACE
    # clone must always count as different, or its blocks could be left on the GPU by a base clone.
    clone.patches_uuid = uuid.uuid4()
    return clone


def with_compiler(patcher: Any, compiler: BlockCompiler) -> Any:
    """A clone of `patcher` whose network runs its full-chunk passes through `compiler`'s parts
    while it is loaded (an object patch, as ComfyUI's own TorchCompileModel patches its models)."""
    clone = patcher.clone()
    clone.add_object_patch(PREFIX + "compiler", compiler)
    clone.patches_uuid = uuid.uuid4()  # as for VACE: never taken for an already loaded uncompiled clone
    return clone


@dataclass
class LoadedNetwork:
    """A network loaded for one run, with the check the sampler makes before every pass."""
    network: CausalWanModel
    patcher: Any
    memory_required: int

    def keep_loaded(self) -> None:
        """Load the model again if ComfyUI unloaded it since (another model's load may evict it,
        e.g. a VAE between chunks on a small GPU), so no pass runs without its patches."""
        if _MEMORY is not None and not _is_current(self.patcher):
            _load(self.patcher, self.memory_required)


def load_for_run(patcher: Any, memory_required: int) -> LoadedNetwork:
    """Load the model for a run that needs `memory_required` bytes besides the weights (KV cache and
    activations) and return its network, on the compute device or streamed from the offload device.
    It stays loaded afterwards, until the memory manager needs the room or the user frees it."""
    _load(patcher, memory_required)
    return LoadedNetwork(patcher.model.diffusion_model, patcher, memory_required)


_standalone_resident: Callable[[], StandalonePatcher | None] = lambda: None


def _load(patcher: Any, memory_required: int) -> None:
    global _standalone_resident
    if isinstance(patcher, StandalonePatcher):
        resident = _standalone_resident()
        if resident is not None and resident.model is not patcher.model:
            resident.unpatch_model(resident.offload_device)  # one model at a time, as before
        patcher.patch_model()
        _standalone_resident = weakref.ref(patcher)
        return
    model_management.load_models_gpu([patcher], memory_required=memory_required)


def _is_current(patcher: Any) -> bool:
    # ComfyUI records which patch set is on the model; unloading it resets that to None
    return getattr(patcher.model, "current_weight_patches_uuid", patcher.patches_uuid) == patcher.patches_uuid


def is_loaded(patcher: Any) -> bool:
    """True while `patcher`'s model is loaded with its patches (ComfyUI: listed by loaded_models())."""
    if isinstance(patcher, StandalonePatcher):
        return _standalone_resident() is not None and patcher.is_applied
    return any(m is patcher for m in model_management.loaded_models()) and _is_current(patcher)


def unload_models() -> None:
    """Unload every model, as ComfyUI's 'Unload models' does (tests; standalone: the resident one)."""
    global _standalone_resident
    if model_management is not None:
        model_management.unload_all_models()
    resident = _standalone_resident()
    if resident is not None:
        resident.unpatch_model(resident.offload_device)
    _standalone_resident = lambda: None


def _release_when_freed(network: CausalWanModel) -> None:
    """Hand freed weights back to the OS. glibc keeps freed heap blocks mapped (only blocks of
    32 MB and more are always unmapped), so a freed model would still count in the process's
    RSS; the next garbage collection after the network is freed trims the heap.

    Measured (scripts/measure_heap_trim.py, a 453 MiB model with a LoRA and a sampler run, freed):
    30 MiB above the RSS before loading stay with the trim, 212 MiB (median of 3) without. In a
    ComfyUI 0.33 server (tests/integration/test_comfy_memory_server.py, 630 MiB of weights, 25 s
    after POST /free): 940 MiB with the trim, 1433 MiB without, against 918 MiB idle."""
    weakref.finalize(network, _TRIM.request)


class _HeapTrim:
    """malloc_trim(0) at the end of the next garbage collection after a request (glibc only)."""

    def __init__(self) -> None:
        self.pending = False
        self.trim = None
        name = ctypes.util.find_library("c")
        if name:
            libc = ctypes.CDLL(name)
            self.trim = getattr(libc, "malloc_trim", None)
        if self.trim is not None:
            gc.callbacks.append(self._after_collection)

    def request(self) -> None:
        self.pending = True

    def _after_collection(self, phase: str, info: dict) -> None:
        if phase == "stop" and self.pending:
            self.pending = False
            self.trim(0)


_TRIM = _HeapTrim()


# ---------------------------------------------------------------------------------------------
# attention
#
# Inside ComfyUI the blocks' unmasked self-attention (about 60 % of a chunk's work) goes through
# comfy.ldm.modules.attention.optimized_attention, the function ComfyUI's own Wan calls, so the
# user's --use-sage-attention / --use-flash-attention / --use-pytorch-cross-attention / ... apply
# to this model too. It takes q, k, v [B, heads, S, head_dim] with skip_reshape=True and returns
# [B, S, heads * head_dim] (0.8 and 0.33 alike; looked up per call, as ComfyUI sets it at import).
# Masked calls (cross-attention's padding bias, the recompute's frame masks) stay on SDPA with the
# mask in q's dtype: flash and sage take no mask (vace_core.attention, docs/how-it-works.md#the-gpu-path).


def _comfy_attention() -> AttentionKernels | None:
    if model_management is None:
        return None
    try:
        from comfy.ldm.modules import attention as comfy_attention

        found = comfy_attention.optimized_attention
    except (ImportError, AttributeError) as error:
        log.warning("LongLive: ComfyUI's optimized_attention was not found (%s); the model uses PyTorch's "
                    "attention, and ComfyUI's attention options do not apply to it", error)
        return None

    def unmasked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return comfy_attention.optimized_attention(q, k, v, heads=q.shape[1], skip_reshape=True)

    name = getattr(found, "__name__", type(found).__name__)
    return AttentionKernels(unmasked=unmasked, masked=sdpa, name=f"ComfyUI {name} (self-attention), sdpa (masked)")


_ATTENTION = _comfy_attention()


def attention_kernels() -> AttentionKernels:
    """The attention kernels the network calls: ComfyUI's for unmasked self-attention inside ComfyUI,
    PyTorch's SDPA (with its CUDA backend priority) otherwise."""
    return _ATTENTION or SDPA
