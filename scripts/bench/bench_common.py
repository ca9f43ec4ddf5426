"""What the benchmark scripts share: the sizes and run lengths per device (`PLANS`), the system
under test (`Bench`: a random-weight model, a prompt, VACE contexts), timed generation per chunk,
the statistics over repeats, machine and memory probes, fresh processes per measurement, the
ComfyUI import for the side-by-side scripts, and the results files' appendix sections.

Every script of scripts/bench/ imports this module first: it puts the repository root (vace_core,
nodes) and scripts/ (pack_loader) on sys.path, so a script runs from anywhere without installing.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[2]
for _folder in (ROOT / "scripts", ROOT):
    if str(_folder) not in sys.path:
        sys.path.insert(1, str(_folder))  # after the script's own folder

from vace_core.config import architecture  # noqa: E402
from vace_core.encoding import CONTEXT_CHANNELS, VaceContext  # noqa: E402
from vace_core.latents import LATENT_CHANNELS, video_frames_for  # noqa: E402
from vace_core.model import CausalWanModel  # noqa: E402
from vace_core.passes import CachedPasses, PassExecutor, RunView  # noqa: E402
from vace_core.plan import SamplerSettings, tokens_per_frame  # noqa: E402
from vace_core.sampler import ChunkInfo, generate  # noqa: E402
from vace_core.testing import fixtures  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FLAT_LIMIT = 1.10  # acceptance 1: late chunk / early chunk for the KV cache
MEMORY_LIMIT = 1.05  # acceptance 2: long / short peak memory
PROMPT_TOKENS = 40  # real rows of the benchmark's 512-row prompt


@dataclass(frozen=True)
class Plan:
    """Sizes and run lengths for one device (chunk numbers are 1-based)."""
    preset: str
    height: int
    width: int
    dtype: str
    long_chunks: int  # KV-cache run; 41 so that chunk 40 is not the last (no clean pass)
    baseline_chunks: int  # naive recompute run (its cost per chunk grows with the index)
    vace_chunks: int
    memory_chunks: tuple[int, int]  # short, long
    early_chunk: int  # window full (chunk 4 for chunk 3 / window 12): steady state from here
    late_chunk: int
    profile_chunks: tuple[int, int]  # profiled chunk range of the instrumented run
    repeats: int
    baseline_repeats: int
    baseline_early_chunk: int = 5  # the baseline's growth is its last chunk over this one
    compile_chunks: int = 7  # per run of bench.py's compile section


MIN_REPEATS = 3  # timed repeats of every timed configuration (bench.py's sections)
PLANS = {
    "cpu": Plan("tiny-vace", 128, 128, "float32", 41, 12, 12, (10, 40), 5, 40, (5, 8), 5, MIN_REPEATS),
    # each section of bench.py a few minutes on an H100 / H200 (about 0.6 s per T2V chunk, 1 s per
    # R2V chunk): a 16-chunk KV run, a 6-chunk naive baseline (its token-level mask over every
    # earlier frame is 0.8 GB there), 7-chunk VACE runs, 3 repeats each
    "cuda": Plan("wan2.1-vace-1.3B", 480, 832, "bfloat16", 16, 6, 7, (6, 18), 5, 15, (5, 8), MIN_REPEATS,
                 MIN_REPEATS, baseline_early_chunk=2),
    "quick": Plan("tiny-vace", 32, 32, "float32", 5, 4, 3, (2, 4), 2, 4, (2, 3), 1, 1, baseline_early_chunk=2,
                  compile_chunks=3),
}


STARTED = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", flush=True)


def process_age_s() -> float:
    """Seconds since this process started (Linux: /proc; elsewhere since this module was imported),
    so that a time budget also counts python's start and the imports."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - STARTED


