"""Shared pytest setup: import the pack from the repo root; one torch thread; the groups that let
`pytest -n 4` (pytest-xdist, `--dist loadgroup` from pyproject.toml) share the work between its
processes without doing any of it twice.

The tiny test models are dominated by per-op overhead, which extra threads only add to on the
shared 2-core CI machine: each pytest process computes (and inductor compiles) on one thread, and
two processes use both cores.

The fixtures several test modules request (tests/integration/conftest.py has the ComfyUI ones):
`output_dir` and `micro_checkpoint`, the standalone host's output folder and a model loaded by the
pack's Model Loader node.

Groups (the `xdist_group` mark; one group runs whole, in one process): a test module is a group, so
its module-scoped fixtures are made once; tests that need a ComfyUI are grouped by
tests/integration/conftest.py (one group per ComfyUI server). The groups are queued longest first as
far as a test can tell: the servers' groups, then the other groups that need a ComfyUI, then the
modules that need none (those with a `slow` test first in each). In CI the first ones wait for the
ComfyUI venv to be built (COMFYUI_PYTHON_READY), which then has the cores to itself.
"""

import importlib
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "tests" / "integration") not in sys.path:  # the plugin named below, and its helpers
    sys.path.append(str(ROOT / "tests" / "integration"))

torch.set_num_threads(1)
# inductor compiles in this process too, not in a pool of one worker per core beside it (measured on
# the inductor test, cold cache: 23 s CPU against 27 s, and less wall time)
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

# the per-ComfyUI lines of the terminal summary: a plugin of the main process, which under
# pytest-xdist collects nothing (so never reads tests/integration/conftest.py)
pytest_plugins = ["comfy_summary"]

from helpers import MICRO, PACK, load_pack_standalone

from vace_core.testing import fixtures


@pytest.fixture
def output_dir(tmp_path, monkeypatch) -> Path:
    """Where the standalone host's save nodes write (LONGLIVE_OUTPUT_DIR), empty and not yet made."""
    out = tmp_path / "output"
    monkeypatch.setenv("LONGLIVE_OUTPUT_DIR", str(out))
    return out


@pytest.fixture
def micro_checkpoint(tmp_path, monkeypatch):
    """The MICRO model (helpers.py) as the pack's Model Loader node gives it through the standalone
    host: a causal safetensors file, no LoRA, fp32."""
    root = tmp_path / "models"
    (root / "diffusion_models").mkdir(parents=True)
    fixtures.write_wan_safetensors(root / "diffusion_models" / "micro.safetensors",
                                   fixtures.make_state_dict(MICRO, seed=0), causal_ar=True)
    monkeypatch.setenv("LONGLIVE_MODELS_DIR", str(root))
    load_pack_standalone()
    loader = importlib.import_module(f"{PACK}.nodes.loader")
    return loader.LongLiveModelLoader().load("micro.safetensors", "none", 1.0, "fp32")[0]


class _RootIsAFolder:
    """The repository root is the pack itself (it has an __init__.py). As a pytest Package it would
    be imported, under the name of the clone's folder, before the first test: a clone in a folder
    such as `ci-try`, not a Python name, then errors on every test. It holds no tests: a plain folder."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path: Path, parent: pytest.Collector):
        return pytest.Dir.from_parent(parent, path=path) if path == ROOT else None


def pytest_configure(config: pytest.Config) -> None:
    # registered as a plugin: a conftest's own hooks never see the folder above it
    config.pluginmanager.register(_RootIsAFolder(), "longlive-root-is-a-folder")
    config.pluginmanager.register(_GroupOrder(), "longlive-group-order")


def group_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return None
    return marker.args[0] if marker.args else marker.kwargs.get("name")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which names each test's group in its node id
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test without a group joins its module's."""
    for item in items:
        if group_of(item) is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


class _GroupOrder:
    """The groups ordered longest first (each group's tests stay together, in their order). Last:
    pytest's own hook reorders the tests by their fixtures' parameters (all of one ComfyUI version's
    first), which would undo it; registered as a plugin, as a conftest holds one hook of a name."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        def needing(fixture: str) -> set[str]:
            return {group_of(item) for item in items if fixture in getattr(item, "fixturenames", ())}

        server_groups, comfyui_groups = needing("comfy_server"), needing("comfy_install")
        slow_groups = {group_of(item) for item in items if item.get_closest_marker("slow")}

        def rank(group: str) -> int:
            # the servers' groups (the longest), then the other groups that need a ComfyUI, then the
            # rest; slow ones first in each. In CI the first processes then wait for the ComfyUI venv
            # while pip builds it on otherwise idle cores: measured, that beat running unit tests
            # beside pip (pytest 606 s against 713 s; the venv 133 s against 148 s)
            slow = group in slow_groups
            if group in server_groups:
                return 0
            if group in comfyui_groups:
                return 1 if slow else 2
            return 3 if slow else 4

        first_seen = {}
        for index, item in enumerate(items):
            first_seen.setdefault(group_of(item), index)
        items.sort(key=lambda item: (rank(group_of(item)), first_seen[group_of(item)]))
