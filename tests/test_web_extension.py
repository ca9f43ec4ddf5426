"""The editor extension (web/longlive.js) in headless Chromium against stand-in editors: it does
nothing, without a JavaScript error, where the editor lacks what it needs, and drives its panel from
the messages where the editor has it. The real editors (1.35.9, 1.49.6) are exercised end to end by
tests/integration/test_live_editor.py.

Needs Playwright and a Chromium (the editor check's); skips without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import load_script

EXTENSION = Path(__file__).resolve().parents[1] / "web" / "longlive.js"

# A stand-in editor: window.comfyAPI with an app whose graph holds node 5 (a LongLive Sampler whose
# clip input is linked unless `unlinked`), an api that is an EventTarget recording fetchApi calls,
# and DOM widgets appended to the page. `missing` names what the stand-in leaves out.
STAND_IN = """(options) => {
    const missing = new Set(options.missing);
    const api = new EventTarget();
    api.calls = [];
    if (!missing.has('apiURL')) api.apiURL = (route) => '/api' + route;
    api.answers = {'/longlive/steer': {takes_effect_at_frame: 21, replaces_pending: false},
                   '/longlive/hold': {holds_at_frame: 21, timeout_s: 60}};
    if (!missing.has('fetchApi')) api.fetchApi = async (route, init) => {
        api.calls.push([route, JSON.parse(init.body)]);
        return new Response(JSON.stringify(api.answers[route]), {status: 200});
    };
    api.clientId = 'editor-1';
    const node = {id: 5, type: 'LongLiveSampler', size: [300, 400], widgets: [],
                  inputs: [{name: 'clip', link: options.unlinked ? null : 7}],
                  computeSize: () => [300, 700], setSize(size) { this.size = size; }};
    if (!missing.has('addDOMWidget')) node.addDOMWidget = (name, type, element, opts) => {
        document.body.append(element);
        const widget = {name, type, element, options: opts};
        node.widgets.push(widget);
        return widget;
    };
    const graph = {getNodeById: (id) => (id === 5 || id === '5') ? node : null, setDirtyCanvas() {}};
    const app = {graph, extensions: []};
    if (!missing.has('registerExtension')) app.registerExtension = (ext) => { app.extensions.push(ext); ext.setup?.(app); };
    if (!missing.has('comfyAPI')) window.comfyAPI = {app: {app}, api: {api}};
    window.standIn = {api, app, node};
}"""

CHUNK = {"prompt_id": "p1", "node": "5", "chunk": 1, "chunks": 14, "first_frame": 0, "frames": 9,
         "preview": {"filename": "p1_5_00001.mp4", "subfolder": "longlive", "type": "temp"}}


@pytest.fixture(scope="module")
def browser():
    editor = load_script("check_workflows_in_editor")
    chromium = editor.find_chromium()
    if chromium is None:
        pytest.skip("no Chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


def page_with(browser, **options):
    """A blank page with the stand-in editor, the extension loaded as the editor loads it (a module);
    the JavaScript errors it raised."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.set_content("<html><body></body></html>")
    page.evaluate(STAND_IN, {"missing": options.get("missing", []), "unlinked": options.get("unlinked", False)})
    page.add_script_tag(content=EXTENSION.read_text(), type="module")
    page.wait_for_timeout(100)
    return page, errors


def send(page, kind: str, detail) -> None:
    page.evaluate("([kind, detail]) => window.standIn.api.dispatchEvent(new CustomEvent(kind, {detail}))",
                  [kind, detail])


@pytest.mark.parametrize("missing", [["comfyAPI"], ["registerExtension"], ["addDOMWidget"], ["apiURL"],
                                     ["fetchApi"]])
def test_without_what_it_needs_it_does_nothing_and_raises_nothing(browser, missing):
    page, errors = page_with(browser, missing=missing)
    send(page, "execution_start", {"prompt_id": "p1"})
    send(page, "executing", "5")
    send(page, "longlive.chunk", CHUNK)
    send(page, "execution_success", {"prompt_id": "p1"})
    assert page.evaluate("() => document.querySelectorAll('.longlive-live').length") == 0
    assert errors == []
    page.close()


