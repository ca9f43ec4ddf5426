#!/usr/bin/env python3
"""Load every UI example workflow in the real ComfyUI editor (headless Chromium) and report, per
workflow: missing node types, widgets that do not hold their intended value, differences between
the editor's `app.graphToPrompt()` and the workflow's API twin, whether any two nodes overlap once
a run's messages have reached the editor (the live panel on the samplers, the editor's player on
the nodes that save a video) and whether every sampler has its clip connected, and how it opens
from the template browser at 1600x1000 the way a user opens it (menu -> Browse Templates -> the pack
-> the card): the zoom it opens at (the editor draws nodes as empty boxes below 0.6) and whether its
note's text fits its box.

    # start each ComfyUI with the pack installed (default: the snapshots in ../shared/comfyui/)
    python3 scripts/check_workflows_in_editor.py --python /opt/comfy-venv/bin/python
    python3 scripts/check_workflows_in_editor.py --comfyui ~/ComfyUI --python ~/ComfyUI/venv/bin/python
    # or check a running server that has the pack installed
    python3 scripts/check_workflows_in_editor.py --server http://127.0.0.1:8188

A started server gets an isolated base directory (our pack in custom_nodes/, the example inputs
in input/, an empty file under every model name the workflows use, so the loaders list them) and the editor version its
requirements.txt pins (0.8.0: 1.35.9, 0.33.0: 1.49.6), through tests/integration/comfy_harness.py.

A workflow that needs another node pack (ComfyUI-Distributed) is checked where the server has it: the
servers started here get a copy from --extensions (default ../shared/comfyui-extensions/, as
<name>-<version>/); on a server without it the workflow is reported "not checked" with what it needs.

Needs Playwright (`pip install playwright`) and a Chromium; `playwright install` is not needed: the
browser is found at --chromium, $CHROMIUM or /usr/bin/chromium (Debian: `apt-get install chromium`).
Exit status: 0 every count is zero (overlaps after a run included) and every workflow opens at 0.6
or more with its note fitting, 1 a workflow has a problem, 2 the check could not run.

`--screenshot PATH` also saves what the last (newest) editor shows after opening the
reference-to-video workflow from the template browser (the README's picture), as a JPEG 1200
pixels wide, with the minimap hidden.
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
VIEWPORT = {"width": 1600, "height": 1000}  # the window a user opens the templates in
MIN_ZOOM = 0.6  # below it the editor draws nodes as empty boxes (its low-quality threshold)
SCREENSHOT_WIDTH = 1200
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
INPUT_FILES = {("LoadImage", "image"), ("LoadVideo", "file")}  # names in input/


sys.path.insert(0, str(Path(__file__).resolve().parent))
from editor_widgets import editor_ports  # noqa: E402  (the editor's widget rules)
from make_example_inputs import CONTROL, write_examples  # noqa: E402  the example pictures the workflows load
from make_workflows import LIVE_NODES, MODEL_INPUTS, Extension, workflow_files  # noqa: E402  models/ subfolders, file names

SCREENSHOT_OF = "longlive_vace_r2v"  # the workflow the README shows
# the minimap panel covers the graph's lower right corner in a picture (editors 1.35 and 1.49)
# the editor's dialogs fade and slide in; Playwright clicks only what has stopped moving, which made
# every template take ~5 s to open (~1.8 s without). The check reads the settled layout, which motion
# does not change.
NO_MOTION_CSS = "*, *::before, *::after {transition: none !important; animation: none !important}"
HIDE_MINIMAP_CSS = ("[data-testid=minimap-container], div:has(> [data-testid=close-minmap-button]), "
                    "div:has(> [data-testid=close-minimap-button]) {display: none !important}")


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
    name: str  # the UI file's name: what the template browser lists
    ui: dict
    api: dict
    needs: tuple[Extension, ...] = ()  # other node packs whose nodes it uses

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
    """Every UI workflow in `folder` with its API twin in `folder`/api/ (named as make_workflows
    names it, else by the same file name)."""
    known = {f.ui.name: f for f in workflow_files()}
    found = []
    for path in sorted(folder.glob("*.json")):
        files = known.get(path.name)
        twin = folder / "api" / (files.api.name if files else path.name)
        if not twin.is_file():
            raise CheckError(f"{path} has no API twin {twin}")
        found.append(Workflow(path.stem, json.loads(path.read_text(encoding="utf-8")),
                              json.loads(twin.read_text(encoding="utf-8")), files.needs if files else ()))
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
    zoom: float | None = None  # the scale it opens at from the template browser (None: not a template)
    note_fits: bool | None = None  # whether every note's text fits its box when opened so
    template_problems: list[str] = field(default_factory=list)
    overlaps_after_run: list[str] | None = None  # node rectangles that overlap once a run's views are in
    grown_after_run: dict[str, int] = field(default_factory=dict)  # node title -> pixels it grew by
    unsteerable: list[str] = field(default_factory=list)  # samplers whose clip input is not connected
    not_checked: str | None = None  # why it was not loaded: the server lacks a node pack it needs

    @property
    def ok(self) -> bool:
        """No problem found (a workflow not checked has none to show: `not_checked` says why)."""
        readable = self.zoom is None or (self.zoom >= MIN_ZOOM and self.note_fits is not False)
        return not (self.missing_nodes or self.widget_mismatches or self.prompt_differences
                    or self.template_problems or self.overlaps_after_run or self.unsteerable) and readable


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
        out = [f"editor {self.editor_version} ({self.label or self.server}), opened from the template browser at "
               f"{VIEWPORT['width']}x{VIEWPORT['height']}; overlaps: node rectangles overlapping after a run",
               f"  {'workflow':<46} {'zoom':>5} {'note fits':>9} {'missing nodes':>13} {'widget mismatches':>17} "
               f"{'prompt differences':>18} {'overlaps':>8}  grown after a run (px)"]
        for r in self.results:
            if r.not_checked:
                out.append(f"  {r.workflow:<46} not checked: {r.not_checked}")
                continue
            zoom = f"{r.zoom:.2f}" if r.zoom is not None else "-"
            fits = {None: "-", True: "yes", False: "NO"}[r.note_fits]
            overlaps = "-" if r.overlaps_after_run is None else len(r.overlaps_after_run)
            grown = ", ".join(f"{title} +{px}" for title, px in r.grown_after_run.items()) or "-"
            out.append(f"  {r.workflow:<46} {zoom:>5} {fits:>9} {len(r.missing_nodes):>13} "
                       f"{len(r.widget_mismatches):>17} {len(r.prompt_differences):>18} {overlaps:>8}  {grown}")
            out.extend(f"    - {line}" for line in r.missing_nodes + r.widget_mismatches + r.prompt_differences
                       + r.template_problems + (r.overlaps_after_run or [])
                       + [f"{title}: its clip input is not connected (it cannot be steered)" for title in r.unsteerable])
            if r.zoom is not None and r.zoom < MIN_ZOOM:
                out.append(f"    - opens at zoom {r.zoom:.2f}, below {MIN_ZOOM}: every node is an empty box")
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
    result.overlaps_after_run, result.grown_after_run, result.unsteerable = after_a_run(page)
    return result


# what a user sees once a template has opened: the zoom, the nodes, and for each note whether its
# text fits (the bottom of its last line within the note's box; both sides scale with the zoom)
OPENED_JS = """() => {
    const app = window.app;
    const notes = [...document.querySelectorAll('.comfy-markdown')].map(box => {
        const content = box.querySelector('.tiptap, .ProseMirror') || box;
        const last = content.lastElementChild;
        if (!last) return true;
        return last.getBoundingClientRect().bottom <= box.getBoundingClientRect().bottom + 1;
    });
    return {scale: app.canvas.ds.scale, nodes: app.graph._nodes.length, notes};
}"""


def template_module(url: str, names: list[str]) -> str | None:
    """The template browser's category of our workflows: the custom node folder GET
    /api/workflow_templates lists them under (None when it lists none of them)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/api/workflow_templates", timeout=60) as response:
            listed = json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError) as error:
        raise CheckError(f"cannot read {url}/api/workflow_templates: {error}") from None
    return next((module for module, templates in listed.items() if set(names) & set(templates)), None)