def run_child(command: list[str], timeout: float | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`command` in a process group of its own; on `timeout` the whole group (the grandchildren a
    benchmark script starts too) is killed and subprocess.TimeoutExpired raised."""
    with subprocess.Popen(command, start_new_session=True, **kwargs) as child:
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise
    return subprocess.CompletedProcess(command, child.returncode, out, err)


# ---- machine and memory probes ---------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "gpu": None}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def sdpa_flags(device: torch.device) -> dict:
    """Which scaled-dot-product-attention backends CUDA may pick (what actually ran is in the profile)."""
    if device.type != "cuda":
        return {}
    flags = {"flash": torch.backends.cuda.flash_sdp_enabled(),
             "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
             "math": torch.backends.cuda.math_sdp_enabled()}
    if hasattr(torch.backends.cuda, "cudnn_sdp_enabled"):
        flags["cudnn"] = torch.backends.cuda.cudnn_sdp_enabled()
    return flags


def proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_peak_mib() -> float:
    kib = proc_status_kib("VmHWM")
    if kib is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kib = peak // 1024 if sys.platform == "darwin" else peak
    return kib / 1024


def rss_now_mib() -> float | None:
    kib = proc_status_kib("VmRSS")
    return None if kib is None else kib / 1024


# ---- ComfyUI, for the side-by-side scripts (run with ComfyUI's python) --------------------------

def default_comfyui(needs: str = "comfy/model_management.py") -> Path:
    """The --comfyui default: the first checkout in $COMFYUI_DIR (':'-separated, as .ci/run sets it)
    that has `needs`, else its first entry, else /opt/ComfyUI."""
    listed = [Path(p) for p in (os.environ.get("COMFYUI_DIR") or "/opt/ComfyUI").split(os.pathsep) if p]
    return next((p for p in listed if (p / needs).is_file()), listed[0] if listed else Path("/opt/ComfyUI"))


def check_comfyui(comfy_dir: Path) -> None:
    if not (Path(comfy_dir) / "comfy" / "model_management.py").is_file():
        raise SystemExit(f"--comfyui {comfy_dir}: not a ComfyUI checkout (no comfy/model_management.py)")


def import_comfy(comfy_dir: Path, base_dir: Path, flags: Sequence[str] = ("--cpu",), **modules: str):
    """ComfyUI's modules as its server imports them with `flags` and a scratch base directory, as a
    namespace (name -> module for each `name="comfy.x.y"`), plus its `version` and `dir`. Nothing
    is written into the checkout when PYTHONDONTWRITEBYTECODE is set."""
    check_comfyui(comfy_dir)
    sys.path.insert(0, str(comfy_dir))
    import comfy.options

    comfy.options.enable_args_parsing()  # so comfy.cli_args reads the argv below, not ours
    saved, sys.argv = sys.argv, [sys.argv[0], *flags, "--base-directory", str(base_dir)]
    try:
        import comfy.model_management  # noqa: F401  (reads the device and VRAM flags at import)
        loaded = {name: importlib.import_module(module) for name, module in modules.items()}
    finally:
        sys.argv = saved
    return SimpleNamespace(**loaded, version=comfyui_version(comfy_dir), dir=str(comfy_dir))


def comfyui_version(comfy_dir: Path) -> str:
    """The version a ComfyUI checkout declares (comfyui_version.py), read without importing it."""
    version_file = Path(comfy_dir) / "comfyui_version.py"
    found = re.search(r'__version__ = "([^"]+)"', version_file.read_text()) if version_file.is_file() else None
    return found.group(1) if found else "unknown"


def write_pack_weights(preset: str, dtype: str, folder: Path) -> dict[str, str]:
    """Random weights of `preset` as the pack's users have them: a Wan-layout base file and a VACE
    module, in bf16 or fp32 (`dtype`), std 0.02 as vace_core.testing.fixtures makes them."""
    state = fixtures.make_state_dict(architecture(preset), seed=0)
    if dtype == "bf16":
        state = {k: v.to(torch.bfloat16) for k, v in state.items()}
    return {"base": str(fixtures.write_wan_safetensors(folder / "base.safetensors", fixtures.main_only(state))),
            "vace": str(fixtures.write_vace_module(folder / "vace_module.safetensors", state))}


def load_pack_model(model_ref: ModuleType, files: dict[str, str], dtype: str, vace: bool = True):
    """The LONGLIVE_MODEL the loader nodes make of `files` (write_pack_weights), through the pack's
    model_ref module as a host imported it."""
    def ref(name: str):
        path = Path(files[name])
        stat = path.stat()
        return model_ref.FileRef("diffusion_models", path.name, str(path), (stat.st_size, stat.st_mtime_ns))

    model = model_ref.load_model(ref("base"), dtype)
    return model.with_vace(ref("vace")) if vace else model


def random_prompt(config, seed: int = 1) -> torch.Tensor:
    """What ComfyUI's umT5 encoder gives for a PROMPT_TOKENS-token prompt: text_len rows, the padding zeroed."""
    text = torch.randn(1, config.text_len, config.text_dim, generator=torch.Generator().manual_seed(seed))
    text[:, PROMPT_TOKENS:] = 0
    return text


def random_vace_context(height: int, width: int, latent_frames: int, ref_frames: int = 1,
                        context_class: type = VaceContext) -> VaceContext:
    """A random R2V-shaped context: the reference frames, then one stored generated frame that
    repeats to the end (as the encoder stores the constant gray / mask-1 tail). `context_class`:
    the VaceContext of the pack as a host imported it."""
    noise = torch.Generator().manual_seed(2)
    context = torch.randn(1, CONTEXT_CHANNELS, ref_frames + 1, height // 8, width // 8, generator=noise)
    return context_class(context=context, ref_latents=context[:, :LATENT_CHANNELS, :ref_frames].clone(),
                         ref_frames=ref_frames, latent_frames=latent_frames,
                         video_frames=video_frames_for(latent_frames), height=height, width=width,
                         repeated_tail=latent_frames - 1)


# ---- the system under test ---------------------------------------------------------------------

class Bench:
    """A random-weight model of the plan's preset on `device`, a prompt and VACE contexts."""

    def __init__(self, plan: Plan, device: torch.device) -> None:
        self.plan = plan
        self.device = device
        self.dtype = DTYPES[plan.dtype]
        torch.manual_seed(0)
        with torch.device(device):  # built directly on the device, then cast (norms stay float32)
            self.model = CausalWanModel(architecture(plan.preset)).set_dtype(self.dtype).eval()
        self.text = random_prompt(self.model.config)
        self.settings = SamplerSettings()  # LongLive defaults: chunk 3, window 12, sink 3, 4 steps

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def vace_context(self, latent_frames: int, ref_frames: int = 1) -> VaceContext:
        return random_vace_context(self.plan.height, self.plan.width, latent_frames, ref_frames)

    def sizes(self) -> dict:
        config = self.model.config
        s = self.settings
        tokens = tokens_per_frame(self.plan.height, self.plan.width)
        return {"preset": self.plan.preset, "height": self.plan.height, "width": self.plan.width,
                "dtype": self.plan.dtype, "params_m": round(sum(p.numel() for p in self.model.parameters()) / 1e6, 1),
                "layers": config.num_layers, "vace_blocks": config.num_vace_blocks, "dim": config.dim,
                "tokens_per_frame": tokens, "chunk_frames": s.chunk_frames, "window_frames": s.window_frames,
                "sink_frames": s.sink_frames, "denoising_steps": list(s.denoising_steps),
                "chunk_tokens": tokens * s.chunk_frames, "window_tokens": tokens * s.window_frames}


@dataclass
class RunTimes:
    wall: list[float]  # seconds per generated chunk, chunk 1 first
    cpu: list[float]  # process CPU seconds per generated chunk
    first_chunk_latency: float  # start of generate -> first generated chunk done (refs included)
    total_wall: float
    video_frames: int
    finite: bool | None = None  # every latent finite (None: latents not kept)


def timed_generate(bench: Bench, chunks: int, settings: SamplerSettings, vace: bool,
                   keep_latents: bool = True, extra: Callable[[ChunkInfo], None] | None = None,
                   executor: Callable[[RunView], PassExecutor] = CachedPasses.for_run) -> RunTimes:
    """One generation of `chunks` chunks with perf_counter / process_time stamps per chunk
    (`executor`: what runs the passes, the KV caches unless given)."""
    latent_frames = chunks * settings.chunk_frames
    context = bench.vace_context(latent_frames) if vace else None
    wall: list[float] = []
    cpu: list[float] = []
    first: list[float] = []
    bench.sync()
    start = time.perf_counter()
    last = [start, time.process_time()]

    def on_chunk(info: ChunkInfo) -> None:
        bench.sync()  # the clean pass was only queued on a GPU
        now_wall, now_cpu = time.perf_counter(), time.process_time()
        if not info.block.is_reference:
            wall.append(now_wall - last[0])
            cpu.append(now_cpu - last[1])
            if not first:
                first.append(now_wall - start)
        last[:] = [now_wall, now_cpu]
        if extra is not None:
            extra(info)

    result = generate(bench.model, bench.text, video_frames=video_frames_for(latent_frames),
                      height=bench.plan.height, width=bench.plan.width, seed=0, vace=context,
                      settings=settings, on_chunk=on_chunk, keep_latents=keep_latents, executor=executor)
    bench.sync()
    finite = None if result.latents is None else bool(torch.isfinite(result.latents).all())
    return RunTimes(wall, cpu, first[0], time.perf_counter() - start, result.video_frames, finite)


# ---- statistics ----------------------------------------------------------------------------------

# per-chunk series: clock (wall, process CPU) x statistic over repeats (median; min, which other
# processes cannot inflate on a shared machine since their load only ever adds time)
SERIES = ("wall", "wall_min", "cpu", "cpu_min")


def per_index(runs: list[list[float]], stat: Callable[[list[float]], float]) -> list[float]:
    return [stat(list(values)) for values in zip(*runs)]


def ratio(curve: list[float], late: int, early: int) -> float:
    """curve[late] / curve[early] with 1-based chunk numbers."""
    return curve[late - 1] / curve[early - 1]


def mean_ratio(on: list[float], off: list[float], first: int, last: int) -> float:
    """sum(on) / sum(off) over chunks first..last (1-based, inclusive)."""
    return sum(on[first - 1:last]) / sum(off[first - 1:last])


def curve_summary(runs: list[RunTimes]) -> dict:
    curves = {}
    for series in SERIES:
        clock, _, stat = series.partition("_")
        values = per_index([getattr(r, clock) for r in runs], min if stat else statistics.median)
        curves[f"{series}_s"] = [round(t, 5) for t in values]
    return {**curves,
            "first_chunk_latency_s": round(statistics.median(r.first_chunk_latency for r in runs), 4),
            "total_wall_s": round(statistics.median(r.total_wall for r in runs), 3),
            "video_frames": runs[0].video_frames,
            "fps": round(runs[0].video_frames / statistics.median(r.total_wall for r in runs), 3),
            "repeats": len(runs)}


def fresh_process_reports(worker: Callable[[torch.device, dict], dict], specs: list[dict],
                          device: torch.device, parallel: int | None = None) -> list[dict]:
    """`worker(device, spec)` for each spec, each in its own new process, so peaks do not mix. On the
    CPU the processes are forked from this one (all start from its state, without paying the
    imports again) and run `parallel` at a time (default: one per core); CUDA cannot be forked, so
    there they are spawned (`worker` must then be picklable), one at a time."""
    context = multiprocessing.get_context("fork" if device.type == "cpu" else "spawn")
    if parallel is None or device.type != "cpu":
        parallel = (os.cpu_count() or 1) if device.type == "cpu" else 1
    reports = []
    for first in range(0, len(specs), parallel):
        children = []
        for spec in specs[first:first + parallel]:
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=report_worker, args=(sender, worker, str(device), spec))
            process.start()
            sender.close()
            children.append((process, receiver, spec))
        for process, receiver, spec in children:
            try:
                reports.append(receiver.recv())
            except EOFError:
                process.join()
                raise RuntimeError(f"memory child {spec} died (exit code {process.exitcode})") from None
            process.join()
    return reports


def report_worker(sender, worker: Callable[[torch.device, dict], dict], device_name: str, spec: dict) -> None:
    device = torch.device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(1)
    sender.send(worker(device, spec))
    sender.close()


def verdict(ok: bool | None) -> str:
    """PASS / FAIL, or SKIP for a check not judged in this run."""
    return "SKIP" if ok is None else "PASS" if ok else "FAIL"


# Sections other benchmark scripts add to a results file (scripts/bench/bench_native_ar.py) follow this
# line; rewriting the file keeps them.
APPENDIX_MARK = "<!-- sections below are written by other scripts and kept when this file is rewritten -->"


def write_markdown(path: Path, text: str) -> None:
    """Write `text` as the main part of `path`, keeping the appendix sections already there."""
    old = path.read_text() if path.exists() else ""
    appendix = old[old.index(APPENDIX_MARK):] if APPENDIX_MARK in old else ""
    path.write_text(text + ("\n" + appendix if appendix else ""))


def write_section(path: Path, name: str, text: str) -> None:
    """Put `text` into the appendix of `path` as section `name`, in place of an earlier one."""
    old = path.read_text() if path.exists() else ""
    main, _, appendix = old.partition(APPENDIX_MARK)
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    section = f"{begin}\n{text.strip()}\n{end}"
    if begin in appendix and end in appendix:
        appendix = appendix[:appendix.index(begin)] + section + appendix[appendix.index(end) + len(end):]
    else:
        appendix = appendix.rstrip("\n") + "\n\n" + section
    path.write_text(main.rstrip("\n") + "\n\n" + APPENDIX_MARK + "\n\n" + appendix.strip("\n") + "\n")
