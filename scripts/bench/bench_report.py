"""The results files of scripts/bench/bench.py (bench/results-<device>.{json,md}, rewritten after
every section) and the summary a person pastes: the card, torch and ComfyUI, each headline figure
beside its expected range (bench_expected.py), and what was skipped."""

from __future__ import annotations

import json
from pathlib import Path

from bench_batch import device_table, device_title
from bench_common import FLAT_LIMIT, MEMORY_LIMIT, MIN_REPEATS, ROOT, SERIES, verdict, write_markdown
from bench_expected import Expected, expected_ranges, load_cpu_ratios
from bench_sections import GROWTH_MIN, VACE_FIRST_LIMIT, VACE_MODES

CPU_RESULTS = ROOT / "bench" / "results-cpu.json"  # the CPU benchmark's committed figures (its ratios)


def shown_series(device: str) -> tuple[str, ...]:
    return SERIES if device == "cpu" else ("wall", "wall_min")  # CPU time means nothing on a GPU


def figure_row(label: str, figures: dict, key: str, device: str, target: str = "", ok: bool | None = None) -> str:
    values = " | ".join(f"{figures[f'{key}_{series}']:.3f}" for series in shown_series(device))
    return f"| {label} | {values} | {target} | {'' if ok is None else verdict(ok)} |"


def table_head(device: str) -> list[str]:
    series = shown_series(device)
    return ["| figure | " + " | ".join(s.replace("_min", " min") for s in series) + " | target | result |",
            "|---|" + "---|" * (len(series) + 2)]


def throughput_table(rows: list[tuple[str, dict]], decode: dict | None, decode_note: bool = True) -> list[str]:
    lines = ["| run | video frames | FPS (whole run) | steady s / chunk | steady FPS, DiT only | "
             "steady FPS, end-to-end | first-chunk latency s |", "|---|---|---|---|---|---|---|"]
    for label, t in rows:
        e2e = f"{t['end_to_end_fps']:.2f}" if t.get("end_to_end_fps") else "-"
        lines.append(f"| {label} | {t['video_frames']} | {t['fps']:.2f} | {t['steady_chunk_s']:.4f} | "
                     f"{t['steady_fps']:.2f} | {e2e} | {t['first_chunk_latency_s']:.3f} |")
    if not decode_note:
        return lines
    if decode is None:
        lines += ["", "End-to-end FPS needs --comfyui (the streaming decode of ComfyUI's Wan VAE)."]
    else:
        lines += ["", (f"End-to-end = DiT + the streaming decode of each chunk, one after the other as Sampler -> "
                       f"Video runs them (mp4 encoding not included): {decode['vae']}, "
                       f"{decode['steady_chunk_s']:.4f} s per steady chunk "
                       f"(first chunk {decode['first_chunk_s']:.4f} s).")]
    return lines


def markdown_smoke(entry: dict, device: str) -> list[str]:
    f = entry["figures"]
    lines = ["| configuration | chunks | first chunk s | last chunk s | finite |", "|---|---|---|---|---|"]
    for name, run in f["runs"].items():
        lines.append(f"| {name} | {run['chunks']} | {run['first_chunk_s']} | {run['last_chunk_s']} | "
                     f"{run['finite']} |")
    inst = f["instrumentation"]
    lines += ["", (f"Instrumented R2V run of {inst['chunks']} chunks: {inst['steady_state_passes']} steady-state "
                   f"passes, {inst['steady_state_reads_index_select']} of them read the cache with index_select; "
                   f"prompt embedded {inst['encode_text_calls']} time(s); {inst['rope_tables_built']} RoPE tables "
                   f"for {inst['blocks']} blocks.")]
    if f["attention"]["ops"]:
        lines += ["", (f"Attention ops that ran (profiled chunks): {f['attention']['ops']}; "
                       f"enabled: {f['attention']['flags']}.")]
    if f["decode"]:
        lines += ["", f"Streaming VAE decode: {f['decode']['vae']}, {f['decode']['steady_chunk_s']} s per chunk."]
    return lines