def open_from_template_browser(page, module: str, workflow: Workflow) -> tuple[float, bool, list[str]]:
    """Open `workflow` as a user does: the ComfyUI menu -> Browse Templates -> the pack's category ->
    its card. (zoom it opened at, whether its notes fit, problems)."""
    _close_dialogs(page)
    page.locator(".comfy-menu-button-wrapper").first.click()
    page.get_by_role("menuitem", name="Browse Templates").click()
    page.get_by_text(module, exact=True).first.click()
    card = page.locator(f'[data-testid="template-workflow-{workflow.name}"]')
    card.wait_for(timeout=30_000)
    card.click()
    expected = len(workflow.ui["nodes"])
    page.wait_for_function(f"() => window.app.graph._nodes.length === {expected} && "
                           "!document.querySelector('[data-testid=\"template-workflows-content\"]')", timeout=60_000)
    # the notes render their markdown, and the fit is applied on a later animation frame: wait until
    # the view has held still for a moment
    page.wait_for_function("() => [...document.querySelectorAll('.comfy-markdown')].length > 0 && "
                           "[...document.querySelectorAll('.comfy-markdown')].every(n => n.innerText.trim())",
                           timeout=60_000)
    _close_dialogs(page)  # a missing-models dialog, where the files are not there
    seen, previous = page.evaluate(OPENED_JS), None
    for _ in range(40):
        page.wait_for_timeout(250)
        previous, seen = seen, page.evaluate(OPENED_JS)
        if seen == previous:
            break
    problems = []
    if seen["nodes"] != expected:
        problems.append(f"the template opened with {seen['nodes']} nodes, the file has {expected}")
    if not seen["notes"]:
        problems.append("no note was drawn")
    return seen["scale"], all(seen["notes"]), problems


