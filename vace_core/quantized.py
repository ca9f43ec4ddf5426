"""fp8 checkpoint layouts: which tensors of a file are scales or markers, and each weight's scale.

Read as ComfyUI's own loader reads them (comfy/utils.py `convert_old_quants` and comfy/ops.py
`mixed_precision_ops`, the same in 0.8.0 and 0.33.0):

- scaled fp8 (Comfy-Org's `*_fp8_scaled` files): a `scaled_fp8` marker tensor (two elements ask for
  matmuls in full precision) and per quantized Linear `<layer>.scale_weight`, a float32 scalar
  (real weight = fp8 weight * scale), optionally `<layer>.scale_input`. Scale keys count only
  beside the marker, as in ComfyUI;
- the current layout: per quantized layer `<layer>.comfy_quant` (its JSON config as uint8 bytes,
  e.g. {"format": "float8_e4m3fn"}) with `<layer>.weight_scale` and optionally `<layer>.input_scale`;
  or the same per-layer configs in the safetensors metadata `_quantization_metadata`
  ({"layers": {layer: config}}), which then replaces the marker.

The fp8 formats are read (float8_e4m3fn, float8_e5m2); ComfyUI's other formats (nvfp4, mxfp8,
int8, ...) are refused by name. An fp8 weight without a scale (e.g. kijai's `*_fp8_e4m3fn` files)
has scale 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import torch

from .precision import FP8_DTYPES, torch_name

MARKER = "scaled_fp8"
METADATA_KEY = "_quantization_metadata"
FP8_FORMATS = tuple(torch_name(d) for d in FP8_DTYPES)  # ComfyUI's format names are torch's
_OLD_SCALES = {".scale_weight": "weight", ".scale_input": "input"}
_NEW_SCALES = {".weight_scale": "weight", ".input_scale": "input"}
_CONFIG_SUFFIX = ".comfy_quant"


class QuantizationError(ValueError):
    """A file's quantization data cannot be read; the message names the layer and what was expected."""


@dataclass
class QuantizedTensors:
    """What a file's quantization data says, by file key."""
    weight_scales: dict[str, str] = field(default_factory=dict)  # weight key -> its scale's key
    input_scales: dict[str, str] = field(default_factory=dict)  # weight key -> its input scale's key
    consumed: set[str] = field(default_factory=set)  # keys that are no model tensor (scales, markers, configs)
    full_precision_matmul: bool = False  # the file asks for matmuls in the compute dtype, not in fp8


def read_quantization(keys: Iterable[str], metadata: Mapping[str, str] | None,
                      read: Callable[[str], torch.Tensor], source: str = "<file>") -> QuantizedTensors:
    """The quantization data of a file with tensors `keys` and safetensors `metadata`; `read(key)`
    gives a tensor (markers and per-layer configs are read here)."""
    keys = list(keys)
    found = QuantizedTensors()
    configs = _layer_configs(keys, metadata, read, source, found)
    markers = [k for k in keys if k == MARKER or k.endswith("." + MARKER)]
    if configs is None and markers:  # the old layout (metadata, when present, takes its place)
        found.full_precision_matmul = any(read(k).numel() == 2 for k in markers)
        _collect_scales(keys, _OLD_SCALES, found, source)
    found.consumed.update(markers)
    if configs is not None:
        for layer, config in configs.items():
            _check_format(layer, config, source)
            found.full_precision_matmul |= bool(config.get("full_precision_matrix_mult", False))
        _collect_scales(keys, _NEW_SCALES, found, source)
    return found


def _layer_configs(keys: list[str], metadata: Mapping[str, str] | None, read: Callable[[str], torch.Tensor],
                   source: str, found: QuantizedTensors) -> dict[str, dict] | None:
    """layer -> quantization config from `<layer>.comfy_quant` tensors and the metadata, or None
    when the file has neither."""
    configs: dict[str, dict] | None = None
    for key in keys:
        if key.endswith(_CONFIG_SUFFIX):
            found.consumed.add(key)
            configs = configs or {}
            configs[key[: -len(_CONFIG_SUFFIX)]] = _decode(bytes(read(key).to(torch.uint8).tolist()), key, source)
    if metadata and METADATA_KEY in metadata:
        layers = _decode(metadata[METADATA_KEY].encode(), METADATA_KEY, source).get("layers")
        if not isinstance(layers, dict):
            raise QuantizationError(f"{source}: its {METADATA_KEY} metadata has no 'layers' table")
        configs = {**(configs or {}), **layers}
    return configs


def _decode(raw: bytes, what: str, source: str) -> dict:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise QuantizationError(f"{source}: {what} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise QuantizationError(f"{source}: {what} holds {type(value).__name__}, expected a JSON object")
    return value


def _check_format(layer: str, config: object, source: str) -> None:
    quant_format = config.get("format") if isinstance(config, dict) else None
    if quant_format not in FP8_FORMATS:
        raise QuantizationError(
            f"{source}: layer {layer!r} is quantized as {quant_format!r}; this loader reads the fp8 formats "
            f"({', '.join(FP8_FORMATS)}) only. Use an fp8, bf16 or fp16 file of this model.")


def _collect_scales(keys: list[str], suffixes: Mapping[str, str], found: QuantizedTensors, source: str) -> None:
    present = set(keys)
    for key in keys:
        for suffix, kind in suffixes.items():
            if not key.endswith(suffix):
                continue
            weight = key[: -len(suffix)] + ".weight"
            if weight not in present:
                raise QuantizationError(f"{source}: scale {key!r} belongs to no weight (no {weight!r} in the file)")
            (found.weight_scales if kind == "weight" else found.input_scales)[weight] = key
            found.consumed.add(key)
