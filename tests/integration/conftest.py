"""Integration tests against real ComfyUIs (helpers live in comfy_harness.py).

A test that needs a ComfyUI (any of the fixtures comfy_install,
comfy_server, report_figure, directly or through its own fixtures) runs once per ComfyUI found
(`comfy_harness.find_installs`: COMFYUI_DIR, else the snapshots in ../shared/comfyui/, else
/opt/ComfyUI); its ids carry the version, e.g. `test_workflow_runs_to_a_video[0.33.0-longlive_t2v]`.
A test here that needs none runs once. Without any ComfyUI the tests skip, except under CI=true,
where they fail. A COMFYUI_DIR entry that is not a checkout always fails.

The tests run with the dev python and talk to the server over HTTP only; code that must import
``comfy`` runs as a subprocess with ComfyUI's own python (``ComfyInstall.run_python``).

The session fixture `comfy_server` builds an isolated base directory, installs our pack and the
test-only pack into its custom_nodes/, writes a tiny Wan 2.1 VAE into models/vae/, starts
``main.py --cpu`` on a free loopback port and yields a `ComfyClient`. Under pytest-xdist every test
that uses one version's server is in that version's group (`comfyui-<version>`), so each server
starts once, in one process; a version's other tests run with their module (`<module>-comfyui-<version>`).
The server log's tail is attached to the report of any failing test that used the server, and the
summary lists the versions tested (comfy_summary.py).
"""
from __future__ import annotations

import re
import time
from typing import Callable, Iterator

import pytest

from comfy_harness import (LOG_TAIL_LINES, NO_COMFYUI, ComfyClient, ComfyInstall, find_installs, in_ci,
                           make_base_dir, start_server, stop_server, wait_for_comfyui_python)
from comfy_summary import FIGURE, VERSION
from workflow_files import add_workflow_files

INSTALLS, PROBLEMS = find_installs()


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
    try:
        wait_for_comfyui_python()
    except RuntimeError as error:
        pytest.fail(str(error))
    return request.param


@pytest.fixture
def report_figure(request, comfy_install) -> Callable[[str], None]:
    """`report_figure(text)`: a measured figure shown under this version in the terminal summary
    (it travels on the test's report, from whichever process ran the test)."""
    return lambda text: request.node.user_properties.append((FIGURE, text))


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


@pytest.fixture(scope="module")
def tiny_server(comfy_server, tmp_path_factory) -> ComfyClient:
    """The session's server with every model and input file the shipped workflows name
    (workflow_files.py)."""
    add_workflow_files(comfy_server, tmp_path_factory.mktemp("tiny_workflow_files"))
    return comfy_server


# tryfirst: before pytest-xdist's; and before tests/conftest.py's (tryfirst too, but registered first)
# gives the ungrouped their module's group
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """A version's tests carry its label (for the summary) and run in its groups: one for all that
    use its server, one per module for the rest."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "comfy_install" not in params:
            continue
        install = params["comfy_install"]
        item.user_properties.append((VERSION, install.label if install else None))  # None: no ComfyUI found
        if install is None:
            continue
        server = "comfy_server" in item.fixturenames
        group = f"comfyui-{install.label}" if server else f"{item.nodeid.split('::', 1)[0]}-comfyui-{install.label}"
        item.add_marker(pytest.mark.xdist_group(re.sub(r"[@\[\]]", "_", group)))  # xdist's separators


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the server log's tail to the report of a failing test that used the server."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _RUNNING and "comfy_server" in getattr(item, "fixturenames", ()):
        client = _RUNNING[-1]
        report.sections.append((f"ComfyUI {client.install.label} server log (last {LOG_TAIL_LINES} lines of "
                                f"{client.log_path})", client.log_tail()))
