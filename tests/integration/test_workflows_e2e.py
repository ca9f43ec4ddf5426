"""Every shipped API workflow runs to its video on a real ComfyUI, queued through scripts/queue_workflow.py.

Real weights cannot be downloaded here, so each model file a workflow names is written as a tiny
checkpoint in the real format under that very name (vace_core.testing.fixtures: the LongLive trainer pickle,
a PEFT LoRA, a ComfyUI-repackaged VACE checkpoint; the tiny Wan VAE of the harness as the VAE), by the
`tiny_server` fixture (conftest.py, workflow_files.py). Two substitutions make the graphs runnable at
that size:

- the CLIPLoader becomes the test pack's LongLiveTestCLIP, which core CLIPTextEncode encodes with
  (umT5-shaped [1, 512, text_dim] conditioning; the 5.7B encoder cannot be built in a test);
- frame size and length shrink to 80x48 and 25 frames, set by the client on the one node that holds
  them (prompt switches scale with the length). The inputs are the example inputs the README's
  command makes (scripts/make_example_inputs.py).

Also here: the UI files convert to their API twins with the LIVE server's /object_info, the core
snapshot used by the unit tests matches the server, the command-line client runs a workflow end to
end (upload, websocket progress, download), and bad workflows return the server's message while the
server keeps serving.
"""
from __future__ import annotations

import copy
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from comfy_harness import REPO_ROOT
from helpers import load_script
from workflow_files import API_FILES, FILES, TINY, mw

SCRIPT = REPO_ROOT / "scripts" / "queue_workflow.py"
WORKFLOWS = REPO_ROOT / "example_workflows"
WIDTH, HEIGHT, FRAMES = 80, 48, 25  # 25 frames = 7 latent frames: chunks of 3, 3 and 1
BATCH_FRAMES = 13  # the batch test's videos: 4 latent frames, chunks of 3 and 1
RUN_TIMEOUT = 240


qw = load_script("queue_workflow")