def test_the_panel_plays_each_chunk_and_steers_the_running_prompt(browser):
    page, errors = page_with(browser)
    assert page.evaluate("() => window.standIn.app.extensions.map((e) => e.name)") == ["LongLive.LivePreview"]
    send(page, "execution_start", {"prompt_id": "p1"})
    send(page, "executing", "5")
    assert page.evaluate("() => getComputedStyle(document.querySelector('.longlive-steer')).display") == "none"
    send(page, "longlive.chunk", CHUNK)
    send(page, "longlive.chunk", {**CHUNK, "chunk": 2, "first_frame": 9, "frames": 12,
                                  "preview": {**CHUNK["preview"], "filename": "p1_5_00002.mp4"}})
    players = page.evaluate("() => [...document.querySelectorAll('.longlive-live-video')].map((v) => v.getAttribute('src'))")
    # the first clip loads into the hidden player (shown once it has loaded); the widget is not saved
    assert "/api/view?filename=p1_5_00001.mp4&subfolder=longlive&type=temp" in players
    widget = page.evaluate("() => ({serialize: window.standIn.node.widgets[0].serialize, "
                           "options: window.standIn.node.widgets[0].options.serialize})")
    assert widget == {"serialize": False, "options": False}
    # steerable (clip linked) and running: the box is there from the first chunk
    assert page.evaluate("() => getComputedStyle(document.querySelector('.longlive-steer')).display") == "flex"
    page.fill(".longlive-steer-text", "the fox jumps")
    page.click(".longlive-steer-button")
    page.wait_for_function("() => /takes over at frame 21/.test(document.querySelector('.longlive-steer-status')"
                           ".textContent)")
    assert page.evaluate("() => window.standIn.api.calls") == [
        ["/longlive/steer", {"prompt_id": "p1", "node": "5", "client_id": "editor-1", "text": "the fox jumps"}]]
    assert page.input_value(".longlive-steer-text") == ""
    # the run ends: no box; the steering record the node reports is shown
    send(page, "execution_success", {"prompt_id": "p1"})
    assert page.evaluate("() => getComputedStyle(document.querySelector('.longlive-steer')).display") == "none"
    record = [{"frame": 21, "text": "the fox jumps"}]
    page.evaluate("""(record) => { const ext = window.standIn.app.extensions[0];
        class NodeType {}; ext.beforeRegisterNodeDef(NodeType, {name: 'LongLiveSampler'});
        NodeType.prototype.onExecuted.call(window.standIn.node, {longlive_steering: record}); }""", record)
    shown = page.evaluate("() => document.querySelector('.longlive-steering-record').textContent")
    assert json.dumps(record, separators=(",", ":")) in shown
    assert errors == []
    page.close()


def test_a_node_without_clip_shows_chunks_but_no_steering_box(browser):
    page, errors = page_with(browser, unlinked=True)
    send(page, "execution_start", {"prompt_id": "p1"})
    send(page, "longlive.chunk", CHUNK)
    assert page.evaluate("() => document.querySelectorAll('.longlive-live').length") == 1
    assert page.evaluate("() => getComputedStyle(document.querySelector('.longlive-steer')).display") == "none"
    send(page, "longlive.chunk", {**CHUNK, "node": "99"})  # a node the graph does not have: ignored
    assert page.evaluate("() => document.querySelectorAll('.longlive-live').length") == 1
    assert errors == []
    page.close()


def steer_status(page) -> str:
    return page.evaluate("() => document.querySelector('.longlive-steer-status').textContent")


