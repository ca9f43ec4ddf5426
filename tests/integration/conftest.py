"""Integration tests against real ComfyUIs (helpers live in comfy_harness.py).

Every test here runs once per ComfyUI found (`comfy_harness.find_installs`: COMFYUI_DIR, else the
snapshots in ../shared/comfyui/, else /opt/ComfyUI); the test ids carry the version, e.g.
`test_workflow_runs_to_a_video[0.33.0-longlive_t2v]`. Without any ComfyUI the tests skip, except
under CI=true, where they fail. A COMFYUI_DIR entry that is not a checkout always fails.

The tests run with the dev python and talk to the server over HTTP only; code that must import
``comfy`` runs as a subprocess with ComfyUI's own python (``ComfyInstall.run_python``).

The session fixture `comfy_server` builds an isolated base directory, installs our pack and the
test-only pack into its custom_nodes/, writes a tiny Wan 2.1 VAE into models/vae/, starts
``main.py --cpu`` on a free loopback port and yields a `ComfyClient`; pytest runs the tests of one
version together and stops that server before starting the next. The server log's tail is attached
to the report of any failing test that used the server, and the summary lists the versions tested.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterator

import pytest

from comfy_harness import (LOG_TAIL_LINES, ComfyClient, ComfyInstall, find_installs, in_ci, make_base_dir,
                           start_server, stop_server)

INSTALLS, PROBLEMS = find_installs()
NO_COMFYUI = ("no ComfyUI found: set COMFYUI_DIR to a checkout (several separated by ':') and COMFYUI_PYTHON "
              "to its python, or put snapshots in ../shared/comfyui/")
_OUTCOMES: dict[str, Counter] = defaultdict(Counter)  # version -> outcome -> count
_FIGURES: dict[str, list[str]] = defaultdict(list)  # version -> lines for the summary
_VERSION_OF: dict[str, str] = {}  # test id -> version


def pytest_generate_tests(metafunc):
    if "comfy_install" in metafunc.fixturenames:
        params = INSTALLS or [None]
        metafunc.parametrize("comfy_install", params, indirect=True, scope="session",
                             ids=[p.label if p else "no-comfyui" for p in params])


@pytest.fixture(scope="session")
def comfy_install(request) -> ComfyInstall:
    if PROBLEMS:
        pytest.fail("; ".join(PROBLEMS))
    if request.param is None:
        if in_ci():
            pytest.fail(f"CI=true but {NO_COMFYUI}")
        pytest.skip(NO_COMFYUI)
    return request.param


@pytest.fixture(autouse=True)
def _every_test_runs_on_each_comfyui(comfy_install):
    """Makes every integration test depend on (and be parametrized by) the ComfyUI version."""


@pytest.fixture(scope="session")
def comfyui_dir(comfy_install) -> Path:
    return comfy_install.dir


@pytest.fixture(scope="session")
def comfyui_python(comfy_install) -> str:
    return comfy_install.python


@pytest.fixture
def report_figure(comfy_install):
    """`report_figure(text)`: a measured figure shown under this version in the terminal summary."""
    return _FIGURES[comfy_install.label].append


_RUNNING: list[ComfyClient] = []  # the live server, for the failure-report hook


@pytest.fixture(scope="session")
def comfy_server(comfy_install, tmp_path_factory) -> Iterator[ComfyClient]:
    base = tmp_path_factory.mktemp(f"comfy_base_{comfy_install.label}")
    make_base_dir(base, comfy_install)
    started = time.monotonic()
    client = start_server(comfy_install, base, base / "server.log")
    client.start_seconds = time.monotonic() - started
    _RUNNING.append(client)
    try:
        yield client
    finally:
        _RUNNING.remove(client)
        stop_server(client.process)


def pytest_collection_modifyitems(items):
    for item in items:
        install = getattr(getattr(item, "callspec", None), "params", {}).get("comfy_install")
        if install is not None:
            _VERSION_OF[item.nodeid] = install.label


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the server log's tail to the report of a failing test that used the server."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _RUNNING and "comfy_server" in getattr(item, "fixturenames", ()):
        client = _RUNNING[-1]
        report.sections.append((f"ComfyUI {client.install.label} server log (last {LOG_TAIL_LINES} lines of "
                                f"{client.log_path})", client.log_tail()))


def pytest_runtest_logreport(report):
    version = _VERSION_OF.get(report.nodeid)
    if version is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _OUTCOMES[version]["skipped" if report.skipped else report.outcome] += 1


def pytest_terminal_summary(terminalreporter):
    write = terminalreporter.write_line
    if not INSTALLS:
        write(f"ComfyUI versions tested: none ({'; '.join(PROBLEMS) or NO_COMFYUI})")
        return
    write("ComfyUI versions tested:")
    for install in INSTALLS:
        counts = _OUTCOMES.get(install.label, Counter())
        tally = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "no tests run"
        write(f"  {install.label:<8} {install.dir} (editor {install.frontend or '?'}, python {install.python}): "
              f"{tally}")
        for line in _FIGURES.get(install.label, []):
            write(f"           {line}")