def _write_reference(path: Path, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.full((size[1], size[0], 3), rng.integers(0, 256, 3), dtype=np.uint8)
    pixels[size[1] // 4: 3 * size[1] // 4, size[0] // 4: 3 * size[0] // 4] = rng.integers(0, 256, 3)
    Image.fromarray(pixels).save(path)


def with_test_text_encoder(graph: dict) -> dict:
    """A copy of the graph with the test pack's CLIP in place of CLIPLoader (core CLIPTextEncode
    encodes with it: umT5-shaped conditioning)."""
    graph = copy.deepcopy(graph)
    for node_id, node in list(graph.items()):
        if node["class_type"] == "CLIPLoader":
            graph[node_id] = {"inputs": {"dim": TINY.text_dim}, "class_type": "LongLiveTestCLIP",
                              "_meta": node["_meta"]}
    links = [v for n in graph.values() for v in n["inputs"].values() if isinstance(v, list)]
    assert all(source in graph for source, _ in links), "a removed node is still linked"
    return graph


def tiny_graph(graph: dict) -> dict:
    """The workflow at test size: fake text encoder (core CLIPTextEncode on the test pack's CLIP),
    80x48, 25 frames, switches scaled to fit."""
    graph = with_test_text_encoder(graph)
    size_node = qw.size_nodes(graph)[0]
    length = graph[size_node]["inputs"]["length"]
    for node in graph.values():
        if node["class_type"] == "LongLivePromptSchedule":
            node["inputs"]["start_frame"] = max(1, round(node["inputs"]["start_frame"] * FRAMES / length))
    before = copy.deepcopy(graph)
    qw.apply_overrides(graph, qw.Overrides(frames=FRAMES, width=WIDTH, height=HEIGHT))
    # the client changed the one node that holds the size, and nothing else
    assert [i for i in graph if graph[i] != before[i]] == [size_node]
    return graph


def load_api(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def video_frames(path: Path) -> tuple[int, int, int]:
    """(frames, width, height) of an mp4, decoded."""
    with av.open(str(path)) as container:
        frames = [f for f in container.decode(video=0)]
    return len(frames), frames[0].width, frames[0].height


# ---------------------------------------------------------------------------------------------
# the workflows run


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_workflow_runs_to_a_video(tiny_server, path, tmp_path):
    graph = tiny_graph(json.loads(path.read_text()))
    log = io.StringIO()
    result = qw.run(qw.ComfyAPI(tiny_server.url), graph, out_dir=tmp_path, timeout=RUN_TIMEOUT,
                    progress=qw.Progress(graph, stream=log))
    on_server = tiny_server.output_files(result.entry)
    assert len(result.files) == len(on_server) == 1, log.getvalue()
    assert on_server[0].is_file() and on_server[0].suffix == ".mp4"
    assert result.files[0].read_bytes() == on_server[0].read_bytes()  # downloaded through /view
    # reference frames stripped; a continuation adds its `length` after the sampler's video
    added = sum(n["inputs"]["length"] for n in graph.values() if n["class_type"] == "LongLiveContinue")
    assert video_frames(result.files[0]) == (FRAMES + added, WIDTH, HEIGHT)
    sampler = next(i for i, n in graph.items() if n["class_type"] == "LongLiveSampler")
    assert f"running node {sampler} (LongLive Sampler)" in log.getvalue()
    assert "(100%)" in log.getvalue()


def test_cli_uploads_follows_progress_and_downloads(tiny_server, tmp_path):
    """The command line end to end on the R2V workflow: --reference upload, --prompt/--seed
    overrides, websocket progress on stderr, the downloaded mp4 path on stdout."""
    graph_file = tmp_path / "r2v_tiny.json"
    graph_file.write_text(json.dumps(tiny_graph(load_api("longlive_vace_r2v"))))
    reference = tmp_path / "my_reference.png"
    _write_reference(reference, (40, 72), seed=9)  # a user's own picture, uploaded by --reference
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), str(graph_file), "--server", tiny_server.url,
                           "--reference", str(reference), "--prompt", "a small test cat", "--seed", "11",
                           "--out", str(out)], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert (tiny_server.input_dir / "my_reference.png").read_bytes() == reference.read_bytes()
    for expected in ("image = 'my_reference.png'", "text = 'a small test cat'", "seed = 11", "queued prompt",
                     "running node", "LongLive Sampler", "%)", "finished prompt"):
        assert expected in done.stderr, expected
    paths = [Path(line) for line in done.stdout.split()]
    assert len(paths) == 1 and paths[0].parent == out
    assert video_frames(paths[0]) == (FRAMES, WIDTH, HEIGHT)


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_ui_file_converts_with_the_live_object_info(tiny_server, path):
    ui = json.loads(FILES[path.stem].ui.read_text())
    assert qw.ui_to_api(ui, tiny_server.get_object_info()) == json.loads(path.read_text())


def test_cli_dry_run_converts_a_ui_file(tiny_server):
    done = subprocess.run([sys.executable, str(SCRIPT), str(FILES["longlive_prompt_switch"].ui),
                           "--server", tiny_server.url, "--dry-run"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == load_api("longlive_prompt_switch")


def test_core_nodes_the_workflows_use_match_the_server(tiny_server):
    """The core-node interfaces make_workflows builds the UI files from (widget positions, sockets,
    outputs) are this server's; and when the repo has a snapshot of this version, it is this server."""
    live = tiny_server.get_object_info()
    for name, interface in mw.core_interfaces().items():
        assert name in live, name
        entry = live[name]
        order = entry["input_order"].get("required", []) + entry["input_order"].get("optional", [])
        assert order == [p.name for p in interface.inputs], name
        assert [n for n in qw.widget_slots(entry) if n] == [p.name for p in interface.inputs if p.widget], name
        assert entry["output"][:len(interface.outputs)] == [t for _, t in interface.outputs], name
    snapshot_path = mw.CORE_SNAPSHOTS / f"{tiny_server.install.version}.json"
    if snapshot_path.is_file():
        for name, entry in json.loads(snapshot_path.read_text()).items():
            for key in ("input_order", "output", "output_name", "display_name", "output_node"):
                assert live[name].get(key) == entry.get(key), (name, key)
            assert qw.widget_slots(live[name]) == qw.widget_slots(entry), name


# ---------------------------------------------------------------------------------------------
# a batch: batch_size 2 on the node that sets the video's size gives two videos, each its single run


def decoded_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.parametrize("name, size_node", [("longlive_t2v", "EmptyHunyuanLatentVideo"),
                                             ("longlive_vace_r2v", "LongLiveVaceEncode")])
def test_batch_size_2_gives_two_videos_each_equal_to_its_single_run(tiny_server, name, size_node):
    """Docs: docs/batches.md. One prompt with batch_size 2 and seed S, then single prompts with seeds
    S and S + 1: the batch's two mp4s hold the frames of the single runs. 13 frames (chunks of 3 and
    1 latent frames) keep the four videos cheap."""
    graph = tiny_graph(load_api(name))
    sampler = next(i for i, n in graph.items() if n["class_type"] == "LongLiveSampler")
    size = next(i for i, n in graph.items() if n["class_type"] == size_node)
    graph[sampler]["inputs"]["seed"] = seed = 2025
    graph[size]["inputs"].update(batch_size=2, length=BATCH_FRAMES)
    videos = tiny_server.output_files(tiny_server.run(graph, timeout=RUN_TIMEOUT))
    assert len(videos) == 2 and videos[0].name < videos[1].name, videos  # consecutive counters
    assert not np.array_equal(decoded_frames(videos[0]), decoded_frames(videos[1]))  # two seeds, two videos
    graph[size]["inputs"]["batch_size"] = 1
    for video, video_seed in zip(videos, (seed, seed + 1)):
        graph[sampler]["inputs"]["seed"] = video_seed
        [alone] = tiny_server.output_files(tiny_server.run(graph, timeout=RUN_TIMEOUT))
        frames = decoded_frames(video)
        assert frames.shape == (BATCH_FRAMES, HEIGHT, WIDTH, 3)
        assert np.array_equal(frames, decoded_frames(alone)), (video.name, alone.name)


# ---------------------------------------------------------------------------------------------
# errors come back through the API, and the server carries on


def test_missing_vace_file_is_a_validation_error_naming_the_input(tiny_server):
    graph = tiny_graph(load_api("longlive_vace_r2v"))
    graft = next(i for i, n in graph.items() if n["class_type"] == "LongLiveVaceGraft")
    graph[graft]["inputs"]["vace_checkpoint"] = "no_such_vace.safetensors"
    with pytest.raises(qw.WorkflowRejected) as rejected:
        qw.run(qw.ComfyAPI(tiny_server.url), graph, timeout=60, progress=qw.Progress(graph, stream=io.StringIO()))
    node_errors = rejected.value.response["node_errors"]
    assert list(node_errors) == [graft]
    message = str(rejected.value)
    assert f"node {graft} (LongLiveVaceGraft" in message
    assert "vace_checkpoint" in message and "no_such_vace.safetensors" in message


def test_bad_size_fails_with_our_message_and_the_server_keeps_serving(tiny_server, tmp_path):
    """A width core's size node floors to an odd number of latent columns (104 -> 13) is refused by
    the sampler with its message; the client itself refuses a --width that is not a multiple of 16."""
    graph = tiny_graph(load_api("longlive_t2v"))
    graph_file = tmp_path / "t2v_tiny.json"
    graph_file.write_text(json.dumps(graph))
    size = qw.size_nodes(graph)[0]
    command = [sys.executable, str(SCRIPT), str(graph_file), "--server", tiny_server.url, "--out", str(tmp_path)]
    refused = subprocess.run(command + ["--width", "100"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "--width 100: must be a positive multiple of 16: use 96 or 112" in refused.stderr
    failed = subprocess.run(command + ["--set", f"{size}.width=104"], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT)
    assert failed.returncode == 3, failed.stderr
    assert "(LongLiveSampler, 'LongLive Sampler') failed: ValueError: latent: width 104: must be a positive " \
           "multiple of 16" in failed.stderr
    # the next prompt runs normally (a new seed, so nothing comes from ComfyUI's cache), followed
    # by polling this time
    done = subprocess.run(command + ["--seed", "1234", "--no-websocket"], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "polling /history" in done.stderr
    assert video_frames(Path(done.stdout.split()[0])) == (FRAMES, WIDTH, HEIGHT)


def test_a_latent_that_disagrees_with_the_vace_context_is_refused_before_any_model_work(tiny_server):
    """R2V with a second size node on the sampler's latent (29 frames against the VACE node's 25):
    the run fails at the sampler, naming both nodes and both sizes, before its first model pass (the
    sampler reports progress on every pass, and none came; the unit tests show that the model is
    not even loaded for the run)."""
    graph = tiny_graph(load_api("longlive_vace_r2v"))
    sampler = next(i for i, n in graph.items() if n["class_type"] == "LongLiveSampler")
    encode = next(i for i, n in graph.items() if n["class_type"] == "LongLiveVaceEncode")
    graph["99"] = {"class_type": "EmptyHunyuanLatentVideo", "_meta": {"title": "Video size"},
                   "inputs": {"width": WIDTH, "height": HEIGHT, "length": FRAMES + 4, "batch_size": 1}}
    graph[sampler]["inputs"]["latent"] = ["99", 0]
    graph[sampler]["inputs"]["seed"] = 4321  # nothing from ComfyUI's cache
    log = io.StringIO()
    with pytest.raises(qw.WorkflowFailed) as failed:
        qw.run(qw.ComfyAPI(tiny_server.url), graph, timeout=RUN_TIMEOUT, progress=qw.Progress(graph, stream=log))
    message = str(failed.value)
    assert f"node {sampler} (LongLiveSampler" in message
    assert (f"latent (from node 99 'Video size') is {WIDTH}x{HEIGHT}, {FRAMES + 4} frames, vace_context (from node "
            f"{encode} 'VACE Encode References') was encoded for {WIDTH}x{HEIGHT}, {FRAMES} frames") in message
    assert f"running node {sampler} (LongLive Sampler)" in log.getvalue()
    assert f"node {sampler} (LongLive Sampler): " not in log.getvalue(), log.getvalue()  # no progress line


def test_an_api_workflow_of_the_earlier_release_is_refused_naming_latent(tiny_server):
    """A sampler saved by the earlier release (width/height/length and the preset overrides on the
    sampler, no latent) does not run with its sizes silently dropped: validation refuses it, naming
    the sampler node and the missing latent (CHANGELOG.md, "Workflows saved with an earlier release")."""
    graph = tiny_graph(load_api("longlive_t2v"))
    sampler = next(i for i, n in graph.items() if n["class_type"] == "LongLiveSampler")
    inputs = graph[sampler]["inputs"]
    del inputs["latent"]
    inputs.update(length=FRAMES, width=WIDTH, height=HEIGHT, chunk_frames=-1, window_frames=-1, sink_frames=-1,
                  steps="", shift=-1.0, vace_scale_end=-1.0)
    with pytest.raises(qw.WorkflowRejected) as rejected:
        qw.run(qw.ComfyAPI(tiny_server.url), graph, timeout=60, progress=qw.Progress(graph, stream=io.StringIO()))
    assert list(rejected.value.response["node_errors"]) == [sampler]
    message = str(rejected.value)
    assert f"node {sampler} (LongLiveSampler" in message and "latent" in message


def test_a_ui_workflow_saved_by_the_earlier_release_is_refused_before_it_runs(tiny_server):
    """The earlier release's text-to-video UI file (tests/data/earlier_release/, example_workflows/
    longlive_t2v.json at 87eba2e), converted as the editor converts it (widget values by position,
    with the live /object_info): its sampler has no latent link, and its saved length (161) and width
    (832) land in vace_scale and preset. ComfyUI refuses it at the sampler before anything runs, naming
    the three inputs: never a run with misplaced values (CHANGELOG.md)."""
    saved = json.loads((REPO_ROOT / "tests" / "data" / "earlier_release" / "longlive_t2v.json").read_text())
    graph = with_test_text_encoder(qw.ui_to_api(saved, tiny_server.get_object_info()))
    sampler = next(i for i, n in graph.items() if n["class_type"] == "LongLiveSampler")
    assert graph[sampler]["inputs"]["vace_scale"] == 161 and graph[sampler]["inputs"]["preset"] == 832
    with pytest.raises(qw.WorkflowRejected) as rejected:
        qw.run(qw.ComfyAPI(tiny_server.url), graph, timeout=60, progress=qw.Progress(graph, stream=io.StringIO()))
    node_errors = rejected.value.response["node_errors"]
    assert list(node_errors) == [sampler]
    refused = {e["extra_info"]["input_name"]: e["type"] for e in node_errors[sampler]["errors"]}
    assert refused == {"latent": "required_input_missing", "vace_scale": "value_bigger_than_max",
                       "preset": "value_not_in_list"}, node_errors
    assert f"node {sampler} (LongLiveSampler" in str(rejected.value)


def test_rejected_workflow_exit_status_and_message(tiny_server, tmp_path):
    graph = tiny_graph(load_api("longlive_t2v"))
    loader = next(i for i, n in graph.items() if n["class_type"] == "LongLiveModelLoader")
    graph[loader]["inputs"]["base_checkpoint"] = "missing_base.pt"
    graph_file = tmp_path / "bad.json"
    graph_file.write_text(json.dumps(graph))
    done = subprocess.run([sys.executable, str(SCRIPT), str(graph_file), "--server", tiny_server.url,
                           "--no-download"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "ComfyUI rejected the workflow" in done.stderr
    assert f"node {loader} (LongLiveModelLoader" in done.stderr and "base_checkpoint" in done.stderr


def test_lengths_of_the_tiny_runs():
    """25 frames are 7 latent frames: chunks of 3, 3 and 1, so the KV cache and the last short chunk
    are exercised; the scaled prompt switches fall on different chunks."""
    assert (FRAMES - 1) // 4 + 1 == 7
    graph = tiny_graph(load_api("longlive_prompt_switch"))
    starts = sorted(n["inputs"]["start_frame"] for n in graph.values() if n["class_type"] == "LongLivePromptSchedule")
    chunks = {math.ceil(math.ceil(s / 4) / 3) for s in starts}  # first chunk starting at/after the frame
    assert len(starts) == 2 and len(chunks) == 2 and all(s < FRAMES for s in starts)


# ---------------------------------------------------------------------------------------------
# Cancel (POST /interrupt) mid-video


def _streaming_t2v(length: int, prefix: str) -> dict:
    """The T2V workflow with its sampler, decode and save replaced by the streaming
    'LongLive Sampler -> Video' node, at test size and `length` video frames."""
    graph = tiny_graph(load_api("longlive_t2v"))
    sampler_id = next(i for i, n in graph.items() if n["class_type"] == "LongLiveSampler")
    vae_id = next(i for i, n in graph.items() if n["class_type"] == "VAELoader")
    for node_id in [i for i, n in graph.items() if n["class_type"] == "LongLiveSaveVideo"]:
        del graph[node_id]
    graph[qw.size_nodes(graph)[0]]["inputs"]["length"] = length
    inputs = dict(graph[sampler_id]["inputs"], vae=[vae_id, 0], filename_prefix=prefix, fps=16, crf=23)
    graph[sampler_id] = {"class_type": "LongLiveSampleToVideo", "inputs": inputs,
                         "_meta": {"title": "LongLive Sampler -> Video (streaming)"}}
    return graph


def test_interrupt_mid_video_leaves_a_valid_shorter_file_and_the_server_carries_on(tiny_server):
    import time
    import urllib.request

    length = 4 * 900 + 1  # 901 latent frames, 301 chunks: far longer than the test waits
    prompt_id = tiny_server.post_prompt(_streaming_t2v(length, "interrupt_test"))
    deadline = time.monotonic() + RUN_TIMEOUT
    written = []
    while not written and time.monotonic() < deadline:  # the mp4 appears with its first chunk
        written = sorted(tiny_server.output_dir.glob("interrupt_test_*.mp4"))
        time.sleep(0.2)
    assert written, "the streaming node never started writing\n" + tiny_server.log_tail()
    time.sleep(1.0)
    asked = time.monotonic()
    urllib.request.urlopen(urllib.request.Request(tiny_server.url + "/interrupt", data=b"{}", method="POST"),
                           timeout=30).read()
    entry = tiny_server.wait(prompt_id, timeout=RUN_TIMEOUT)
    stopped_after = time.monotonic() - asked
    events = [event for event, _ in entry["status"]["messages"]]
    assert entry["status"]["status_str"] == "error" and "execution_interrupted" in events, events
    assert stopped_after < 15, f"took {stopped_after:.1f} s to stop after the interrupt"
    frames, width, height = video_frames(written[0])
    # the first chunk makes 9 frames (3 latent frames, the first alone), every later one 12
    assert 9 <= frames < length and (frames - 9) % 12 == 0, frames
    assert (width, height) == (WIDTH, HEIGHT)
    # the next prompt runs normally
    after = tiny_server.run(_streaming_t2v(FRAMES, "after_interrupt"), timeout=RUN_TIMEOUT)
    assert video_frames(tiny_server.output_files(after)[0]) == (FRAMES, WIDTH, HEIGHT)


# ---------------------------------------------------------------------------------------------
# the editor (headless Chromium): every UI workflow loads as intended


def _broken_copy(workflows):
    """A deliberately broken workflow the check must flag: a node type the server lacks, a widget
    value in the UI file that differs from the API twin, and a sampler laid out without room for the
    live panel a run adds."""
    broken = copy.deepcopy(next(w for w in workflows if w.name == FILES["longlive_t2v"].title))
    broken.name = "broken_on_purpose"
    nodes = broken.ui["nodes"]
    sampler = next(n for n in nodes if n["type"] == "LongLiveSampler")
    sampler["widgets_values"][2] = 1.7  # vace_scale, after seed and its control value
    # laid out without room for the live panel: it covers Save Video after a run
    sampler["size"][1] -= mw.LIVE_PANEL_HEIGHT
    next(n for n in nodes if n["type"] == "LongLiveSaveVideo")["pos"][1] -= mw.LIVE_PANEL_HEIGHT
    note = next(n for n in nodes if n["type"] == "MarkdownNote")
    note["type"] = "NoSuchNodeType"
    return broken


def test_every_ui_workflow_loads_in_this_editor_and_opens_readable(tiny_server, report_figure):
    editor = load_script("check_workflows_in_editor")
    chromium = editor.find_chromium()
    if chromium is None:
        pytest.skip("no Chromium (apt-get install chromium): the editor check cannot run here")
    pytest.importorskip("playwright", reason="pip install playwright: the editor check cannot run here")
    workflows = editor.load_workflows(WORKFLOWS)
    report = editor.check_server(tiny_server.url, workflows + [_broken_copy(workflows)], chromium,
                                 label=f"ComfyUI {tiny_server.install.label}",
                                 expect_editor=tiny_server.install.frontend)
    *listed, broken = report.results
    for line in editor.EditorReport(report.server, report.editor_version, listed, report.label).lines():
        report_figure(line)
    assert report.editor_version == tiny_server.install.frontend
    assert [r.workflow for r in listed] == [p.stem for p in sorted(WORKFLOWS.glob("*.json"))]
    # one needing another node pack is not loaded here, and says what it needs (test_distributed.py
    # checks it on a server that has the pack)
    needing = {f.title for f in FILES.values() if f.needs}
    assert {r.workflow for r in listed if r.not_checked} == needing
    assert all("needs ComfyUI-Distributed 1.4.4" in r.not_checked for r in listed if r.workflow in needing)
    shipped = [r for r in listed if not r.not_checked]
    assert all(r.ok for r in shipped), "\n".join(report.lines())
    # every one opened from the template browser at 1600x1000, readable, with its note fitting
    assert all(r.zoom is not None and r.zoom >= editor.MIN_ZOOM and r.note_fits for r in shipped), \
        "\n".join(report.lines())
    # the check sees what it must: the unknown type, the changed value in the widget and the prompt
    assert broken.missing_nodes == ["node type 'NoSuchNodeType' is not registered"], broken
    sampler = next(i for i, n in load_api("longlive_t2v").items() if n["class_type"] == "LongLiveSampler")
    assert any(f"node {sampler} (LongLiveSampler).vace_scale: shows 1.7" in line for line in broken.widget_mismatches)
    assert any(f"node {sampler} (LongLiveSampler).vace_scale: editor 1.7" in line for line in broken.prompt_differences)
    assert [line.split(" overlap")[0] for line in broken.overlaps_after_run] == \
        [f"LongLive Sampler (node {sampler}) and Save Video (streaming decode) (node {int(sampler) + 1})"]
    assert all(r.overlaps_after_run == [] and not r.unsteerable for r in shipped)
    assert broken.zoom is None  # not a template: not opened from the browser


def test_cli_timeout_withdraws_its_own_prompt_from_a_real_server(tiny_server, tmp_path):
    """--timeout on a long streaming run: exit 4, the prompt is interrupted by its id, GET /queue no
    longer lists it, the mp4 written so far is valid, and the server runs the next prompt."""
    graph_file = tmp_path / "long.json"
    graph_file.write_text(json.dumps(_streaming_t2v(4 * 900 + 1, "cli_timeout")))
    done = subprocess.run([sys.executable, str(SCRIPT), str(graph_file), "--server", tiny_server.url,
                           "--timeout", "15", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == qw.EXIT_STOPPED, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "--timeout of 15 s reached" in last and "interrupted" in last, last
    prompt_id = last.split("prompt ")[-1].split()[0]
    queue = tiny_server.get_json("/queue")
    assert all(item[1] != prompt_id for item in queue["queue_running"] + queue["queue_pending"]), queue
    entry = tiny_server.wait(prompt_id, timeout=60)
    assert "execution_interrupted" in [event for event, _ in entry["status"]["messages"]]
    written = sorted(tiny_server.output_dir.glob("cli_timeout_*.mp4"))
    assert len(written) == 1
    frames, _, _ = video_frames(written[0])
    assert 9 <= frames < 4 * 900 + 1 and (frames - 9) % 12 == 0, frames
    after = tiny_server.run(_streaming_t2v(FRAMES, "after_cli_timeout"), timeout=RUN_TIMEOUT)
    assert video_frames(tiny_server.output_files(after)[0]) == (FRAMES, WIDTH, HEIGHT)
