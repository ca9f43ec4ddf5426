"""The README against the code and CI: its two commands (the main job, the tests) and .ci/run,
its contents table, the user's path on its first screen, the model files' sizes and total, the
picture, the release notes."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
mw = load_script("make_workflows")


def fenced_commands() -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", README, re.S)]


def command_under(heading: str) -> str:
    section = README.split(f"### {heading}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()


def test_the_two_commands_use_their_own_virtual_environment():
    """Neither command changes the packages of the Python that runs it: both make .venv, install
    into it and run with its python; the main job only the selftest's own packages."""
    main_job, tests = command_under("The main job"), command_under("The tests")
    assert main_job == ("python3 -m venv .venv && .venv/bin/pip install --no-deps -r requirements-selftest.txt && "
                        ".venv/bin/python scripts/selftest.py")
    assert tests.startswith("python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt && "
                            ".venv/bin/python -m pytest -q"), tests
    for command in fenced_commands():  # nowhere a pip install into the running python
        assert "python3 -m pip install" not in command, command


def test_ci_runs_the_readme_test_command():
    """.ci/run runs the README's test command: its install step (skipped while .venv was built from
    the same requirements files) and its pytest, in which it only changes the number of processes
    (a third one runs the unit tests while the ComfyUI venv is built) and lists the slowest tests;
    it installs nothing else with pip."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    steps = [line.split("||")[0].strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")]
    make, install, pytest_run = command_under("The tests").split(" && ")
    assert f"{make} && {install}" in steps
    assert " -n 2" in pytest_run
    assert [step for step in steps if step.startswith(".venv/bin/python -m pytest")] == [
        pytest_run.replace(" -n 2", " -n 3") + " --durations=30"]
    assert "pip install" not in ci.replace(f"{make} && {install}", "")


def test_the_readme_says_the_selftest_runs_with_comfyuis_python():
    assert "`scripts/selftest.py` also runs with ComfyUI's Python as it is, installing nothing" in README


def test_the_first_screen_is_the_users_path():
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings[:6] == ["Contents", "Install", "Model files", "Open a workflow", "The nodes", "Long videos"]
    order = ["Image-to-video and continuing a video", "Headless use", "Presets: other causal Wan2.1-1.3B checkpoints",
             "The native AR nodes or this pack?", "How the causal R2V works", "Benchmarks", "Development"]
    assert [h for h in headings if h in order] == order
    first_screen = README[:README.index("## Model files")]
    assert "![" in first_screen and "git clone" in first_screen and "What changed" not in README
    assert "Browse Templates" in README and "Workflow → Browse Templates" not in README


def test_every_contents_link_finds_its_heading():
    anchors = set()
    for heading in re.findall(r"^#{2,3} (.+)$", README, re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    links = re.findall(r"\]\(#([^)]+)\)", README)
    assert links and all(link in anchors for link in links), sorted(set(links) - anchors)


def test_model_files_sizes_and_total_match_the_workflows():
    """Each size is the one the workflows' notes state; the total is their sum."""
    table = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| `([^`]+)`[^|]*\| ([\d.]+) GB \|", README, re.M)}
    files = [mw.BASE, mw.LORA, mw.VACE, mw.UMT5, mw.WAN_VAE]
    assert table == {m.name: m.gigabytes for m in files}
    total = round(sum(m.gigabytes for m in files) + 1e-9, 1)
    without_vace = round(total - mw.VACE.gigabytes + 1e-9, 1)
    assert f"Total {total:g} GB; {without_vace:g} GB without VACE" in README


def test_the_picture_and_the_release_notes_exist():
    picture = ROOT / "docs" / "workflow.jpg"
    assert picture.is_file() and picture.stat().st_size < 250_000
    assert "(docs/workflow.jpg)" in README
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## Unreleased" in changelog and "### Workflows saved with an earlier release" in changelog