# A run as the editor sees it, from the messages a server sends, replayed into the editor's api:
# every live sampler gets its first chunk (the pack's extension adds its panel), then every node
# that saves a video reports it (the editor adds its own player) and every sampler its steering
# record. The clip shown is a real video (the example control video in input/), so the players
# load and size themselves as after a real run. Then the nodes' rectangles (title bar included)
# are compared pairwise.
VIDEO_OUTPUT_NODES = ("LongLiveSaveVideo", "LongLiveSampleToVideo", "LongLiveSaveFrames")
RUN_JS = """async ({live, videoNodes, clip}) => {
    const app = window.app, api = window.comfyAPI.api.api, graph = app.graph;
    const fire = (type, detail) => api.dispatchEvent(new CustomEvent(type, {detail}));
    const promptId = 'layout-check-' + Date.now();
    const before = Object.fromEntries(graph._nodes.map(n => [n.id, [...n.size]]));
    const unsteerable = graph._nodes.filter(n => ['LongLiveSampler', 'LongLiveSampleToVideo'].includes(n.type)
        && (n.inputs || []).find(i => i.name === 'clip')?.link == null).map(n => n.title);
    fire('execution_start', {prompt_id: promptId});
    for (const node of graph._nodes.filter(n => live.includes(n.type))) {
        fire('executing', String(node.id));  // the editors' api hands on the node id
        fire('longlive.chunk', {prompt_id: promptId, node: String(node.id), chunk: 1, chunks: 14, first_frame: 0,
                                frames: 9, preview: clip});
        fire('executed', {node: String(node.id), display_node: String(node.id), prompt_id: promptId,
                          output: {longlive_steering: [{frame: 9, text: 'a steer'}]}});
    }
    for (const node of graph._nodes.filter(n => videoNodes.includes(n.type))) {
        fire('executing', String(node.id));
        fire('executed', {node: String(node.id), display_node: String(node.id), prompt_id: promptId,
                          output: {images: [clip], animated: [true]}});
    }
    fire('executing', null);
    fire('execution_success', {prompt_id: promptId});
    // the editors add their players while drawing, once the video has loaded: draw until they are in
    const players = () => graph._nodes.filter(n => videoNodes.includes(n.type))
        .every(n => (n.widgets || []).some(w => w.name === 'video-preview'));
    for (let i = 0; i < 100 && !players(); i++) {
        app.canvas.setDirty(true, true); app.canvas.draw(true, true);
        await new Promise(r => setTimeout(r, 100));
    }
    for (let i = 0; i < 2; i++) {  // and let the layout settle
        app.canvas.setDirty(true, true); app.canvas.draw(true, true);
        await new Promise(r => setTimeout(r, 100));
    }
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    const rects = graph._nodes.map(n => ({name: `${n.title} (node ${n.id})`, x0: n.pos[0], y0: n.pos[1] - title,
                                          x1: n.pos[0] + n.size[0], y1: n.pos[1] + n.size[1]}));
    const overlaps = [];
    for (let a = 0; a < rects.length; a++) for (let b = a + 1; b < rects.length; b++) {
        const p = rects[a], q = rects[b];
        const w = Math.min(p.x1, q.x1) - Math.max(p.x0, q.x0), h = Math.min(p.y1, q.y1) - Math.max(p.y0, q.y0);
        if (w > 0 && h > 0) overlaps.push(`${p.name} and ${q.name} overlap by ${Math.round(w)}x${Math.round(h)} px`);
    }
    const grown = Object.fromEntries(graph._nodes.filter(n => n.size[1] > before[n.id][1] + 0.5)
        .map(n => [n.title, Math.round(n.size[1] - before[n.id][1])]));
    const panels = graph._nodes.filter(n => live.includes(n.type))
        .every(n => (n.widgets || []).some(w => w.name === 'longlive_live'));
    return {overlaps, grown, unsteerable, players: players(), panels};
}"""


