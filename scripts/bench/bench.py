#!/usr/bin/env python3
"""Benchmark of the causal LongLive + VACE sampler, as one plan of sections run by priority within a
time budget: correctness of the GPU path, steady per-chunk time and FPS, peak memory, the decode's
share of a chunk and the gain of a second decode GPU, videos per hour per batch, torch.compile, the
low-VRAM path, the full per-chunk curves, and (on the CPU) the comparisons with ComfyUI's own models.

Sections (bench_sections.py says what each measures), in the plan's order of priority:

    correctness smoke steady memory decode batch compile native-ar preview forward lowvram timing vace

(native-ar, preview and forward are CPU comparisons: a GPU plan lists them as skipped.)

- With --budget SECONDS (counted from the process's start) a section runs only when its estimated
  time (an H100 at full size, or the CPU smoke run; scaled by how this machine has kept to the
  estimates so far) fits what is left; otherwise it is skipped and listed. A section still running
  when the budget ends is stopped (an alarm; children are killed) and listed; the run then exits 0
  with what it has.
- The results files bench/results-<device>.{json,md} are rewritten after EVERY section (a section
  run later replaces only its own figures), and by a section that hands its figures over as it
  measures (batch, through ctx.keep_figures), so a run cut short keeps what it measured; the markdown
  opens with the summary of the last plan run, which is also printed at the end for pasting: the
  card, torch and ComfyUI, each figure beside its expected range (bench_expected.py: the CPU model of
  the GPU figures), the checks, and what was skipped and why.
- --smoke runs every section that can at tiny sizes on the CPU (the CI test; results-cpu-smoke.*):
  their code paths and the checks that do not depend on timing.

Method: per-chunk time = time between consecutive `on_chunk` callbacks (4 denoising passes plus the
clean pass that writes the cache; the last chunk has none, so a "late" chunk is never the last).
Before timing, every configuration runs once untimed over every shape its timed runs see. Then
timed repeats, interleaved (A B C .. then .. C B A); every figure is a median over repeats per
chunk index (the minimum is reported beside it). On the CPU torch runs one thread and both wall and
process CPU time are recorded; CPU figures are ratios within one run. On a GPU the times are
CUDA-synchronised.

Usage (from the repository root; docs/benchmarks.md has the device command and what to expect):
    python3 scripts/bench/bench.py                         # CPU: smoke, timing, vace, memory at 128x128 (6-9 min)
    python3 scripts/bench/bench.py --smoke --budget 60 --comfyui DIR --out DIR   # the CI smoke run
    python scripts/bench/bench.py --budget 480 --comfyui DIR   # GPU: the plan -> bench/results-cuda.{json,md}
    python scripts/bench/bench.py --device cuda --sections steady,memory   # chosen sections only
It prints PASS/FAIL per check and exits 1 when a check of the sections it ran failed, 2 when a
section broke (an error, not the budget); skipped and stopped sections leave the status at 0.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import resource
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from bench_common import ROOT, check_comfyui, comfyui_version, log, machine_info, process_age_s, verdict
from bench_report import load_results, save_results, summary
from bench_sections import SECTION_RUNNERS, Context, OutOfTime, SectionSkipped


@dataclass(frozen=True)
class Section:
    """A section of the plan: its heading, its estimated seconds (an H100 at full size, the CPU
    benchmark at 128x128, the CPU smoke run), whether it needs --comfyui, and why it stays out of the
    smoke run ("" when it does not)."""
    name: str
    title: str
    seconds: tuple[float, float, float]
    comfyui: bool = False
    not_in_smoke: str = ""
    cpu_only: bool = False  # a comparison whose figures are CPU figures

    def estimate(self, device: str, smoke: bool) -> float:
        return max(1.0, self.seconds[2] if smoke else self.seconds[0 if device == "cuda" else 1])


# the plan, by priority. Estimates, seconds: GPU, an H100 at 480x832, model builds included (from the
# FLOP budget: no GPU has run the plan yet; the pace corrects them as sections finish); CPU, the
# benchmark at 128x128; smoke, processor seconds measured on the shared 2-core machine, x1.2
TIMED_CHECKS = "its checks compare timings, which need the full sizes"
PLAN = (
    Section("correctness", "Correctness of the GPU path", (60, 20, 6)),
    Section("smoke", "Smoke", (70, 20, 8)),
    Section("steady", "Steady per-chunk time and FPS", (60, 60, 2)),
    Section("memory", "Peak memory", (90, 60, 4)),
    # decode: ~100 s more with a second GPU (its gain: a warm-up and 5 rounds of two 7-chunk node runs)
    Section("decode", "Streaming decode", (40, 30, 2), comfyui=True),
    # batch: 81-frame T2V and R2V videos, a warm-up and a timed run at B = 1, 2, 4: 28 videos of 4-6.5 s
    Section("batch", "Videos per hour and peak memory per batch", (150, 60, 3)),
    Section("compile", "torch.compile", (180, 120, 30),
            not_in_smoke="dynamo's tracing alone outlasts the smoke run (tests/test_compiled.py covers the compile "
                         "path)"),
    # CPU comparisons before lowvram: in a tight smoke budget the one dearest in time is left out first
    Section("native-ar", "ComfyUI's native AR path (smoke)", (0, 600, 6), comfyui=True, cpu_only=True),
    Section("preview", "Live chunk previews (smoke)", (0, 120, 3), comfyui=True, cpu_only=True),
    Section("forward", "One forward pass against ComfyUI (smoke)", (0, 120, 1), comfyui=True, cpu_only=True),
    Section("lowvram", "Low VRAM through ComfyUI", (240, 60, 12), comfyui=True),
    Section("timing", "Per-chunk cost and T2V throughput", (150, 200, 60), not_in_smoke=TIMED_CHECKS),
    Section("vace", "VACE cost and R2V throughput", (180, 200, 60), not_in_smoke=TIMED_CHECKS),
)
SECTIONS = {section.name: section for section in PLAN}
TITLES = {section.name: section.title for section in PLAN}
CPU_SECTIONS = ("smoke", "timing", "vace", "memory")  # the CPU benchmark, the default on the CPU
RESERVE_S = 5.0  # of a budget: writing the results, the summary, leaving


class Pace:
    """How this machine keeps to the estimates: seconds spent over seconds estimated for the sections
    run so far (1 before the first), kept within 0.5 .. 4."""

    def __init__(self) -> None:
        self.spent = self.estimated = 0.0

    @property
    def ratio(self) -> float:
        return 1.0 if not self.estimated else min(4.0, max(0.5, self.spent / self.estimated))

    def observe(self, estimated: float, spent: float) -> None:
        self.estimated += estimated
        self.spent += spent


def cpu_seconds() -> float:
    """Processor seconds of this process and of the children it waited for (the smoke run's
    estimates are these: wall time on a shared machine depends on the neighbours)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def alarm(seconds: float | None) -> Iterator[None]:
    """OutOfTime raised in this (the main) thread after `seconds`; nothing when None."""
    if seconds is None:
        yield
        return

    def ring(signum, frame):
        raise OutOfTime("the time budget ran out")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_section(name: str, ctx: Context) -> dict:
    """One section as a results entry: its figures and checks; or why it was skipped, that the
    budget stopped it, or the error that did."""
    started, cpu_before = time.perf_counter(), cpu_seconds()
    entry: dict = {"machine": machine_info(ctx.device)}
    try:
        with alarm(ctx.time_left()):
            outcome = SECTION_RUNNERS[name](ctx)
    except SectionSkipped as reason:
        entry.update(skipped=str(reason), checks={})
    except OutOfTime as stop:
        log(f"{name}: {stop}")
        entry.update(stopped=f"{stop} after {time.perf_counter() - started:.0f} s", checks={})
    except (Exception, SystemExit) as error:  # a section that cannot run (a script's exit too) must not
        # cost the others their figures
        log(f"{name}: {type(error).__name__}: {error}")
        entry.update(error=f"{type(error).__name__}: {error}", checks={})
    else:
        entry.update(figures=outcome["figures"], checks=outcome["checks"], parts_skipped=outcome.get("skipped", {}))
        if outcome["plan"] is not None:
            entry["plan"] = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(outcome["plan"]).items()}
        if outcome["bench"] is not None:
            entry["sizes"] = outcome["bench"].sizes()
            entry["repeats"] = outcome["plan"].repeats
    entry["runtime_s"] = round(time.perf_counter() - started, 1)
    entry["cpu_s"] = round(cpu_seconds() - cpu_before, 1)
    entry["finished"] = now()
    return entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--sections", default=None,
                        help=f"comma-separated, run in the order given, from: {','.join(SECTIONS)} (default: the "
                             f"whole plan on a GPU and with --smoke; {','.join(CPU_SECTIONS)} on the CPU)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="run the sections by priority within this many seconds from the process's start")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, every section that can (CI)")
    parser.add_argument("--comfyui", type=Path, default=None,
                        help="a ComfyUI checkout, for the decode, lowvram and comparison sections; this python must "
                             "run ComfyUI")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    if args.smoke and args.device != "cpu":
        parser.error("--smoke runs on the CPU (--device cpu)")
    args.explicit = args.sections is not None
    default = [s.name for s in PLAN] if args.smoke or args.device == "cuda" else list(CPU_SECTIONS)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.explicit else default
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def why_not(section: Section, args: argparse.Namespace) -> str:
    """Why a section of the default list does not run in this invocation ("" when it does)."""
    if section.cpu_only and args.device == "cuda":
        return f"a CPU comparison: run scripts/bench/bench_{section.name.replace('-', '_')}.py on the CPU"
    if args.smoke and section.not_in_smoke and not args.explicit:
        return f"not in the smoke run: {section.not_in_smoke}"
    if section.comfyui and args.comfyui is None:
        return "needs ComfyUI: --comfyui DIR, run with ComfyUI's python"
    return ""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def stamp(plan: dict) -> None:
    """The plan's time so far (from the process's start) and the clock, for the summary."""
    plan["runtime_s"] = round(process_age_s(), 1)
    plan["finished"] = now()