def markdown_timing(entry: dict, device: str) -> list[str]:
    f = entry["figures"]
    c, plan = f["cache"], entry["plan"]
    e, late, be, bl = c["early_chunk"], c["late_chunk"], c["baseline_early_chunk"], c["baseline_late_chunk"]
    ok = entry["checks"]
    lines = table_head(device) + [
        figure_row(f"KV cache: chunk {late} / chunk {e}", c, "kv_late_over_early", device, f"<= {FLAT_LIMIT}",
                   ok["1_kv_flat"]),
        figure_row(f"naive recompute: chunk {bl} / chunk {be}", c, "baseline_late_over_early", device,
                   f"grows (>= {GROWTH_MIN})", ok["1_baseline_grows"]),
        figure_row(f"KV cache: chunk {bl} / chunk {be} (same indices)", c, "kv_at_baseline_late_over_early", device),
        figure_row(f"recompute / KV at chunk {bl}", c, "baseline_over_kv_at_baseline_late", device),
        "", f"Per-chunk wall time (median) relative to the KV cache's chunk {e}:", "",
        "| chunk | " + " | ".join(str(i) for i in f["curve_points"]) + " |",
        "|---|" + "---|" * len(f["curve_points"])]
    reference = f["per_chunk"]["kv"]["wall_s"][e - 1]
    for name in ("kv", "recompute"):
        curve = f["per_chunk"][name]["wall_s"]
        cells = [f"{curve[i - 1] / reference:.2f}" if i <= len(curve) else "-" for i in f["curve_points"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Throughput (T2V, {plan['long_chunks']} chunks):", ""]
    return lines + throughput_table([("T2V, KV cache", f["throughput"]["kv"])], f["decode"])


def markdown_vace(entry: dict, device: str) -> list[str]:
    v = entry["figures"]["vace"]
    compared = f"chunks {v['chunks_compared'][0]}-{v['chunks_compared'][1]}"
    lines = table_head(device)
    lines += [figure_row(f"VACE on every chunk / off, vace_attention={mode}, {compared}", v, f"{mode}_over_off", device,
                         "stated") for mode in VACE_MODES]
    lines.append(figure_row(f"VACE on the first chunk only / off, {compared}", v, "first_over_off", device,
                            f"<= {VACE_FIRST_LIMIT}", entry["checks"]["3_vace_first_cheap"]))
    labels = {"vace_off": "T2V (VACE off)", **{f"vace_{m}": f"R2V, vace_attention={m}" for m in VACE_MODES},
              "vace_first": "R2V, VACE on the first chunk only"}
    rows = [(labels[name], t) for name, t in entry["figures"]["throughput"].items()]
    return lines + ["", "Throughput (one reference):", ""] + throughput_table(rows, entry["figures"]["decode"])


def markdown_memory(entry: dict, device: str) -> list[str]:
    mem, plan = entry["figures"]["memory"], entry["plan"]
    short, long = plan["memory_chunks"]
    lines = ["| figure | ratio | target | result |", "|---|---|---|---|",
             (f"| peak memory {long} / {short} chunks, latents aside ({mem['measure']}) | "
              f"{mem['long_over_short_latents_aside']:.4f} | <= {MEMORY_LIMIT} | "
              f"{verdict(entry['checks']['2_memory_flat'])} |"),
             f"| same, keep_latents=True | {mem['long_over_short_keep_latents']:.4f} | reported | |",
             f"| same, VACE on (R2V context) | {mem['long_over_short_vace_latents_aside']:.4f} | reported | |"]
    if device == "cuda":
        lines += ["", "| run | chunks | keep latents | VACE mode | peak allocated MiB | weights MiB |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['length']} | {r['chunks']} | {r['keep_latents']} | {r['vace_attention'] or 'off'} | "
                  f"{r['cuda_peak_allocated_mib']} | {r['cuda_before_mib']} |" for r in entry["figures"]["memory_runs"]]
    return lines


def markdown_lowvram(entry: dict, device: str) -> list[str]:
    modes = entry["figures"].get("modes", [])
    if not modes:
        return ["bench_lowvram.py did not finish; its output is in the log of this run."]
    return ["| mode | steady s / chunk | video fps | first chunk s | weights loaded / model GiB | peak VRAM MiB |",
            "|---|---|---|---|---|---|"] + [
        f"| {m['mode']} | {m['steady_chunk_s']} | {m['video_fps']} | {m['first_chunk_s']} | "
        f"{m['loaded_bytes'] / 2**30:.2f} / {m['model_bytes'] / 2**30:.2f} | {m.get('peak_allocated_mib', '-')} |"
        for m in modes] + ["", "Details: the Low VRAM section below (scripts/bench/bench_lowvram.py)."]


def markdown_compile(entry: dict, device: str) -> list[str]:
    f = entry["figures"]
    if not f:
        return ["bench_compile.py did not finish; its output is in the log of this run."]
    s = f["median_chunk_s"]
    return ["| eager chunk s | compiled chunk s | compiled / eager | first compiled run s | max abs diff | "
            "fallbacks |", "|---|---|---|---|---|---|",
            (f"| {s['eager']:.4f} | {s['compiled']:.4f} | {f['compiled_over_eager']:.3f} | "
             f"{f['first_compiled_run_s']:.1f} | {f['max_abs_diff_compiled_vs_eager']:.1e} | "
             f"{f['fallbacks'] or 'none'} |"),
            "", "Details: the torch.compile section below (scripts/bench/bench_compile.py)."]


def markdown_correctness(entry: dict, device: str) -> list[str]:
    f = entry["figures"]
    m = f["matmul"]
    lines = [f"Matrix product {m['size']}^3 in {m['dtype']}: {m['tflops']} TFLOP/s ({m['ms']} ms).", ""]
    for case, figures in f["attention"].items():
        lines += [f"Attention, {case}: q {figures['q']}, k/v {figures['k']}, mask {figures['mask']}:", "",
                  "| backend | relative RMS vs fp32 math | ms per call | TFLOP/s |", "|---|---|---|---|"]
        for name, row in figures["backends"].items():
            lines.append(f"| {name} | {row['relative_rms_vs_fp32']:.2e} | {row['ms']} | {row['tflops']} |" if row["ran"]
                         else f"| {name} | did not run: {row['why']} | | |")
        lines.append("")
    half = f["half_precision"]
    lines += [f"Half precision, a {half['chunks']}-chunk R2V run at {half['size']} against float32: " + ", ".join(
        f"{name} relative RMS {half[name]['relative_rms_vs_fp32']} (finite {half[name]['finite']})"
        for name in ("bfloat16", "float16")) + ".", "",
        "| 7-chunk run | first chunk s | steady s / chunk | steady FPS (DiT) | peak VRAM MiB | finite |",
        "|---|---|---|---|---|---|"]
    runs = f["runs"]
    for name in ("t2v", "r2v"):
        r = runs[name]
        lines.append(f"| {name} | {r['first_chunk_latency_s']} | {r['steady_chunk_s']} | {r['steady_fps']} | "
                     f"{r['peak_vram_mib']} | {r['finite']} |")
    for name in ("t2v", "r2v"):
        sites = runs[name]["sync_sites"]
        lines += ["", f"Attention kernels in a steady {name} chunk: " + (", ".join(
            f"`{k}` x{v['calls']} ({v['ms']} ms)" for k, v in runs[name]["kernels"].items()) or "none found"),
                  f"Synchronising call sites in a steady {name} chunk: " + (
                      ", ".join(f"`{s}` x{n}" for s, n in sites.items()) or "none")
                  if isinstance(sites, dict) else "Synchronising call sites: needs CUDA."]
    return lines


def markdown_steady(entry: dict, device: str) -> list[str]:
    f = entry["figures"]
    early, late = f["chunks_compared"]
    return throughput_table([("T2V", f["t2v"]), ("R2V, VACE on every chunk", f["r2v"])], None, decode_note=False) + [
        "", f"R2V / T2V per steady chunk: {f['r2v_over_t2v']:.3f}; T2V chunk {late} / chunk {early}: "
            f"{f['kv_late_over_early']:.3f}."]


def markdown_decode(entry: dict, device: str) -> list[str]:
    f = entry["figures"]
    d = f["decode"]
    lines = [f"{d['vae']}: {d['steady_chunk_s']} s per steady chunk (first chunk {d['first_chunk_s']} s), "
             f"{d['flops_per_chunk'] / 1e12:.3g} TFLOP per chunk."]
    if "decode_share" in f:
        lines.append(f"DiT chunk {f['dit_chunk_s']} s (the steady section's T2V): the decode is "
                     f"{f['decode_share']:.1%} of a chunk decoded in turn; end-to-end {f['end_to_end_fps']:.2f} FPS.")
    gain = f.get("second_device")
    if gain:
        lines.append(f"Sampler -> Video over {gain['chunks']} chunks, each way warmed up then {gain['rounds']} "
                     f"interleaved rounds: {gain['model_device_chunk_s']} s per chunk decoding on the model's device, "
                     f"{gain['decode_device_chunk_s']} s on {gain['decode_device']}: gain x{gain['gain']} (median of "
                     f"the rounds' ratios x{gain['gain_of_rounds']}).")
        if gain["overhead_only"]:
            lines.append("Both on the CPU: no second device, so this is the worker thread's cost (or what it overlaps "
                         "on a second core), not a gain.")
    return lines


def markdown_batch(entry: dict, device: str) -> list[str]:
    return [f"{device_title(entry['figures'])}.", "", *device_table(entry["figures"])]


def markdown_comparison(entry: dict, device: str) -> list[str]:
    return ["The smoke run of the comparison (`--quick`); its own files hold the details."]


SECTION_MARKDOWN = {"correctness": markdown_correctness, "smoke": markdown_smoke, "steady": markdown_steady,
                    "timing": markdown_timing, "vace": markdown_vace, "memory": markdown_memory,
                    "decode": markdown_decode, "batch": markdown_batch, "lowvram": markdown_lowvram,
                    "compile": markdown_compile, "native-ar": markdown_comparison, "preview": markdown_comparison,
                    "forward": markdown_comparison}


def markdown(results: dict, titles: dict[str, str]) -> str:
    """The results file's text: the summary of the last plan run, then each section (`titles`: name ->
    heading, in the plan's order) with its last run's figures."""
    device = results["device"]
    lines = [f"# Sampler benchmark ({device}{', smoke sizes' if results.get('smoke') else ''})", ""]
    if results.get("plan"):
        lines += summary(results) + [""]
    lines += [("Written by `scripts/bench/bench.py` after every section; each section keeps the figures of its last "
               "run (the machine and sizes are stated per section). Timed sections: per-chunk medians over at least "
               f"{MIN_REPEATS} interleaved repeats after an untimed run over every shape (wall/cpu = wall-clock/"
               "process CPU time; min = the minimum over repeats).")]
    for name, title in titles.items():
        entry = results["sections"].get(name)
        if entry is None or "skipped" in entry:
            continue
        lines += ["", f"## {title} (`--sections {name}`)", "", section_header(entry), ""]
        if "error" in entry or "stopped" in entry:
            lines.append(f"Did not finish: {entry.get('error') or entry['stopped']}")
            if "figures" not in entry:
                continue
            lines += ["", "What it had measured:", ""]
        elif entry.get("running"):
            lines += ["Still running when this was written: what it has measured so far.", ""]
        lines += SECTION_MARKDOWN[name](entry, device)
        if entry["checks"]:
            failed = [check for check, ok in entry["checks"].items() if not ok]
            lines += ["", f"Checks: {', '.join(f'{c} {verdict(ok)}' for c, ok in entry['checks'].items())}"
                      + (f" ({len(failed)} failed)" if failed else "") + "."]
    return "\n".join(lines) + "\n"


def section_header(entry: dict) -> str:
    m, z = entry["machine"], entry.get("sizes")
    machine = m["gpu"] or f"{m['cpu']} ({m['cpu_count']} cores)"
    sizes = (f"; {z['dtype']}; preset {z['preset']} ({z['params_m']} M params) at {z['width']}x{z['height']} "
             f"({z['tokens_per_frame']} tokens/frame); chunk {z['chunk_frames']}, window {z['window_frames']}, "
             f"sink {z['sink_frames']}, {len(z['denoising_steps'])} steps") if z else ""
    return (f"{entry['finished']}, {entry['runtime_s']} s. Machine: {machine}; torch {m['torch']}, "
            f"{m['torch_threads']} thread(s){sizes}.")


def results_paths(out: Path, device: str, smoke: bool) -> tuple[Path, Path]:
    stem = f"results-{device}{'-smoke' if smoke else ''}"
    return out / f"{stem}.json", out / f"{stem}.md"


def load_results(out: Path, device: str, smoke: bool) -> dict:
    """The results of earlier sections on this device (a file of another layout starts afresh)."""
    json_path, _ = results_paths(out, device, smoke)
    if json_path.is_file():
        old = json.loads(json_path.read_text())
        if old.get("device") == device and isinstance(old.get("sections"), dict):
            return old
    return {"device": device, "smoke": smoke, "sections": {}}


def save_results(results: dict, out: Path, titles: dict[str, str]) -> Path:
    """Both files, rewritten whole (the JSON keeps every section's last run; the markdown opens with
    the summary of the last plan run)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_paths(out, results["device"], results.get("smoke", False))
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(md_path, markdown(results, titles))
    return md_path



# ---- the summary a person pastes ---------------------------------------------------------------------

def ran(results: dict, name: str) -> dict | None:
    """The entry of a section the last plan run ran, or stopped after it had measured some figures
    (the file may keep older runs' sections too)."""
    entry = results["sections"].get(name)
    plan = results["plan"]
    return entry if name in plan["ran"] + plan.get("partial", []) and entry.get("figures") else None


def summary_rows(results: dict) -> list[tuple[str, str, float | None]]:
    """(key, label, measured) of the headline figures of the sections that ran, in the plan's order."""
    rows: list[tuple[str, str, float | None]] = []
    if entry := ran(results, "correctness"):
        f = entry["figures"]
        rows.append(("matmul_tflops", f"matmul {f['matmul']['size']}^3 {f['matmul']['dtype']}, TFLOP/s",
                     f["matmul"]["tflops"]))
        rows.append(("attention_tflops", "steady self-attention, pack kernel, bf16, TFLOP/s",
                     f["attention"]["self_attention_bfloat16"]["backends"]["pack"].get("tflops")))
        rows += [(f"half_{name}_rms", f"{name} R2V against float32, relative RMS",
                  f["half_precision"][name]["relative_rms_vs_fp32"]) for name in ("bfloat16", "float16")]
        rows += [(f"{name}_7chunk_fps", f"{name.upper()} 7-chunk run, steady FPS (DiT)",
                  f["runs"][name]["steady_fps"]) for name in ("t2v", "r2v")]
    if entry := ran(results, "steady"):
        f = entry["figures"]
        for name in ("t2v", "r2v"):
            rows += [(f"{name}_steady_chunk_s", f"{name.upper()} steady s / chunk", f[name]["steady_chunk_s"]),
                     (f"{name}_fps", f"{name.upper()} steady FPS (DiT only)", f[name]["steady_fps"]),
                     (f"{name}_first_chunk_s", f"{name.upper()} first-chunk latency s",
                      f[name]["first_chunk_latency_s"])]
        early, late = f["chunks_compared"]
        rows += [("r2v_over_t2v", "R2V / T2V per steady chunk", f["r2v_over_t2v"]),
                 ("kv_late_over_early", f"T2V chunk {late} / chunk {early}", f["kv_late_over_early"])]
    if entry := ran(results, "memory"):
        f = entry["figures"]
        rows.append(("memory_long_over_short", "peak memory, long / short run",
                     f["memory"]["long_over_short_latents_aside"]))
        if results["device"] == "cuda":
            run = next(r for r in f["memory_runs"] if r["length"] == "long" and r["vace_attention"] == "causal")
            rows.append(("r2v_peak_gib", f"R2V peak VRAM GiB ({run['chunks']} chunks)",
                         round(run["cuda_peak_allocated_mib"] / 1024, 3)))
    if entry := ran(results, "decode"):
        f = entry["figures"]
        rows.append(("decode_chunk_s", "streaming decode s / chunk", f["decode"]["steady_chunk_s"]))
        if "decode_share" in f:
            rows += [("decode_share", "decode share of a chunk", f["decode_share"]),
                     ("end_to_end_fps", "end-to-end FPS (DiT + decode in turn)", f["end_to_end_fps"])]
        if "second_device" in f:
            rows.append(("decode_device_gain", f"Sampler -> Video, decode on {f['second_device']['decode_device']}: "
                         "gain", f["second_device"]["gain"]))
    if entry := ran(results, "batch"):
        rows += batch_rows(entry["figures"]["runs"])
    if entry := ran(results, "compile"):
        f = entry["figures"]
        rows += [("compiled_over_eager", "compiled / eager steady chunk", f["compiled_over_eager"]),
                 ("first_compiled_run_s", "first compiled run s", f["first_compiled_run_s"])]
    if entry := ran(results, "lowvram"):
        rows += [(f"lowvram_{m['mode']}_chunk_s", f"{m['mode']} through ComfyUI, steady s / chunk",
                  m["steady_chunk_s"]) for m in entry["figures"]["modes"]]
    if entry := ran(results, "timing"):
        c = entry["figures"]["cache"]
        rows.append(("kv_late_over_early_long", f"KV cache chunk {c['late_chunk']} / chunk {c['early_chunk']}",
                     c["kv_late_over_early_wall"]))
    if entry := ran(results, "vace"):
        rows.append(("vace_first_over_off", "hint_chunks=first / VACE off",
                     entry["figures"]["vace"]["first_over_off_wall"]))
    return rows


def batch_rows(runs: dict[str, dict]) -> list[tuple[str, str, float | None]]:
    """Per kind and batch size: videos per hour, seconds per video over batch 1's, peak memory (a GPU's)."""
    rows: list[tuple[str, str, float | None]] = []
    for name, run in runs.items():
        kind, batch = name.split("_batch_")
        label = f"{kind.upper()} B={batch}"
        rows.append((f"{name}_videos_per_hour", f"{label}: videos per hour", run["videos_per_hour"]))
        one = runs.get(f"{kind}_batch_1")
        if batch != "1" and one:
            rows.append((f"{name}_per_video_ratio", f"{label}: s per video / B=1's",
                         round(run["seconds_per_video"] / one["seconds_per_video"], 4)))
        if run["peak_bytes"] is not None:
            rows.append((f"{name}_peak_gib", f"{label}: peak VRAM GiB", round(run["peak_bytes"] / 2**30, 3)))
    return rows


def summary(results: dict) -> list[str]:
    """The paste-able summary of the last plan run: machine, versions, figures beside their expected
    ranges (LOW / HIGH flags a figure outside), checks, and what was skipped and why."""
    plan = results["plan"]
    m = plan["machine"]
    card = f"{m['gpu']} (CUDA {m.get('cuda')})" if m["gpu"] else f"CPU: {m['cpu']} ({m['cpu_count']} cores)"
    cpu_ratios = load_cpu_ratios(CPU_RESULTS)
    ranges = expected_ranges(results, cpu_ratios)
    budget = f" of a {plan['budget']:g} s budget" if plan["budget"] else ""
    sizes = ", smoke sizes" if results.get("smoke") else ""
    lines = ["## Summary of the last plan run", "",
             f"{card}; torch {m['torch']}; ComfyUI {plan['comfyui'] or 'not used'}; python {m['python']}. "
             f"{plan['finished']}: {plan['runtime_s']} s{budget}{sizes}.", "",
             "| figure | measured | expected | | expected from |", "|---|---|---|---|---|"]
    for key, label, value in summary_rows(results):
        expected = ranges.get(key, Expected(None, None, ""))
        shown = "-" if value is None else f"{value:.4g}"
        lines.append(f"| {label} | {shown} | {expected.shown() if expected.source else ''} | "
                     f"{expected.verdict(value) if expected.source else ''} | {expected.source} |")
    checks = {check: ok for name in plan["ran"] for check, ok in results["sections"][name].get("checks", {}).items()}
    failed = [name for name, ok in checks.items() if not ok]
    lines += ["", f"Checks: {len(checks) - len(failed)} passed, {len(failed)} failed" +
              (f" ({', '.join(failed)})" if failed else "") + "."]
    skipped = [f"{name}: {reason}" for name, reason in plan["skipped"].items()]
    lines.append("Skipped: " + ("; ".join(skipped) if skipped else "nothing") + ".")
    return lines
