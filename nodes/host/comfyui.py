"""The ComfyUI modules the whole host package uses, imported once, with the standalone fallback.

Inside ComfyUI, `folder_paths`, `comfy.model_management` and `comfy.utils` are the host's modules;
without ComfyUI (unit tests, `scripts/selftest.py`), or with LONGLIVE_STANDALONE=1, they are None
and every module of this package falls back to its standalone behaviour. The other modules of the
package import further ComfyUI modules (comfy.ops, comfy.model_patcher, latent_preview, ...) only
when `IN_COMFYUI`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("longlive_vace")
_WARNED: set[str] = set()


def warn_once(key: str, message: str, *args: Any) -> None:
    """Log a warning the first time `key` is given (one line per process for a missing host feature)."""
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message, *args)


def _import_comfy() -> tuple[Any, Any, Any] | None:
    if os.environ.get("LONGLIVE_STANDALONE", "") not in ("", "0"):
        return None
    try:
        import folder_paths
        import comfy.model_management as model_management
        import comfy.utils as comfy_utils
    except ImportError:
        return None
    return folder_paths, model_management, comfy_utils


_COMFY = _import_comfy()
IN_COMFYUI: bool = _COMFY is not None

if _COMFY is not None:
    folder_paths, model_management, comfy_utils = _COMFY
    InterruptProcessingException = model_management.InterruptProcessingException
else:
    folder_paths = model_management = comfy_utils = None

    class InterruptProcessingException(Exception):  # type: ignore[no-redef]
        """Standalone stand-in for ComfyUI's exception of the same name."""
