"""What stands between this machine and a working studio, in words (``lora-studio doctor``).

Torch-free: the ML facts come from the probe, run under the workers' interpreter.
"""
from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

from studio import __version__, events, paths
from studio.fsutil import existing_parent
from studio.hardware import nvidia_gpus
from studio.procs import worker_python
from studio.runtime.setup import probe_argv, studio_env
from studio.runtime.state import needs_setup, status


def run_probe(python: str | None = None, timeout: float = 300) -> dict:
    """Run the probe under the workers' interpreter and return its answer, or {"error": words}."""
    py = python or worker_python()
    if getattr(sys, "frozen", False) and Path(py) == Path(sys.executable):
        return {"error": "no ML runtime is set up yet: run 'lora-studio runtime setup' or accept the "
                         "setup offered by the window"}
    try:
        out = subprocess.run(probe_argv(py), capture_output=True, timeout=timeout, env=studio_env(),
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"the probe could not run under {py}: {e}", "python_path": py}
    answer = events.result_of(out.stdout)
    if out.returncode != 0 or answer is None:
        tail = (out.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1][:300]
        return {"error": f"the probe failed under {py} (exit code {out.returncode}): {tail}", "python_path": py}
    answer["python_path"] = py
    return answer


def diagnose(probe_ml: bool = True) -> dict:
    """Everything the doctor reports, as a dict (torch-free: the ML facts come from the probe)."""
    data = paths.data_dir()
    usage = shutil.disk_usage(existing_parent(data))
    report = {
        "app": {"version": __version__, "python": sys.version.split()[0], "executable": sys.executable,
                "frozen": bool(getattr(sys, "frozen", False)), "platform": platform.platform()},
        "data_dir": str(data),
        "disk": {"path": str(data), "free_gb": round(usage.free / 1e9, 1), "total_gb": round(usage.total / 1e9, 1)},
        "nvidia": nvidia_gpus(),
        "runtime": status(),
        "needs_setup": needs_setup(),
        "workers_python": worker_python(),
        "ml": None,
    }
    report["problems"] = problems(report)
    return with_probe(report) if probe_ml else report


def with_probe(report: dict) -> dict:
    """The report with the ML facts from the probe (the slow part: the probe imports torch)."""
    report = {**report, "ml": run_probe()}
    report["problems"] = problems(report)
    return report


def problems(report: dict) -> list[str]:
    """What is wrong or limiting, each with what to do, from a diagnose() report."""
    out: list[str] = []
    nvidia, ml, rt = report["nvidia"], report.get("ml") or {}, report["runtime"]
    if not nvidia["gpus"]:
        out.append("No NVIDIA GPU with a working driver was found: training runs on the CPU, which is "
                   "fine for the demo model but slow for real ones.")
    if rt["state"] in ("missing", "incomplete", "broken") and report["needs_setup"]:
        out.append(f"The ML runtime is {rt['state']}: run 'lora-studio runtime setup' (or accept the setup "
                   "the window offers).")
    elif rt["state"] == "outdated":
        out.append("The ML runtime was made from another version's lock: run 'lora-studio runtime setup' "
                   "to update it.")
    if ml.get("error"):
        out.append(f"The ML probe failed: {ml['error']}")
    elif ml:
        out.extend(_ml_problems(nvidia, ml, report["disk"]))
    if report["disk"]["free_gb"] < 10:
        out.append(f"Only {report['disk']['free_gb']} GB is free in {report['disk']['path']}: models, "
                   "checkpoints and exports need room; free some space.")
    return out


