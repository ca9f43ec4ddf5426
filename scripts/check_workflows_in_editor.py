#!/usr/bin/env python3
"""Load every UI example workflow in the real ComfyUI editor (headless Chromium) and report, per
workflow: missing node types, widgets that do not hold their intended value, and differences
between the editor's `app.graphToPrompt()` and the workflow's API twin.

    # start each ComfyUI with the pack installed (default: the snapshots in ../shared/comfyui/)
    python3 scripts/check_workflows_in_editor.py --python /opt/comfy-venv/bin/python
    python3 scripts/check_workflows_in_editor.py --comfyui ~/ComfyUI --python ~/ComfyUI/venv/bin/python
    # or check a running server that has the pack installed
    python3 scripts/check_workflows_in_editor.py --server http://127.0.0.1:8188

A started server gets an isolated base directory (our pack in custom_nodes/, an empty file under
every model and input name the workflows use, so the loaders list them) and the editor version its
requirements.txt pins (0.8.0: 1.35.9, 0.33.0: 1.49.6), through tests/integration/comfy_harness.py.

Needs Playwright (`pip install playwright`) and a Chromium; `playwright install` is not needed: the
browser is found at --chromium, $CHROMIUM or /usr/bin/chromium (Debian: `apt-get install chromium`).
Exit status: 0 every count is zero, 1 a workflow has a problem, 2 the check could not run.

`--thumbnails DIR` also writes a screenshot of each loaded workflow as DIR/<name>.jpg (the template
browser shows `example_workflows/<name>.jpg`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "example_workflows"
HARNESS = ROOT / "tests" / "integration"
EDITOR_ONLY = {"MarkdownNote", "Note"}
PAGE_TIMEOUT_MS = 180_000
THUMBNAIL_VIEWPORT, THUMBNAIL_WIDTH = {"width": 3600, "height": 1800}, 1280
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
INPUT_FILES = {("LoadImage", "image"), ("LoadVideo", "file")}  # names in input/


sys.path.insert(0, str(Path(__file__).resolve().parent))
from editor_widgets import editor_ports  # noqa: E402  (the editor's widget rules)
from make_workflows import MODEL_INPUTS  # noqa: E402  (node type, input) -> models/ subfolder


class CheckError(Exception):
    """The check could not run (no browser, no server, no editor): exit status 2."""


def find_chromium(explicit: str | None = None) -> str | None:
    for candidate in (explicit, os.environ.get("CHROMIUM"), *CHROMIUM_CANDIDATES):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


# ---------------------------------------------------------------------------------------------
# what each workflow should look like


@dataclass
class Workflow:
    name: str
    ui: dict
    api: dict

    def intended_widgets(self) -> dict[str, dict[str, Any]]:
        """node id -> {widget name: value} the editor must show: every literal input of the API
        twin, and the text of each note."""
        widgets = {node_id: {k: v for k, v in node["inputs"].items() if not _is_link(v)}
                   for node_id, node in self.api.items()}
        for node in self.ui["nodes"]:
            if node["type"] in EDITOR_ONLY:
                widgets[str(node["id"])] = {"text": node["widgets_values"][0]}
        return widgets


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def load_workflows(folder: Path = WORKFLOWS) -> list[Workflow]:
    found = []
    for path in sorted(folder.glob("*.json")):
        twin = folder / "api" / path.name
        if not twin.is_file():
            raise CheckError(f"{path} has no API twin {twin}")
        found.append(Workflow(path.stem, json.loads(path.read_text(encoding="utf-8")),
                              json.loads(twin.read_text(encoding="utf-8"))))
    if not found:
        raise CheckError(f"no workflows in {folder}")
    return found


def placeholder_files(workflows: list[Workflow]) -> dict[str, set[str]]:
    """models/<folder> or "input" -> the file names the workflows' loaders name."""
    files: dict[str, set[str]] = {}
    for workflow in workflows:
        for node in workflow.api.values():
            for name, value in node["inputs"].items():
                key = (node["class_type"], name)
                if isinstance(value, str) and (key in MODEL_INPUTS or key in INPUT_FILES):
                    folder = f"models/{MODEL_INPUTS[key]}" if key in MODEL_INPUTS else "input"
                    files.setdefault(folder, set()).add(value)
    return files


