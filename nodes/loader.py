"""Load LongLive Model / LongLive Extra LoRA: build a LONGLIVE_MODEL from model-folder files."""

from __future__ import annotations

from dataclasses import replace

from ..vace_core.base_kind import base_kind
from ..vace_core.checkpoint_files import TRAINER_ENTRIES
from ..vace_core.logs import log
from . import host
from .common import CATEGORY, MODEL_TYPE, default_if_listed
from .model_files import BASE_FILE, LORA_FILE, FileRef, file_stamp
from .model_ref import AUTO, DTYPES, LongLiveModel, load_model

NO_LORA = "none"
ENTRIES = ("auto", *TRAINER_ENTRIES)
NON_CAUSAL = ("refuse", "load anyway")  # what the loader does with a base that is not a causal model



class LongLiveModelLoader:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        bases = host.list_models("diffusion_models")
        loras = [NO_LORA] + host.list_models("loras")
        return {
            "required": {
                "base_checkpoint": (bases, {
                    **default_if_listed(bases, BASE_FILE),
                    "tooltip": f"LongLive base weights in models/diffusion_models ({BASE_FILE}, or any "
                               "Wan2.1-T2V-1.3B layout: original, ComfyUI-prefixed or diffusers)."}),
                "lora": (loras, {
                    **default_if_listed(loras, LORA_FILE),
                    "tooltip": "LoRA in models/loras applied to the base when it is loaded, as a patch: a new "
                               f"strength does not read the base again (LongLive ships {LORA_FILE}, rank 256). "
                               "'none' loads the base alone."}),
                "lora_strength": ("FLOAT", {
                    "default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                    "tooltip": "Multiplier of the LoRA update (1.0 = as trained; 0 = no LoRA)."}),
                "dtype": (list(DTYPES), {
                    "default": AUTO,
                    "tooltip": "Precision of the weights. auto: ComfyUI's choice for the device (bf16 where "
                               "supported, else fp16; fp32 on the CPU). bf16 is what LongLive runs in; fp32 for the "
                               "CPU or debugging; fp16 may overflow on some prompts. fp8_e4m3fn: the transformer "
                               "blocks' weights in fp8 (half of bf16's memory, each scaled per layer), cast per "
                               "layer to the auto precision; fp8_e4m3fn_fast also runs fp8 matmuls on GPUs that "
                               "have them (RTX 40xx, H100 and newer; elsewhere it is fp8_e4m3fn). An fp8 file loads "
                               "with any choice."}),
            },
            "optional": {
                "entry": (list(ENTRIES), {
                    "default": "auto",
                    "tooltip": "Which state dict of a .pt trainer checkpoint holding several to load. 'auto': "
                               "generator_ema if present (what Self-Forcing's and Causal Forcing's demos "
                               "run), else generator (LongLive, CausVid), else model; the choice is logged. "
                               "Name generator to match LongLive's and Causal Forcing chunkwise's own "
                               "inference on a file that also has generator_ema. Safetensors files: auto."}),
                "compile": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "torch.compile (inductor) the blocks' norms, projections, RoPE and FFN for "
                               "full-chunk passes: faster chunks on a GPU once compiled; the first chunk of each "
                               "size and dtype compiles (about a minute on a GPU, minutes on a CPU; the log says "
                               "what was compiled). Needs a working inductor (Triton on NVIDIA); if compiling "
                               "fails, a warning is logged and the blocks run as without it. Attention kernels "
                               "(ComfyUI's choice) are not compiled."}),
                "non_causal_base": (list(NON_CAUSAL), {
                    "default": NON_CAUSAL[0],
                    "tooltip": "A base that is not a causal model (a Wan2.1-VACE checkpoint, or plain bidirectional "
                               "Wan2.1 weights) makes a broken video when run chunk by chunk, so it is refused. "
                               "'load anyway' loads it with a warning: for a causal model saved as plain "
                               "safetensors without causal_ar metadata."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, base_checkpoint: str, lora: str, **_) -> str:
        # a file replaced under the same name must be read again
        stamps = [file_stamp("diffusion_models", base_checkpoint)]
        if lora != NO_LORA:
            stamps.append(file_stamp("loras", lora))
        return "; ".join(stamps)

    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The LongLive causal Wan2.1 model (no VACE yet: add 'Load VACE Weights').",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Loads the LongLive causal Wan2.1-T2V-1.3B generator with its LoRA. ComfyUI's memory "
                   "manager keeps it loaded between runs; LoRA and VACE nodes further down share its weights.")

    def load(self, base_checkpoint: str, lora: str, lora_strength: float, dtype: str,
             entry: str = "auto", compile: bool = False,
             non_causal_base: str = NON_CAUSAL[0]) -> tuple[LongLiveModel]:
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        if entry not in ENTRIES:
            raise ValueError(f"entry {entry!r}: expected one of {', '.join(ENTRIES)}")
        if non_causal_base not in NON_CAUSAL:
            raise ValueError(f"non_causal_base {non_causal_base!r}: expected one of {', '.join(NON_CAUSAL)}")
        base = FileRef.resolve("diffusion_models", base_checkpoint)
        check_causal_base(base, refuse=non_causal_base == NON_CAUSAL[0])
        if entry != "auto":
            base = replace(base, entry=entry)
        lora_file = FileRef.resolve("loras", lora) if lora != NO_LORA and lora_strength != 0 else None
        return (load_model(base, dtype, lora_file, float(lora_strength), compile=bool(compile)),)


def check_causal_base(base: FileRef, refuse: bool) -> None:
    """Refuse (or, when told to load it anyway, log) a base file that is not a causal model; read
    from its keys and metadata only (vace_core/base_kind.py has the rule)."""
    kind = base_kind(base.path)
    if kind.is_causal:
        return
    if kind.kind == "vace":
        fix = f"Choose the causal base (e.g. {BASE_FILE}) here and graft this file with 'Load VACE Weights (graft)'"
    else:
        fix = f"Choose a causal checkpoint ({BASE_FILE}, or a Self-Forcing, CausVid or Causal Forcing .pt)"
    message = (f"base_checkpoint {base.name!r} is {kind.what}: a bidirectional model, which makes a broken video "
               "when run chunk by chunk")
    if refuse:
        raise ValueError(f"{message}. {fix}; to run it anyway (a causal model saved without causal metadata), "
                         "set non_causal_base to 'load anyway'.")
    log.warning("LongLive: %s; loading it anyway (non_causal_base 'load anyway')", message)


class LongLiveLoraLoader:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The LongLive model to add a LoRA to (left unchanged; "
                                                  "a new model is returned)."}),
                "lora": (host.list_models("loras"), {
                    "tooltip": "Wan2.1-1.3B LoRA in models/loras (PEFT, ComfyUI, kohya or diffusers names). "
                               "Merged into the main blocks only; VACE blocks get no LoRA."}),
                "strength": ("FLOAT", {"default": 1.0, "min": -2.0, "max": 2.0, "step": 0.05,
                                       "tooltip": "Multiplier of the LoRA update (0 = no change)."}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, lora: str, **_) -> str:
        return file_stamp("loras", lora)

    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with this LoRA applied as well.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Stacks one more LoRA (e.g. a style LoRA) on a LongLive model. Only the LoRA file is read: "
                   "a new strength does not load the base model again.")

    def load(self, model: LongLiveModel, lora: str, strength: float) -> tuple[LongLiveModel]:
        if strength == 0:
            return (model,)
        return (model.with_lora(FileRef.resolve("loras", lora), float(strength)),)
