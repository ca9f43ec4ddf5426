"""Load VACE Weights (graft): add Wan2.1-VACE-1.3B's VACE blocks to a LongLive model."""

from __future__ import annotations

from . import host
from .common import CATEGORY, MODEL_TYPE, default_if_listed
from .model_files import VACE_FILES, FileRef, file_stamp
from .model_ref import LongLiveModel


class LongLiveVaceGraft:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        names = host.list_models("diffusion_models")
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The LongLive model to give VACE blocks (left unchanged; "
                                                  "a new model is returned)."}),
                "vace_checkpoint": (names, {
                    **default_if_listed(names, *VACE_FILES),
                    "tooltip": "File in models/diffusion_models holding Wan2.1-VACE-1.3B weights: a VACE "
                               "module file (only vace_* keys) or a full VACE checkpoint, in original, "
                               "ComfyUI-prefixed or diffusers names. Only its VACE tensors are used."}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, vace_checkpoint: str, **_) -> str:
        return file_stamp("diffusion_models", vace_checkpoint)

    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with VACE blocks, ready for a VACE context.",)
    FUNCTION = "graft"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Grafts the VACE blocks of Wan2.1-VACE-1.3B onto the LongLive base so the sampler can "
                   "follow reference images (R2V) or a control video.")

    def graft(self, model: LongLiveModel, vace_checkpoint: str) -> tuple[LongLiveModel]:
        return (model.with_vace(FileRef.resolve("diffusion_models", vace_checkpoint)),)
