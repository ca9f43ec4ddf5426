"""Load LongLive / Wan2.1 checkpoints, merge LoRAs, graft VACE weights.

Entry points
------------
``load_longlive(base_path, lora_path=None, lora_strength=1.0, dtype=torch.bfloat16, device="cpu",
*, lora_alpha=None, entry=None, operations=None, attention=None, compute_dtype=None, fp8_matmul=False)
-> CausalWanModel``
    Build the causal Wan DiT from a base checkpoint (architecture inferred from tensor shapes) and
    merge an optional LoRA. ``dtype`` is the weights' dtype (torch dtype or "bf16"/"fp16"/"fp32"/
    "fp8_e4m3fn"/"fp8_e5m2"); the model computes in it, except for fp8: the Linear weights of the
    transformer blocks are then stored in fp8 with a per-tensor scale and cast per layer to
    ``compute_dtype`` (default bf16 when ``device`` is a GPU, float32 on the CPU; see
    vace_core.casting), and ``fp8_matmul`` runs them as fp8 matmuls instead (GPUs with fp8 tensor
    cores). The small time-embedding, modulation and norm parameters stay float32
    (``vace_core.model.param_dtype``). ``entry`` names the state dict to take from a trainer
    checkpoint holding several (``AUTO_ENTRY_ORDER`` when None, logged; see "Entries" below). A base
    file that also holds VACE weights (a full Wan2.1-VACE checkpoint) gives a model with VACE.
    ``operations`` is the namespace of layer classes the model is built from (default torch.nn;
    see vace_core.layers).
``graft_vace(model, vace_path) -> model``
    Add VACE blocks to ``model`` (the same object is returned) from any VACE layout below. Only the
    ``vace_*`` tensors of the file are used. Their width and FFN size (and, for a full Wan2.1-VACE
    file, the text width) must match the base. A model that already has VACE gets the new weights.
``read_vace(model, vace_path, device=None) -> VaceWeights``
    The same VACE blocks built for ``model`` (its operations and dtypes, fp8 included, on ``device``,
    default the model's) but not attached: ``VaceWeights.attributes()`` are the model attributes
    that graft them, so a host can attach them per run while the base model stays shared.
``apply_lora(model, lora_path, strength=1.0, *, alpha=None) -> model``
    Merge a LoRA into the model's weights: ``W += strength * (alpha / rank) * B @ A``, computed in
    float32 and rounded back (fp8 weights at their layer's scale). The rank is read from the tensors;
    alpha from the file's ``.alpha`` keys, else ``alpha = rank`` (scale 1, right for LongLive's
    rank-256/alpha-256 LoRA and for PEFT files, which store no alpha). ``alpha`` overrides it for
    every layer. ``strength`` 0 leaves the model untouched. Targets are the Linear layers outside VACE; call it again to stack style LoRAs.
``read_lora(model, lora_path, *, alpha=None) -> list[LoraDelta]``
    The LoRA's factors per target weight (checked against ``model``), unmerged: what
    ``apply_lora`` merges, for a host that applies LoRAs as patches at load time.
``detect_format(keys) -> str``
    Name of the key layout: "peft-lora", "comfy-lora", "diffusers", "longlive-pt", "wan-prefixed",
    "wan", "vace-module" or "unknown".

Lower-level helpers (the loaders' steps, also used by the tests): ``TensorFile`` (one file's tensors,
shapes first, data per tensor), ``wan_names`` (file key -> original Wan key), ``expected_shapes``
(key -> shape of the model for a config, via the meta device), ``plan_lora`` (match LoRA keys to
model weights on shapes alone), ``resolve_dtype`` ("bf16" / "fp16" / "fp32" or a torch dtype).

Supported files (safetensors or torch pickles; the content decides, not the extension)
-----------------------------------------------------------------------------------------
* LongLive ``.pt``: ``{"generator" | "generator_ema" | "model": {"model.<key>": tensor}}``; FSDP
  wrapper segments (``_fsdp_wrapped_module.``, ``_checkpoint_wrapped_module.``, ``_orig_mod.``)
  anywhere in a key are dropped. Self-Forcing / Causal Forcing / CausVid trainer files
  (``{"generator", "critic", ["generator_ema"], ...}``) are the same layout.
* Wan2.1 safetensors in original key names, optionally prefixed ``model.diffusion_model.`` /
  ``diffusion_model.``; diffusers ``WanTransformer3DModel`` / ``WanVACETransformer3DModel`` names.
* VACE: a full Wan2.1-VACE checkpoint, a VACE-only module file, prefixed or diffusers-named.
* fp8 files of any of these: unscaled, or ComfyUI's scaled-fp8 layouts (``scaled_fp8`` marker with
  per-layer ``scale_weight``; ``comfy_quant`` / ``weight_scale`` / ``_quantization_metadata``), read as
  ComfyUI reads them (vace_core.quantized). Their weights load into any ``dtype``: dequantized with
  their scales, or kept as stored when ``dtype`` is theirs.
* LoRA: PEFT (``base_model.model.<module>.lora_A.weight`` / ``lora_B``, raw or under
  ``generator_lora``), ``diffusion_model.<module>.lora_A/lora_B``, ``diffusion_model.<module>.
  lora_down/lora_up`` + ``.alpha``, kohya ``lora_unet_<module_with_underscores>``, diffusers
  ``transformer.<diffusers module>.lora_A/lora_B``.

Entries
-------
A trainer checkpoint holds several state dicts. Without ``entry`` the first present of
``AUTO_ENTRY_ORDER`` is taken and logged: ``generator_ema`` (the EMA generator: Self-Forcing's
README runs ``inference.py --use_ema`` and its ``demo.py`` loads ``generator_ema``, as do Causal
Forcing's ``demo.py`` and frame-wise commands), else ``generator`` (CausVid saves
``{generator, critic}`` and loads ``generator``; LongLive's ``longlive_base.pt`` carries one
generator and ``use_ema: false`` loads ``generator``), else ``model``, ``state_dict``, ``module``,
else the top level (a bare state dict). The entry names alone cannot tell every project apart:
LongLive's own trainer also writes ``generator_ema``, and Causal Forcing's README runs its
chunk-wise checkpoint without ``--use_ema``; name ``generator`` to match those runs exactly.
``critic`` (the score model DMD trains beside the generator) is never taken.

Safety and memory
-----------------
Torch pickles load with ``weights_only=True`` (memory-mapped when the file is a zip archive): a file
that needs code to unpickle is refused. Before PyTorch 2.6 ``weights_only=True`` is not safe
(CVE-2025-32434), so there pickles are refused altogether, naming the ways out (upgrade, or convert
with scripts/convert_to_safetensors.py under a safe PyTorch); safetensors load with any PyTorch.
The base model is built on the meta device and each tensor is converted to its target dtype/device
one at a time while the source entry is dropped, then assigned (``load_state_dict(assign=True)``),
so no second full copy of the weights exists. Every error is a ``CheckpointError`` naming the file. ``graft_vace`` and ``apply_lora`` read and
check everything before they change the model, so a failed call leaves it as it was.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from safetensors import safe_open
from torch import nn

from .attention import AttentionKernels
from .casting import (INPUT_SCALE_SUFFIX, SCALE_SUFFIX, cast_operations, default_compute_dtype, dequantize,
                      is_fp8, quantize, stored_like)
from .config import WanConfig, infer_config
from .model import CausalWanModel, param_dtype
from .quantized import QuantizationError, QuantizedTensors, read_quantization
from .vace import build_vace_modules

PathLike = str | Path
Shape = tuple[int, ...]

AUTO_ENTRY_ORDER = ("generator_ema", "generator", "model", "state_dict", "module")
LORA_ENTRIES = ("generator_lora",)
# segments that training wrappers insert into parameter names
_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
# leading namespaces that trainers / ComfyUI / PEFT / diffusers pipelines put before the names
_PREFIXES = ("base_model.model.", "model.", "diffusion_model.", "transformer.")
_VACE_PREFIXES = ("vace_blocks.", "vace_patch_embedding.")
_EXAMPLES = 5

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
           "float16": torch.float16, "half": torch.float16, "fp32": torch.float32,
           "float32": torch.float32, "float": torch.float32, "fp8_e4m3fn": torch.float8_e4m3fn,
           "float8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2, "float8_e5m2": torch.float8_e5m2}


log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and what was expected."""