def after_a_run(page) -> tuple[list[str], dict[str, int], list[str]]:
    """(overlapping node pairs, nodes grown by a run, samplers without clip) of the workflow open in
    `page`, once a run's messages have reached the editor (RUN_JS)."""
    seen = page.evaluate(RUN_JS, {"live": list(LIVE_NODES), "videoNodes": list(VIDEO_OUTPUT_NODES),
                                  "clip": {"filename": CONTROL, "subfolder": "", "type": "input"}})
    problems = list(seen["overlaps"])
    if not seen["players"]:
        problems.append(f"the editor showed no player of the saved video (is {CONTROL} in input/?)")
    if not seen["panels"]:
        problems.append("a live sampler got no panel from the pack's extension")
    return problems, seen["grown"], seen["unsteerable"]


# the close button of the topmost dialog: its top-right button (the editors label it with an icon only)
CLOSE_BUTTON_JS = """() => {
    const dialogs = [...document.querySelectorAll('.p-dialog, [role=dialog]')]
        .filter(d => d.getBoundingClientRect().width > 0);
    if (!dialogs.length) return null;
    const buttons = [...dialogs[dialogs.length - 1].querySelectorAll('button')].map(b => b.getBoundingClientRect())
        .filter(r => r.width > 0 && r.height > 0);
    if (!buttons.length) return {x: -1, y: -1};
    const best = buttons.reduce((a, b) => (b.right - b.top > a.right - a.top ? b : a));
    return {x: best.left + best.width / 2, y: best.top + best.height / 2};
}"""


def _close_dialogs(page) -> None:
    """Close what a user would close first: the template browser the editors open on a first start,
    a missing-models dialog left by the previous workflow (its top-right button, else Escape)."""
    for _ in range(4):
        button = page.evaluate(CLOSE_BUTTON_JS)
        if button is None:
            return
        if button["x"] < 0:
            page.keyboard.press("Escape")
        else:
            page.mouse.click(button["x"], button["y"])
        page.wait_for_timeout(400)


def _screenshot(page, path: Path) -> None:
    """The window as it is (a workflow just opened from the template browser), a JPEG of
    SCREENSHOT_WIDTH pixels."""
    from PIL import Image  # only here: the check itself needs no imaging library

    shot = page.screenshot(type="png")
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    height = round(image.height * SCREENSHOT_WIDTH / image.width)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.resize((SCREENSHOT_WIDTH, height), Image.LANCZOS).save(path, quality=82, optimize=True)


def _object_info(url: str) -> dict:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=60) as response:
            return json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError) as error:
        raise CheckError(f"cannot read {url}/object_info: {error}") from None


