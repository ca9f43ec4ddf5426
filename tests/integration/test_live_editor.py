"""The editor extension (web/longlive.js) in both tested editors, in headless Chromium: the running
sampler node shows the growing video and takes a steer from its text box.

The tiny T2V workflow (14 chunks) is loaded with the editor's own `app.loadApiJson` and queued with
its Queue command, so the editor is the client that receives the `longlive.chunk` messages. The test
waits for the node's player to play a chunk clip, types a text into the node's box and presses its
button, and checks the server took it (the history's steering record holds that text at the frame
the box reported). It also checks that the panel is neither saved with the workflow nor queued, and
that the page had no JavaScript error. Screenshots go to $LONGLIVE_SCREENSHOTS (default: the test's
temporary folder); their paths are shown in the summary.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from helpers import load_script
from test_live_server import write_nan_embedding
from test_workflows_e2e import HEIGHT, WIDTH, _streaming_t2v

qw = load_script("queue_workflow")
LENGTH = 4 * (3 * 14 - 1) + 1  # 14 chunks
# The tiny model makes a chunk in a few milliseconds; the run must last long enough for a browser
# to show chunks and take a steer while it runs: the streaming node (which decodes every chunk
# with the tiny real Wan VAE as it goes, about half a second each) with 20 denoising steps (on a
# LongLive Sampler Settings node).
STEPS = ",".join(str(t) for t in range(1000, 0, -50))
PAGE_TIMEOUT_MS = 180_000


def _sampler(graph: dict) -> str:
    return next(i for i, n in graph.items() if n["class_type"] == "LongLiveSampleToVideo")


def _screenshots(tmp_path: Path, label: str) -> Path:
    folder = Path(os.environ.get("LONGLIVE_SCREENSHOTS") or tmp_path) / f"editor-{label}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


SHOWN_VIDEO_JS = """() => {  // the player's visible <video>: its clip, whether a frame is decoded, and that frame's mean
    const v = [...document.querySelectorAll('.longlive-live-video')].find((e) => e.style.visibility === 'visible');
    if (!v || v.readyState < 2) return null;
    const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
    const x = c.getContext('2d'); x.drawImage(v, 0, 0); const d = x.getImageData(0, 0, c.width, c.height).data;
    let sum = 0; for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
    return {src: v.currentSrc, width: v.videoWidth, height: v.videoHeight, mean: sum / (3 * d.length / 4)}; }"""


def _load(page, graph: dict, node_id: str, tries: int = 10) -> None:
    """Load the API graph with the editor's own `loadApiJson`. The editor opens or restores a
    workflow of its own once its start-up has finished, which may replace a graph loaded before:
    load until the graph holds the node."""
    page.wait_for_load_state("networkidle", timeout=PAGE_TIMEOUT_MS)
    for _ in range(tries):
        page.evaluate("async (graph) => { await window.comfyAPI.app.app.loadApiJson(graph, 'live.json'); }", graph)
        page.wait_for_timeout(1500)
        if page.evaluate("(id) => { const app = window.comfyAPI.app.app;"
                         "return (app.rootGraph ?? app.graph)?.getNodeById(Number(id))?.type ?? null; }",
                         node_id) == graph[node_id]["class_type"]:
            return
    raise AssertionError(f"the editor did not keep the loaded graph after {tries} tries")


def _close_dialogs(page) -> None:
    """Close what the editor may open over the canvas on a first visit (1.35 opens the template browser)."""
    page.keyboard.press("Escape")
    page.evaluate("() => document.querySelectorAll('.p-dialog-mask, .p-toast').forEach((e) => e.remove())")


def _node_shot(page, node_id: str, path: Path) -> None:
    """A screenshot of the node (its panel and a margin around it). The canvas is redrawn first: the
    editor grows a node for its own video preview but marks only the background for redrawing."""
    page.evaluate("() => window.comfyAPI.app.app.canvas.setDirty(true, true)")
    page.wait_for_timeout(500)
    box = page.evaluate("""(id) => {
        const app = window.comfyAPI.app.app, node = (app.rootGraph ?? app.graph).getNodeById(Number(id));
        const canvas = app.canvas, ds = canvas.ds, rect = canvas.canvas.getBoundingClientRect();
        const x = rect.left + (node.pos[0] + ds.offset[0]) * ds.scale, y = rect.top + (node.pos[1] - 40 + ds.offset[1]) * ds.scale;
        return {x: Math.max(0, x - 20), y: Math.max(0, y - 20), width: node.size[0] * ds.scale + 40,
                height: (node.size[1] + 40) * ds.scale + 40};
    }""", node_id)
    page.screenshot(path=str(path), clip=box)


BOX_TEXT = "the fox stops and looks at the camera"
STEER_THEN_REPLACE_JS = """async ([text, other]) => {  // the box's steer, then another client's at once
    const status = () => document.querySelector('.longlive-steer-status').textContent;
    document.querySelector('.longlive-steer-text').value = text;
    document.querySelector('.longlive-steer-button').click();
    while (/^sending/.test(status())) await new Promise((r) => setTimeout(r, 5));
    const promptId = window.__longliveChunks[0].prompt_id, node = window.__longliveChunks[0].node;
    const response = await fetch('/longlive/steer', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                      body: JSON.stringify({prompt_id: promptId, node, text: other})});
    return [status(), await response.json()]; }"""


def _steer_status(page) -> str:
    return page.evaluate("() => document.querySelector('.longlive-steer-status').textContent")


def _steer_then_replace(page, tries: int = 3) -> tuple[str, int, str]:
    """Steer from the box, then send another text for the same boundary as another client would:
    (what the box said, the frame, the replacing text). The boundary may pass between the two
    (a chunk takes about a second here, the two requests a few milliseconds): then again."""
    for attempt in range(tries):
        other = f"a hare runs across the snow ({attempt + 1})"
        said, answer = page.evaluate(STEER_THEN_REPLACE_JS, [BOX_TEXT, other])
        assert re.match(rf"“{BOX_TEXT}” takes over at frame \d+$", said), said
        frame = int(re.search(r"frame (\d+)", said).group(1))
        if answer["replaces_pending"] and answer["takes_effect_at_frame"] == frame:
            return said, frame, other
        page.wait_for_function("() => /took over/.test(document.querySelector('.longlive-steer-status').textContent)",
                               timeout=PAGE_TIMEOUT_MS)
    raise AssertionError(f"no steer was replaced in {tries} tries")


def test_running_node_shows_the_growing_video_and_takes_a_steer(tiny_server, tmp_path, report_figure):
    editor = load_script("check_workflows_in_editor")
    chromium = editor.find_chromium()
    if chromium is None:
        pytest.skip("no Chromium (apt-get install chromium): the editor check cannot run here")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    graph = _streaming_t2v(LENGTH, "live_editor")
    sampler = _sampler(graph)
    dim = graph[next(i for i, n in graph.items() if n["class_type"] == "LongLiveTestCLIP")]["inputs"]["dim"]
    broken = f"the fox sleeps embedding:{write_nan_embedding(tiny_server, dim)}"
    # the steps on a LongLive Sampler Settings node, its other widgets at the server's defaults
    spec = tiny_server.get_object_info("LongLiveSamplerSettings")["LongLiveSamplerSettings"]["input"]["required"]
    graph["950"] = {"class_type": "LongLiveSamplerSettings", "_meta": {"title": "LongLive Sampler Settings"},
                    "inputs": {**{name: options[1]["default"] for name, options in spec.items()}, "steps": STEPS}}
    graph[sampler]["inputs"]["settings"] = ["950", 0]
    qw.apply_overrides(graph, qw.Overrides(seed=303))
    shots = _screenshots(tmp_path, tiny_server.install.label)
    errors: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium,
                                             args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(tiny_server.url, wait_until="load", timeout=PAGE_TIMEOUT_MS)
            page.wait_for_function("() => window.comfyAPI?.app?.app?.graph && window.LiteGraph "
                                   "&& LiteGraph.registered_node_types['LongLiveSampleToVideo']", timeout=PAGE_TIMEOUT_MS)
            version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || null")
            assert version == tiny_server.install.frontend
            _load(page, graph, sampler)
            _close_dialogs(page)
            saved_before = page.evaluate("""(id) => {  // the seed stays as it is ('fixed'), so nothing else may change
                const app = window.comfyAPI.app.app, node = (app.rootGraph ?? app.graph).getNodeById(Number(id));
                const control = node.widgets.find((w) => w.name === 'control_after_generate');
                if (control) control.value = 'fixed';
                return JSON.stringify(node.serialize().widgets_values); }""", sampler)
            page.evaluate("""() => { window.__longliveChunks = []; window.__statusLog = [];
                window.__prompts = []; window.__finished = [];
                const api = window.comfyAPI.api.api;
                api.addEventListener('execution_start', (e) => window.__prompts.push(e.detail.prompt_id));
                api.addEventListener('execution_success', (e) => window.__finished.push(e.detail.prompt_id));
                window.comfyAPI.api.api.addEventListener('longlive.chunk', (e) => window.__longliveChunks.push(e.detail));
                // what the panel's status line said, in order: every change, however briefly shown
                new MutationObserver(() => {
                    const text = document.querySelector('.longlive-live-status')?.textContent;
                    if (text && text !== window.__statusLog[window.__statusLog.length - 1]) window.__statusLog.push(text);
                }).observe(document.body, {subtree: true, childList: true, characterData: true});
                return window.comfyAPI.app.app.queuePrompt(0, 1); }""")
            page.evaluate("""(id) => {  // the whole node in view, panel included, at a zoom that draws everything
                const app = window.comfyAPI.app.app, node = (app.rootGraph ?? app.graph).getNodeById(Number(id));
                app.canvas.ds.scale = 0.8;
                app.canvas.centerOnNode(node);
                app.canvas.setDirty(true, true); }""", sampler)
            # the node runs: its steering box appears with the first chunk; a steer from it at once, and
            # another client's text for the same boundary right after it: the box says its text was replaced
            page.wait_for_function("() => getComputedStyle(document.querySelector('.longlive-steer') ?? document.body)"
                                   ".display === 'flex'", timeout=PAGE_TIMEOUT_MS)
            _close_dialogs(page)
            said, frame, replaced = _steer_then_replace(page)
            page.wait_for_function("() => /^replaced: /.test(document.querySelector('.longlive-steer-status')"
                                   ".textContent)", timeout=PAGE_TIMEOUT_MS)
            shown_replaced = _steer_status(page)
            assert shown_replaced == f"replaced: “{BOX_TEXT}” was replaced by a later text, “{replaced}” took over " \
                                     f"at frame {frame}", shown_replaced
            _node_shot(page, sampler, shots / "1-replaced.png")
            # Hold from the panel: the run waits at the next boundary until Resume
            page.locator(".longlive-hold-button").click()
            page.wait_for_function("() => /^held before frame/.test(document.querySelector('.longlive-steer-status')"
                                   ".textContent)", timeout=PAGE_TIMEOUT_MS)
            held_at = page.evaluate("() => window.__longliveChunks.length")
            page.wait_for_timeout(1500)
            assert page.evaluate("() => window.__longliveChunks.length") == held_at  # nothing made while held
            page.locator(".longlive-hold-button").click()  # it reads Resume now
            page.wait_for_function("() => /^resumed at frame \\d+ by Resume/.test(document.querySelector("
                                   "'.longlive-steer-status').textContent)", timeout=PAGE_TIMEOUT_MS)
            # a text whose embedding file holds NaN: taken, then dropped at its boundary; the run goes on
            page.locator(".longlive-steer-text").fill(broken)
            page.locator(".longlive-steer-button").click()
            page.wait_for_function("() => /^dropped at frame/.test(document.querySelector('.longlive-steer-status')"
                                   ".textContent)", timeout=PAGE_TIMEOUT_MS)
            shown_dropped = _steer_status(page)
            assert shown_dropped.startswith("dropped at frame ") and f"“{broken}” could not be encoded" in \
                shown_dropped and shown_dropped.endswith("the prompt stays as it was"), shown_dropped
            _node_shot(page, sampler, shots / "2-dropped.png")
            # the node's player shows the chunk clips served by /view, one after another, while it runs
            page.wait_for_function("() => /chunk ([2-9]|1[0-4])\\/14 .*live/.test("
                                   "document.querySelector('.longlive-live-status')?.textContent ?? '')",
                                   timeout=PAGE_TIMEOUT_MS)
            shown = page.evaluate(SHOWN_VIDEO_JS)
            assert shown is not None and "/view?" in shown["src"] and "type=temp" in shown["src"], shown
            assert (shown["width"], shown["height"]) == (WIDTH, HEIGHT) and shown["mean"] > 10, shown  # a decoded frame
            prompt_id = page.evaluate("() => window.__longliveChunks[0].prompt_id")
            # the run ends: the box goes, the player loops over the whole video, the record shows
            page.wait_for_function("() => getComputedStyle(document.querySelector('.longlive-steer')).display "
                                   "=== 'none' && /longlive_steering/.test("
                                   "document.querySelector('.longlive-steering-record')?.textContent ?? '')",
                                   timeout=PAGE_TIMEOUT_MS)
            # the player catches up with the chunks, then loops over the whole video
            page.wait_for_function("() => window.__statusLog.includes('chunk 1/14 · frames 0–8')",
                                   timeout=PAGE_TIMEOUT_MS)
            statuses = page.evaluate("() => window.__statusLog")
            _node_shot(page, sampler, shots / "3-finished.png")
            saved_after = page.evaluate("""(id) => { const app = window.comfyAPI.app.app;
                return JSON.stringify((app.rootGraph ?? app.graph).getNodeById(Number(id)).serialize().widgets_values); }""",
                                        sampler)
            queued = page.evaluate("async () => (await window.comfyAPI.app.app.graphToPrompt()).output")
            # Run again with nothing changed: nothing runs, no file is written (the editor's own player
            # on the node is not queued as an input)
            files_before = sorted(tiny_server.output_dir.rglob("*.mp4"))
            page.evaluate("() => window.comfyAPI.app.app.queuePrompt(0, 1)")
            page.wait_for_function("() => window.__prompts.length === 2 && window.__finished.includes("
                                   "window.__prompts[1])", timeout=PAGE_TIMEOUT_MS)
            second_id = page.evaluate("() => window.__prompts[1]")
        finally:
            browser.close()
    entry = tiny_server.wait(prompt_id, timeout=60)
    record = entry["outputs"][sampler]["longlive_steering"]
    assert {"frame": frame, "text": replaced} in record and broken not in [r["text"] for r in record], record
    [video] = tiny_server.output_files(entry)
    assert video.is_file()
    second = tiny_server.wait(second_id, timeout=60)
    cached = next(data["nodes"] for name, data in second["status"]["messages"] if name == "execution_cached")
    executed = sorted(set(second["prompt"][2]) - set(cached))
    assert second["status"]["status_str"] == "success" and executed == [], executed
    assert "video-preview" not in second["prompt"][2][sampler]["inputs"]
    assert sorted(tiny_server.output_dir.rglob("*.mp4")) == files_before
    assert saved_after == saved_before  # the panel is not saved with the workflow
    # nor queued (1.35 adds a 'video-preview' widget of its own to nodes that output a video)
    assert set(graph[sampler]["inputs"]) <= set(queued[sampler]["inputs"])
    assert not {name for name in queued[sampler]["inputs"] if "longlive" in name}, queued[sampler]["inputs"]
    assert errors == [], errors
    # the chunks were shown one after another while the node ran, then the whole video on a loop
    live = [int(m.group(1)) for m in (re.match(r"chunk (\d+)/14 .*\(live\)", t) for t in statuses) if m]
    assert len(live) >= 2 and live == sorted(live), statuses
    last = max(n for n, text in enumerate(statuses) if text.startswith("chunk 14/14 · frames 153–164"))
    assert "chunk 1/14 · frames 0–8" in statuses[last:], statuses
    report_figure(f"editor {version}: chunks shown live {live}; the box said {said!r}, then {shown_replaced!r}; "
                  f"dropped: {shown_dropped[:60]!r}...; second Run executed {len(executed)} of "
                  f"{len(second['prompt'][2])} nodes, {len(files_before)} mp4 before and after; screenshots in {shots}")
    (shots / "steering.json").write_text(json.dumps(record))
