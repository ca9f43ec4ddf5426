"""Progress and interrupt: ComfyUI's progress bar (which drives the UI and the websocket progress
messages) and its interrupt flag; standalone, a progress bar that only counts and an interrupt flag
that only whoever drives the standalone host sets (`STANDALONE_INTERRUPT`: tests, as a user's Cancel).
"""

from __future__ import annotations

import threading
from typing import Any, NoReturn, Protocol

from .comfyui import InterruptProcessingException, comfy_utils, model_management


class ProgressBar(Protocol):
    """What the nodes use of ComfyUI's progress bar (comfy.utils.ProgressBar)."""

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None: ...


class CountingProgressBar:
    """Standalone progress bar with ComfyUI's interface; records the previews it was given."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.current = 0
        self.previews = 0

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        self.previews += preview is not None

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)


def progress_bar(total: int) -> ProgressBar:
    """ComfyUI's ProgressBar (drives the UI and the websocket progress) or a counting stand-in."""
    if comfy_utils is not None:
        return comfy_utils.ProgressBar(total)
    return CountingProgressBar(total)


STANDALONE_INTERRUPT = threading.Event()  # the standalone host's interrupt flag


def is_interrupted() -> bool:
    """True once the user pressed Cancel (the flag stays set until `check_interrupt` consumes it)."""
    if model_management is not None:
        return bool(model_management.processing_interrupted())
    return STANDALONE_INTERRUPT.is_set()


def check_interrupt() -> None:
    """Raise InterruptProcessingException if an interrupt is pending, clearing the flag
    (ComfyUI's `throw_exception_if_processing_interrupted`)."""
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()
    elif STANDALONE_INTERRUPT.is_set():
        STANDALONE_INTERRUPT.clear()
        raise InterruptProcessingException()


def raise_interrupted() -> NoReturn:
    """The run stopped because of an interrupt: raise ComfyUI's exception in any case."""
    check_interrupt()
    raise InterruptProcessingException()
