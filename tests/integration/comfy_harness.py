"""Shared helpers for the integration tests: where ComfyUI is, a stdlib HTTP client for a running
server, and how to lay out an isolated base directory and start/stop ``main.py --cpu``.

Where ComfyUI is found:
  COMFYUI_DIR      the ComfyUI checkout (fallback /opt/ComfyUI); without one the tests skip
  COMFYUI_PYTHON   its interpreter (fallback /opt/comfy-venv/bin/python, else this python)
  COMFYUI_START_TIMEOUT  seconds to wait for the server (default 180)

Tests import this module by name (pytest puts tests/integration on sys.path); it is not called
conftest so it cannot be confused with another directory's conftest.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
PACK_DIR_NAME = "comfyui-longlive-vace"
TEST_PACK_DIR_NAME = "comfyui-longlive-test-pack"
TINY_VAE_NAME = "tiny_wan_2.1_vae.safetensors"
# What a user's clone of the repo contributes to custom_nodes/ (tests and dev files stay out).
PACK_ENTRIES = ("__init__.py", "nodes", "vace_core", "workflows", "example_workflows",
                "pyproject.toml", "requirements.txt", "README.md", "LICENSE")
MODEL_FOLDERS = ("diffusion_models", "loras", "vae", "text_encoders")
LOG_TAIL_LINES = 80


def _comfyui_dir() -> Path | None:
    env = os.environ.get("COMFYUI_DIR")
    candidate = Path(env) if env else Path("/opt/ComfyUI")
    return candidate if (candidate / "main.py").is_file() else None


def _comfyui_python() -> str:
    env = os.environ.get("COMFYUI_PYTHON")
    if env:
        return env
    venv = Path("/opt/comfy-venv/bin/python")
    return str(venv) if venv.exists() else sys.executable


COMFYUI_DIR = _comfyui_dir()
COMFYUI_PYTHON = _comfyui_python()


def run_comfy_python(args: list[str], timeout: float = 300, cwd: str | Path | None = None
                     ) -> subprocess.CompletedProcess:
    """Run ComfyUI's python with `args`; COMFYUI_DIR is passed on so scripts can import comfy."""
    env = dict(os.environ, COMFYUI_DIR=str(COMFYUI_DIR), PYTHONUNBUFFERED="1")
    return subprocess.run([COMFYUI_PYTHON, *args], cwd=cwd, env=env, timeout=timeout,
                          capture_output=True, text=True)


class PromptRejected(AssertionError):
    """POST /prompt answered 400 (validation failed); carries the server's error JSON."""


class PromptFailed(AssertionError):
    """The prompt ran and ended with status 'error'."""


class ComfyClient:
    """A small HTTP client for one running server (stdlib only)."""

    def __init__(self, url: str, base_dir: Path, log_path: Path, process: subprocess.Popen):
        self.url = url
        self.base_dir = base_dir
        self.log_path = log_path
        self.process = process
        self.client_id = uuid.uuid4().hex
        self.tiny_vae_name = TINY_VAE_NAME
        self.start_seconds: float | None = None  # set by the fixture: launch to /object_info

    # -- folders ---------------------------------------------------------------
    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    def models_dir(self, folder: str) -> Path:
        return self.base_dir / "models" / folder

    def add_model(self, folder: str, src: str | Path, name: str | None = None) -> str:
        """Copy a file into models/<folder>/ and return the name loaders list it under."""
        dest = self.models_dir(folder) / (name or Path(src).name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest.name

    def add_input(self, src: str | Path, name: str | None = None) -> str:
        """Copy a file into input/ (where LoadImage looks) and return its name."""
        dest = self.input_dir / (name or Path(src).name)
        shutil.copyfile(src, dest)
        return dest.name

    # -- HTTP ------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None, timeout: float = 30):
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def get_json(self, path: str, timeout: float = 30):
        return self._request("GET", path, timeout=timeout)

    def get_object_info(self, node_class: str | None = None) -> dict:
        """All node definitions, or {node_class: definition} ({} if the class is unknown)."""
        if node_class is None:
            return self.get_json("/object_info")
        return self.get_json("/object_info/" + urllib.parse.quote(node_class))

    def post_prompt(self, api_graph: dict) -> str:
        """Queue an API-format graph; return its prompt_id. Raises PromptRejected on a 400."""
        body = {"prompt": api_graph, "client_id": self.client_id}
        try:
            return self._request("POST", "/prompt", body)["prompt_id"]
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")
            raise PromptRejected(f"POST /prompt -> {err.code}: {detail}") from None

    def wait(self, prompt_id: str, timeout: float = 300, poll: float = 0.2) -> dict:
        """Poll /history until the prompt is finished; return its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} while waiting\n"
                                   + self.log_tail())
            entry = self.get_json("/history/" + prompt_id).get(prompt_id)
            if entry and (entry.get("status") or {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout} s")

    def run(self, api_graph: dict, timeout: float = 300) -> dict:
        """post_prompt + wait; raises PromptFailed (with the node's traceback) on an error."""
        entry = self.wait(self.post_prompt(api_graph), timeout)
        error = execution_error(entry)
        if error is not None:
            raise PromptFailed(
                f"node {error.get('node_id')} ({error.get('node_type')}) raised "
                f"{error.get('exception_type')}: {error.get('exception_message')}\n"
                + "".join(error.get("traceback", [])))
        return entry

    def output_files(self, entry: dict) -> list[Path]:
        """Local paths of every file a finished prompt reported in its UI outputs."""
        roots = {"output": self.output_dir, "temp": self.base_dir / "temp", "input": self.input_dir}
        paths = []
        for node_output in entry.get("outputs", {}).values():
            for items in node_output.values():
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict) and "filename" in item:
                        root = roots[item.get("type", "output")]
                        paths.append(root / item.get("subfolder", "") / item["filename"])
        return paths

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)


