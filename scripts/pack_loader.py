"""The repository imported as ComfyUI imports a custom-node folder: a package of the given name,
loaded from its __init__.py, so its relative imports run as they do in ComfyUI. The scripts that
run the pack's nodes (selftest, workflow generator, benchmarks) and the tests import it this way.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_pack(name: str, *, standalone: bool) -> ModuleType:
    """The pack as package `name` (imported once per name). `standalone`: with the standalone host
    even where ComfyUI is importable (the host reads LONGLIVE_STANDALONE when it is imported; the
    variable is restored afterwards so that subprocesses started later still find a real ComfyUI);
    otherwise the host uses the ComfyUI it finds."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    before = os.environ.get("LONGLIVE_STANDALONE")
    if standalone:
        os.environ["LONGLIVE_STANDALONE"] = "1"
    try:
        spec.loader.exec_module(module)
    finally:
        if before is None:
            os.environ.pop("LONGLIVE_STANDALONE", None)
        else:
            os.environ["LONGLIVE_STANDALONE"] = before
    return module