def keep_figures(results: dict, name: str, out: Path, started: float, figures: dict) -> None:
    """Section `name`'s figures so far, saved at once as a running entry (its final entry replaces
    it): what a section the budget stops or an error ends had measured."""
    results["sections"][name] = {"machine": machine_info(torch.device(results["device"])), "figures": figures,
                                 "checks": {}, "running": True,
                                 "runtime_s": round(time.perf_counter() - started, 1), "finished": now()}
    stamp(results["plan"])
    save_results(results, out, TITLES)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device cuda: this torch ({torch.__version__}) sees no CUDA device")
    if args.comfyui is not None:
        check_comfyui(args.comfyui)
    elif args.explicit and any(SECTIONS[name].comfyui for name in args.sections):
        raise SystemExit(f"--sections {','.join(n for n in args.sections if SECTIONS[n].comfyui)} runs through "
                         "ComfyUI: add --comfyui DIR (and run this with ComfyUI's python)")
    if args.device == "cpu":
        torch.set_num_threads(1)  # stable timings on a shared machine; stated in the results
    ctx = Context(args, torch.device(args.device))
    deadline = None if args.budget is None else time.monotonic() + args.budget - process_age_s() - RESERVE_S
    ctx.time_left = lambda: None if deadline is None else max(0.0, deadline - time.monotonic())
    results = load_results(args.out, args.device, args.smoke)
    plan = results["plan"] = {"budget": args.budget, "order": args.sections, "ran": [], "partial": [], "skipped": {},
                              "machine": machine_info(ctx.device),
                              "comfyui": comfyui_version(args.comfyui) if args.comfyui else None}
    pace, failed, broken = Pace(), [], []
    for name in args.sections:
        section, left = SECTIONS[name], ctx.time_left()
        need = section.estimate(args.device, args.smoke) * pace.ratio
        reason = why_not(section, args)
        if not reason and left is not None and need > left:
            reason = f"needs ~{need:.0f} s, {left:.0f} s of the budget left"
        if reason:
            plan["skipped"][name] = reason
            log(f"section {name} skipped: {reason}")
            continue
        log(f"section {name}")
        ctx.keep_figures = functools.partial(keep_figures, results, name, args.out, time.perf_counter())
        earlier = results["sections"].get(name)
        entry = run_section(name, ctx)
        kept = results["sections"].get(name)
        if kept is not earlier and "figures" not in entry and "skipped" not in entry:
            entry["figures"] = kept["figures"]  # stopped or broken: what it had handed over (keep_figures)
        if "skipped" in entry:
            plan["skipped"][name] = entry["skipped"]
        elif "stopped" in entry or "error" in entry:  # listed with why, never left out in silence
            plan["skipped"][name] = entry.get("stopped") or f"did not finish: {entry['error']}"
            if "figures" in entry:
                plan["skipped"][name] += "; the figures it had measured are kept"
                plan["partial"].append(name)
            if "figures" in entry or "error" in entry:  # a stop with nothing measured keeps the last run's
                results["sections"][name] = entry
        else:
            results["sections"][name] = entry
            plan["ran"].append(name)
            pace.observe(section.estimate(args.device, args.smoke), entry["runtime_s"])
            plan["skipped"].update({f"{name}, {part}": why for part, why in entry.get("parts_skipped", {}).items()})
        stamp(plan)
        md_path = save_results(results, args.out, TITLES)  # after every section: an overrun keeps what was measured
        for check, ok in entry["checks"].items():
            print(f"{verdict(ok)} {check}")
            failed += [check] if not ok else []
        broken += [name] if "error" in entry else []
        log(f"section {name} done in {entry['runtime_s']} s; {md_path} updated")
    stamp(plan)
    md_path = save_results(results, args.out, TITLES)
    print("\n".join(summary(results)))
    print(f"\n(details: {md_path})")
    if broken:
        print(f"sections that did not finish: {', '.join(broken)}", file=sys.stderr)
        return 2
    if failed:
        print(f"failed checks: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
