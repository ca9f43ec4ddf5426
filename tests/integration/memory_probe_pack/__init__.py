"""Test-only ComfyUI node pack: observes the LongLive pack from inside a running server. Never
install it for real use.

It registers no nodes, only two HTTP routes for test_comfy_memory_server.py:

- POST /longlive_probe/reset: from now on record every checkpoint file the LongLive pack opens
  (its one entry to checkpoint files, vace_core.checkpoint_files.TensorFile) and forget earlier ones;
- GET /longlive_probe/state: {"reads": [file names in order], "loaded": [one entry per model in
  comfy.model_management.loaded_models(): class, lowvram state, loaded bytes, whether the patch
  set it was loaded with is still applied]}.
"""
import os
import sys

import comfy.model_management
from aiohttp import web
from server import PromptServer

READS: list[str] = []


def _checkpoint_files_module():
    for name, module in list(sys.modules.items()):
        if name.endswith(".vace_core.checkpoint_files") and hasattr(module, "TensorFile"):
            return module
    raise RuntimeError("the LongLive pack is not loaded")


def _record_reads() -> None:
    tensor_file = _checkpoint_files_module().TensorFile
    if getattr(tensor_file, "_probe_original_init", None) is not None:
        return
    original = tensor_file.__init__

    def recording(self, path, *args, **kwargs):
        READS.append(os.path.basename(str(path)))
        original(self, path, *args, **kwargs)

    tensor_file._probe_original_init = original
    tensor_file.__init__ = recording


def _loaded() -> list[dict]:
    entries = []
    for patcher in comfy.model_management.loaded_models():
        model = patcher.model
        entries.append({
            "class": type(model).__name__,
            "lowvram": bool(getattr(model, "model_lowvram", False)),
            "loaded_bytes": int(patcher.loaded_size()),
            "current": getattr(model, "current_weight_patches_uuid", None) == patcher.patches_uuid,
        })
    return entries


@PromptServer.instance.routes.post("/longlive_probe/reset")
async def reset(request):
    _record_reads()
    READS.clear()
    return web.json_response({"reads": []})


@PromptServer.instance.routes.get("/longlive_probe/state")
async def state(request):
    return web.json_response({"reads": list(READS), "loaded": _loaded()})


NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
