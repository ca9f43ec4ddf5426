"""ComfyUI node classes of the pack, one module per step, and its routes on ComfyUI's server; `host`
adapts them to ComfyUI."""

from . import host
from .continue_video import LongLiveContinue
from .decode import LongLiveDecode
from .live import ROUTES
from .loader import LongLiveLoraLoader, LongLiveModelLoader
from .prompts import LongLivePromptSchedule, LongLiveSteeringSchedule
from .save_frames import LongLiveSaveFrames
from .sampler import LongLiveSampler
from .sampler_settings import LongLiveSamplerSettings
from .vace_encode import LongLiveVaceEncode
from .vace_graft import LongLiveVaceGraft
from .video import LongLiveSampleToVideo, LongLiveSaveVideo

NODE_CLASS_MAPPINGS = {
    "LongLiveModelLoader": LongLiveModelLoader,
    "LongLiveLoraLoader": LongLiveLoraLoader,
    "LongLiveVaceGraft": LongLiveVaceGraft,
    "LongLiveVaceEncode": LongLiveVaceEncode,
    "LongLivePromptSchedule": LongLivePromptSchedule,
    "LongLiveSteeringSchedule": LongLiveSteeringSchedule,
    "LongLiveSampler": LongLiveSampler,
    "LongLiveSamplerSettings": LongLiveSamplerSettings,
    "LongLiveDecode": LongLiveDecode,
    "LongLiveSaveVideo": LongLiveSaveVideo,
    "LongLiveSampleToVideo": LongLiveSampleToVideo,
    "LongLiveSaveFrames": LongLiveSaveFrames,
    "LongLiveContinue": LongLiveContinue,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LongLiveModelLoader": "Load LongLive Model",
    "LongLiveLoraLoader": "LongLive Extra LoRA",
    "LongLiveVaceGraft": "Load VACE Weights (graft)",
    "LongLiveVaceEncode": "VACE Encode References",
    "LongLivePromptSchedule": "LongLive Prompt Schedule",
    "LongLiveSteeringSchedule": "LongLive Schedule from Steering",
    "LongLiveSampler": "LongLive Sampler",
    "LongLiveSamplerSettings": "LongLive Sampler Settings",
    "LongLiveDecode": "Decode (strip references)",
    "LongLiveSaveVideo": "Save Video (streaming decode)",
    "LongLiveSampleToVideo": "LongLive Sampler -> Video (streaming)",
    "LongLiveSaveFrames": "Save Videos (from frames)",
    "LongLiveContinue": "LongLive Continue Video",
}

for path, answer, max_body in ROUTES:  # standalone (no server) this does nothing
    host.add_json_post_route(path, answer, max_body)
