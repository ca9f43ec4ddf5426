"""The README against the code and CI: its length, its two commands (the main job, the tests) and
.ci/run, its contents table, the user's path on its first screen, the model files' sizes and total,
the pictures, the release notes. (Its node table, its links and the material moved to docs/ are
checked in test_docs.py.)"""

from __future__ import annotations

import re
from pathlib import Path

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
mw = load_script("make_workflows")


def fenced_commands(text: str = README) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


DOCS_COMMANDS = [command for page in sorted((ROOT / "docs").glob("*.md"))
                 for command in fenced_commands(page.read_text(encoding="utf-8"))]


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
    for command in fenced_commands() + DOCS_COMMANDS:  # nowhere a pip install into the running python
        assert "python3 -m pip install" not in command, command


def test_ci_runs_the_readme_test_command():
    """.ci/run runs the README's test command: its install step (skipped while .venv was built from
    the same requirements files) and its pytest as written; it installs nothing else with pip."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    steps = [line.split("||")[0].strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")]
    make, install, pytest_run = command_under("The tests").split(" && ")
    assert f"{make} && {install}" in steps
    assert [step for step in steps if step.startswith(".venv/bin/python -m pytest")] == [pytest_run]
    assert "pip install" not in ci.replace(f"{make} && {install}", "")


def test_the_readme_says_the_selftest_runs_with_comfyuis_python():
    assert "`scripts/selftest.py` also runs with ComfyUI's Python as it is, installing nothing" in README


def test_the_readme_is_for_users_and_short():
    """At most 300 lines (the design, benchmarks, presets' provenance, development and the library
    live in docs/); only the user's sections, in the user's order."""
    assert len(README.splitlines()) <= 300
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings == ["Contents", "Install", "Model files", "Open a workflow", "The nodes", "Long videos and limits",
                        "Image-to-video and continuing a video", "Watch it grow, steer it live",
                        "Several GPUs and machines", "Headless use", "Troubleshooting", "Development", "License"]


def test_the_first_screen_is_the_users_path():
    """The first 45 lines (a screen) show what the pack does, the picture, the way to a first video and
    the install command."""
    first_screen = "\n".join(README.splitlines()[:45])
    assert "![" in first_screen and "git clone" in first_screen and "What changed" not in README
    for step in ("(#install)", "(#model-files)", "(#open-a-workflow)", "**Run**"):
        assert step in first_screen.split("## Contents")[0], step
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


def test_the_pictures_and_the_release_notes_exist():
    for name in ("workflow.jpg", "live-steering.png"):
        picture = ROOT / "docs" / name
        assert picture.is_file() and picture.stat().st_size < 250_000, name
        assert f"(docs/{name})" in README
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## Unreleased" in changelog and "### Workflows saved with an earlier release" in changelog
