"""`lora-studio doctor [--json]`: GPU, driver, CUDA, bitsandbytes, disk space and runtime versions.

The doctor itself stays torch-free: the ML facts come from a probe run under the interpreter the
workers use (studio.runtime.doctor.run_probe), so it reports what a training run will really see.
"""
from __future__ import annotations

import json

from studio import events
from studio.commands import add_events_flag
from studio.runtime import doctor


def register(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="check the GPU, driver, CUDA, bitsandbytes, disk and runtime",
                              description="Report what training will run on, and what to fix.")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-probe", action="store_true", help="skip the ML probe (fast; no torch facts)")
    add_events_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.emitter and not args.no_probe:
        args.emitter.emit(events.PROGRESS, phase="doctor", done=0, total=1,
                          label="Asking the ML runtime for its versions and devices (it imports torch)…")
    report = doctor.diagnose(probe_ml=not args.no_probe)
    if args.emitter:
        args.emitter.emit(events.DONE, report=report)
    else:
        print(json.dumps(report, indent=2) if args.json else format_report(report))
    ml = report.get("ml") or {}
    return 1 if ml.get("error") or ml.get("torch_error") else 0


def format_report(report: dict) -> str:
    """The report as the text the terminal and Help > Diagnostics show."""
    lines = [f"LoRA Studio {report['app']['version']} (Python {report['app']['python']}, "
             f"{report['app']['platform']}{', bundled app' if report['app']['frozen'] else ''})"]
    lines += _gpu_lines(report["nvidia"])
    lines += _ml_lines(report.get("ml"))
    rt = report["runtime"]
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
