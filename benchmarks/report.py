"""The three report files: ``report.json`` (every number + environment), ``report.md`` (the
table), ``report.png`` (FPS against Dice per backend and precision; needs matplotlib, optional).
All written atomically.
"""
from __future__ import annotations

import datetime as dt
import io
import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from rfnet.benchmarks.measure import PAPER_DEVICE, PAPER_FPS, PAPER_LATENCY_S
from rfnet.common import cpustat
from rfnet.common.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

REPORT_FORMAT = "rfnet-benchmark-report"
REPORT_VERSION = 1


# -- environment ---------------------------------------------------------------------------------
def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """GPU names per ``nvidia-smi`` (empty without one)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def environment(threads: int | None, library_versions: dict[str, Any]) -> dict[str, Any]:
    """Machine description for the report (taken when the run starts)."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads_requested": threads,
        "gpus": gpu_names(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "libraries": library_versions,
        "load_average_start": load,
        "hostname": platform.node(),
    }


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def baseline() -> dict[str, Any]:
    return {"device": PAPER_DEVICE, "fps": PAPER_FPS, "latency_s": PAPER_LATENCY_S}


# -- formatting ----------------------------------------------------------------------------------
def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ms(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"


def _pct(stats: dict[str, Any] | None) -> str:
    if not stats or stats.get("p50") is None:
        return "-"
    return f"{_ms(stats['p50'])} / {_ms(stats['p90'])} / {_ms(stats['p99'])}"


def _throughput(per_batch: dict[str, Any] | None) -> str:
    parts = []
    for b, entry in sorted((per_batch or {}).items(), key=lambda kv: int(kv[0])):
        if entry.get("status") == "ok" and entry.get("throughput_fps") is not None:
            parts.append(f"b{b}: {entry['throughput_fps']:.1f}")
        else:
            parts.append(f"b{b}: {entry.get('status', 'not run')}")
    return ", ".join(parts) or "-"


def _result_row(r: dict[str, Any], notes: list[str]) -> str:
    """One result's table row; what it could not run is appended to ``notes``."""
    par = r.get("parity", {})
    verdict = "reference" if r.get("is_reference") else (
        "-" if not par.get("checked") else ("pass" if par.get("passed") else "**FAIL**"))
    if r["status"] != "ok":
        return (f"| {r['model_name']} | {r['runner']} | {r.get('precision') or '-'} | "
                f"{r['status']}: {r.get('reason', '')} |  |  |  |  |  |  |  |  |  |  |  |  | {verdict} |")
    e2e, acc, mem = r["end_to_end"], r["accuracy"], r["memory"]
    mo1 = r["model_only"].get("1", {})
    d = acc.get("dice_difference_vs_reference") or {}
    a = acc.get("agreement_vs_reference") or {}
    row = (
        f"| {r['model_name']} | {r['runner']} | {r['precision']} | {_pct(e2e['latency_ms'])} | "
        f"{_pct(mo1.get('latency_ms_per_image')) if mo1.get('status') == 'ok' else 'not run'} | "
        f"{_f(e2e['fps'], 2)} | {_f(e2e['speedup_vs_paper'], 2)} | {_throughput(r['model_only'])} | "
        f"{_throughput(r.get('pipeline'))} | {_throughput(r.get('pipeline_outputs'))} | "
        f"{_f(mem.get('peak_rss_mb'), 0)} (+{_f(mem.get('peak_rss_increase_mb'), 0)}) | {_f(mem.get('gpu_peak_mb'), 0)} | {_f(acc.get('dice_disc'), 4)} | "
        f"{_f(acc.get('dice_cup'), 4)} | {_f(d.get('disc'), 4)} / {_f(d.get('cup'), 4)} | "
        f"{_f(a.get('disc'), 4)} / {_f(a.get('cup'), 4)} | {verdict} |"
    )
    for what, key in (("model only", "model_only"), ("pipelined", "pipeline"),
                      ("pipelined + outputs", "pipeline_outputs")):
        for b, entry in (r.get(key) or {}).items():
            if entry.get("status") != "ok":
                notes.append(f"- `{r['id']}` {what}, batch {b}: {entry.get('status')}: {entry.get('reason')}")
    if e2e.get("failed_images"):
        notes.append(f"- `{r['id']}`: {e2e['failed_images']} images failed, e.g. {e2e['failures'][0]['error']}")
    return row


def markdown(report: dict[str, Any]) -> str:
    """The human-readable table (plus environment, reference, not-run reasons, parity)."""
    env = report["environment"]
    lines = [
        "# RF-Net benchmark",
        "",
        f"- Created: {report['created_utc']}; command: `{' '.join(report['command'])}`",
        f"- CPU: {env['cpu_model']} ({env['cpu_count']} logical CPUs, {env.get('cpu_affinity')} usable), "
        f"threads requested: {env['threads_requested'] or 'library default'}; "
        f"load average at start {env['load_average_start']}, at end {report.get('load_average_end')}",
        f"- Machine's CPU time during the run: {cpustat.describe(report.get('machine_load'))}",
        f"- GPU: {', '.join(env['gpus']) or 'none'}",
        f"- Libraries: {', '.join(f'{k} {v}' for k, v in sorted(env['libraries'].items()))}",
        f"- Data: {report['data']['dataset']} `{report['data']['root']}` ({report['data']['images']} images)",
        f"- Baseline: {report['baseline']['fps']} FPS ({report['baseline']['latency_s']} s per image) on "
        f"{report['baseline']['device']}; speed-up = end-to-end FPS / {report['baseline']['fps']}",
        f"- Reference: `{report['reference']['id']}` (Dice disc {_f(report['reference'].get('dice_disc'), 4)}, "
        f"cup {_f(report['reference'].get('dice_cup'), 4)})",
        f"- Settings: warm-up {report['settings']['warmup']}, iterations {report['settings']['iterations']}, "
        f"batch sizes {report['settings']['batch_sizes']}, mask threshold {report['settings']['threshold']}",
        "",
        "Latencies are p50 / p90 / p99 milliseconds per image. End to end = decode + preprocess + model + "
        "postprocess + CDR, one image at a time; model only = the backend call on a preprocessed batch of 1. "
        "Throughputs per batch size bN: model only = N / mean call time; pipelined = images / wall time through "
        "rfnet.runtime.pipeline (decoding overlaps inference; on ONNX Runtime's CPU provider two inferences at once on "
        "half the threads each, as rfnet infer runs them, unless --workers says otherwise); + outputs = the same with the runtime's default files "
        "written by its background writer (REFUGE map, JPEG overlay, results.csv). Peak RSS is the process's resident peak while the runner "
        "ran (it includes libraries loaded by earlier runners, e.g. PyTorch); (+N) is what this runner added.",
        "",
        "| model | backend | precision | end-to-end ms | model-only ms | FPS (e2e) | x P100 | model-only img/s |"
        " pipelined e2e img/s | + outputs img/s | peak RSS MB | GPU MB | Dice disc | Dice cup | dDice disc / cup |"
        " agreement disc / cup | parity |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for r in report["results"]:
        lines.append(_result_row(r, notes))
    par = report["parity"]
    lines += ["", "## Parity", ""]
    lines.append(f"Rules: {report['parity_rules']}")
    lines.append("")
    lines.append("**All parity checks held.**" if par["passed"] else "**Parity FAILED:**")
    for f in par["failed"]:
        lines.append(f"- `{f['id']}`: " + "; ".join(f["failures"]))
    if par["not_run"]:
        lines += ["", "Not run here (not counted as failures): " + ", ".join(f"`{i}`" for i in par["not_run"])]
    if notes:
        lines += ["", "## Notes", ""] + notes
    return "\n".join(lines) + "\n"


def scatter_png(report: dict[str, Any]) -> bytes:
    """FPS (end to end, log scale) against Dice, one point per model and runner; disc and cup
    panels; marker = precision (o fp32, s fp16, ^ int8); the paper's 4.1 FPS as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    ok = [r for r in report["results"] if r["status"] == "ok" and r["end_to_end"].get("fps")]
    cmap = plt.get_cmap("tab10")
    colour = {r["id"]: cmap(i % 10) for i, r in enumerate(ok)}  # one colour per model + runner
    for ax, part in zip(axes, ("disc", "cup")):
        for r in ok:
            dice = r["accuracy"].get(f"dice_{part}")
            if dice is None:
                continue
            ax.scatter(r["end_to_end"]["fps"], dice, color=colour[r["id"]], marker=markers.get(r["precision"], "x"),
                       s=60, edgecolors="black", linewidths=0.5, label=f"{r['model_name']} {r['runner']} {r['precision']}")
        ax.axvline(PAPER_FPS, color="grey", linestyle="--", linewidth=1)
        ax.text(PAPER_FPS, ax.get_ylim()[0], " paper, P100", color="grey", fontsize=8, va="bottom", rotation=90)
        ax.set_xscale("log")
        # plain numbers, no crowded minor labels (log axes spanning less than a decade label every minor tick)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, PAPER_FPS / 1.5), max(hi, PAPER_FPS * 1.5))
        ax.set_xlabel("end-to-end FPS (log scale)")
        ax.set_ylabel(f"Dice {part} vs ground truth")
        ax.set_title(f"Optic {part}")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False)
        fig.subplots_adjust(bottom=0.12 + 0.035 * ((len(handles) + 1) // 2), wspace=0.25)
    fig.suptitle(f"RF-Net: speed vs accuracy ({report['environment']['cpu_model']}"
                 f"{'; ' + report['environment']['gpus'][0] if report['environment']['gpus'] else ''})", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_reports(out: Path, report: dict[str, Any]) -> dict[str, Path]:
    """Write report.json, report.md and report.png under ``out`` (each atomically); the paths written.

    report.png needs matplotlib, which a runtime-only install (``pip install .``) does not have:
    the figure is then left out with a warning and the JSON and Markdown reports are still written.
    """
    paths = {"json": out / "report.json", "md": out / "report.md"}
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["md"], markdown(report))
    try:
        png = scatter_png(report)
    except ImportError as exc:
        log.warning("report.png not written: %s (pip install matplotlib, or the [train] extra)", exc)
        return paths
    paths["png"] = out / "report.png"
    atomic_write_bytes(paths["png"], png)
    return paths
