"""What the run_comfy_*.py children share: importing ComfyUI as its server would, forced onto the
CPU, and our pack as ComfyUI imports a custom node folder (so nodes/host finds ComfyUI).

The children run with ComfyUI's python, `COMFYUI_DIR` naming the checkout; this file sits beside them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

PACK_PACKAGE = "longlive_pack"


def import_comfy(*modules: str, flags: tuple[str, ...] = ()) -> list[ModuleType]:
    """ComfyUI's `modules` (e.g. "comfy.model_management"), imported with `--cpu *flags` as its
    command line; comfy.model_management and folder_paths always (the host looks for them)."""
    sys.path.insert(0, os.environ.get("COMFYUI_DIR") or "/opt/ComfyUI")
    import comfy.options

    comfy.options.enable_args_parsing()  # so comfy.cli_args reads the argv below, not ours
    saved, sys.argv = sys.argv, [sys.argv[0], "--cpu", *flags]
    try:
        importlib.import_module("comfy.model_management")  # reads the CPU choice at import
        importlib.import_module("folder_paths")
        return [importlib.import_module(name) for name in modules]
    finally:
        sys.argv = saved


def import_pack(pack_dir: str, *modules: str) -> dict[str, ModuleType]:
    """The pack at `pack_dir` imported as a custom node folder; its `modules` by name."""
    spec = importlib.util.spec_from_file_location(PACK_PACKAGE, os.path.join(pack_dir, "__init__.py"),
                                                  submodule_search_locations=[pack_dir])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_PACKAGE] = module
    spec.loader.exec_module(module)
    return {name: importlib.import_module(f"{PACK_PACKAGE}.{name}") for name in modules}


def partial_load(mm: ModuleType, patcher) -> tuple[object, int]:
    """`patcher`'s model loaded by comfy.model_management with half its size as the budget (a
    lowvram load, everything else unloaded first): the LoadedModel and the budget."""
    mm.unload_all_models()
    loaded, budget = mm.LoadedModel(patcher), patcher.model_size() // 2
    loaded.model_load(lowvram_model_memory=budget)
    return loaded, budget
