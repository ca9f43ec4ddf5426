"""Which dtype a model's weights are stored in, which it computes in, and whether it runs fp8 matmuls:
one decision, taken from the user's choice, the device the model computes on and the checkpoint file,
the same for a library user (`load_longlive`) and for the nodes (the host describes its device).

- The choice is a dtype name of the one table below (or a torch dtype), an optional compute dtype
  and the fp8-matmul flag. "auto" stands for the device's own dtype: the host's choice for diffusion
  models where the host has one (ComfyUI's, with its --bf16-unet / --fp16-unet / --fp32-unet),
  else float32 on the CPU, bf16 on a GPU with native bf16 (NVIDIA compute capability 8.0+) and fp16
  on other GPUs (fp16 relies on the sampler's overflow guard).
- Weights in their compute dtype compute in it; fp8 weights are cast per layer to the compute dtype
  chosen, or the device's own (vace_core.casting).
- fp8 matmuls (`fp8_e4m3fn_fast`, ComfyUI's name) run only with float8_e4m3fn weights, on a device
  with fp8 tensor cores (NVIDIA compute capability 8.9+), and only when the file does not ask for
  matmuls in full precision (a two-element `scaled_fp8` marker or `full_precision_matrix_mult`,
  vace_core.quantized); otherwise the weights are cast per layer, and `Precision.note` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
FP8_MATMUL_DTYPE = torch.float8_e4m3fn  # the fp8 format torch._scaled_mm takes for both operands here
FP8_MATMUL_CAPABILITY = (8, 9)  # Ada, Hopper and later have fp8 tensor cores
AUTO = "auto"


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in FP8_DTYPES


def torch_name(dtype: torch.dtype) -> str:
    """torch's own name of `dtype` ("bfloat16", "float8_e4m3fn", ...), which ComfyUI's fp8 configs use too."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class DtypeChoice:
    """What a dtype name asks for: the weights' dtype (None: the device's own, "auto") and fp8 matmuls."""
    weights: torch.dtype | None
    fp8_matmul: bool = False


# the pack's names, in the order the loader node offers them (the fp8 ones are ComfyUI's UNETLoader names)
DTYPE_CHOICES: dict[str, DtypeChoice] = {
    AUTO: DtypeChoice(None),
    "bf16": DtypeChoice(torch.bfloat16),
    "fp16": DtypeChoice(torch.float16),
    "fp32": DtypeChoice(torch.float32),
    "fp8_e4m3fn": DtypeChoice(torch.float8_e4m3fn),
    "fp8_e4m3fn_fast": DtypeChoice(torch.float8_e4m3fn, fp8_matmul=True),
}
# every name the library reads: the pack's, fp8_e5m2, and torch's own names
DTYPE_NAMES: dict[str, DtypeChoice] = {
    **DTYPE_CHOICES,
    "fp8_e5m2": DtypeChoice(torch.float8_e5m2),
    **{torch_name(d): DtypeChoice(d) for d in (torch.bfloat16, torch.float16, torch.float32, *FP8_DTYPES)},
    "half": DtypeChoice(torch.float16),
    "float": DtypeChoice(torch.float32),
}


def dtype_choice(dtype: torch.dtype | str) -> DtypeChoice:
    """A torch dtype, or a name of the table (any case), as a choice; ValueError naming the names."""
    if isinstance(dtype, torch.dtype):
        return DtypeChoice(dtype)
    try:
        return DTYPE_NAMES[dtype.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_NAMES)}") from None


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """The torch dtype of a name of the table, or of a torch dtype ("auto" names none)."""
    weights = dtype_choice(dtype).weights
    if weights is None:
        raise ValueError(f"dtype {dtype!r} depends on the device: choose it with choose_precision")
    return weights


def dtype_name(dtype: torch.dtype) -> str:
    """The pack's short name of `dtype` ("bf16", "fp8_e4m3fn", ...): its first name in the table."""
    return next(name for name, choice in DTYPE_NAMES.items() if choice == DtypeChoice(dtype))


# ---------------------------------------------------------------------------------------------
# the device


@dataclass(frozen=True)
class DeviceCapabilities:
    """What the decision needs to know of the device a model computes on."""
    type: str  # torch's device type: "cpu", "cuda", "mps", ...
    native_bf16: bool = False  # bf16 arithmetic in hardware
    fp8_matmul: bool = False  # fp8 tensor cores
    host_dtype: torch.dtype | None = None  # the host's own choice for diffusion models there, if it has one


def _native_bf16() -> bool:
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before 2.3 has no emulation flag
        return torch.cuda.is_bf16_supported()


def capabilities_of(device: torch.device | str) -> DeviceCapabilities:
    """`device` as torch reports it (no host's choice)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return DeviceCapabilities(device.type)
    return DeviceCapabilities("cuda", native_bf16=_native_bf16(),
                              fp8_matmul=torch.cuda.get_device_capability(device) >= FP8_MATMUL_CAPABILITY)


def auto_dtype(device: DeviceCapabilities) -> torch.dtype:
    """The dtype "auto" stands for on `device` (see the module docstring)."""
    if device.host_dtype is not None:
        return device.host_dtype
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if device.native_bf16 else torch.float16


# ---------------------------------------------------------------------------------------------
# the decision


@dataclass(frozen=True)
class Precision:
    """How a model's weights are stored and computed."""
    weights: torch.dtype  # the block Linear weights' storage (vace_core.model.param_dtype)
    compute: torch.dtype  # activations, attention and the KV cache
    fp8_matmul: bool = False  # Linear layers run as fp8 matmuls
    note: str | None = None  # why the fp8 matmuls asked for are not used

    @property
    def casts(self) -> bool:
        """The weights are stored in another dtype than they compute in (cast per layer)."""
        return self.weights != self.compute


def choose_precision(dtype: torch.dtype | str, device: DeviceCapabilities, full_precision_matmul: bool = False, *,
                     compute_dtype: torch.dtype | str | None = None, fp8_matmul: bool = False) -> Precision:
    """The precision of a model loaded with the choice `dtype` (a name of the table or a torch dtype),
    `compute_dtype` (None: the weights' own, or the device's own for fp8 weights) and `fp8_matmul`,
    computing on `device`, from a file that asks for matmuls in full precision or not."""
    choice = dtype_choice(dtype)
    weights = choice.weights or auto_dtype(device)
    if compute_dtype is not None:
        compute = dtype_choice(compute_dtype).weights or auto_dtype(device)
    else:
        compute = auto_dtype(device) if is_fp8(weights) else weights
    if is_fp8(compute):
        raise ValueError(f"compute_dtype {compute}: fp8 is a storage dtype; compute in bf16, fp16 or fp32")
    wanted = (fp8_matmul or choice.fp8_matmul) and weights == FP8_MATMUL_DTYPE
    note = None
    if wanted and not device.fp8_matmul:
        note = (f"the {device.type} device has no fp8 matmuls (they need an NVIDIA GPU of compute capability "
                f"{'.'.join(map(str, FP8_MATMUL_CAPABILITY))} or newer)")
    elif wanted and full_precision_matmul:
        note = "the file asks for matmuls in full precision"
    if note is not None:
        note += "; the fp8 weights are cast per layer as with fp8_e4m3fn"
    return Precision(weights, compute, wanted and note is None, note)