# ---------------------------------------------------------------------------------------------
# reading files


class TensorFile:
    """The tensors of one checkpoint, with shapes known up front and data read per tensor.

    safetensors files are read lazily, one tensor per `take`; torch pickles are memory-mapped where
    possible and `take` drops the file's reference, so a loader never keeps the file's copy alive.
    """

    shapes: dict[str, Shape]

    def __init__(self, path: PathLike, entries: tuple[str, ...] = AUTO_ENTRY_ORDER,
                 entry: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {self.path}")
        self._handle = None
        self._tensors: dict[str, torch.Tensor] = {}
        self.metadata: dict[str, str] = {}  # a safetensors header's metadata
        if _sniff(self.path) == "safetensors":
            if entry is not None:
                raise CheckpointError(f"{self.path} is a safetensors file: it holds one state dict and no "
                                      f"entries, so entry {entry!r} cannot be chosen; use entry 'auto'")
            self._open_safetensors()
        else:
            self._tensors = _find_state_dict(_torch_load(self.path), entries, entry, self.path)
            self.shapes = {k: tuple(v.shape) for k, v in self._tensors.items()}

    def _open_safetensors(self) -> None:
        try:
            self._handle = safe_open(str(self.path), framework="pt", device="cpu")
            self.shapes = {k: tuple(self._handle.get_slice(k).get_shape()) for k in self._handle.keys()}
            self.metadata = dict(self._handle.metadata() or {})
        except Exception as error:  # safetensors raises its own error type for bad headers/sizes
            raise CheckpointError(f"{self.path} is truncated or corrupt: it cannot be read as a "
                                  f"safetensors file ({error})") from error

    def take(self, key: str) -> torch.Tensor:
        try:
            if self._handle is not None:
                return self._handle.get_tensor(key)
            return self._tensors.pop(key)
        except Exception as error:
            raise CheckpointError(f"{self.path}: reading tensor {key!r} failed; the file is truncated "
                                  f"or corrupt ({error})") from error

    def close(self) -> None:
        self._handle = None
        self._tensors = {}

    def __enter__(self) -> "TensorFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _sniff(path: Path) -> str:
    """'safetensors' or 'torch' from the first bytes (extensions are often wrong in model folders)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # zip archive / legacy pickle protocol
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":  # 8-byte little-endian header size, then JSON
        return "safetensors"
    raise CheckpointError(f"{path} is truncated or corrupt, or not a checkpoint: it is neither a "
                          "safetensors file nor a PyTorch checkpoint")


SAFE_TORCH_LOAD = (2, 6)  # torch.load(weights_only=True) is safe from this version on (CVE-2025-32434)
CONVERTER = "scripts/convert_to_safetensors.py"


def torch_load_is_safe() -> bool:
    """True when this PyTorch's torch.load(weights_only=True) cannot run code from a file."""
    major, minor = (int(part) for part in re.match(r"(\d+)\.(\d+)", str(torch.__version__)).groups())
    return (major, minor) >= SAFE_TORCH_LOAD


def _unsafe_torch_message(path: PathLike) -> str:
    safe = ".".join(map(str, SAFE_TORCH_LOAD))
    return (f"{path} is a PyTorch pickle (.pt) checkpoint, and this PyTorch ({torch.__version__}) cannot "
            f"load one safely: before {safe}, torch.load(weights_only=True) can still run code hidden in a "
            f"malicious file (CVE-2025-32434), so it is not opened. Either upgrade PyTorch to {safe} or "
            f"newer, or convert the file to safetensors with this pack's {CONVERTER}, run with a PyTorch >= "
            f"{safe} in an environment of its own (not ComfyUI's): python {CONVERTER} {path}. safetensors "
            "files load with every PyTorch.")


def _torch_load(path: Path) -> object:
    if not torch_load_is_safe():
        raise CheckpointError(_unsafe_torch_message(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():
            raise CheckpointError(
                f"{path} is not a plain tensor checkpoint: it needs Python code to load (pickled "
                "objects other than tensors and containers), and it will not be unpickled for "
                "safety. Re-save it as a dict of tensors or as safetensors.") from error
        raise CheckpointError(f"{path} is truncated or corrupt ({error})") from error
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is truncated or corrupt: it cannot be read as a PyTorch "
                              f"checkpoint ({error})") from error


def _find_state_dict(container: object, entries: tuple[str, ...], entry: str | None,
                     path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a torch checkpoint: `entry`, the first of `entries`, or the top level."""
    if not isinstance(container, Mapping):
        raise CheckpointError(f"{path} holds a {type(container).__name__}, expected a dict of tensors")
    present = [k for k, v in container.items() if _holds_tensors(v)]  # nested state dicts (not optimizer states)
    if entry is not None:
        if entry not in present:
            raise CheckpointError(_missing_entry(path, entry, present))
        chosen = container[entry]
    else:
        entry = next((e for e in entries if e in present), None)
        chosen = container if entry is None else container[entry]
        if entry is not None:
            log.info("%s: loading entry %r (state dicts in the file: %s)", path.name, entry, ", ".join(present))
    tensors = {k: v for k, v in chosen.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} contains no tensors where expected (a dict of tensors, or one "
                              f"under {', '.join(entries)}); its entries: {_preview(container)}")
    return tensors


def _holds_tensors(value: object) -> bool:
    return isinstance(value, Mapping) and any(isinstance(v, torch.Tensor) for v in value.values())


def _missing_entry(path: Path, entry: str, present: list[str]) -> str:
    if not present:
        return (f"{path} has no {entry!r} entry: it is a plain state dict without entries; use entry "
                "'auto'")
    return (f"{path} has no {entry!r} entry; the state dicts it holds: {', '.join(map(repr, present))}. "
            "Choose one of them, or 'auto'")


def _preview(keys: Iterable[str]) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:_EXAMPLES])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _EXAMPLES else "")


# ---------------------------------------------------------------------------------------------
# key names


def _strip(key: str) -> str:
    """Drop wrapper segments and leading namespaces: 'model._fsdp_wrapped_module.blocks.0...' -> 'blocks.0...'."""
    for segment in _WRAPPER_SEGMENTS:
        key = key.replace(segment, "")
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def is_vace_key(key: str) -> bool:
    return key.startswith(_VACE_PREFIXES)


# diffusers module path -> original Wan module path (from diffusers' Wan/VACE conversion table)
_FROM_DIFFUSERS_TOP = {
    "patch_embedding": "patch_embedding",
    "vace_patch_embedding": "vace_patch_embedding",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "proj_out": "head.head",
}
_FROM_DIFFUSERS_BLOCK = {
    f"{attn_d}.{proj_d}": f"{attn_w}.{proj_w}"
    for attn_d, attn_w in (("attn1", "self_attn"), ("attn2", "cross_attn"))
    for proj_d, proj_w in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "o"),
                           ("norm_q", "norm_q"), ("norm_k", "norm_k"))
}
_FROM_DIFFUSERS_BLOCK.update({
    "norm2": "norm3",  # diffusers numbers norms in call order; the affine cross-attn norm is Wan's norm3
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
    "proj_in": "before_proj",
    "proj_out": "after_proj",
})
_DIFFUSERS_MARKERS = ("condition_embedder.", "attn1.", "attn2.", "scale_shift_table", "ffn.net.",
                      "proj_in.", "proj_out.")
_BLOCK_RE = re.compile(r"^((?:vace_)?blocks\.\d+)\.(.+)$")


def _looks_diffusers(keys: Iterable[str]) -> bool:
    return any(marker in key for key in keys for marker in _DIFFUSERS_MARKERS)


def _diffusers_module(module: str) -> str | None:
    """diffusers module path -> Wan module path, or None when it has no Wan counterpart."""
    match = _BLOCK_RE.match(module)
    if match:
        block, rest = match.groups()
        mapped = _FROM_DIFFUSERS_BLOCK.get(rest)
        return f"{block}.{mapped}" if mapped else None
    return _FROM_DIFFUSERS_TOP.get(module)


def _diffusers_key(key: str) -> str | None:
    """diffusers tensor name -> Wan tensor name (scale_shift_table is a bare parameter)."""
    if key == "scale_shift_table":
        return "head.modulation"
    match = _BLOCK_RE.match(key)
    if match and match.group(2) == "scale_shift_table":
        return f"{match.group(1)}.modulation"
    module, _, param = key.rpartition(".")
    mapped = _diffusers_module(module)
    return f"{mapped}.{param}" if mapped else None


def wan_names(keys: Iterable[str], path: PathLike = "<keys>") -> dict[str, str]:
    """File key -> original Wan key for a DiT state dict in any supported layout."""
    stripped = {key: _strip(key) for key in keys}
    if _looks_diffusers(stripped.values()):
        converted = {key: _diffusers_key(name) for key, name in stripped.items()}
        unknown = [key for key, name in converted.items() if name is None]
        if unknown:
            raise CheckpointError(f"{path} uses diffusers names, but {len(unknown)} of its keys have no "
                                  f"Wan2.1 counterpart: {_preview(unknown)}")
        stripped = converted
    seen: dict[str, str] = {}
    for key, name in stripped.items():
        if name in seen:
            raise CheckpointError(f"{path} holds two tensors for {name!r}: {seen[name]!r} and {key!r}")
        seen[name] = key
    return stripped


_LORA_SUFFIXES = ((".lora_A.weight", "down"), (".lora_A.default.weight", "down"),
                  (".lora_down.weight", "down"), (".lora_B.weight", "up"),
                  (".lora_B.default.weight", "up"), (".lora_up.weight", "up"), (".alpha", "alpha"))


def _lora_role(key: str) -> tuple[str, str] | None:
    """'x.lora_A.weight' -> ('x', 'down'); None for keys that are not LoRA factors or alphas."""
    for suffix, role in _LORA_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return None


def detect_format(keys: Iterable[str]) -> str:
    """Name the key layout of a checkpoint (see the module docstring for the list)."""
    keys = list(keys)
    if any(_lora_role(k) and _lora_role(k)[1] != "alpha" for k in keys):
        return "peft-lora" if any(k.startswith("base_model.model.") for k in keys) else "comfy-lora"
    stripped = [_strip(k) for k in keys]
    if _looks_diffusers(stripped):
        return "diffusers"
    if any(k.startswith("model.") and not k.startswith("model.diffusion_model.") for k in keys) \
            or any(segment in k for k in keys for segment in _WRAPPER_SEGMENTS):
        return "longlive-pt"
    if any(k.startswith(("model.diffusion_model.", "diffusion_model.")) for k in keys):
        return "wan-prefixed"
    if any(k.startswith("blocks.") for k in stripped):
        return "wan"
    if any(is_vace_key(k) for k in stripped):
        return "vace-module"
    return "unknown"


# ---------------------------------------------------------------------------------------------
# validation helpers


def expected_shapes(config: WanConfig) -> dict[str, Shape]:
    """Key -> shape of the CausalWanModel for `config`, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = CausalWanModel(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_keys(found: Mapping[str, Shape], expected: Mapping[str, Shape], path: PathLike, what: str) -> None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k} {tuple(found[k])} (expected {tuple(expected[k])})"
             for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_preview(unexpected)}")
        if any(k.endswith((".scale_weight", ".scale_input")) for k in unexpected):
            problems.append("per-layer fp8 scales without the file's 'scaled_fp8' marker (ComfyUI would ignore "
                            "them and compute with wrongly scaled weights)")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape: {_preview(wrong)}")
    if problems:
        raise CheckpointError(f"{path} does not match {what}: " + "; ".join(problems))


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}") from None


def _converted(tensor: torch.Tensor, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    # copy=True: the result owns its memory, never a view into a memory-mapped file
    return tensor.to(device=device, dtype=dtype, copy=True)


def _quantization(source: "TensorFile") -> QuantizedTensors:
    try:
        return read_quantization(source.shapes, source.metadata, source.take, str(source.path))
    except QuantizationError as error:
        raise CheckpointError(str(error)) from None


def _model_tensors(source: "TensorFile", quant: QuantizedTensors) -> list[str]:
    """The file's keys that hold model tensors (not scales, markers or quantization configs)."""
    return [key for key in source.shapes if key not in quant.consumed]


def _read_state(source: "TensorFile", names: Mapping[str, str], quant: QuantizedTensors,
                dtype_of: Callable[[str], torch.dtype], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Model name -> tensor in its storage dtype `dtype_of(name)` on `device`, one at a time. An fp8
    weight comes with its `weight_scale` (and a file's `input_scale`): kept as stored when the file
    holds it in that dtype, else rounded to it; every other tensor is dequantized (times its scale,
    in float32) and cast."""
    state = {}
    for key, name in names.items():
        tensor = source.take(key)
        scale_key = quant.weight_scales.get(key)
        scale = source.take(scale_key).float() if scale_key else None
        target = dtype_of(name)
        if not is_fp8(target):
            state[name] = _converted(tensor if scale is None else dequantize(tensor, scale, torch.float32),
                                     target, device)
            continue
        if tensor.dtype == target:
            stored, scale = tensor, torch.ones(()) if scale is None else scale
        else:
            stored, scale = quantize(dequantize(tensor, scale, torch.float32), target)
        layer = name[: -len("weight")]
        state[name] = _converted(stored, target, device)
        state[layer + SCALE_SUFFIX] = _converted(scale.reshape(()), torch.float32, device)
        input_key = quant.input_scales.get(key)
        if input_key is not None:
            state[layer + INPUT_SCALE_SUFFIX] = _converted(source.take(input_key).reshape(()), torch.float32, device)
    return state


def _dtypes(dtype: torch.dtype | str, compute_dtype: torch.dtype | str | None,
            device: torch.device | str) -> tuple[torch.dtype, torch.dtype]:
    """(weight dtype, compute dtype) of a load: fp8 weights compute in `compute_dtype` or the
    device's default (bf16 on a GPU, float32 on the CPU); other weights in their own dtype unless
    `compute_dtype` says otherwise."""
    weights = resolve_dtype(dtype)
    if compute_dtype is not None:
        compute = resolve_dtype(compute_dtype)
    else:
        compute = default_compute_dtype(device) if is_fp8(weights) else weights
    if is_fp8(compute):
        raise ValueError(f"compute_dtype {compute}: fp8 is a storage dtype; compute in bf16, fp16 or fp32")
    return weights, compute


# ---------------------------------------------------------------------------------------------
# base model


def load_longlive(base_path: PathLike, lora_path: PathLike | None = None, lora_strength: float = 1.0,
                  dtype: torch.dtype | str = torch.bfloat16, device: torch.device | str = "cpu", *,
                  lora_alpha: float | None = None, entry: str | None = None,
                  operations: type | None = None, attention: AttentionKernels | None = None,
                  compute_dtype: torch.dtype | str | None = None, fp8_matmul: bool = False) -> CausalWanModel:
    """Load a LongLive / Wan2.1 base checkpoint (and merge a LoRA); see the module docstring.
    `operations` and `attention` are the host's layers and attention kernels (CausalWanModel)."""
    weight_dtype, compute = _dtypes(dtype, compute_dtype, device)
    path = Path(base_path)
    with TensorFile(path, AUTO_ENTRY_ORDER, entry) as source:
        quant = _quantization(source)
        names = wan_names(_model_tensors(source, quant), path)
        shapes = {name: source.shapes[key] for key, name in names.items()}
        config = _base_config(shapes, path, names)
        # expected from a plain model: host operations may create their weights only on loading
        _check_keys(shapes, expected_shapes(config), path, "a Wan2.1 DiT of the inferred size")
        if operations is None and weight_dtype != compute:
            if fp8_matmul and quant.full_precision_matmul:
                log.info("%s asks for matmuls in full precision: fp8 weights are cast per layer", path.name)
            operations = cast_operations(compute, fp8_matmul and not quant.full_precision_matmul)
        with torch.device("meta"):  # parameters without storage, replaced below
            model = CausalWanModel(config, operations, attention, compute_dtype=compute, weight_dtype=weight_dtype)
        state = _read_state(source, names, quant, lambda name: param_dtype(name, compute, weight_dtype), device)
    model.load_state_dict(state, strict=True, assign=True)
    del state
    model.eval().requires_grad_(False)
    if lora_path is not None and lora_strength != 0:
        apply_lora(model, lora_path, lora_strength, alpha=lora_alpha)
    return model


def _base_config(shapes: Mapping[str, Shape], path: Path, names: Mapping[str, str]) -> WanConfig:
    try:
        return infer_config(shapes)
    except ValueError as error:
        layout = detect_format(names)
        hint = (" It holds only VACE weights: load a base model first and graft this file with the VACE "
                "loader." if layout == "vace-module" else "")
        raise CheckpointError(f"{path} is not a Wan2.1 DiT checkpoint (key layout: {layout}): {error}."
                              f"{hint}") from error


# ---------------------------------------------------------------------------------------------
# VACE


@dataclass
class VaceWeights:
    """VACE blocks read for one base model, not attached to it (see `read_vace`)."""
    config: WanConfig  # the base model's config with these VACE blocks
    patch_embedding: nn.Module
    blocks: nn.ModuleList

    def attributes(self) -> dict[str, object]:
        """The model attributes that carry VACE: setting them on the base model grafts it."""
        return {"config": self.config, "vace_patch_embedding": self.patch_embedding, "vace_blocks": self.blocks}

    def nbytes(self) -> int:
        tensors = list(self.patch_embedding.state_dict().values()) + list(self.blocks.state_dict().values())
        return sum(t.nbytes for t in tensors)  # fp8 scales included; a quantized weight's stored bytes


def graft_vace(model: CausalWanModel, vace_path: PathLike) -> CausalWanModel:
    """Give `model` the VACE blocks of `vace_path`; on any error the model is left unchanged."""
    for name, value in read_vace(model, vace_path).attributes().items():
        setattr(model, name, value)
    return model


def read_vace(model: CausalWanModel, vace_path: PathLike, device: torch.device | str | None = None) -> VaceWeights:
    """The VACE blocks of `vace_path` built for `model` (same operations and dtype policy), on
    `device` (default: where the model's weights are)."""
    path = Path(vace_path)
    reference = model.blocks[0].self_attn.q.weight
    device = reference.device if device is None else device
    with TensorFile(path, AUTO_ENTRY_ORDER) as source:
        quant = _quantization(source)
        all_names = wan_names(_model_tensors(source, quant), path)
        names = {key: name for key, name in all_names.items() if is_vace_key(name)}
        if not names:
            raise CheckpointError(
                f"No VACE-specific weights found in {path}: expected keys starting with 'vace_blocks.' "
                f"or 'vace_patch_embedding.' (key layout: {detect_format(source.shapes)}). Use a "
                "Wan2.1-VACE checkpoint or a VACE module file.")
        # a full Wan2.1-VACE file also shows the text width the VACE blocks were trained with
        shapes = {name: source.shapes[key] for key, name in all_names.items()
                  if is_vace_key(name) or name == "text_embedding.0.weight"}
        vace_config = _vace_config(model.config, shapes, path)
        shapes.pop("text_embedding.0.weight", None)
        expected = {k: s for k, s in expected_shapes(vace_config).items() if is_vace_key(k)}
        _check_keys(shapes, expected, path, "the VACE blocks this base model needs")
        state = _read_state(source, names, quant,
                            lambda name: param_dtype(name, model.compute_dtype, model.weight_dtype), device)
    holder = nn.Module()  # parameter names as in the model: vace_patch_embedding.*, vace_blocks.*
    with torch.device("meta"):
        holder.vace_patch_embedding, holder.vace_blocks = build_vace_modules(vace_config, model.operations)
    holder.load_state_dict(state, strict=True, assign=True)
    holder.requires_grad_(reference.requires_grad)  # inference models carry no gradients
    return VaceWeights(vace_config, holder.vace_patch_embedding, holder.vace_blocks)


def _vace_config(base: WanConfig, shapes: Mapping[str, Shape], path: Path) -> WanConfig:
    """Base config plus the VACE block count / input width of the file, after checking the widths."""
    indices = {int(k.split(".")[1]) for k in shapes if k.startswith("vace_blocks.")}
    if not indices:
        raise CheckpointError(f"{path} has a VACE patch embedding but no 'vace_blocks.N.' weights")
    if indices != set(range(len(indices))):
        raise CheckpointError(f"{path}: VACE block indices {sorted(indices)} are not 0..N-1")
    if len(indices) > base.num_layers:
        raise CheckpointError(f"{path} has {len(indices)} VACE blocks, more than the base model's "
                              f"{base.num_layers} blocks")
    found = {
        "dim": shapes.get("vace_blocks.0.self_attn.q.weight", (None,))[0],
        "ffn_dim": shapes.get("vace_blocks.0.ffn.0.weight", (None,))[0],
        "text_dim": shapes.get("text_embedding.0.weight", (None, None))[1],  # VACE-only files lack it
    }
    mismatched = {k: v for k, v in found.items() if v is not None and v != getattr(base, k)}
    if mismatched:
        theirs = ", ".join(f"{k} {v}" for k, v in found.items() if v is not None)
        ours = ", ".join(f"{k} {getattr(base, k)}" for k, v in found.items() if v is not None)
        raise CheckpointError(f"VACE weights in {path} do not match the base model: the file has {theirs}, "
                              f"the base model has {ours}. Use the VACE checkpoint made for this base "
                              "(Wan2.1-VACE-1.3B for LongLive / Wan2.1-T2V-1.3B).")
    in_dim = shapes.get("vace_patch_embedding.weight", (None, base.vace_in_dim))[1]
    return base.with_vace(len(indices), in_dim)


# ---------------------------------------------------------------------------------------------
# LoRA


@dataclass(frozen=True)
class LoraLayer:
    """One LoRA pair matched to a model weight."""
    target: str  # model parameter, e.g. "blocks.3.self_attn.q.weight"
    down: str  # file key of A / lora_down [rank, in]
    up: str  # file key of B / lora_up [out, rank]
    rank: int
    alpha_key: str | None  # file key of the layer's alpha scalar, if the file has one


@dataclass(frozen=True)
class LoraDelta:
    """One LoRA layer read from a file: target weight += strength * scale * up @ down."""
    target: str  # model parameter, e.g. "blocks.3.self_attn.q.weight"
    up: torch.Tensor  # B / lora_up [out, rank], as stored in the file
    down: torch.Tensor  # A / lora_down [rank, in]
    scale: float  # alpha / rank


def apply_lora(model: CausalWanModel, lora_path: PathLike, strength: float = 1.0, *,
               alpha: float | None = None) -> CausalWanModel:
    """Merge the LoRA at `lora_path` into `model` (in place); see the module docstring."""
    if strength == 0:
        return model
    # everything is read before the first weight changes, so a bad file leaves the model as it was
    merge_lora(model, read_lora(model, lora_path, alpha=alpha), strength)
    return model


def read_lora(model: CausalWanModel, lora_path: PathLike, *, alpha: float | None = None) -> list[LoraDelta]:
    """The layers of the LoRA at `lora_path`, matched to and checked against `model`'s weights."""
    path = Path(lora_path)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    with TensorFile(path, LORA_ENTRIES) as source:
        layers = plan_lora(source.shapes, shapes, path)
        return [LoraDelta(layer.target, source.take(layer.up), source.take(layer.down),
                          _lora_scale(source, layer, alpha)) for layer in layers]


def merge_lora(model: nn.Module, deltas: Iterable[LoraDelta], strength: float) -> None:
    """W += strength * scale * up @ down for every delta, in float32, rounded back to W's storage
    (an fp8 weight at its layer's scale, see vace_core.casting)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for delta in deltas:
            weight = params[delta.target]
            weight_scale = getattr(model.get_submodule(delta.target.rpartition(".")[0]), SCALE_SUFFIX, None)
            down = delta.down.to(weight.device, torch.float32)  # [rank, in]
            up = delta.up.to(weight.device, torch.float32)  # [out, rank]
            merged = dequantize(weight, weight_scale, torch.float32) + (strength * delta.scale) * (up @ down)
            weight.copy_(stored_like(merged, weight, weight_scale))


def _lora_scale(source: TensorFile, layer: LoraLayer, alpha: float | None) -> float:
    """alpha / rank: the override, else the file's alpha, else alpha = rank (PEFT files store none)."""
    if alpha is None and layer.alpha_key is not None:
        alpha = float(source.take(layer.alpha_key).float().reshape(-1)[0])
    return (layer.rank if alpha is None else alpha) / layer.rank


def lora_targets(weight_shapes: Mapping[str, Shape]) -> dict[str, str]:
    """Module name -> weight name of every Linear a LoRA may change (VACE blocks get none)."""
    return {name[: -len(".weight")]: name for name, shape in weight_shapes.items()
            if name.endswith(".weight") and len(shape) == 2 and not is_vace_key(name)}


def _resolve_module(raw: str, targets: Mapping[str, str], kohya: Mapping[str, str]) -> str | None:
    for segment in _WRAPPER_SEGMENTS:
        raw = raw.replace(segment, "")
    if raw.startswith("lora_unet_"):
        return kohya.get(raw[len("lora_unet_"):])
    name = _strip(raw)
    if name in targets:
        return name
    mapped = _diffusers_module(name)
    return mapped if mapped in targets else None


def plan_lora(shapes: Mapping[str, Shape], weight_shapes: Mapping[str, Shape],
              path: PathLike = "<keys>") -> list[LoraLayer]:
    """Match a LoRA's keys (key -> shape) to model weights (name -> shape) and check every shape.

    Works on shapes only, so it runs on meta models and before any tensor is read.
    """
    groups: dict[str, dict[str, str]] = {}
    other = []
    for key in shapes:
        role = _lora_role(key)
        if role is None:
            other.append(key)
        else:
            groups.setdefault(role[0], {})[role[1]] = key
    if not any("down" in g or "up" in g for g in groups.values()):
        raise CheckpointError(f"{path} is not a LoRA: it has no lora_A/lora_B or lora_down/lora_up keys "
                              f"(key layout: {detect_format(shapes)})")
    if other:
        raise CheckpointError(f"{path} has {len(other)} keys this loader cannot merge (only lora_A/lora_B, "
                              f"lora_down/lora_up and alpha are supported): {_preview(other)}")

    targets = lora_targets(weight_shapes)
    kohya = {name.replace(".", "_"): name for name in targets}
    resolved = {raw: _resolve_module(raw, targets, kohya) for raw in groups}
    unmatched = [raw for raw, name in resolved.items() if name is None]
    if len(unmatched) == len(resolved):
        raise CheckpointError(
            f"LoRA {path} matches no layer of the model: none of its {len(resolved)} target modules "
            f"({_preview(unmatched)}) is a Linear outside the VACE blocks (expected names like "
            "'blocks.0.self_attn.q', optionally prefixed 'base_model.model.' or 'diffusion_model.').")
    if unmatched:
        raise CheckpointError(f"LoRA {path}: {len(unmatched)} of its {len(resolved)} target modules match "
                              f"no Linear of the model: {_preview(unmatched)}")

    layers, used = [], {}
    for raw, module in resolved.items():
        if module in used:
            raise CheckpointError(f"LoRA {path} has two entries for {module!r}: {used[module]!r} and {raw!r}")
        used[module] = raw
        target = targets[module]
        layers.append(_lora_layer(shapes, groups[raw], raw, target, weight_shapes[target], path))
    return layers


def _lora_layer(shapes: Mapping[str, Shape], group: Mapping[str, str], raw: str, target: str,
                weight: Shape, path: PathLike) -> LoraLayer:
    if "down" not in group or "up" not in group:
        raise CheckpointError(f"LoRA {path}: {raw!r} has only one of its two factors (A/down and B/up)")
    down, up = tuple(shapes[group["down"]]), tuple(shapes[group["up"]])
    out_features, in_features = weight
    if len(down) != 2 or len(up) != 2 or down[0] != up[1] or (up[0], down[1]) != (out_features, in_features):
        raise CheckpointError(f"LoRA {path}: {raw!r} has factors A {down} and B {up}, which do not fit "
                              f"{target} {tuple(weight)} (expected A [rank, {in_features}], "
                              f"B [{out_features}, rank])")
    return LoraLayer(target=target, down=group["down"], up=group["up"], rank=down[0],
                     alpha_key=group.get("alpha"))
