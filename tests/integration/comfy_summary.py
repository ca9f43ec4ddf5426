"""The terminal summary's lines per ComfyUI version: the tests' outcomes and the figures they
reported (`report_figure`).

A plugin (tests/conftest.py names it in `pytest_plugins`), not part of tests/integration/conftest.py:
under pytest-xdist the main process prints the summary but collects no test, so it never reads that
conftest. The tests' version and figures travel on their reports' user_properties, which xdist
carries back from the process that ran them.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from comfy_harness import NO_COMFYUI, find_installs

VERSION = "comfyui_version"  # user_properties entry: the label of the ComfyUI a test ran against
FIGURE = "comfyui_figure"  # user_properties entry: one line for the summary

_OUTCOMES: dict[str | None, Counter] = defaultdict(Counter)  # version (None: none found) -> outcome -> count
_FIGURES: dict[str, list[str]] = defaultdict(list)  # version -> lines for the summary


def _entries(report: pytest.TestReport, name: str) -> list[str]:
    return [value for key, value in report.user_properties if key == name]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    versions = _entries(report, VERSION)
    if not versions:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _OUTCOMES[versions[0]]["skipped" if report.skipped else report.outcome] += 1
    if report.when == "call":
        _FIGURES[versions[0]].extend(_entries(report, FIGURE))


def pytest_terminal_summary(terminalreporter) -> None:
    if not _OUTCOMES:  # no test that needs a ComfyUI ran: nothing to say
        return
    write = terminalreporter.write_line
    installs, problems = find_installs()
    if not installs:
        write(f"ComfyUI versions tested: none ({'; '.join(problems) or NO_COMFYUI})")
        return
    write("ComfyUI versions tested:")
    for install in installs:
        counts = _OUTCOMES.get(install.label, Counter())
        tally = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "no tests run"
        write(f"  {install.label:<8} {install.dir} (editor {install.frontend or '?'}, python {install.python}): "
              f"{tally}")
        for line in _FIGURES.get(install.label, []):
            write(f"           {line}")