# ---------------------------------------------------------------------------------------------
# comparing


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return a == b


def declared_inputs(object_info: dict) -> dict[str, set[str]]:
    """node type -> the inputs its definition declares (required, optional)."""
    return {name: {port.name for port in editor_ports(entry)} for name, entry in object_info.items()}


def prompt_differences(expected: dict, actual: dict, declared: dict[str, set[str]] | None = None
                       ) -> tuple[list[str], list[str]]:
    """(one line per difference between two API graphs: nodes, class types, inputs, titles;
    inputs the editor adds that the node does not declare, which the server ignores: e.g. the
    preview widget 1.49 adds to Load Video)."""
    lines, ignored = [], []
    for node_id in sorted(set(expected) | set(actual), key=lambda i: (len(i), i)):
        want, got = expected.get(node_id), actual.get(node_id)
        if want is None or got is None:
            lines.append(f"node {node_id}: {'not in the API twin' if want is None else 'missing from the editor'}")
            continue
        if want["class_type"] != got.get("class_type"):
            lines.append(f"node {node_id}: class_type {got.get('class_type')!r}, expected {want['class_type']!r}")
        known = (declared or {}).get(want["class_type"])
        for name in sorted(set(want["inputs"]) | set(got.get("inputs", {}))):
            a, b = want["inputs"].get(name, "<absent>"), got.get("inputs", {}).get(name, "<absent>")
            if name not in want["inputs"] and known is not None and name not in known:
                ignored.append(f"node {node_id} ({want['class_type']}).{name} = {b!r}")
            elif not _same(a, b):
                lines.append(f"node {node_id} ({want['class_type']}).{name}: editor {b!r}, API twin {a!r}")
        title_want, title_got = want.get("_meta", {}).get("title"), got.get("_meta", {}).get("title")
        if title_want != title_got:
            lines.append(f"node {node_id}: title {title_got!r}, expected {title_want!r}")
    return lines, ignored


@dataclass
class Result:
    workflow: str
    missing_nodes: list[str] = field(default_factory=list)
    widget_mismatches: list[str] = field(default_factory=list)
    prompt_differences: list[str] = field(default_factory=list)
    ignored_by_server: list[str] = field(default_factory=list)  # editor-only inputs, not differences

    @property
    def ok(self) -> bool:
        return not (self.missing_nodes or self.widget_mismatches or self.prompt_differences)


@dataclass
class EditorReport:
    server: str
    editor_version: str | None
    results: list[Result]
    label: str = ""

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def lines(self) -> list[str]:
        out = [f"editor {self.editor_version} ({self.label or self.server})",
               f"  {'workflow':<30} {'missing nodes':>13} {'widget mismatches':>17} {'prompt differences':>18}"]
        for r in self.results:
            out.append(f"  {r.workflow:<30} {len(r.missing_nodes):>13} {len(r.widget_mismatches):>17} "
                       f"{len(r.prompt_differences):>18}")
            out.extend(f"    - {line}" for line in r.missing_nodes + r.widget_mismatches + r.prompt_differences)
            out.extend(f"    (an input the node does not declare, ignored by the server: {line})"
                       for line in r.ignored_by_server)
        return out

    def as_dict(self) -> dict:
        return {"server": self.server, "label": self.label, "editor_version": self.editor_version,
                "results": [r.__dict__ for r in self.results]}


# ---------------------------------------------------------------------------------------------
# the page

