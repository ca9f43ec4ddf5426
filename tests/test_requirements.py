"""The requirements files against the commands that install them (README, "Development"): the main
job installs requirements-selftest.txt with --no-deps, so that file must hold every package the
selftest imports, pinned, and few; the test command's requirements-dev.txt includes it."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAIN_JOB_LIMIT = 10  # packages the main job may install (issue 24)


def requirement_lines(name: str) -> list[str]:
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def main_job_pins() -> dict[str, str]:
    """{distribution: pinned version} of requirements-selftest.txt; a line that is not `name==version`
    fails here."""
    pins = {}
    for line in requirement_lines("requirements-selftest.txt"):
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][^\s;]*)", line)
        assert match, f"requirements-selftest.txt: {line!r} is not pinned as name==version"
        pins[match.group(1)] = match.group(2)
    return pins


def test_the_main_job_installs_few_packages_each_pinned_to_what_the_tests_use():
    pins = main_job_pins()
    assert 0 < len(pins) <= MAIN_JOB_LIMIT, sorted(pins)
    for name, version in pins.items():  # e.g. torch 2.13.0+cpu satisfies ==2.13.0
        assert importlib.metadata.version(name).split("+")[0] == version, name


def test_the_test_requirements_include_the_main_jobs():
    assert "-r requirements-selftest.txt" in requirement_lines("requirements-dev.txt")


def test_the_selftest_runs_with_the_main_job_packages_alone(tmp_path):
    """The selftest in a python that sees no site-packages, only links to this environment's copies of
    the main job's packages: what --no-deps installs is enough (leave one out, e.g. sympy, and the
    selftest stops at its import)."""
    site = tmp_path / "site-packages"
    site.mkdir()
    for name in main_job_pins():
        distribution = importlib.metadata.distribution(name)
        tops = {Path(str(file)).parts[0] for file in distribution.files or []}
        for top in sorted(tops - {"..", "__pycache__"}):
            (site / top).symlink_to(distribution.locate_file(top))
    out = tmp_path / "selftest.mp4"
    done = subprocess.run([sys.executable, "-S", str(ROOT / "scripts" / "selftest.py"), "--out", str(out)],
                          env=dict(os.environ, PYTHONPATH=str(site)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[-1].startswith("OK selftest") and out.stat().st_size > 0
