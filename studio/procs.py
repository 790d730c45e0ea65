"""How the studio starts its workers: which interpreter, which environment.

Workers run under a configurable Python (DESIGN.md): ``LORA_STUDIO_PYTHON`` if set, else the
managed ML runtime when one is installed (a packaged GUI has no torch of its own), else the
interpreter running the studio.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from studio.events import encode_command
from studio.paths import REPO_ROOT
from studio.runtime.state import runtime_python

# Set before any import in the worker: no hub access unless the user asks for a download.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def worker_python() -> str:
    explicit = os.environ.get("LORA_STUDIO_PYTHON")
    if explicit:
        return explicit
    found = runtime_python()  # the managed runtime (docs/installer.md)
    return str(found) if found else sys.executable


def worker_argv(module: str, *args: str) -> list[str]:
    """The command line of a worker: ``[python, -m, module, *args]`` (no shell, ever)."""
    return [worker_python(), "-m", module, *[str(a) for a in args]]


def undo_bundle_env(env: dict) -> dict:
    """``env`` with PyInstaller's library path undone, for any program started from the bundle.

    The bootloader prepends its own folder to LD_LIBRARY_PATH (DYLD_LIBRARY_PATH on macOS) and
    keeps the user's value in ``*_ORIG`` (PyInstaller manual, "Run-time information"); another
    Python must not load the bundle's libstdc++, libssl or libpython.
    """
    env = dict(env)
    if getattr(sys, "frozen", False):
        for var in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"):
            orig = env.pop(f"{var}_ORIG", None)
            if orig is not None:
                env[var] = orig
            else:
                env.pop(var, None)
    return env


def worker_env(base: dict | None = None) -> dict:
    """The environment of a worker: offline by default, and the studio's code importable."""
    env = undo_bundle_env(os.environ if base is None else base)
    env.update(OFFLINE_ENV)
    root = str(getattr(sys, "_MEIPASS", REPO_ROOT))
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts and (Path(root) / "studio").is_dir():
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    return env


def start_worker(argv: list[str], stderr: Any, env: dict | None = None, cwd: str | None = None) -> subprocess.Popen:
    """A worker in its own session, stdin/stdout piped for commands and events.

    Its own session means Ctrl-C in a terminal reaches only the CLI (which turns it into a stop
    command), and a closed terminal or window does not kill a training run.
    """
    return subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                            env=env if env is not None else worker_env(), cwd=cwd,
                            start_new_session=True, close_fds=True)


def send_command(proc: subprocess.Popen, name: str, **args: Any) -> bool:
    """Write a protocol command to the worker's stdin; False when the worker is already gone."""
    try:
        proc.stdin.write(encode_command(name, **args))
        proc.stdin.flush()
        return True
    except (OSError, ValueError):
        return False


def pump_events(proc: subprocess.Popen, reader: Any, on_event: Any) -> bool:
    """Read one chunk of the worker's stdout and hand its events to ``on_event``; False at the end.

    One chunk per call, so a caller can catch Ctrl-C between reads and keep following the worker.
    """
    chunk = proc.stdout.read1(65536)
    if not chunk:
        return False
    for event in reader.feed(chunk):
        on_event(event)
    return True


def follow_worker(argv: list[str], stderr: Any, on_event: Any, stopping: str, env: dict | None = None) -> int:
    """Start a worker, hand its events to ``on_event`` until it ends; the first Ctrl-C asks it to stop
    (``stopping`` is printed), a second ends it at once, with every process it started (torchrun's
    ranks). Returns its exit code."""
    import signal

    from studio.events import EventReader

    proc = start_worker(argv, stderr=stderr, env=env)
    reader, asked = EventReader(), False
    while True:
        try:
            if not pump_events(proc, reader, on_event):
                break
        except KeyboardInterrupt:
            if asked:
                kill_group(proc.pid, signal.SIGKILL)
            else:
                print(f"\n{stopping}", file=sys.stderr)
                asked = True
                send_command(proc, "stop")
    return proc.wait()


def kill_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the launcher ``pid``, its process group and every descendant.

    torchrun starts each rank in a session of its own, so a signal to the launcher's group alone
    would miss the ranks; the ranks also die with their launcher (PR_SET_PDEATHSIG, workers/train.py).
    """
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        children = []
    try:
        os.killpg(pid, sig)
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    for child in children:
        try:
            child.send_signal(sig)
        except psutil.Error:
            pass
