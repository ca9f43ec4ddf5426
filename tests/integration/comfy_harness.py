"""Shared helpers for the integration tests: which ComfyUIs to test, a stdlib HTTP client for a
running server, and how to lay out an isolated base directory and start/stop ``main.py --cpu``.

Which ComfyUIs (`find_installs`), in order of precedence:
  COMFYUI_DIR      one checkout, or several separated by ':' (every one must exist)
  otherwise        every snapshot in ../shared/comfyui/*/ beside the repository (0.8.0, 0.33.0),
                   else /opt/ComfyUI; with none found the integration tests skip, or fail under CI=true
  COMFYUI_PYTHON   the interpreter that runs them (fallback /opt/comfy-venv/bin/python, else this python)
  COMFYUI_FRONTEND_CACHE  where editor (frontend) packages other than the venv's are installed
                   (default ~/.cache/comfyui-frontends): each ComfyUI is served with the frontend
                   version its requirements.txt pins, so 0.8.0 runs with editor 1.35.9
  COMFYUI_START_TIMEOUT  seconds to wait for a server (default 180)
  COMFYUI_PYTHON_READY   a file that appears once COMFYUI_PYTHON is set up, holding "ok" or why not:
                   the tests that need a ComfyUI wait for it (CI builds that venv while the other
                   tests run; COMFYUI_PYTHON_READY_TIMEOUT seconds at most, default 1800)

ComfyUI's python never writes bytecode next to its sources (child_env) and the server runs with an
isolated --base-directory, so nothing is ever written into a checkout (the shared snapshots are read-only).

Tests import this module by name (pytest puts tests/integration on sys.path); it is not called
conftest so it cannot be confused with another directory's conftest.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
SHARED_SNAPSHOTS = REPO_ROOT.parent / "shared" / "comfyui"
PACK_DIR_NAME = "comfyui-longlive-vace"
TEST_PACK_DIR_NAME = "comfyui-longlive-test-pack"
TINY_VAE_NAME = "tiny_wan_2.1_vae.safetensors"
# What a user's clone of the repo contributes to custom_nodes/ (tests and dev files stay out).
PACK_ENTRIES = ("__init__.py", "nodes", "vace_core", "web", "example_workflows",
                "pyproject.toml", "requirements.txt", "README.md", "LICENSE")
MODEL_FOLDERS = ("diffusion_models", "loras", "vae", "text_encoders")
LOG_TAIL_LINES = 80
FRONTEND_PACKAGE = "comfyui-frontend-package"
NO_COMFYUI = ("no ComfyUI found: set COMFYUI_DIR to a checkout (several separated by ':') and COMFYUI_PYTHON "
              "to its python, or put snapshots in ../shared/comfyui/")


def in_ci() -> bool:
    """CI=true (any value but '', 0, false): a missing ComfyUI fails instead of skipping."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: its bytecode never next to the sources (a read-only
    ComfyUI snapshot, the checkout). With PYTHONPYCACHEPREFIX set (CI: .ci/cache/pycache) it is
    written there, each module compiled once for every process of the run; else it is not written."""
    env = dict(os.environ, **extra)
    if env.get("PYTHONPYCACHEPREFIX"):
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def comfy_env(**extra: str) -> dict[str, str]:
    """The environment for ComfyUI's python (child_env, unbuffered)."""
    return child_env(PYTHONUNBUFFERED="1", **extra)


def _comfyui_python() -> str:
    env = os.environ.get("COMFYUI_PYTHON")
    if env:
        return env
    venv = Path("/opt/comfy-venv/bin/python")
    return str(venv) if venv.exists() else sys.executable


def _version_of(checkout: Path) -> str:
    match = re.search(r"__version__\s*=\s*[\"']([^\"']+)", _read(checkout / "comfyui_version.py"))
    return match.group(1) if match else checkout.name


def _pinned_frontend(checkout: Path) -> str | None:
    match = re.search(r"^comfyui[-_]frontend[-_]package==(\S+)", _read(checkout / "requirements.txt"), re.M)
    return match.group(1) if match else None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True)
