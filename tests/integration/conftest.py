"""Integration tests against a real ComfyUI server (helpers live in comfy_harness.py).

The tests run with the dev python and talk to the server over HTTP only; code that must import
``comfy`` runs as a subprocess with ComfyUI's own python (``comfy_harness.run_comfy_python``).
Without a ComfyUI checkout (COMFYUI_DIR, fallback /opt/ComfyUI) every test here skips.

The session fixture `comfy_server` builds an isolated base directory, installs our pack and the
test-only pack into its custom_nodes/, writes a tiny Wan 2.1 VAE into models/vae/, starts
``main.py --cpu`` on a free loopback port and yields a `ComfyClient`. The server log's tail is
attached to the report of any failing test that used the server.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from comfy_harness import (COMFYUI_DIR, COMFYUI_PYTHON, LOG_TAIL_LINES, ComfyClient, make_base_dir,
                           start_server, stop_server)


@pytest.fixture(autouse=True, scope="session")
def _require_comfyui():
    """Skip every test in this package when no ComfyUI checkout is configured."""
    if COMFYUI_DIR is None:
        pytest.skip("no ComfyUI: set COMFYUI_DIR to a ComfyUI 0.8 checkout (and COMFYUI_PYTHON)")


@pytest.fixture(scope="session")
def comfyui_dir() -> Path:
    return COMFYUI_DIR


@pytest.fixture(scope="session")
def comfyui_python() -> str:
    return COMFYUI_PYTHON


_RUNNING: list[ComfyClient] = []  # the live server, for the failure-report hook


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory) -> Iterator[ComfyClient]:
    base = tmp_path_factory.mktemp("comfy_base")
    make_base_dir(base)
    started = time.monotonic()
    client = start_server(base, base / "server.log")
    client.start_seconds = time.monotonic() - started
    _RUNNING.append(client)
    try:
        yield client
    finally:
        _RUNNING.remove(client)
        stop_server(client.process)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the server log's tail to the report of a failing test that used the server."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _RUNNING and "comfy_server" in getattr(item, "fixturenames", ()):
        client = _RUNNING[-1]
        report.sections.append((f"ComfyUI server log (last {LOG_TAIL_LINES} lines of "
                                f"{client.log_path})", client.log_tail()))