INSPECT_JS = """async (workflow) => {
    const app = window.app;
    const types = [...new Set(workflow.nodes.map(n => n.type))];
    const missing = types.filter(t => !LiteGraph.registered_node_types[t]);
    await app.loadGraphData(workflow);
    const nodes = {};
    for (const node of app.graph._nodes) {
        nodes[String(node.id)] = {type: node.type, title: node.title,
            widgets: (node.widgets || []).map(w => [w.name, w.value === undefined ? null : w.value])};
    }
    const prompt = await app.graphToPrompt();
    return {missing, nodes, output: prompt.output};
}"""


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def inspect(page, workflow: Workflow, declared: dict[str, set[str]] | None = None) -> Result:
    seen = page.evaluate(INSPECT_JS, workflow.ui)
    result = Result(workflow.name, missing_nodes=[f"node type {t!r} is not registered" for t in seen["missing"]])
    for node_id, wanted in workflow.intended_widgets().items():
        node = seen["nodes"].get(node_id)
        if node is None:
            result.widget_mismatches.append(f"node {node_id}: not in the loaded graph")
            continue
        widgets = dict((name, value) for name, value in node["widgets"])
        for name, value in wanted.items():
            if name not in widgets:
                result.widget_mismatches.append(f"node {node_id} ({node['type']}): no widget {name!r}")
            elif not _same(widgets[name], value):
                result.widget_mismatches.append(f"node {node_id} ({node['type']}).{name}: shows "
                                                f"{_json_safe(widgets[name])!r}, intended {value!r}")
    result.prompt_differences, result.ignored_by_server = prompt_differences(workflow.api, seen["output"], declared)
    return result


GRAPH_BOX_JS = """() => {
    const canvas = window.app.canvas, ds = canvas.ds, rect = canvas.canvas.getBoundingClientRect();
    const nodes = window.app.graph._nodes, title = 30, pad = 12;
    const sx = v => rect.left + (v + ds.offset[0]) * ds.scale, sy = v => rect.top + (v + ds.offset[1]) * ds.scale;
    const x0 = Math.min(...nodes.map(n => sx(n.pos[0]))) - pad;
    const x1 = Math.max(...nodes.map(n => sx(n.pos[0] + n.size[0]))) + pad;
    const y0 = Math.min(...nodes.map(n => sy(n.pos[1] - title))) - pad;
    const y1 = Math.max(...nodes.map(n => sy(n.pos[1] + n.size[1]))) + pad;
    return {x: Math.max(0, x0), y: Math.max(0, y0), width: x1 - Math.max(0, x0), height: y1 - Math.max(0, y0)};
}"""


def _thumbnail(page, path: Path) -> None:
    """A picture of the whole graph, as the template browser shows it: the editor's own "fit view"
    command, cropped to the nodes, without dialogs or toasts over it. Use an editor that still draws
    text at that zoom (1.35 does; 1.49 draws empty boxes below 50 %)."""
    page.keyboard.press("Escape")
    page.evaluate("""async () => {
        document.querySelectorAll('.p-toast, .p-dialog-mask').forEach(e => e.remove());
        await window.app.extensionManager.command.execute('Comfy.Canvas.FitView');
    }""")
    page.wait_for_timeout(800)  # the canvas redraws on the next animation frames
    box = page.evaluate(GRAPH_BOX_JS)
    path.parent.mkdir(parents=True, exist_ok=True)
    shot = page.screenshot(type="png", clip=box)
    from PIL import Image  # only here: the check itself needs no imaging library

    image = Image.open(io.BytesIO(shot)).convert("RGB")
    height = round(image.height * THUMBNAIL_WIDTH / image.width)
    image.resize((THUMBNAIL_WIDTH, height), Image.LANCZOS).save(path, quality=85)


def _object_info(url: str) -> dict:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=60) as response:
            return json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError) as error:
        raise CheckError(f"cannot read {url}/object_info: {error}") from None


def check_server(url: str, workflows: list[Workflow], chromium: str, label: str = "",
                 expect_editor: str | None = None, thumbnails: Path | None = None) -> EditorReport:
    """Open the editor at `url` and inspect every workflow (one page, loaded once)."""
    try:
        from playwright.sync_api import Error as PlaywrightError, sync_playwright
    except ImportError as error:
        raise CheckError(f"Playwright is not installed ({error}): pip install playwright") from None
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                # thumbnails: a viewport large enough that the fitted graph is drawn with its text
                page = browser.new_page(viewport=THUMBNAIL_VIEWPORT if thumbnails else {"width": 1920, "height": 1080})
                page.goto(url, wait_until="load", timeout=PAGE_TIMEOUT_MS)
                page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph "
                                       "&& Object.keys(LiteGraph.registered_node_types).length > 0",
                                       timeout=PAGE_TIMEOUT_MS)
                version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || null")
                if expect_editor is not None and version != expect_editor:
                    raise CheckError(f"{url} serves editor {version}, expected {expect_editor}")
                declared = declared_inputs(_object_info(url))
                results = []
                for workflow in workflows:
                    results.append(inspect(page, workflow, declared))
                    if thumbnails is not None:
                        _thumbnail(page, thumbnails / f"{workflow.name}.jpg")
            finally:
                browser.close()
    except PlaywrightError as error:
        raise CheckError(f"the browser failed on {url}: {str(error).splitlines()[0]}") from None
    return EditorReport(url, version, results, label)