class ComfyInstall:
    """One ComfyUI checkout and the python that runs it."""
    dir: Path
    python: str
    version: str
    frontend: str | None  # the editor version its requirements.txt pins

    @property
    def label(self) -> str:
        return self.version

    def run_python(self, args: list[str], timeout: float = 300, cwd: str | Path | None = None
                   ) -> subprocess.CompletedProcess:
        """Run ComfyUI's python with `args`; COMFYUI_DIR is passed on so scripts can import comfy."""
        return subprocess.run([self.python, *args], cwd=cwd, env=comfy_env(COMFYUI_DIR=str(self.dir)),
                              timeout=timeout, capture_output=True, text=True)


def _candidate_dirs() -> tuple[list[Path], bool]:
    """(checkouts to test, whether the user named them explicitly)."""
    env = os.environ.get("COMFYUI_DIR", "").strip()
    if env:
        return [Path(p).expanduser().resolve() for p in env.split(os.pathsep) if p.strip()], True
    snapshots = sorted((p.parent for p in SHARED_SNAPSHOTS.glob("*/main.py")),
                       key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"[.]", p.name)])
    if snapshots:
        return [p.resolve() for p in snapshots], False
    return [Path("/opt/ComfyUI")] if (Path("/opt/ComfyUI") / "main.py").is_file() else [], False


def find_installs() -> tuple[list[ComfyInstall], list[str]]:
    """The ComfyUIs to test and the problems found (a named checkout without main.py)."""
    dirs, explicit = _candidate_dirs()
    python = _comfyui_python()
    installs, problems = [], []
    for checkout in dirs:
        if not (checkout / "main.py").is_file():
            problems.append(f"COMFYUI_DIR names {checkout}, which is not a ComfyUI checkout (no main.py)")
            continue
        installs.append(ComfyInstall(checkout, python, _version_of(checkout), _pinned_frontend(checkout)))
    labels = [i.label for i in installs]
    if len(set(labels)) != len(labels):  # two checkouts of one version: tell them apart by folder
        installs = [ComfyInstall(i.dir, i.python, f"{i.version}@{i.dir.name}", i.frontend) for i in installs]
    if not installs and not problems and explicit:
        problems.append("COMFYUI_DIR is set but names no checkout")
    return installs, problems


def wait_for_comfyui_python() -> None:
    """Return once COMFYUI_PYTHON_READY (if set) says the python is set up; RuntimeError when it says
    the setup failed or does not appear in time."""
    marker = os.environ.get("COMFYUI_PYTHON_READY")
    if not marker:
        return
    deadline = time.monotonic() + float(os.environ.get("COMFYUI_PYTHON_READY_TIMEOUT", "1800"))
    while not os.path.exists(marker):
        if time.monotonic() > deadline:
            raise RuntimeError(f"COMFYUI_PYTHON_READY: {marker} did not appear in time")
        time.sleep(1.0)
    said = _read(Path(marker)).strip()
    if said != "ok":
        raise RuntimeError(f"the ComfyUI python is not set up ({marker}): {said}")


# ---------------------------------------------------------------------------------------------
# the editor: serve each ComfyUI with the frontend version it pins


def frontend_cache() -> Path:
    env = os.environ.get("COMFYUI_FRONTEND_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "comfyui-frontends"


@lru_cache(maxsize=None)
def _installed_frontend(python: str) -> str | None:
    done = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version('{FRONTEND_PACKAGE}'))"],
                          env=comfy_env(), capture_output=True, text=True, timeout=120)
    return done.stdout.strip() or None if done.returncode == 0 else None


def frontend_root(install: ComfyInstall) -> Path | None:
    """The `--front-end-root` that serves the editor `install` pins, or None when the venv's own
    frontend package is that version. A missing version is installed once into frontend_cache()
    (pip --target; the static files only), under a file lock, since two test processes may start
    servers of one version at once (pytest -n). RuntimeError when that fails."""
    if install.frontend is None or _installed_frontend(install.python) == install.frontend:
        return None
    target = frontend_cache() / install.frontend
    static = target / "comfyui_frontend_package" / "static"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{install.frontend}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (static / "index.html").is_file():
            done = subprocess.run([install.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                   "--no-deps", "--target", str(target), f"{FRONTEND_PACKAGE}=={install.frontend}"],
                                  env=comfy_env(), capture_output=True, text=True, timeout=600)
            if done.returncode != 0 or not (static / "index.html").is_file():
                raise RuntimeError(f"could not install {FRONTEND_PACKAGE}=={install.frontend} into {target}:\n"
                                   + done.stdout[-2000:] + done.stderr[-2000:])
    return static


