"""Names and small helpers shared by the node classes."""

CATEGORY = "LongLive/VACE"
MODEL_TYPE = "LONGLIVE_MODEL"
VACE_TYPE = "VACE_CONTEXT"
PROMPTS_TYPE = "LONGLIVE_PROMPTS"
REF_FRAMES_KEY = "longlive_ref_frames"  # LATENT entry: leading reference latent frames
MAX_RESOLUTION = 16384  # ComfyUI nodes.MAX_RESOLUTION
MAX_VIDEO_FRAMES = 4093  # the RoPE table's 1024 latent frames, as video frames


def default_if_listed(names: list[str], *preferred: str) -> dict:
    """{"default": the first of `preferred` that is one of the combo's options}, else {}: ComfyUI
    shows the first option when the default is absent, so name one only when it exists."""
    for name in preferred:
        if name in names:
            return {"default": name}
    return {}