# ---------------------------------------------------------------------------------------------
# servers started here


def _harness():
    if str(HARNESS) not in sys.path:
        sys.path.insert(0, str(HARNESS))
    import comfy_harness

    return comfy_harness


def _write_placeholders(base: Path, workflows: list[Workflow]) -> None:
    for folder, names in placeholder_files(workflows).items():
        for name in names:
            target = base / folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.write_bytes(b"")


def check_checkouts(checkouts: list[Path], python: str, workflows: list[Workflow], chromium: str,
                    thumbnails: Path | None = None) -> list[EditorReport]:
    """Start each ComfyUI in turn (isolated base directory, its pinned editor) and check it."""
    harness = _harness()
    reports = []
    for checkout in checkouts:
        if not (checkout / "main.py").is_file():
            raise CheckError(f"{checkout} is not a ComfyUI checkout (no main.py)")
        install = harness.ComfyInstall(checkout, python, harness._version_of(checkout),
                                       harness._pinned_frontend(checkout))
        with tempfile.TemporaryDirectory(prefix=f"editor_check_{install.label}_") as tmp:
            base = Path(tmp)
            for folder in ("models", "input", "output", "custom_nodes"):
                (base / folder).mkdir()
            harness._install_packs(base / "custom_nodes")
            _write_placeholders(base, workflows)
            try:
                client = harness.start_server(install, base, base / "server.log")
            except RuntimeError as error:
                raise CheckError(f"ComfyUI {install.label} did not start: {error}") from None
            try:
                reports.append(check_server(client.url, workflows, chromium, label=f"ComfyUI {install.label}",
                                            expect_editor=install.frontend,
                                            thumbnails=thumbnails if not reports else None))
            finally:
                harness.stop_server(client.process)
    return reports


def default_checkouts() -> list[Path]:
    snapshots = ROOT.parent / "shared" / "comfyui"
    found = [p.parent for p in snapshots.glob("*/main.py")]
    return sorted(found, key=lambda p: [int(x) if x.isdigit() else x for x in p.name.split(".")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", action="append", default=[], metavar="URL",
                        help="check a running ComfyUI that has the pack installed (repeatable)")
    parser.add_argument("--comfyui", action="append", default=[], metavar="DIR", type=Path,
                        help="start this ComfyUI checkout and check it (repeatable; default: ../shared/comfyui/*)")
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON", sys.executable),
                        help="the python that runs the checkouts (default $COMFYUI_PYTHON)")
    parser.add_argument("--chromium", help="Chromium executable (default $CHROMIUM or /usr/bin/chromium)")
    parser.add_argument("--workflows", type=Path, default=WORKFLOWS, help="folder of UI workflows with api/ twins")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    parser.add_argument("--thumbnails", type=Path, metavar="DIR",
                        help="write a screenshot per workflow (from the first editor checked)")
    args = parser.parse_args(argv)
    try:
        chromium = find_chromium(args.chromium)
        if chromium is None:
            raise CheckError("no Chromium found: apt-get install chromium, or pass --chromium")
        workflows = load_workflows(args.workflows)
        if args.server:
            reports = [check_server(url, workflows, chromium, thumbnails=args.thumbnails if n == 0 else None)
                       for n, url in enumerate(args.server)]
        else:
            checkouts = args.comfyui or default_checkouts()
            if not checkouts:
                raise CheckError("no ComfyUI to check: pass --server or --comfyui")
            reports = check_checkouts(checkouts, args.python, workflows, chromium, args.thumbnails)
    except CheckError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for report in reports:
        print("\n".join(report.lines()))
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in reports], indent=2) + "\n", encoding="utf-8")
    ok = all(r.ok for r in reports)
    print("all workflows load cleanly" if ok else "problems found")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
