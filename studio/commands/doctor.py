"""`lora-studio doctor [--json]`: GPU, driver, CUDA, bitsandbytes, disk space and runtime versions.

The doctor itself stays torch-free: the ML facts come from a probe run under the interpreter the
workers use (studio.runtime.doctor.run_probe), so it reports what a training run will really see.
"""
from __future__ import annotations

import json

from studio import events
from studio.commands import add_events_flag
from studio.runtime import doctor
from studio.runtime.doctor import format_report


def register(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="check the GPU, driver, CUDA, bitsandbytes, disk and runtime",
                              description="Report what training will run on, and what to fix.")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-probe", action="store_true", help="skip the ML probe (fast; no torch facts)")
    add_events_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    report = doctor.diagnose(probe_ml=False)
    if not args.no_probe:
        if args.emitter:  # the window shows the fast facts while the probe imports torch
            args.emitter.emit(events.PROGRESS, phase="doctor", done=0, total=1, report=report,
                              label="Asking the ML runtime for its versions and devices (it imports torch)…")
        report = doctor.with_probe(report)
    if args.emitter:
        args.emitter.emit(events.DONE, report=report)
    else:
        print(json.dumps(report, indent=2) if args.json else format_report(report))
    ml = report.get("ml") or {}
    return 1 if ml.get("error") or ml.get("torch_error") else 0
