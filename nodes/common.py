"""Names shared by the node classes."""

CATEGORY = "LongLive/VACE"
MODEL_TYPE = "LONGLIVE_MODEL"
VACE_TYPE = "VACE_CONTEXT"
PROMPTS_TYPE = "LONGLIVE_PROMPTS"
REF_FRAMES_KEY = "longlive_ref_frames"  # LATENT entry: leading reference latent frames
MAX_RESOLUTION = 16384  # ComfyUI nodes.MAX_RESOLUTION
MAX_VIDEO_FRAMES = 4093  # the RoPE table's 1024 latent frames, as video frames
