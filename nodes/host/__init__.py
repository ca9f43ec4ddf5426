"""The one adapter between the node pack and its host, and the only package that imports ComfyUI.

Inside ComfyUI it uses ComfyUI's model folders, device policy, memory manager, progress bar,
interrupt flag and latent previews; without ComfyUI (unit tests, `scripts/selftest.py`), or with
LONGLIVE_STANDALONE=1, it falls back to a standalone host. Modules:

- comfyui: the ComfyUI imports and the fallback;
- files: model files by name, output files;
- memory: devices, dtype and the memory manager (the network as a model patcher);
- patcher: the network as a managed model, and the standalone patcher;
- model_ref: the LONGLIVE_MODEL value the loader, LoRA, graft and sampler nodes pass along;
- progress: progress bar, interrupt, latent and frame previews;
- live: the running prompt, its client's websocket, the temp folder, the Latent2RGB previewer and
  the steering route (live chunk previews and steering, nodes/live.py);
- vae_stream: streaming (chunk-by-chunk) decoding with the VAE a node receives.

The node files (and tests) call the names below as `host.<name>`.
"""

from .comfyui import IN_COMFYUI, InterruptProcessingException
from .files import list_models, metadata_enabled, model_path, video_output_paths
from .live import add_json_post_route, client_messenger, latent_rgb_previewer, running_prompt_id, temp_dir
from .memory import (LoadedNetwork, auto_dtype, is_loaded, offload_device, run_memory_limit, soft_empty_cache,
                     unload_models)
from .progress import (CountingProgressBar, check_interrupt, frame_previewer, is_interrupted, make_previewer,
                       progress_bar, raise_interrupted, request_interrupt)
from .vae_stream import streaming_decoder, tiled_decode

__all__ = [
    "IN_COMFYUI", "InterruptProcessingException",
    "list_models", "metadata_enabled", "model_path", "video_output_paths",
    "add_json_post_route", "client_messenger", "latent_rgb_previewer", "running_prompt_id", "temp_dir",
    "LoadedNetwork", "auto_dtype", "is_loaded", "offload_device", "run_memory_limit", "soft_empty_cache",
    "unload_models",
    "CountingProgressBar", "check_interrupt", "frame_previewer", "is_interrupted", "make_previewer",
    "progress_bar", "raise_interrupted", "request_interrupt",
    "streaming_decoder", "tiled_decode",
]
