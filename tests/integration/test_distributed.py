"""Several GPUs or machines through ComfyUI-Distributed (docs/several-gpus.md): a master
and one worker, two `--cpu` servers of the ComfyUI under test, each with the pack and a copy of
ComfyUI-Distributed 1.4.4 (../shared/comfyui-extensions/, copied, never linked), run the shipped
template `longlive_distributed`.

Set-up, once per ComfyUI version (`cluster`): one base directory as the session server's (the pack,
the test pack, the tiny Wan VAE) plus the extension and the tiny model files under the template's
file names; the worker's is a copy of it. Both servers start at once; the worker is registered on the
master through the extension's own config API (POST /distributed/config/update_worker), and the
master's worker timeout is set to WORKER_TIMEOUT s the same way (POST
/distributed/config/update_setting, key worker_timeout_seconds; the extension's default is 60 s).

The template runs at test size as test_workflows_e2e.py runs the others (80x48, 25 frames, the test
pack's text encoder), with one node added: a Preview Image on the collector's output, which keeps
every collected frame as an 8-bit PNG. The references are single-server runs of the text-to-video
template with seeds S and S + 1 (plus a Decode -> Preview Image of their frames).

What "equal frame for frame" means here. The extension carries a worker's frames to the master as
8-bit PNGs, truncating (`(255 * x).astype(uint8)`) where an mp4 writer rounds, and the master then
encodes them to H.264. So: (1) the collected 8-bit frames equal the single runs' 8-bit frames
exactly (Preview Image truncates the same way, and k/255 survives the round trip exactly); (2) the
master's mp4 decodes to exactly its single run's mp4; (3) the worker's mp4 differs from its single
run's only by that truncation through the codec: on average at most MP4_MEAN_TOLERANCE levels
(measured in the report), where the other seed's video differs by far more (checked, the planted
fault).

The last test kills the worker while it runs (the worker stays dead for the module).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from comfy_harness import (REPO_ROOT, SHARED_EXTENSIONS, TINY_VAE_NAME, ComfyClient, in_ci, install_node_pack,
                           make_base_dir, start_server, stop_server)
from helpers import load_script
from test_workflows_e2e import FRAMES, HEIGHT, RUN_TIMEOUT, TINY, WIDTH, tiny_graph

from vace_core.testing import fixtures as fx

pytestmark = pytest.mark.slow

EXTENSION = SHARED_EXTENSIONS / "ComfyUI-Distributed-1.4.4"
SCRIPT = REPO_ROOT / "scripts" / "queue_workflow.py"
WORKER_ID = "w1"
WORKER_TIMEOUT = 3  # s the master waits for a silent worker (set through the extension's config API)
SEED = 7
# mean absolute difference, grey levels, of the worker's mp4 and its single run's: its frames reach the
# master truncated to 8 bits (<= 1 level below the single run's rounding), which H.264 at crf 19 then
# encodes differently on these noise-like tiny frames: measured 4.3 on 0.33.0 (max 36, PSNR 33 dB),
# where a video of the other seed differs by 56 (PSNR 11 dB)
MP4_MEAN_TOLERANCE = 8
TAP = "90"  # the Preview Image added to every graph here

qw = load_script("queue_workflow")
mw = load_script("make_workflows")
editor = load_script("check_workflows_in_editor")
examples = load_script("make_example_inputs")
FILES = {f.name: f for f in mw.workflow_files()}


def load_api(name: str) -> dict:
    return json.loads(FILES[name].api.read_text())


def node_of(graph: dict, class_type: str) -> str:
    return next(i for i, n in graph.items() if n["class_type"] == class_type)


def distributed_graph(seed: int = SEED, load_balance: bool = False, batch: int = 1) -> dict:
    """The shipped template at test size (the master's seed `seed`), its collected frames tapped."""
    graph = tiny_graph(load_api("longlive_distributed"))
    graph[node_of(graph, "DistributedSeed")]["inputs"]["seed"] = seed
    graph[node_of(graph, "DistributedCollector")]["inputs"]["load_balance"] = load_balance
    graph[node_of(graph, "EmptyHunyuanLatentVideo")]["inputs"]["batch_size"] = batch
    graph[TAP] = {"class_type": "PreviewImage", "inputs": {"images": [node_of(graph, "DistributedCollector"), 0]},
                  "_meta": {"title": "collected frames"}}
    return graph


def single_run_graph(seed: int) -> dict:
    """The text-to-video template at test size with `seed`, its decoded frames tapped."""
    graph = tiny_graph(load_api("longlive_t2v"))
    sampler = node_of(graph, "LongLiveSampler")
    graph[sampler]["inputs"]["seed"] = seed
    graph["89"] = {"class_type": "LongLiveDecode", "_meta": {"title": "frames"},
                   "inputs": {"samples": [sampler, 0], "vae": [node_of(graph, "VAELoader"), 0]}}
    graph[TAP] = {"class_type": "PreviewImage", "inputs": {"images": ["89", 0]}, "_meta": {"title": "frames"}}
    return graph


def tapped_frames(client: ComfyClient, entry: dict) -> np.ndarray:
    """The tap's PNG frames [frames, H, W, 3] uint8, in batch order."""
    items = entry["outputs"][TAP]["images"]
    root = {"temp": client.base_dir / "temp", "output": client.output_dir}
    return np.stack([np.asarray(Image.open(root[i["type"]] / i["subfolder"] / i["filename"]).convert("RGB"))
                     for i in items])


def mp4s(client: ComfyClient, entry: dict) -> list[Path]:
    return [p for p in client.output_files(entry) if p.suffix == ".mp4"]


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int)


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))


