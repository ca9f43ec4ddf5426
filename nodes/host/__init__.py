"""The one adapter between the node pack and its host, and the only package that imports ComfyUI.

Inside ComfyUI it uses ComfyUI's model folders, device policy, memory manager, layers, attention,
progress bar, interrupt flag, previews and server; without ComfyUI (unit tests, `scripts/selftest.py`),
or with LONGLIVE_STANDALONE=1, it falls back to a standalone host. Modules:

- comfyui: the ComfyUI imports and the fallback;
- files: model files by name, output files;
- devices: where the network computes and waits, and the compute device as the dtype decision sees it;
- layers: the layer classes for the precision chosen (comfy.ops, its fp8 layers);
- attention: the attention kernels (ComfyUI's optimized_attention);
- patcher: the network as a managed model (ComfyUI's ModelPatcher, or the standalone patcher) and
  its LoRA, VACE and compiler clones;
- memory: the memory manager: loading for a run, unloading;
- progress: progress bar and interrupt;
- previews: latent, frame and Latent2RGB previews;
- live: the running prompt, its client's websocket, the temp folder and JSON routes on the server
  (live chunk previews and steering, nodes/live.py);
- vae_stream: streaming (chunk-by-chunk) decoding with the VAE a node receives;
- decode_device: the streaming nodes' decode device choices and the VAE loaded on that device.

The node files call the names below as `host.<name>` (tests reach further, into the modules).
"""

from .attention import attention_kernels
from .decode_device import MODEL_DEVICE, ChunkDecoding, chunk_decoding, decode_device_choices, decode_device_problem
from .comfyui import InterruptProcessingException
from .devices import device_capabilities, offload_device, soft_empty_cache
from .files import list_models, metadata_enabled, model_path, video_output_paths
from .layers import layer_operations
from .live import add_json_post_route, client_messenger, running_prompt_id, temp_dir
from .memory import LoadedNetwork, load_for_run, run_memory_limit, unload_models
from .patcher import make_patcher, with_compiler, with_lora, with_vace
from .previews import frame_previewer, latent_rgb_previewer, make_previewer
from .progress import ProgressBar, check_interrupt, is_interrupted, progress_bar, raise_interrupted
from .vae_stream import streaming_decoder

__all__ = [
    "attention_kernels",
    "MODEL_DEVICE", "ChunkDecoding", "chunk_decoding", "decode_device_choices", "decode_device_problem",
    "InterruptProcessingException",
    "device_capabilities", "offload_device", "soft_empty_cache",
    "list_models", "metadata_enabled", "model_path", "video_output_paths",
    "layer_operations",
    "add_json_post_route", "client_messenger", "running_prompt_id", "temp_dir",
    "LoadedNetwork", "load_for_run", "run_memory_limit", "unload_models",
    "make_patcher", "with_compiler", "with_lora", "with_vace",
    "frame_previewer", "latent_rgb_previewer", "make_previewer",
    "ProgressBar", "check_interrupt", "is_interrupted", "progress_bar", "raise_interrupted",
    "streaming_decoder",
]