def execution_error(entry: dict) -> dict | None:
    """The 'execution_error' message of a history entry, or None when it succeeded."""
    status = entry.get("status") or {}
    if status.get("status_str") != "error":
        return None
    for name, data in status.get("messages", []):
        if name == "execution_error":
            return data
    return {"exception_message": "status 'error' without an execution_error message"}


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no server log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _install_packs(custom_nodes: Path) -> None:
    """Copy our pack (as a user's clone would lay it out) and the test-only pack."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".git", "tests")
    pack = custom_nodes / PACK_DIR_NAME
    pack.mkdir(parents=True)
    for entry in PACK_ENTRIES:
        src = REPO_ROOT / entry
        if src.is_dir():
            shutil.copytree(src, pack / entry, ignore=ignore)
        elif src.is_file():
            shutil.copyfile(src, pack / entry)
    shutil.copytree(HERE / "test_pack", custom_nodes / TEST_PACK_DIR_NAME, ignore=ignore)


def make_base_dir(base: Path) -> None:
    """Lay out an isolated --base-directory: model folders, input/output, both packs, tiny VAE."""
    for folder in MODEL_FOLDERS:
        (base / "models" / folder).mkdir(parents=True)
    for folder in ("input", "output", "custom_nodes"):
        (base / folder).mkdir()
    _install_packs(base / "custom_nodes")
    made = run_comfy_python([str(HERE / "make_tiny_wan_vae.py"),
                             str(base / "models" / "vae" / TINY_VAE_NAME)])
    if made.returncode != 0:
        raise RuntimeError("make_tiny_wan_vae.py failed:\n" + made.stdout + made.stderr)


def start_server(base: Path, log_path: Path) -> ComfyClient:
    """Launch main.py --cpu on a free loopback port and return a client once /object_info answers."""
    port = free_port()
    cmd = [COMFYUI_PYTHON, str(COMFYUI_DIR / "main.py"), "--cpu",
           "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
           # the default database lives inside the ComfyUI checkout; keep runs isolated
           "--database-url", "sqlite:///:memory:",
           # paid cloud-API nodes are useless offline and slow the start-up by a few seconds
           "--disable-api-nodes"]
    # one compute thread: the tiny test models are all per-op overhead, and a second thread
    # fighting the test process for the 2 CI cores slows the server down about tenfold
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    log = open(log_path, "wb")
    try:
        process = subprocess.Popen(cmd, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    finally:
        log.close()  # the child holds its own descriptor
    client = ComfyClient(f"http://127.0.0.1:{port}", base, log_path, process)
    deadline = time.monotonic() + float(os.environ.get("COMFYUI_START_TIMEOUT", "180"))
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {process.returncode} during start-up\n"
                               + client.log_tail())
        try:
            client.get_json("/object_info", timeout=10)
            return client
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            time.sleep(0.5)
    stop_server(process)
    raise RuntimeError("ComfyUI did not answer /object_info in time\n" + client.log_tail())


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