def test_the_box_says_what_took_effect_replaced_and_dropped_and_holds_the_run(browser):
    page, errors = page_with(browser)
    send(page, "execution_start", {"prompt_id": "p1"})
    send(page, "longlive.chunk", CHUNK)
    page.fill(".longlive-steer-text", "the fox jumps")
    page.click(".longlive-steer-button")
    page.wait_for_function("() => /takes over at frame 21$/.test(document.querySelector('.longlive-steer-status')"
                           ".textContent)")
    # another client's text replaced it before the boundary: the box says so, not the promise
    steer = {"prompt_id": "p1", "node": "5", "frame": 21, "replaced": 1}
    send(page, "longlive.steer", {**steer, "status": "applied", "text": "a hare runs"})
    assert steer_status(page) == "replaced: “the fox jumps” was replaced by a later text, “a hare runs” took over " \
                                 "at frame 21"
    # a text sent here that replaced a pending one, then applied
    page.evaluate("() => { window.standIn.api.answers['/longlive/steer'] = "
                  "{takes_effect_at_frame: 33, replaces_pending: true}; }")
    page.fill(".longlive-steer-text", "snow falls")
    page.click(".longlive-steer-button")
    page.wait_for_function("() => /replacing the text sent before it/.test(document.querySelector("
                           "'.longlive-steer-status').textContent)")
    send(page, "longlive.steer", {**steer, "frame": 33, "status": "applied", "text": "snow falls"})
    assert steer_status(page) == "“snow falls” took over at frame 33"
    send(page, "longlive.steer", {**steer, "frame": 45, "status": "dropped", "text": "(x:nan)", "reason": "ValueError: NaN"})
    assert steer_status(page) == "dropped at frame 45: “(x:nan)” (sent elsewhere) could not be encoded " \
                                 "(ValueError: NaN); the prompt stays as it was"
    send(page, "longlive.steer", {**steer, "prompt_id": "another", "status": "applied", "text": "ignored"})
    assert "ignored" not in steer_status(page)  # another prompt's message
    # Hold asks the server, the button turns into Resume; the messages say when it is held and resumed
    page.click(".longlive-hold-button")
    page.wait_for_function("() => document.querySelector('.longlive-hold-button').textContent === 'Resume'")
    assert steer_status(page) == "holding at frame 21: type, then Steer or Resume"
    send(page, "longlive.hold", {"prompt_id": "p1", "node": "5", "state": "held", "frame": 21, "timeout_s": 60})
    assert steer_status(page) == "held before frame 21: type, then Steer or Resume (it resumes by itself after 60 s)"
    page.evaluate("() => { window.standIn.api.answers['/longlive/hold'] = {resumed: true}; }")
    page.click(".longlive-hold-button")
    page.wait_for_function("() => document.querySelector('.longlive-hold-button').textContent === 'Hold'")
    send(page, "longlive.hold", {"prompt_id": "p1", "node": "5", "state": "resumed", "frame": 21, "by": "resume",
                                 "held_s": 4.26})
    assert steer_status(page) == "resumed at frame 21 by Resume after 4.3 s"
    calls = page.evaluate("() => window.standIn.api.calls.filter(([route]) => route === '/longlive/hold')")
    assert calls == [["/longlive/hold", {"prompt_id": "p1", "node": "5", "client_id": "editor-1", "resume": False,
                                         "timeout_s": 60}],
                     ["/longlive/hold", {"prompt_id": "p1", "node": "5", "client_id": "editor-1", "resume": True,
                                         "timeout_s": 60}]]
    assert errors == []
    page.close()


def test_the_editors_video_player_on_a_saving_node_is_kept_out_of_the_prompt(browser):
    """The editors add a "video-preview" widget to a node that saved a video and would queue it as an
    input; on the pack's saving nodes it is marked as none (options.serialize false), other widgets
    and other nodes' players are left alone."""
    page, errors = page_with(browser)
    marked = page.evaluate("""() => {
        const ext = window.standIn.app.extensions[0];
        class Base { addDOMWidget(name, type, element, options) { return {name, type, element, options: options ?? {}}; } }
        const made = {};
        for (const name of ['LongLiveSaveVideo', 'LongLiveSampleToVideo', 'SaveVideo']) {
            class NodeType extends Base {}
            ext.beforeRegisterNodeDef(NodeType, {name});
            const node = new NodeType();
            made[name] = [node.addDOMWidget('video-preview', 'video', null, {canvasOnly: true}).options.serialize ?? null,
                          node.addDOMWidget('other', 'x', null, {}).options.serialize ?? null];
        }
        return made; }""")
    assert marked == {"LongLiveSaveVideo": [False, None], "LongLiveSampleToVideo": [False, None], "SaveVideo": [None, None]}
    assert errors == []
    page.close()
