"""Smoke test of the built bundle (``make app-test``): run it the way a user's desktop would.

    python installer/app_test.py dist/lora-studio/lora-studio [--runtime-python PY]

Checks, each against the real binary with a fresh data folder: ``--version``; the window opens
offscreen, is titled "LoRA Studio", and finds or offers to create the ML runtime
(``--smoke-test``); ``doctor --json --no-probe`` answers from inside the bundle; the bundle
holds no torch. With ``--runtime-python`` (an interpreter that has torch, such as this
checkout's .venv) the doctor's ML probe also runs from the bundle under that interpreter, which
proves that the bundle's sources and environment work for the workers.
Prints one line per check and exits 0 only when all pass.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMEOUT_S = 180


def run(binary: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=TIMEOUT_S,
                          env=env, stdin=subprocess.DEVNULL)


def last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the output")


def check_version(binary: Path, env: dict) -> str:
    from studio import __version__

    out = run(binary, "--version", env=env)
    assert out.returncode == 0 and __version__ in out.stdout, f"--version said {out.stdout!r} {out.stderr[-300:]!r}"
    return out.stdout.strip()


def check_window(binary: Path, env: dict) -> str:
    started = time.monotonic()
    out = run(binary, "--smoke-test", env=env)
    try:
        report = last_json(out.stdout)
    except ValueError:
        raise AssertionError(f"no report (exit {out.returncode}): {out.stderr[-800:]}") from None
    failed = [name for name, ok in report.get("checks", {}).items() if not ok]
    assert out.returncode == 0 and report.get("ok"), f"failed checks {failed}; report {report}; {out.stderr[-800:]}"
    return (f"title {report['title']!r}, version {report['version']}, runtime {report['runtime']} "
            f"(setup offered: {report['setup_offered']}), window after {report['shown_after_s']} s, "
            f"process {time.monotonic() - started:.1f} s")


def check_doctor(binary: Path, env: dict, probe: bool) -> str:
    out = run(binary, "doctor", "--json", *([] if probe else ["--no-probe"]), env=env)
    try:
        report = json.loads(out.stdout)
    except ValueError:
        raise AssertionError(f"no JSON report (exit {out.returncode}): {out.stderr[-800:]}") from None
    assert report["app"]["frozen"], "the doctor did not run inside the bundle"
    if not probe:
        return f"runtime {report['runtime']['state']}, {report['disk']['free_gb']} GB free"
    ml = report["ml"]
    assert out.returncode == 0 and not ml.get("error") and not ml.get("torch_error"), f"probe failed: {ml}"
    return f"torch {ml['versions']['torch']} under {ml['python_path']}, 4-bit: {ml['bnb_4bit']}"


def has_torch(python: str) -> bool:
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"
    return subprocess.run([python, "-c", code], capture_output=True, timeout=60).returncode == 0


def check_no_torch(binary: Path) -> str:
    internal = binary.parent / "_internal"
    found = [p for p in internal.rglob("*") if p.name in ("torch", "transformers", "peft", "bitsandbytes")
             or p.name.startswith("libtorch")]
    assert not found, f"the bundle contains ML packages: {found[:5]}"
    size = sum(p.stat().st_size for p in binary.parent.rglob("*") if p.is_file() and not p.is_symlink())
    return f"no torch inside; bundle is {size / 1e6:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("binary", type=Path)
    p.add_argument("--runtime-python", help="an interpreter with torch, for the doctor's probe (skipped without)")
    args = p.parse_args(argv)
    if not args.binary.is_file():
        print(f"app-test: {args.binary} does not exist: build it with 'make app'", file=sys.stderr)
        return 2
    home = tempfile.mkdtemp(prefix="lora-studio-app-test-")
    env = {k: v for k, v in os.environ.items() if k not in ("LORA_STUDIO_PYTHON", "PYTHONPATH")}
    env.update(LORA_STUDIO_HOME=home, QT_QPA_PLATFORM="offscreen")
    checks = [("version", lambda: check_version(args.binary, env)),
              ("window", lambda: check_window(args.binary, env)),
              ("doctor", lambda: check_doctor(args.binary, env, probe=False)),
              ("contents", lambda: check_no_torch(args.binary))]
    if args.runtime_python and has_torch(args.runtime_python):
        probe_env = {**env, "LORA_STUDIO_PYTHON": args.runtime_python}
        checks.append(("probe", lambda: check_doctor(args.binary, probe_env, probe=True)))
    elif args.runtime_python:
        print(f"skip probe: {args.runtime_python} has no torch (make run installs it)")
    failures = 0
    for name, check in checks:
        try:
            print(f"ok   {name}: {check()}", flush=True)
        except (AssertionError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
            failures += 1
            print(f"FAIL {name}: {e}", flush=True)
    print(f"{len(checks) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