class PromptRejected(AssertionError):
    """POST /prompt answered 400 (validation failed); carries the server's error JSON."""


class PromptFailed(AssertionError):
    """The prompt ran and ended with status 'error'."""


class ComfyClient:
    """A small HTTP client for one running server (stdlib only)."""

    def __init__(self, url: str, base_dir: Path, log_path: Path, process: subprocess.Popen,
                 install: ComfyInstall):
        self.url = url
        self.install = install
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

    def post_json(self, path: str, body: dict, timeout: float = 30):
        """POST a JSON body to any route (another node pack's, say); its JSON answer."""
        return self._request("POST", path, body, timeout=timeout)

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


SHARED_EXTENSIONS = REPO_ROOT.parent / "shared" / "comfyui-extensions"  # other node packs, for tests only


def install_node_pack(base: Path, source: Path) -> Path:
    """Copy another node pack (a folder of ../shared/comfyui-extensions/, say) into the base
    directory's custom_nodes/: a copy, never a link, so whatever it writes into its own folder (its
    settings) stays in this server's base directory and the source is never written to."""
    if not (source / "__init__.py").is_file():
        raise FileNotFoundError(f"{source} is not a node pack (no __init__.py)")
    target = base / "custom_nodes" / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git", "tests",
                                                                  "node_modules"))
    return target


def make_base_dir(base: Path, install: ComfyInstall) -> None:
    """Lay out an isolated --base-directory: model folders, input/output, both packs, tiny VAE."""
    for folder in MODEL_FOLDERS:
        (base / "models" / folder).mkdir(parents=True)
    for folder in ("input", "output", "custom_nodes"):
        (base / folder).mkdir()
    _install_packs(base / "custom_nodes")
    made = install.run_python([str(HERE / "make_tiny_wan_vae.py"), str(base / "models" / "vae" / TINY_VAE_NAME)])
    if made.returncode != 0:
        raise RuntimeError("make_tiny_wan_vae.py failed:\n" + made.stdout + made.stderr)


def start_server(install: ComfyInstall, base: Path, log_path: Path) -> ComfyClient:
    """Launch main.py --cpu on a free loopback port, serving the editor version `install` pins, and
    return a client once /object_info answers."""
    port = free_port()
    cmd = [install.python, str(install.dir / "main.py"), "--cpu",
           "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
           # the default database lives inside the ComfyUI checkout; keep runs isolated
           "--database-url", "sqlite:///:memory:",
           # paid cloud-API nodes are useless offline and slow the start-up by a few seconds
           "--disable-api-nodes"]
    editor = frontend_root(install)
    if editor is not None:
        cmd += ["--front-end-root", str(editor)]
    # one compute thread: the tiny test models are all per-op overhead, and a second thread
    # fighting the test process for the 2 CI cores slows the server down about tenfold
    env = comfy_env(OMP_NUM_THREADS="1")
    log = open(log_path, "wb")
    try:
        process = subprocess.Popen(cmd, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    finally:
        log.close()  # the child holds its own descriptor
    client = ComfyClient(f"http://127.0.0.1:{port}", base, log_path, process, install)
    deadline = time.monotonic() + float(os.environ.get("COMFYUI_START_TIMEOUT", "180"))
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ComfyUI {install.label} exited with {process.returncode} during start-up\n"
                               + client.log_tail())
        try:
            client.get_json("/object_info", timeout=10)
            return client
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            time.sleep(0.5)
    stop_server(process)
    raise RuntimeError(f"ComfyUI {install.label} did not answer /object_info in time\n" + client.log_tail())


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