def _open_editor(browser, url: str):
    """A fresh window (its own storage: no workflow tabs of an earlier visit) with the editor loaded."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.goto(url, wait_until="load", timeout=PAGE_TIMEOUT_MS)
    page.add_style_tag(content=NO_MOTION_CSS)
    page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph "
                           "&& Object.keys(LiteGraph.registered_node_types).length > 0", timeout=PAGE_TIMEOUT_MS)
    return page


def check_server(url: str, workflows: list[Workflow], chromium: str, label: str = "",
                 expect_editor: str | None = None, screenshot: Path | None = None) -> EditorReport:
    """Open the editor at `url` at 1600x1000 and inspect every workflow; then, in a fresh window,
    open each one the server lists as a template from the template browser; with `screenshot`, a
    third window opens the reference-to-video template for the picture (the minimap hidden)."""
    try:
        from playwright.sync_api import Error as PlaywrightError, sync_playwright
    except ImportError as error:
        raise CheckError(f"Playwright is not installed ({error}): pip install playwright") from None
    module = template_module(url, [w.name for w in workflows])
    listed = _listed_templates(url, module)
    object_info = _object_info(url)
    lacking = {w.name: _lacking_packs(w, object_info) for w in workflows}
    checked = [w for w in workflows if not lacking[w.name]]
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = _open_editor(browser, url)
                version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || null")
                if expect_editor is not None and version != expect_editor:
                    raise CheckError(f"{url} serves editor {version}, expected {expect_editor}")
                declared = declared_inputs(object_info)
                results = {w.name: inspect(page, w, declared) for w in checked}
                page = _open_editor(browser, url)
                for workflow in checked:
                    if workflow.name in listed:  # else a workflow made up for a test, not served as a template
                        result = results[workflow.name]
                        result.zoom, result.note_fits, result.template_problems = \
                            open_from_template_browser(page, module, workflow)
                if screenshot is not None:
                    page = _open_editor(browser, url)
                    page.add_style_tag(content=HIDE_MINIMAP_CSS)
                    shown = next(w for w in workflows if w.name == _title_of(SCREENSHOT_OF))
                    open_from_template_browser(page, module, shown)
                    _screenshot(page, screenshot)
            finally:
                browser.close()
    except PlaywrightError as error:
        raise CheckError(f"the browser failed on {url}: {str(error).splitlines()[0]}") from None
    return EditorReport(url, version, [results.get(w.name) or Result(w.name, not_checked=lacking[w.name])
                                       for w in workflows], label)


def _lacking_packs(workflow: Workflow, object_info: dict) -> str | None:
    """What a workflow needs that the server lacks: the node packs whose nodes are not registered."""
    missing = [e for e in workflow.needs if not set(e.node_types) <= set(object_info)]
    if not missing:
        return None
    return (f"needs {', '.join(f'{e.name} {e.version} ({e.url})' for e in missing)}, which this server lacks "
            "(--extensions gives the servers this script starts a copy)")


def _title_of(name: str) -> str:
    return next(f.ui.stem for f in workflow_files() if f.name == name)


def _listed_templates(url: str, module: str | None) -> set[str]:
    if module is None:
        return set()
    with urllib.request.urlopen(url.rstrip("/") + "/api/workflow_templates", timeout=60) as response:
        return set(json.loads(response.read().decode("utf-8")).get(module, []))


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


def _install_needed_packs(base: Path, workflows: list[Workflow], extensions: Path | None) -> None:
    """Copy into custom_nodes/ every other node pack the workflows need that `extensions` holds (as
    <name>-<version>/); one it lacks leaves its workflows unchecked, and the report says so."""
    needed = {e for w in workflows for e in w.needs}
    for extension in sorted(needed, key=lambda e: e.name):
        source = extensions / f"{extension.name}-{extension.version}" if extensions else None
        if source is not None and source.is_dir():
            _harness().install_node_pack(base, source)


def check_checkouts(checkouts: list[Path], python: str, workflows: list[Workflow], chromium: str,
                    screenshot: Path | None = None, extensions: Path | None = None) -> list[EditorReport]:
    """Start each ComfyUI in turn (isolated base directory, its pinned editor, the other node packs
    the workflows need from `extensions`) and check it."""
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
            _install_needed_packs(base, workflows, extensions)
            write_examples(base / "input")  # as after the README's one command: Load Image shows them
            _write_placeholders(base, workflows)
            try:
                client = harness.start_server(install, base, base / "server.log")
            except RuntimeError as error:
                raise CheckError(f"ComfyUI {install.label} did not start: {error}") from None
            try:
                reports.append(check_server(client.url, workflows, chromium, label=f"ComfyUI {install.label}",
                                            expect_editor=install.frontend,
                                            screenshot=screenshot if checkout == checkouts[-1] else None))
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
    parser.add_argument("--extensions", type=Path, default=_harness().SHARED_EXTENSIONS, metavar="DIR",
                        help="folder of the other node packs a workflow needs, as <name>-<version>/ "
                             "(ComfyUI-Distributed-1.4.4), copied into the servers started here "
                             "(default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    parser.add_argument("--screenshot", type=Path, metavar="PATH",
                        help="save the window of the last editor checked (the newest) after opening the "
                             "reference-to-video workflow from the template browser, as a JPEG (the README's picture)")
    args = parser.parse_args(argv)
    try:
        chromium = find_chromium(args.chromium)
        if chromium is None:
            raise CheckError("no Chromium found: apt-get install chromium, or pass --chromium")
        workflows = load_workflows(args.workflows)
        if args.server:
            reports = [check_server(url, workflows, chromium,
                                    screenshot=args.screenshot if n == len(args.server) - 1 else None)
                       for n, url in enumerate(args.server)]
        else:
            checkouts = args.comfyui or default_checkouts()
            if not checkouts:
                raise CheckError("no ComfyUI to check: pass --server or --comfyui")
            reports = check_checkouts(checkouts, args.python, workflows, chromium, args.screenshot, args.extensions)
    except CheckError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for report in reports:
        print("\n".join(report.lines()))
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in reports], indent=2) + "\n", encoding="utf-8")
    ok = all(r.ok for r in reports)
    unchecked = sorted({r.workflow for report in reports for r in report.results if r.not_checked})
    print(("all workflows load cleanly" if ok else "problems found")
          + (f"; not checked: {', '.join(unchecked)}" if unchecked else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