def _ml_problems(nvidia: dict, ml: dict, disk: dict) -> list[str]:
    out = []
    if ml.get("torch_error"):
        out.append(f"torch does not import under {ml.get('python_path')}: {ml['torch_error']}; "
                   "run 'lora-studio runtime setup' to repair the runtime.")
        return out
    if nvidia["gpus"] and not ml.get("cuda_available"):
        build = f"CUDA {ml['torch_cuda']}" if ml.get("torch_cuda") else "CPU-only"
        out.append(f"An NVIDIA GPU is present but torch ({build} build) cannot use it: update the driver, or "
                   "reinstall the runtime with LORA_STUDIO_TORCH_VARIANT=cuda (docs/installer.md).")
    if nvidia.get("cuda_driver") and ml.get("torch_cuda") and _ver(nvidia["cuda_driver"]) < _ver(ml["torch_cuda"]):
        out.append(f"The driver supports CUDA {nvidia['cuda_driver']} but torch was built for CUDA "
                   f"{ml['torch_cuda']}: update the NVIDIA driver.")
    bnb = ml.get("bnb_4bit") or {}
    if not bnb.get("ok"):
        out.append(f"bitsandbytes 4-bit quantisation does not work here ({bnb.get('error', 'wrong result')}): "
                   "QLoRA cannot load models in 4 bits; plain LoRA still works.")
    return out


def _ver(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(text).split(".") if p.isdigit())


def format_report(report: dict) -> str:
    """The report as the text the terminal and Help > Diagnostics show."""
    lines = [f"LoRA Studio {report['app']['version']} (Python {report['app']['python']}, "
             f"{report['app']['platform']}{', bundled app' if report['app']['frozen'] else ''})"]
    lines += _gpu_lines(report["nvidia"])
    lines += _ml_lines(report.get("ml"))
    rt = report["runtime"]
    if rt["state"] != "ready" and not report["needs_setup"]:  # a source install: this Python has torch
        lines.append("ML runtime:   none needed: the workers' Python has the ML libraries")
    else:
        lines.append(f"ML runtime:   {rt['state']} ({rt['path']})" + (f", torch {rt['variant']} build" if rt["variant"] else ""))
    lines.append(f"Workers run:  {report['workers_python']}")
    disk = report["disk"]
    lines.append(f"Disk:         {disk['free_gb']} GB free of {disk['total_gb']} GB ({disk['path']})")
    lines.append("")
    lines += [f"! {p}" for p in report["problems"]] or ["No problems found."]
    return "\n".join(lines)


def _gpu_lines(nvidia: dict) -> list[str]:
    if not nvidia["gpus"]:
        return [f"GPU:          none ({nvidia.get('error') or 'no NVIDIA GPU'})"]
    lines = [f"GPU {g['index']}:        {g['name']}, {g['memory_total_mb'] / 1024:.1f} GiB "
             f"({g['memory_free_mb'] / 1024:.1f} GiB free)" for g in nvidia["gpus"]]
    lines.append(f"Driver:       {nvidia['driver']} (supports CUDA {nvidia['cuda_driver']})")
    return lines


def _ml_lines(ml: dict | None) -> list[str]:
    if ml is None:
        return ["ML runtime facts: skipped (--no-probe)"]
    if ml.get("error"):
        return [f"ML probe:     failed: {ml['error']}"]
    v = ml.get("versions", {})
    cuda = (f"CUDA {ml['torch_cuda']}, " if ml.get("torch_cuda") else "CPU build, ") + \
           ("GPU usable" if ml.get("cuda_available") else "no GPU in use")
    bnb = ml.get("bnb_4bit") or {}
    bnb_state = "4-bit NF4 works" if bnb.get("ok") else f"4-bit NF4 fails: {bnb.get('error', 'wrong result')}"
    return [f"Interpreter:  {ml.get('python_path')} (Python {ml.get('python')})",
            f"torch:        {v.get('torch')} ({cuda})",
            f"bitsandbytes: {v.get('bitsandbytes')} on {bnb.get('device')} ({bnb_state})",
            "Libraries:    " + ", ".join(f"{k} {v[k]}" for k in ("transformers", "peft", "accelerate",
                                                                    "datasets", "safetensors", "gguf") if v.get(k))]
