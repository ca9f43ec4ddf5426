"""Live previews and steering (nodes/live.py, docs/live.md#the-contract) through the standalone host, on the CPU.

The host's server side is replaced by stand-ins that behave as ComfyUI's: `running_prompt_id` gives a
prompt id, `client_messenger` records the `longlive.chunk` messages (and a test may steer from it,
as a client reacting to a chunk would), the temp folder is a test folder, and the Latent2RGB
previewer is a fixed linear projection. The route's logic (`SteeringRegistry.answer`) is called with
request bodies as the server would call it. The real server, route and websocket are tested in
tests/integration/test_live_server.py.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import threading

import av
import numpy as np
import pytest
import torch

from helpers import (PACK, load_pack_standalone, request_interrupt, run_node, sampler_settings, video_latent,
                     write_node_models)

pack = load_pack_standalone()
live = importlib.import_module(f"{PACK}.nodes.live")
host = importlib.import_module(f"{PACK}.nodes.host")
prompts = importlib.import_module(f"{PACK}.nodes.prompts")
model_ref = importlib.import_module(f"{PACK}.nodes.model_ref")
plan = importlib.import_module(f"{PACK}.vace_core.plan")
streaming = importlib.import_module(f"{PACK}.vace_core.streaming")
stand_in_vae = importlib.import_module(f"{PACK}.vace_core.testing.stand_in_vae")
config_mod = importlib.import_module(f"{PACK}.vace_core.config")

NODES = pack.NODE_CLASS_MAPPINGS
TEXT_DIM = config_mod.architecture("tiny-vace").text_dim
SIZE = 64
FRAMES = 45  # 12 latent frames: chunks of 3 start at video frames 0, 9, 21 and 33
# the LongLive preset (chunk 3, window 12, sink 3, shift 5) with two denoising steps
SETTINGS = sampler_settings(NODES, steps="1000,500")
SAMPLER = dict(seed=5, vace_scale=1.0, settings=SETTINGS, latent=video_latent(SIZE, SIZE, FRAMES))
PROMPT_ID = "0c7e52a4-2d9e-4d47-9f38-6b1f1f0c2f11"


class FakeClip:
    """CLIP as CLIPTextEncode uses it: `tokenize(text)`, then `encode_from_tokens_scheduled(tokens)`
    -> CONDITIONING [[tensor [1, 8, dim], {...}]], seeded from the text (the same text always
    encodes alike). Records the texts it was asked for and the thread that asked."""

    def __init__(self, dim: int = TEXT_DIM) -> None:
        self.dim = dim
        self.calls: list[tuple[str, str]] = []

    def tokenize(self, text: str) -> dict:
        return {"fake": [text]}

    def encode_from_tokens_scheduled(self, tokens: dict) -> list:
        text = tokens["fake"][0]
        self.calls.append((text, threading.current_thread().name))
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        return [[torch.randn(1, 8, self.dim, generator=torch.Generator().manual_seed(seed)), {"pooled_output": None}]]


def project(latents: torch.Tensor) -> np.ndarray:
    """Stand-in for ComfyUI's Latent2RGB previewer: channels 0..2 -> uint8 [t, h, w, 3]."""
    rgb = ((latents[0, :3].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rgb.permute(1, 2, 3, 0).numpy()


class Client:
    """The websocket side: every message sent to the prompt's client (and the other client ids it
    was addressed to), and what to do on each chunk message."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict]] = []
        self.also_to: list[list[str]] = []
        self.on_chunk = None
        self.on_event = None  # (event, data) for every message

    def send(self, event: str, data: dict, to=()) -> None:
        self.messages.append((event, data))
        self.also_to.append(list(to))
        if self.on_chunk is not None and event == live.CHUNK_EVENT:
            self.on_chunk(data)
        if self.on_event is not None:
            self.on_event(event, data)

    def events(self, *kinds: str) -> list[tuple[str, dict]]:
        return [(event, data) for event, data in self.messages if event in kinds]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return write_node_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def server(models_dir, tmp_path, monkeypatch):
    """A prompt running inside a host that can message its client."""
    monkeypatch.setenv("LONGLIVE_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("LONGLIVE_TEMP_DIR", str(tmp_path / "temp"))
    monkeypatch.setenv("LONGLIVE_OUTPUT_DIR", str(tmp_path / "output"))
    model_ref.clear_cache()
    client = Client()
    monkeypatch.setattr(host, "running_prompt_id", lambda: PROMPT_ID)
    monkeypatch.setattr(host, "client_messenger", lambda: client.send)
    monkeypatch.setattr(host, "latent_rgb_previewer", lambda: project)
    return client


def model():
    return run_node(NODES, "LongLiveModelLoader", base_checkpoint="longlive_base.pt", lora="none",
                    lora_strength=1.0, dtype="fp32")[0]


def positive(seed: int = 1) -> list:
    return [[torch.randn(1, 12, TEXT_DIM, generator=torch.Generator().manual_seed(seed)), {}]]


def steer_body(text, prompt_id=PROMPT_ID, **extra) -> bytes:
    return json.dumps({"prompt_id": prompt_id, "text": text, **extra}).encode()


def luma(frames: np.ndarray) -> np.ndarray:
    return frames.astype(float) @ np.array([0.299, 0.587, 0.114])


def decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


# ---------------------------------------------------------------------------------------------
# the request


@pytest.mark.parametrize("body, message", [
    (b"not json", "must be JSON"),
    (b"\xff\xfe", "must be JSON"),
    (b'["a list"]', "JSON object"),
    (json.dumps({"text": "a"}).encode(), '"prompt_id"'),
    (json.dumps({"prompt_id": 7, "text": "a"}).encode(), '"prompt_id"'),
    (json.dumps({"prompt_id": "p"}).encode(), '"text" must be a string'),
    (json.dumps({"prompt_id": "p", "text": 3}).encode(), '"text" must be a string'),
    (json.dumps({"prompt_id": "p", "text": ""}).encode(), '"text" is empty'),
    (json.dumps({"prompt_id": "p", "text": " \n\t"}).encode(), '"text" is empty'),
    (json.dumps({"prompt_id": "p", "text": "x" * (live.MAX_STEER_CHARS + 1)}).encode(), "at most 2000"),
    (json.dumps({"prompt_id": "p", "text": "a", "node": [1]}).encode(), '"node"'),
    (json.dumps({"prompt_id": "p", "text": "a", "node": True}).encode(), '"node"'),
    (b"{" + b" " * live.MAX_STEER_BODY_BYTES + b"}", "over 16384 bytes"),
])
def test_malformed_requests_are_answered_400(body, message):
    status, answer = live.SteeringRegistry().answer(body)
    assert status == 400 and message in answer["error"], answer


def test_the_longest_text_is_taken_and_node_ids_may_be_numbers():
    assert live.parse_steer_request(steer_body("x" * live.MAX_STEER_CHARS, node=12, client_id="c1")) == \
        live.LiveRequest(PROMPT_ID, "12", "c1", text="x" * live.MAX_STEER_CHARS)
    assert live.parse_steer_request(steer_body("  keep my spaces ")).text == "  keep my spaces "


# What the steering route refuses before it queues a text (400), read as ComfyUI's tokenizers read a
# prompt: lone surrogates (valid JSON), weights that are not finite or beyond +-10 (nested brackets
# multiply by 1.1 each: 25 levels are 10.8), embeddings outside their folder, an embedding without a name.
@pytest.mark.parametrize("text, message", [
    ("a fox runs through (snow:nan)", "weight of 'snow' is nan"),
    ("a fox runs through (snow:1e30)", "weight of 'snow' is 1e+30, beyond the -10 to 10"),
    ("a fox (runs (through:inf) snow)", "weight of 'through' is inf"),
    ("(snow:-11)", "is -11, beyond"),
    ("(snow: NaN )", "is nan"),
    ("(" * 25 + "snow" + ")" * 25, "is 10.8347, beyond"),
    ("bad \ud800 text", "not valid Unicode text (character 5 is a lone surrogate, U+D800)"),
    ("a fox embedding:../../etc/passwd runs", "embedding:../../etc/passwd names a file outside"),
    ("(embedding:/etc/passwd:1.2)", "embedding:/etc/passwd names a file outside"),
    ("embedding:sub\\..\\..\\x", "names a file outside"),
    ("a fox embedding:", "embedding: is followed by no name"),
    ("a fox\x00", "control character U+0000"),
])
def test_texts_that_cannot_be_encoded_are_refused_with_400(text, message):
    status, answer = live.SteeringRegistry().answer(steer_body(text))  # JSON escapes a lone surrogate
    assert status == 400 and message in answer["error"] and answer["error"].startswith('"text": '), answer


@pytest.mark.parametrize("text", [
    "a fox runs through (snow:1.5)", "(snow:-2) and ((deep snow))", "(snow:10)", "\\(snow:nan\\)",
    "(snow:nan", "a (fox: a red one) runs", "embedding:winter_style.safetensors, snow", "ratio 1:1e30",
    "(" * 24 + "snow" + ")" * 24, "x" * live.MAX_STEER_CHARS, "tab\tand\nnewline",
])
def test_texts_the_tokenizers_read_safely_are_taken(text):
    registry = live.SteeringRegistry()
    with registry.open(PROMPT_ID, "7", boundaries()):
        assert registry.answer(steer_body(text))[0] == 200


def test_prompt_weights_are_read_as_comfyui_reads_them():
    """Hand-derived from the rules ComfyUI's tokenizers follow (the integration tests compare with
    ComfyUI's own functions on random texts)."""
    weights = prompts.prompt_weights
    assert weights("a fox") == [("a fox", 1.0)]
    assert weights("a (fox) runs") == [("a ", 1.0), ("fox", 1.1), (" runs", 1.0)]
    assert weights("((fox))") == [("fox", pytest.approx(1.21))]
    assert weights("(red (fox:1.5))") == [("red ", 1.1), ("fox", 1.5)]
    assert weights("(fox:0.5:2)") == [("fox:0.5", 2.0)]  # the last colon
    assert weights("(fox:big)") == [("fox:big", pytest.approx(1.1))]  # not a number: emphasis only
    assert weights("(:2)") == [(":2", pytest.approx(1.1))]  # a colon first is text
    assert weights("(fox") == [("(fox", 1.0)]  # unclosed: text
    assert weights("fox) (snow:2)") == [("fox) (snow:2)", 1.0)]  # a stray ')' makes the rest text
    assert weights("(a(b)") == [("a", pytest.approx(1.1)), ("(b", pytest.approx(1.1))]  # read as a group
    escaped = weights("\\(fox:nan\\) (snow:3)")
    assert [prompts.plain_text(part) for part, _ in escaped] == ["(fox:nan) ", "snow"]
    assert [w for _, w in escaped] == [1.0, 3.0]
    assert prompts.embedding_names("a embedding:winter, embedding:x[1] embedding:") == ["winter,", "x", ""]
    assert prompts.embedding_names("an_embedding:x") == []  # only at the start or after white space


# ---------------------------------------------------------------------------------------------
# the registry


def boundaries(frames=(9, 21, 33)):
    blocks = plan.plan_blocks(0, 3 * (len(frames) + 1), 3)
    found = plan.steer_boundaries(blocks, 0)
    assert [b.frame for b in found] == list(frames)
    return found


def test_a_steer_answers_the_frame_of_the_next_boundary_and_the_last_text_wins():
    registry = live.SteeringRegistry()
    points = boundaries()
    with registry.open(PROMPT_ID, "7", points) as session:
        assert registry.answer(steer_body("a fox")) == (200, {"prompt_id": PROMPT_ID, "node": "7",
                                                              "takes_effect_at_frame": 9, "replaces_pending": False})
        assert registry.answer(steer_body("a wolf", node="7"))[1] == {
            "prompt_id": PROMPT_ID, "node": "7", "takes_effect_at_frame": 9, "replaces_pending": True}
        assert registry.answer(steer_body("a lynx"))[1]["replaces_pending"] is True
        assert session.take(points[0]) == ("a lynx", 2)  # the last text before the boundary wins
        assert session.take(points[1]) == (None, 0)  # taken once
        answer = registry.answer(steer_body("a bear", node=7))[1]
        assert (answer["takes_effect_at_frame"], answer["replaces_pending"]) == (33, False)
        assert session.take(points[2]) == ("a bear", 0)
        status, answer = registry.answer(steer_body("too late"))
        assert status == 404 and "last chunk" in answer["error"]
        with pytest.raises(RuntimeError, match="expected None"):
            session.take(points[2])  # the sampler can only move forward
    status, answer = registry.answer(steer_body("after the end"))
    assert status == 404 and "not running a steerable LongLive node" in answer["error"]


def test_steers_reach_only_their_own_prompt_and_node():
    registry = live.SteeringRegistry()
    with registry.open(PROMPT_ID, "7", boundaries()), registry.open("other-prompt", "3", boundaries()) as other:
        status, answer = registry.answer(steer_body("x", node="8"))
        assert status == 404 and "not running steerable node 8 (running: 7)" in answer["error"]
        assert registry.answer(steer_body("x", prompt_id="unknown"))[0] == 404
        assert registry.answer(steer_body("for 7"))[0] == 200
        assert other.take(other.boundaries[0]) == (None, 0)
        with registry.open(PROMPT_ID, "9", boundaries()):
            status, answer = registry.answer(steer_body("which one?"))
            assert status == 400 and "several steerable nodes (7, 9)" in answer["error"]


def test_steering_encodes_on_the_calling_thread_as_clip_text_encode_does():
    registry, clip = live.SteeringRegistry(), FakeClip()
    points = boundaries()
    with registry.open(PROMPT_ID, "7", points) as session:
        steer = live.steering(session, clip, TEXT_DIM)
        registry.answer(steer_body("a fox jumps"))
        assert clip.calls == []  # the route only queues the text
        [segment] = steer(points[0])
        assert clip.calls == [("a fox jumps", threading.current_thread().name)]
        expected = clip.encode_from_tokens_scheduled(clip.tokenize("a fox jumps"))[0][0]
        assert segment.start_frame == 9 and torch.equal(segment.context, expected)
        assert steer(points[1]) == []
        assert session.record == [{"frame": 9, "text": "a fox jumps"}]


class BrokenClip(FakeClip):
    """Encodes like FakeClip, except texts with "nan" (NaN conditioning, as a broken embedding file
    makes) and "boom" (the encoder raises)."""

    def encode_from_tokens_scheduled(self, tokens: dict) -> list:
        text = tokens["fake"][0]
        if "boom" in text:
            raise RuntimeError("the text encoder ran out of memory")
        conditioning = super().encode_from_tokens_scheduled(tokens)
        if "nan" in text:
            conditioning[0][0][0, 2, 5] = float("nan")
        return conditioning


@pytest.mark.parametrize("text, clip, reason", [
    ("snow nan", BrokenClip(), r"ValueError: clip \(the steering text at frame 9\): the prompt's conditioning "
                               r"holds 1 non-finite values .* prompt weight"),
    ("boom", BrokenClip(), "RuntimeError: the text encoder ran out of memory"),
    ("wide", FakeClip(dim=768), "768 channels but the model expects 64"),
])
def test_a_steer_that_fails_at_the_boundary_is_dropped_and_the_clients_are_told(text, clip, reason, caplog):
    registry, client = live.SteeringRegistry(), Client()
    points = boundaries()
    with registry.open(PROMPT_ID, "7", points) as session:
        steer = live.steering(session, clip, TEXT_DIM, client.send)
        registry.answer(steer_body("first try"))
        registry.answer(steer_body(text, client_id="someone-else"))
        with caplog.at_level("WARNING", logger="longlive_vace"):
            assert steer(points[0]) == []  # the prompt stays as it was
        assert session.record == []
        [(event, data)] = client.messages
        assert event == "longlive.steer" and client.also_to == [["someone-else"]]
        assert {k: data[k] for k in ("prompt_id", "node", "status", "frame", "text", "replaced")} == \
            {"prompt_id": PROMPT_ID, "node": "7", "status": "dropped", "frame": 9, "text": text, "replaced": 1}
        assert re.search(reason, data["reason"]), data["reason"]
        assert "dropped the steer" in caplog.text and "at frame 9" in caplog.text
        if clip.dim != TEXT_DIM:
            return
        # the next text is taken as usual
        registry.answer(steer_body("a hare"))
        [segment] = steer(points[1])
        assert segment.start_frame == 21 and session.record == [{"frame": 21, "text": "a hare"}]
        assert client.messages[-1][1]["status"] == "applied" and client.messages[-1][1]["text"] == "a hare"


def test_the_clients_told_are_the_ones_that_steered_in_order_and_bounded():
    registry = live.SteeringRegistry()
    with registry.open(PROMPT_ID, "7", boundaries()) as session:
        for n in range(live.MAX_TOLD_CLIENTS + 8):
            registry.answer(steer_body("a fox", client_id=f"client-{n % (live.MAX_TOLD_CLIENTS + 4)}"))
        registry.answer_hold(hold_body(client_id="late"))
        assert session.clients() == [f"client-{n}" for n in range(live.MAX_TOLD_CLIENTS)]


# ---------------------------------------------------------------------------------------------
# holding


@pytest.mark.parametrize("body, message", [
    ({"timeout_s": 0}, '"timeout_s"'), ({"timeout_s": 601}, '"timeout_s"'), ({"timeout_s": "10"}, '"timeout_s"'),
    ({"timeout_s": True}, '"timeout_s"'), ({"resume": "yes"}, '"resume"'), ({"client_id": 5}, '"client_id"'),
])
def test_malformed_hold_requests_are_answered_400(body, message):
    status, answer = live.SteeringRegistry().answer_hold(json.dumps({"prompt_id": PROMPT_ID, **body}).encode())
    assert status == 400 and message in answer["error"], answer


def hold_body(**fields) -> bytes:
    return json.dumps({"prompt_id": PROMPT_ID, **fields}).encode()


def later(seconds: float, action) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def once_held(client: Client, seconds: float, action) -> None:
    """Run `action` `seconds` after the client is told the run holds (never before it holds, however
    busy the machine), on another thread, as a user acting on the panel would."""
    def react(event, data):
        if event == "longlive.hold" and data["state"] == "held":
            client.on_event = None
            later(seconds, action)
    client.on_event = react


def test_a_hold_waits_at_the_boundary_until_a_steer_resume_or_its_timeout():
    registry, client = live.SteeringRegistry(), Client()
    points = boundaries()
    with registry.open(PROMPT_ID, "7", points) as session:
        flushed = []
        steer = live.steering(session, FakeClip(), TEXT_DIM, client.send, flush=lambda: flushed.append(len(flushed)))
        assert registry.answer_hold(hold_body()) == (200, {"prompt_id": PROMPT_ID, "node": "7", "holds_at_frame": 9,
                                                          "timeout_s": 60.0})
        once_held(client, 0.3, lambda: registry.answer(steer_body("a hare")))  # a steer ends the hold, takes effect
        [segment] = steer(points[0])
        assert segment.start_frame == 9 and flushed == [0]
        held, resumed, applied = [data for _, data in client.messages]
        assert (held["state"], held["frame"], held["timeout_s"]) == ("held", 9, 60.0)
        assert (resumed["state"], resumed["by"]) == ("resumed", "steer") and 0.25 <= resumed["held_s"] < 5
        assert applied["status"] == "applied" and applied["frame"] == 9

        assert registry.answer_hold(hold_body(timeout_s=10))[1]["holds_at_frame"] == 21
        once_held(client, 0.3, lambda: registry.answer_hold(hold_body(resume=True)))
        assert steer(points[1]) == []
        assert client.messages[-1][1]["by"] == "resume" and client.messages[-1][1]["held_s"] >= 0.25

        registry.answer_hold(hold_body(timeout_s=0.3))
        assert steer(points[2]) == []
        assert client.messages[-1][1]["by"] == "timeout" and 0.3 <= client.messages[-1][1]["held_s"] < 5
        status, answer = registry.answer_hold(hold_body())
        assert status == 404 and "no chunk boundary left" in answer["error"]


def test_a_hold_ended_before_its_boundary_holds_nothing_and_resume_without_hold_says_so():
    registry, client = live.SteeringRegistry(), Client()
    points = boundaries()
    with registry.open(PROMPT_ID, "7", points) as session:
        steer = live.steering(session, FakeClip(), TEXT_DIM, client.send)
        assert registry.answer_hold(hold_body(resume=True))[1]["resumed"] is False
        registry.answer_hold(hold_body())
        assert registry.answer_hold(hold_body(resume=True))[1]["resumed"] is True
        assert steer(points[0]) == [] and client.messages == []  # no hold, no message
        # asked after the sampler looked at the boundary's hold: the next one holds (as answered)
        assert session.begin_hold() is None
        assert registry.answer_hold(hold_body(timeout_s=0.1))[1]["holds_at_frame"] == 33
        assert session.take(points[1]) == (None, 0)
        assert steer(points[2]) == [] and [d["state"] for _, d in client.messages] == ["held", "resumed"]


def test_cancel_while_held_stops_the_run_there():
    registry, client = live.SteeringRegistry(), Client()
    points = boundaries()
    with registry.open(PROMPT_ID, "7", points) as session:
        steer = live.steering(session, FakeClip(), TEXT_DIM, client.send)
        registry.answer_hold(hold_body())
        once_held(client, 0.2, request_interrupt)
        try:
            with pytest.raises(live.GenerationCancelled):
                steer(points[0])
        finally:
            request_interrupt(False)
        assert client.messages[-1][1]["by"] == "cancel"


# ---------------------------------------------------------------------------------------------
# previews


def test_latent_previews_hold_each_latent_frame_for_its_video_frames():
    images = np.arange(3)[:, None, None, None] * np.ones((3, 2, 2, 3), dtype=np.uint8)
    assert [int(f[0, 0, 0]) for f in live.hold_latent_frames(images, starts_video=True)] == [0] + [1] * 4 + [2] * 4
    assert len(live.hold_latent_frames(images, starts_video=False)) == 12
    # decoded frames keep every n-th pixel to fit 512, with even sides
    for (height, width), shape in (((480, 832), (240, 416)), ((64, 64), (64, 64)), ((720, 1280), (240, 426)),
                                   ((832, 480), (416, 240))):
        pixels = torch.rand(2, height, width, 3)
        frames = live.to_preview_frames(pixels)
        assert frames.shape == (2, *shape, 3) and frames.dtype == np.uint8
        step = live.preview_step(width, height)
        expected = (pixels[:, ::step, ::step][:, :shape[0], :shape[1]] * 255).round().to(torch.uint8).numpy()
        assert np.abs(frames.astype(int) - expected).max() <= 1


def test_sampler_node_sends_one_playable_preview_per_chunk(server, tmp_path):
    latent = run_node(NODES, "LongLiveSampler", model=model(), positive=positive(), unique_id="7", **SAMPLER)
    assert latent == (latent[0],)  # no clip: a plain LATENT output, no steering record
    events = [event for event, _ in server.messages]
    assert events == ["longlive.chunk"] * 4
    data = [d for _, d in server.messages]
    assert [(d["chunk"], d["chunks"], d["first_frame"], d["frames"]) for d in data] == \
        [(1, 4, 0, 9), (2, 4, 9, 12), (3, 4, 21, 12), (4, 4, 33, 12)]
    samples = latent[0]["samples"]
    for d in data:
        assert d["prompt_id"] == PROMPT_ID and d["node"] == "7"
        preview = d["preview"]
        assert preview["type"] == "temp" and preview["subfolder"] == "longlive"
        frames = decoded(tmp_path / "temp" / "longlive" / preview["filename"])
        assert len(frames) == d["frames"] and frames[0].shape == (SIZE // 8, SIZE // 8, 3)
    # the clip of chunk 2 shows the projection of its own three latent frames, each held for 4 frames:
    # compared in luma (8x8 random colours lose their chroma to yuv420p), it is far nearer to them
    # than to any other three latent frames of the video
    encoding = importlib.import_module(f"{PACK}.vace_core.encoding")
    projected = project(encoding.normalize_latents(samples))
    frames = np.stack(decoded(tmp_path / "temp" / "longlive" / data[1]["preview"]["filename"]))

    def luma_error(start: int) -> float:
        expected = np.repeat(projected[start:start + 3], 4, axis=0).astype(float)
        return float(np.abs(luma(frames) - luma(expected)).mean())

    # measured: 7.6 grey levels for its own frames, 57 to 66 for any other start
    errors = {start: luma_error(start) for start in range(0, 10)}
    assert errors[3] < 12 and errors[3] * 4 < min(e for s, e in errors.items() if s != 3), errors


def test_previews_never_fail_a_run(server, caplog):
    def broken(data):
        raise ConnectionResetError("the client went away")

    server.on_chunk = broken
    with caplog.at_level("WARNING", logger="longlive_vace"):
        latent = run_node(NODES, "LongLiveSampler", model=model(), positive=positive(), unique_id="7", **SAMPLER)
    assert latent[0]["samples"].shape[2] == 12
    assert caplog.text.count("chunk previews stopped") == 1 and "the client went away" in caplog.text


def test_standalone_runs_send_nothing(models_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGLIVE_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("LONGLIVE_TEMP_DIR", str(tmp_path / "temp"))
    assert host.running_prompt_id() is None and host.client_messenger() is None
    out = run_node(NODES, "LongLiveSampler", model=model(), positive=positive(), clip=FakeClip(), unique_id="7",
                   **SAMPLER)
    assert out["ui"] == {"longlive_steering": []}  # steerable (a clip), but nothing can steer it here
    assert not (tmp_path / "temp").exists()


# ---------------------------------------------------------------------------------------------
# steering through the nodes, and the replay


def steer_on_chunk(server, chunk: int, text: str, answers: list) -> None:
    """Act as a client that steers once it has seen chunk `chunk`."""
    def react(data):
        if data["chunk"] == chunk:
            answers.append(live.REGISTRY.answer(steer_body(text)))
    server.on_chunk = react


def test_steered_sampler_equals_its_replay_through_a_schedule_from_the_record(server):
    clip, answers = FakeClip(), []
    steer_on_chunk(server, 1, "the fox leaps over a log", answers)
    out = run_node(NODES, "LongLiveSampler", model=model(), positive=positive(), clip=clip, unique_id="7", **SAMPLER)
    [(status, answer)] = answers
    frame = answer["takes_effect_at_frame"]
    # seen after chunk 1: the next boundary is 9, or a later one if the sampler passed it meanwhile
    assert status == 200 and frame in (9, 21, 33) and answer["node"] == "7"
    record = [{"frame": frame, "text": "the fox leaps over a log"}]
    assert out["ui"] == {"longlive_steering": record}
    steered = out["result"][0]
    assert steered["longlive_steering"] == record
    assert clip.calls[0][1] == threading.current_thread().name  # encoded by the node's (execution) thread
    # replay: the same workflow plus a schedule made from the record, same seed, no live steering
    schedule = run_node(NODES, "LongLiveSteeringSchedule", clip=FakeClip(), steering=json.dumps(record))[0]
    replay = run_node(NODES, "LongLiveSampler", model=model(), positive=positive(), prompt_schedule=schedule,
                      **SAMPLER)[0]
    assert torch.equal(replay["samples"], steered["samples"])
    unsteered = run_node(NODES, "LongLiveSampler", model=model(), positive=positive(), **SAMPLER)[0]
    first_changed = plan.switch_latent_frame(frame)
    assert torch.equal(unsteered["samples"][:, :, :first_changed], steered["samples"][:, :, :first_changed])
    assert not torch.allclose(unsteered["samples"][:, :, first_changed:], steered["samples"][:, :, first_changed:])
    assert not live.REGISTRY._sessions  # the node's session ended with it


def test_schedule_from_steering_keeps_the_run_schedule_and_replaces_at_the_same_frame():
    clip = FakeClip()
    scheduled = prompts.PromptSegment(21, torch.zeros(1, 8, TEXT_DIM))
    kept = prompts.PromptSegment(40, torch.ones(1, 8, TEXT_DIM))
    record = [{"frame": 21, "text": "steered"}, {"frame": 9, "text": "earlier"}]
    [schedule] = run_node(NODES, "LongLiveSteeringSchedule", clip=clip, steering=json.dumps(record),
                          previous=(scheduled, kept))
    assert [p.start_frame for p in schedule] == [9, 21, 40]
    assert schedule[2] is kept
    assert torch.equal(schedule[1].context, clip.encode_from_tokens_scheduled(clip.tokenize("steered"))[0][0])


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"),
    ('{"frame": 9}', "JSON list"),
    ('[{"frame": "9", "text": "a"}]', "entry 0"),
    ('[{"frame": 9, "text": ""}]', "entry 0"),
    ('[{"frame": -1, "text": "a"}]', "entry 0"),
    ('[{"frame": 9, "text": "a"}, {"frame": 9, "text": "b"}]', "same frame"),
])
def test_schedule_from_steering_refuses_a_bad_record(text, message):
    with pytest.raises(ValueError, match=message):
        run_node(NODES, "LongLiveSteeringSchedule", clip=FakeClip(), steering=text)


def test_sampler_to_video_previews_real_frames_and_records_the_steering_in_the_mp4(server, tmp_path):
    video_nodes = importlib.import_module(f"{PACK}.nodes.video")
    vae = stand_in_vae.CausalStandInVAE(seed=6)
    answers = []
    steer_on_chunk(server, 2, "snow starts to fall", answers)
    result = video_nodes.LongLiveSampleToVideo().generate(
        model=model(), positive=positive(), clip=FakeClip(), vae=vae, filename_prefix="LongLive", fps=16, crf=19,
        unique_id="5", prompt={"5": {"class_type": "LongLiveSampleToVideo"}}, **SAMPLER)
    [(status, answer)] = answers
    record = [{"frame": answer["takes_effect_at_frame"], "text": "snow starts to fall"}]
    assert status == 200 and record[0]["frame"] in (21, 33)
    assert result["ui"]["longlive_steering"] == record
    path = tmp_path / "output" / "LongLive_00001_.mp4"
    with av.open(str(path)) as container:
        assert json.loads(container.metadata["longlive_steering"]) == record
        assert json.loads(container.metadata["prompt"]) == {"5": {"class_type": "LongLiveSampleToVideo"}}
    written = decoded(path)
    data = [d for _, d in server.events("longlive.chunk")]
    assert [(d["chunk"], d["first_frame"], d["frames"]) for d in data] == [(1, 0, 9), (2, 9, 12), (3, 21, 12),
                                                                             (4, 33, 12)]
    [(_, applied)] = server.events("longlive.steer")
    assert (applied["status"], applied["frame"], applied["text"]) == ("applied", record[0]["frame"], record[0]["text"])
    for d in data:  # the real decoded frames of the chunk (at 64x64, the video's own size)
        frames = np.stack(decoded(tmp_path / "temp" / "longlive" / d["preview"]["filename"]))
        assert frames.shape == (d["frames"], SIZE, SIZE, 3)
        # in luma, near the video's frames it states (two H.264 encodes of noise-like frames: measured 6.8
        # to 7.3 grey levels) and far from the same count of frames starting anywhere else (30 or more)
        errors = {start: float(np.abs(luma(frames) - luma(np.stack(written[start:start + d["frames"]]))).mean())
                  for start in range(0, len(written) - d["frames"] + 1)}
        others = [e for start, e in errors.items() if start != d["first_frame"]]
        assert errors[d["first_frame"]] < 10 and 2 * errors[d["first_frame"]] < min(others), errors


def test_save_video_writes_the_steering_record_of_its_latent(server, tmp_path):
    video_nodes = importlib.import_module(f"{PACK}.nodes.video")
    record = [{"frame": 9, "text": "ünïcödé and \"quotes\""}]
    latent = {"samples": torch.randn(1, 16, 4, 4, 4), "longlive_ref_frames": 0, "longlive_steering": record}
    result = video_nodes.LongLiveSaveVideo().save(samples=latent, vae=stand_in_vae.CausalStandInVAE(),
                                                  filename_prefix="saved", fps=16, crf=19)
    assert result["ui"]["longlive_steering"] == record
    with av.open(str(tmp_path / "output" / "saved_00001_.mp4")) as container:
        assert json.loads(container.metadata["longlive_steering"]) == record


def test_continue_video_previews_the_whole_timeline(server):
    earlier = run_node(NODES, "LongLiveSampler", model=model(), positive=positive(),
                       **{**SAMPLER, "latent": video_latent(SIZE, SIZE, 21)})[0]
    server.messages.clear()
    run_node(NODES, "LongLiveContinue", model=model(), positive=positive(), samples=earlier, unique_id="9",
             length=24, output="continuation", **{k: v for k, v in SAMPLER.items() if k != "latent"})
    data = [d for _, d in server.messages]
    # the earlier 6 latent frames are 2 given chunks, then 6 new frames in 2 chunks
    assert [(d["node"], d["chunk"], d["chunks"], d["first_frame"], d["frames"]) for d in data] == \
        [("9", 1, 4, 0, 9), ("9", 2, 4, 9, 12), ("9", 3, 4, 21, 12), ("9", 4, 4, 33, 12)]
    assert "clip" not in NODES["LongLiveContinue"].INPUT_TYPES()["optional"]


def test_a_held_run_with_a_dropped_steer_makes_the_frames_of_an_untouched_run(server):
    """Held at a boundary until its timeout (no chunk is made meanwhile, the chunks before it are
    announced first), then a steer whose conditioning is NaN is dropped there: the run finishes with
    every chunk, records nothing, tells the client, and its latents equal a run nobody touched."""
    answers = []

    def react(event, data):
        if event == "longlive.chunk" and data["chunk"] == 1:
            answers.append(live.REGISTRY.answer_hold(hold_body(timeout_s=0.3)))
        if event == "longlive.hold" and data["state"] == "resumed":  # sent before the boundary's text is taken
            answers.append(live.REGISTRY.answer(steer_body("snow nan")))

    server.on_event = react
    out = run_node(NODES, "LongLiveSampler", model=model(), positive=positive(), clip=BrokenClip(), unique_id="7",
                   **SAMPLER)
    [(hold_status, hold), (steer_status, steered)] = answers
    frame = hold["holds_at_frame"]
    assert hold_status == steer_status == 200 and steered["takes_effect_at_frame"] == frame
    assert out["ui"] == {"longlive_steering": []}
    events = [(event, data.get("chunk") or data.get("state") or data.get("status")) for event, data in server.messages]
    held = events.index(("longlive.hold", "held"))
    chunks_before = [n for event, n in events[:held] if event == "longlive.chunk"]
    assert chunks_before == list(range(1, len(chunks_before) + 1))  # every chunk before the boundary, in order
    # nothing made while held; the steer sent on "resumed" is dropped at the same boundary
    assert events[held + 1:held + 3] == [("longlive.hold", "resumed"), ("longlive.steer", "dropped")]
    resumed = server.messages[held + 1][1]
    assert resumed["by"] == "timeout" and 0.3 <= resumed["held_s"] < 5 and resumed["frame"] == frame
    first_after = next(d for e, d in server.messages[held:] if e == "longlive.chunk")
    assert first_after["first_frame"] == frame  # the chunk the hold waited for
    [(_, dropped)] = server.events("longlive.steer")
    assert (dropped["frame"], dropped["text"]) == (frame, "snow nan") and "non-finite" in dropped["reason"]
    assert len(server.events("longlive.chunk")) == 4
    untouched = run_node(NODES, "LongLiveSampler", model=model(), positive=positive(), **SAMPLER)[0]
    assert torch.equal(untouched["samples"], out["result"][0]["samples"])


def test_cancel_while_held_leaves_a_valid_mp4_of_the_chunks_before_the_hold(server, tmp_path):
    video_nodes = importlib.import_module(f"{PACK}.nodes.video")
    answers = []

    def react(event, data):
        if event == live.CHUNK_EVENT and data["chunk"] == 2:
            answers.append(live.REGISTRY.answer_hold(hold_body()))
        if event == "longlive.hold" and data["state"] == "held":  # Cancel once the run is held, not on a timer
            request_interrupt()

    server.on_event = react
    try:
        with pytest.raises(host.InterruptProcessingException):
            video_nodes.LongLiveSampleToVideo().generate(
                model=model(), positive=positive(), clip=FakeClip(), vae=stand_in_vae.CausalStandInVAE(seed=6),
                filename_prefix="held", fps=16, crf=19, unique_id="5", **SAMPLER)
    finally:
        request_interrupt(False)
    [(status, answer)] = answers
    frame = answer["holds_at_frame"]
    assert status == 200 and frame in (21, 33)
    assert [d["by"] for e, d in server.messages if e == "longlive.hold" and d["state"] == "resumed"] == ["cancel"]
    written = decoded(tmp_path / "output" / "held_00001_.mp4")
    assert len(written) == frame  # every chunk before the held boundary, nothing after


# ---------------------------------------------------------------------------------------------
# broken prompts are named before any model work


def test_a_queued_prompt_with_nan_conditioning_is_refused_before_any_chunk(server):
    """What CLIPTextEncode makes of `(snow:nan)`: NaN rows. The sampler refuses it naming its input and
    the prompt's weights, not the model files, before the model runs (no chunk is announced); a
    schedule entry is refused by its own node."""
    broken = positive()
    broken[0][0][0, 3, :] = float("nan")
    with pytest.raises(ValueError) as error:
        run_node(NODES, "LongLiveSampler", model=model(), positive=broken, clip=FakeClip(), unique_id="7", **SAMPLER)
    message = str(error.value)
    assert message.startswith("positive: the prompt's conditioning holds 64 non-finite values (NaN or infinity)")
    assert "(word:nan)" in message and "checkpoint" not in message and "LoRA" not in message
    assert server.messages == []
    with pytest.raises(ValueError, match=r"^conditioning \(the prompt schedule's entry at frame 21\): the prompt's "
                                         r"conditioning holds 64 non-finite"):
        run_node(NODES, "LongLivePromptSchedule", conditioning=broken, start_frame=21)


def test_a_batch_previews_its_videos_side_by_side_and_is_steered_with_one_record(server, tmp_path):
    """A batch of 2: one message per chunk, its clip the two videos side by side (video 0 on the
    left), one steering record that applies to both, and each video replays alone with seed + i."""
    clip, answers = FakeClip(), []
    steer_on_chunk(server, 1, "a heron lands on the water", answers)
    batch = {"samples": SAMPLER["latent"]["samples"].expand(2, -1, -1, -1, -1).clone()}
    out = run_node(NODES, "LongLiveSampler", model=model(), positive=positive(), clip=clip, unique_id="7",
                   **{**SAMPLER, "latent": batch})
    [(status, answer)] = answers
    record = [{"frame": answer["takes_effect_at_frame"], "text": "a heron lands on the water"}]
    assert status == 200 and out["ui"] == {"longlive_steering": record}
    steered = out["result"][0]
    data = [d for _, d in server.events("longlive.chunk")]
    assert [(d["chunk"], d["first_frame"], d["frames"]) for d in data] == [(1, 0, 9), (2, 9, 12), (3, 21, 12),
                                                                             (4, 33, 12)]
    latents = importlib.import_module(f"{PACK}.vace_core.latents")
    projected = [project(latents.normalize_latents(steered["samples"][i:i + 1])) for i in range(2)]
    frames = np.stack(decoded(tmp_path / "temp" / "longlive" / data[1]["preview"]["filename"]))
    width = SIZE // 8
    assert frames.shape == (12, SIZE // 8, 2 * width, 3)
    # in luma, each half is near its own video's chunk and far from the other's (measured 7.2 to 7.6
    # grey levels against 65 to 67)
    for side in range(2):
        half = luma(frames[:, :, side * width:(side + 1) * width])
        errors = [float(np.abs(half - luma(np.repeat(p[3:6], 4, axis=0).astype(float))).mean()) for p in projected]
        assert 2 * errors[side] < errors[1 - side], errors
    schedule = run_node(NODES, "LongLiveSteeringSchedule", clip=FakeClip(), steering=json.dumps(record))[0]
    for i in range(2):
        alone = run_node(NODES, "LongLiveSampler", model=model(), positive=positive(), prompt_schedule=schedule,
                         **{**SAMPLER, "seed": SAMPLER["seed"] + i})[0]
        assert torch.equal(alone["samples"], steered["samples"][i:i + 1]), i
