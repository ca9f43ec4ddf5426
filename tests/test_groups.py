"""The groups that share the tests between processes (`pytest -n 4`, tests/conftest.py): each test is in
exactly one group, each ComfyUI version's server cases in one group of their own; and pytest-xdist
keeps a group in one process with the pytest installed (pytest 9.2 broke that: requirements-dev.txt)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict

import pytest


def group_of(item: pytest.Item) -> str:
    [marker] = item.iter_markers("xdist_group")
    return marker.args[0]


def test_every_collected_test_has_one_group_and_each_server_one_group_per_version(request):
    """Over the tests of this session (all of them in CI, a subset when run alone)."""
    server_groups = defaultdict(set)  # version -> groups of the tests that use its server
    for item in request.session.items:
        assert len(list(item.iter_markers("xdist_group"))) == 1, item.nodeid
        install = getattr(item, "callspec", None) and item.callspec.params.get("comfy_install")
        if install and "comfy_server" in item.fixturenames:
            server_groups[install.label].add(group_of(item))
        elif not install:  # a test that needs no ComfyUI is grouped with its module
            assert group_of(item) == item.nodeid.split("::", 1)[0].split("@", 1)[0], item.nodeid
    assert all(len(groups) == 1 for groups in server_groups.values()), server_groups
    assert len(set().union(*server_groups.values())) == len(server_groups)


def test_a_group_runs_in_one_process(tmp_path):
    """Two modules whose marked tests form one group, beside unmarked ones, under `-n 2 --dist
    loadgroup`: every marked test reports the same worker."""
    log = tmp_path / "workers.txt"
    body = (f"import os, pytest\n"
            f"def record(name):\n"
            f"    with open({str(log)!r}, 'a') as f:\n"
            f"        f.write(name + ' ' + os.environ['PYTEST_XDIST_WORKER'] + '\\n')\n")
    for module in ("test_one", "test_two"):
        tests = "".join(f"@pytest.mark.xdist_group('shared')\ndef test_grouped_{n}():\n    record('grouped')\n"
                        f"def test_free_{n}():\n    record('free')\n" for n in range(4))
        (tmp_path / f"{module}.py").write_text(body + tests)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # none of this repository's settings
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                           "--dist", "loadgroup", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = [line.split() for line in log.read_text().splitlines()]
    assert len(ran) == 16
    assert len({worker for name, worker in ran if name == "grouped"}) == 1, ran


@pytest.mark.skipif("PYTEST_XDIST_WORKER" not in os.environ, reason="only under pytest -n")
def test_this_test_runs_in_its_modules_group(request):
    assert request.node.nodeid.endswith("@tests/test_groups.py"), request.node.nodeid