@dataclass
class Cluster:
    master: ComfyClient
    worker: ComfyClient
    references: dict[int, tuple[np.ndarray, Path]]  # seed -> (8-bit frames, mp4) of the single run
    figures: list[str]  # set-up figures, reported by the first test


def _write_models(base: Path) -> None:
    """Tiny files under the template's model names (as test_workflows_e2e.py's tiny_server)."""
    graph = load_api("longlive_distributed")
    loader = graph[node_of(graph, "LongLiveModelLoader")]["inputs"]
    state = fx.make_state_dict(TINY, seed=0)
    fx.write_longlive_pt(base / "models" / "diffusion_models" / loader["base_checkpoint"], fx.main_only(state))
    fx.write_peft_lora(base / "models" / "loras" / loader["lora"], fx.make_lora(TINY, rank=4, seed=1))
    vae = base / "models" / "vae"
    shutil.copyfile(vae / TINY_VAE_NAME, vae / graph[node_of(graph, "VAELoader")]["inputs"]["vae_name"])


def _start_both(install, bases: dict[str, Path]) -> dict[str, ComfyClient]:
    """Start the servers at once (start-up is mostly imports: two take little longer than one)."""
    started: dict[str, ComfyClient | BaseException] = {}

    def start(name: str) -> None:
        try:
            started[name] = start_server(install, bases[name], bases[name] / "server.log")
        except BaseException as error:  # noqa: BLE001  (raised below, once the other is stopped)
            started[name] = error

    threads = [threading.Thread(target=start, args=(name,)) for name in bases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [value for value in started.values() if isinstance(value, BaseException)]
    if failed:
        for value in started.values():
            if isinstance(value, ComfyClient):
                stop_server(value.process)
        raise failed[0]
    return started  # type: ignore[return-value]


@pytest.fixture(scope="module")
def cluster(comfy_install, tmp_path_factory):
    if not (EXTENSION / "__init__.py").is_file():
        missing = f"no ComfyUI-Distributed 1.4.4 at {EXTENSION}"
        if in_ci():  # as a missing ComfyUI does: CI must not pass with the extension untested
            pytest.fail(missing)
        pytest.skip(missing)
    root = tmp_path_factory.mktemp(f"distributed_{comfy_install.label}")
    began = time.monotonic()
    make_base_dir(root / "master", comfy_install)
    install_node_pack(root / "master", EXTENSION)
    _write_models(root / "master")
    shutil.copytree(root / "master", root / "worker")
    made = time.monotonic()
    servers = _start_both(comfy_install, {"master": root / "master", "worker": root / "worker"})
    master, worker = servers["master"], servers["worker"]
    try:
        figures = [f"distributed: base directories {made - began:.0f} s, both servers up in "
                   f"{time.monotonic() - made:.0f} s; the worker's RSS at rest {rss_mib(worker.process.pid)[0]:.0f} "
                   "MiB"]
        port = int(worker.url.rsplit(":", 1)[1])
        assert master.post_json("/distributed/config/update_worker", {
            "worker_id": WORKER_ID, "name": "worker 1", "host": "127.0.0.1", "port": port, "cuda_device": 0,
            "enabled": True, "type": "remote"})["status"] == "success"
        assert master.post_json("/distributed/config/update_setting",
                                {"key": "worker_timeout_seconds", "value": WORKER_TIMEOUT})["status"] == "success"
        assert [w["id"] for w in master.get_json("/distributed/config")["workers"]] == [WORKER_ID]
        references = {}
        for seed in (SEED, SEED + 1):
            began = time.monotonic()
            entry = master.run(single_run_graph(seed), timeout=RUN_TIMEOUT)
            [video] = mp4s(master, entry)
            references[seed] = (tapped_frames(master, entry), video)
            figures.append(f"distributed: single-server run, seed {seed}: {time.monotonic() - began:.1f} s")
        yield Cluster(master, worker, references, figures)
    finally:
        for client in (master, worker):
            stop_server(client.process)


def queue_distributed(cluster: Cluster, graph: dict) -> str:
    """POST /distributed/queue on the master with the worker; the master's prompt id."""
    answer = cluster.master.post_json("/distributed/queue", {"prompt": graph, "client_id": "distributed-test",
                                                             "enabled_worker_ids": [WORKER_ID]})
    return answer["prompt_id"]


def settled(client: ComfyClient, timeout: float = 60) -> None:
    """Wait until nothing runs or waits on `client`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = client.get_json("/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{client.url} still busy after {timeout} s")


def test_the_extensions_nodes_are_the_snapshot_the_template_is_built_from(cluster):
    live = cluster.master.get_object_info()
    for name, entry in json.loads(mw.DISTRIBUTED.snapshot.read_text()).items():
        for key in ("input_order", "output", "output_name", "display_name", "output_node"):
            assert live[name].get(key) == entry.get(key), (name, key)
        assert qw.widget_slots(live[name]) == qw.widget_slots(entry), name


def test_queued_once_by_the_client_two_videos_each_its_seeds_single_run(cluster, tmp_path, report_figure):
    """scripts/queue_workflow.py --distributed queues the template once; the master ends with two mp4s
    (reported under "images", downloaded by the client): the master's of seed S, the worker's of
    S + 1, each the single-server run of its seed (see the module's docstring for how exactly)."""
    for line in cluster.figures:
        report_figure(line)
    master, worker = cluster.master, cluster.worker
    graph_file = tmp_path / "distributed.json"
    graph_file.write_text(json.dumps(distributed_graph(seed=0)))  # the client sets the seed
    began = time.monotonic()
    done = subprocess.run([sys.executable, str(SCRIPT), str(graph_file), "--server", master.url, "--distributed",
                           "--seed", str(SEED), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    seconds = time.monotonic() - began
    assert done.returncode == 0, done.stderr + master.log_tail()
    assert f"queueing on the master and 1 worker(s): worker 1 ({worker.url.split('//')[1]})" in done.stderr
    assert "2 video(s) collected on the master from 2 participant(s), the master's first" in done.stderr
    prompt_id = re.search(r"finished prompt (\S+):", done.stderr).group(1)
    entry = master.get_json(f"/history/{prompt_id}")[prompt_id]
    on_master = mp4s(master, entry)
    downloaded = [Path(line) for line in done.stdout.split()]
    assert len(on_master) == 2 and [p.read_bytes() for p in downloaded] == [p.read_bytes() for p in on_master]
    # the 8-bit frames the master collected: the master's run of S, then the worker's of S + 1
    collected = tapped_frames(master, entry)
    (frames_s, video_s), (frames_s1, video_s1) = cluster.references[SEED], cluster.references[SEED + 1]
    assert collected.shape == (2 * FRAMES, HEIGHT, WIDTH, 3)
    assert np.array_equal(collected[:FRAMES], frames_s) and np.array_equal(collected[FRAMES:], frames_s1)
    assert np.abs(frames_s.astype(int) - frames_s1).mean() > 20  # two seeds: two different videos
    # the mp4s: the master's exactly its single run's, the worker's through its 8-bit transfer
    master_video, worker_video = decoded(on_master[0]), decoded(on_master[1])
    assert np.array_equal(master_video, decoded(video_s))
    worker_error = np.abs(worker_video - decoded(video_s1)).mean()
    other_seed = np.abs(worker_video - decoded(video_s)).mean()
    assert worker_error <= MP4_MEAN_TOLERANCE < 2 * MP4_MEAN_TOLERANCE < other_seed, (worker_error, other_seed)
    settled(worker)
    worker_rss, worker_peak = rss_mib(worker.process.pid)
    master_rss, master_peak = rss_mib(master.process.pid)
    report_figure(f"distributed: master + 1 worker, 2 videos of {FRAMES} frames at {WIDTH}x{HEIGHT} in "
                  f"{seconds:.1f} s (the client's run, start to download); worker's mp4 vs its single run: mean "
                  f"{worker_error:.1f} levels (the other seed: {other_seed:.1f}); RSS after the run: worker {worker_rss:.0f} "
                  f"MiB (peak {worker_peak:.0f}), master {master_rss:.0f} MiB (peak {master_peak:.0f})")


def test_with_load_balance_one_participant_makes_the_one_video(cluster, report_figure):
    master, worker = cluster.master, cluster.worker
    before = len(worker.get_json("/history"))
    entry = master.wait(queue_distributed(cluster, distributed_graph(load_balance=True)), timeout=RUN_TIMEOUT)
    assert entry["status"]["status_str"] == "success", master.log_tail()
    settled(worker)
    on_worker = len(worker.get_json("/history")) - before
    assert on_worker in (0, 1)  # the worker ran it, or the master did (then the worker got nothing)
    [video] = mp4s(master, entry)
    seed = SEED + on_worker  # the worker's Distributed Seed adds 1
    assert np.array_equal(tapped_frames(master, entry), cluster.references[seed][0])
    assert decoded(video).shape[0] == FRAMES
    report_figure(f"distributed: load_balance ran it on the {'worker' if on_worker else 'master'}, one video")


def test_batches_and_distributed_together_each_participants_batch_comes_back(cluster):
    """batch_size 2: the master's videos (seeds S, S + 1), then the worker's (S + 1, S + 2). The
    worker's first video is the master's second: Distributed Seed adds 1 per worker while a batch
    adds 1 per video (docs/several-gpus.md says how to give each participant its own seeds)."""
    master = cluster.master
    entry = master.wait(queue_distributed(cluster, distributed_graph(batch=2)), timeout=RUN_TIMEOUT)
    assert entry["status"]["status_str"] == "success", master.log_tail()
    assert len(mp4s(master, entry)) == 4
    collected = tapped_frames(master, entry).reshape(4, FRAMES, HEIGHT, WIDTH, 3)
    assert np.array_equal(collected[0], cluster.references[SEED][0])
    assert np.array_equal(collected[1], cluster.references[SEED + 1][0])
    assert np.array_equal(collected[2], cluster.references[SEED + 1][0])  # the overlap
    assert all(not np.array_equal(collected[3], collected[k]) for k in range(3))
    for video in mp4s(master, entry):
        assert decoded(video).shape[0] == FRAMES


def test_the_template_opens_readable_in_the_editor_of_a_server_with_the_extension(cluster, report_figure):
    chromium = editor.find_chromium()
    if chromium is None:
        pytest.skip("no Chromium (apt-get install chromium): the editor check cannot run here")
    pytest.importorskip("playwright", reason="pip install playwright: the editor check cannot run here")
    master = cluster.master
    examples.write_examples(master.input_dir, [examples.CONTROL])  # the clip the check's run shows
    workflows = [w for w in editor.load_workflows(editor.WORKFLOWS) if w.needs]
    assert [w.name for w in workflows] == [FILES["longlive_distributed"].title]
    report = editor.check_server(master.url, workflows, chromium, label=f"ComfyUI {master.install.label}",
                                 expect_editor=master.install.frontend)
    for line in report.lines():
        report_figure(line)
    [result] = report.results
    assert result.not_checked is None and result.ok, "\n".join(report.lines())
    assert result.zoom >= editor.MIN_ZOOM and result.note_fits, "\n".join(report.lines())
    assert result.overlaps_after_run == [] and not result.unsteerable


def test_a_worker_killed_mid_run_leaves_the_master_its_own_video(cluster, report_figure):
    """The worker is killed (SIGKILL) as soon as it runs its part. The master finishes its own video
    within the worker timeout set (plus its own run), saves that one whole video and nothing else,
    and stays free. The master's seed here is S + 1 (nothing comes from a cache: no participant ran
    these seeds through this template), so its video is that single run's."""
    master, worker = cluster.master, cluster.worker
    videos_before = set(master.output_dir.rglob("*.mp4"))
    prompt_id = queue_distributed(cluster, distributed_graph(seed=SEED + 1))
    deadline = time.monotonic() + RUN_TIMEOUT
    while not worker.get_json("/queue")["queue_running"]:
        assert time.monotonic() < deadline, "the worker never ran its part"
        time.sleep(0.05)
    worker.process.kill()
    worker.process.wait(timeout=30)
    killed = time.monotonic()
    entry = master.wait(prompt_id, timeout=WORKER_TIMEOUT + RUN_TIMEOUT)
    after_kill = time.monotonic() - killed
    assert entry["status"]["status_str"] == "success", master.log_tail()
    [video] = mp4s(master, entry)
    assert set(master.output_dir.rglob("*.mp4")) - videos_before == {video}  # no other file, partial or not
    assert np.array_equal(tapped_frames(master, entry), cluster.references[SEED + 1][0])  # the master's frames only
    assert np.array_equal(decoded(video), decoded(cluster.references[SEED + 1][1]))
    # the extension's own word (its in-memory log: the server's stdout reaches the file later)
    assert "Heartbeat timeout: worker=w1" in master.get_json("/distributed/local_log?lines=300")["content"]
    settled(master, timeout=10)  # nothing left running or waiting
    assert after_kill < WORKER_TIMEOUT + 30, after_kill
    report_figure(f"distributed: worker killed mid-run; the master's own video done {after_kill:.1f} s later "
                  f"(worker timeout set to {WORKER_TIMEOUT} s; the extension's default is 60 s)")
