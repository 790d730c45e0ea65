"""How the studio starts its workers: which interpreter, which environment.

Workers run under a configurable Python (DESIGN.md): ``LORA_STUDIO_PYTHON`` if set, else the
managed ML runtime when one is installed (a packaged GUI has no torch of its own), else the
interpreter running the studio.

Also the platform's primitives for processes: a worker in a group of its own, the polite signal, the
end of a whole tree, existence and identity. The one policy that ends a worker with them (the stop
ladder) is ``studio.driver``.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from studio.events import encode_command
from studio.paths import REPO_ROOT
from studio.runtime_home import runtime_python

# Set before any import in the worker: no hub access unless the user asks for a download.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def worker_python() -> str:
    explicit = os.environ.get("LORA_STUDIO_PYTHON")
    if explicit:
        return explicit
    found = runtime_python()  # the managed runtime (docs/installer.md)
    return str(found) if found else sys.executable


def worker_argv(module: str, *args: str | os.PathLike[str]) -> list[str]:
    """The command line of a worker: ``[python, -m, module, *args]`` (no shell, ever)."""
    return [worker_python(), "-m", module, *[str(a) for a in args]]


def undo_bundle_env(env: Mapping[str, str]) -> dict[str, str]:
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


def worker_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: offline by default, and the studio's code importable."""
    env = undo_bundle_env(os.environ if base is None else base)
    env.update(OFFLINE_ENV)
    root = str(getattr(sys, "_MEIPASS", REPO_ROOT))
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts and (Path(root) / "studio").is_dir():
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    return env


# The Windows branches test sys.platform itself, which mypy narrows: each platform's are checked for it.

# Windows process creation flags (winbase.h); subprocess exports them only on Windows.
CREATE_NEW_PROCESS_GROUP = 0x00000200
DETACHED_PROCESS = 0x00000008
CREATE_NO_WINDOW = 0x08000000
CTRL_BREAK_EVENT = 1

def _group_kwargs(outlive: bool, detached: bool = False) -> dict:
    """Popen arguments that put a worker in a process group (and on Windows a console) of its own.

    POSIX: a session of its own, so Ctrl-C in a terminal reaches only the CLI (which turns it into a
    stop command) and a closed terminal does not end a training run.
    Windows: ``CREATE_NEW_PROCESS_GROUP`` (Ctrl-C is disabled in the new group; CTRL_BREAK_EVENT
    reaches it by its pid) with a console of its own that has no window (``CREATE_NO_WINDOW``): the
    window's workers pop up no console, and closing the terminal does not send CTRL_CLOSE_EVENT to a
    run that should ``outlive`` it. ``detached`` (the queue runner) has no console at all.
    """
    if sys.platform != "win32":
        return {"start_new_session": True}
    flags = CREATE_NEW_PROCESS_GROUP | (DETACHED_PROCESS if detached else CREATE_NO_WINDOW)
    return {"creationflags": flags}


def start_worker(argv: list[str], stderr: Any, env: dict | None = None, cwd: str | None = None,
                 outlive: bool = False) -> subprocess.Popen:
    """A worker in a process group of its own, stdin/stdout piped for commands and events.

    A worker that does not ``outlive`` its starter (chat, export, evaluation, download) ends with it:
    on Windows it is put in a job object that ends every process in it when the studio's handle
    closes, however the studio ends (the POSIX workers watch their parent: ``workers.die_with_parent``).
    A training run outlives the window or terminal that started it (``lora-studio attach``).
    """
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                            env=env if env is not None else worker_env(), cwd=cwd, close_fds=True,
                            **_group_kwargs(outlive))
    if sys.platform == "win32" and not outlive:
        _windows_job().add(proc)
    return proc


def start_detached(argv: list[str], log: Any, env: dict | None = None) -> subprocess.Popen:
    """A process that outlives this one and every terminal (the queue runner): no stdin, output to ``log``."""
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            env=env if env is not None else worker_env(), close_fds=True,
                            **_group_kwargs(outlive=True, detached=True))


# --- processes by pid: existence, identity, stopping --------------------------------------------------
def process_created(pid: Any) -> float | None:
    """When process ``pid`` started (seconds since the epoch); None when there is no such process."""
    import psutil

    if not _is_pid(pid):
        return None
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def _is_pid(pid: Any) -> bool:
    return isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2 ** 31


def pid_alive(pid: Any, created: float | None = None) -> bool:
    """True while process ``pid`` runs (a zombie awaiting its parent has ended), and, given ``created``
    (its ``process_created``), only while it is that very process and not a later one given the same pid.

    Asked through psutil on every platform: ``os.kill(pid, 0)`` on Windows is not a probe, it sends
    CTRL_C_EVENT to the process.
    """
    import psutil

    if not _is_pid(pid):
        return False  # absent, or no pid at all (a damaged state.json); never 0 or -1, which mean groups
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return created is None or abs(proc.create_time() - float(created)) < 1.0
    except (psutil.Error, OSError, ValueError, TypeError):
        return False


def stop_signals() -> tuple:
    """The signals a worker takes as a polite stop: SIGTERM, and on Windows SIGBREAK (CTRL_BREAK_EVENT,
    which ``studio.procs.ask_to_stop`` sends there, since SIGTERM is TerminateProcess and runs no handler)."""
    import signal

    return tuple(getattr(signal, name) for name in ("SIGTERM", "SIGBREAK") if hasattr(signal, name))


def on_stop_signal(handler) -> None:
    """Install ``handler`` for every polite-stop signal of this platform (``stop_signals``)."""
    import signal

    for sig in stop_signals():
        signal.signal(sig, handler)


def ask_to_stop(pid: int) -> bool:
    """The polite signal, which every worker handles as its stop (save, then exit): SIGTERM to the
    worker's process group on POSIX; on Windows CTRL_BREAK_EVENT to its group (``TerminateProcess``,
    which is what ``os.kill(pid, SIGTERM)`` does there, would run no handler). False if it is gone."""
    if not pid_alive(pid):
        return False
    if sys.platform == "win32":
        return _ctrl_break(pid)
    import signal

    try:
        os.killpg(pid, signal.SIGTERM)  # the worker leads its group; torchrun forwards SIGTERM to its ranks
    except OSError:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return False
    return True


def kill_tree(pid: int) -> None:
    """End ``pid`` at once with every process it started (torchrun's ranks, pip, llama.cpp)."""
    import psutil

    if not _is_pid(pid):
        return
    try:
        root = psutil.Process(pid)
        family = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    if sys.platform != "win32":
        import signal

        try:
            os.killpg(pid, signal.SIGKILL)  # the worker's group: torchrun's ranks lead sessions of their own
        except OSError:
            pass
    for proc in family:
        try:
            proc.kill()  # SIGKILL, or TerminateProcess on Windows
        except psutil.Error:
            pass


# A worker in a console of its own (CREATE_NO_WINDOW) is reached by CTRL_BREAK_EVENT only from a process
# attached to that console; this child attaches, sends the event to the worker's group and exits, so the
# studio's own console (or none, in the window) is never touched.
_CTRL_BREAK_CHILD = (
    "import ctypes,sys\n"
    "k=ctypes.WinDLL('kernel32',use_last_error=True)\n"
    "pid=int(sys.argv[1])\n"
    "k.FreeConsole()\n"
    "ok=k.AttachConsole(pid) and k.SetConsoleCtrlHandler(None,True) and k.GenerateConsoleCtrlEvent(1,pid)\n"
    "sys.exit(0 if ok else 1)\n")


def _ctrl_break(pid: int) -> bool:
    try:
        done = subprocess.run([worker_python(), "-c", _CTRL_BREAK_CHILD, str(pid)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
                              creationflags=DETACHED_PROCESS)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


class _WindowsJob:
    """A job object that ends every process assigned to it when the studio's handle to it closes
    (JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE): the workers that must not outlive the studio, and whatever
    they start, end with it even when it is killed."""

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise OSError("job objects exist on Windows only")
        import ctypes
        from ctypes import wintypes

        class _Basic(ctypes.Structure):
            _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64), ("PerJobUserTimeLimit", ctypes.c_int64),
                        ("LimitFlags", wintypes.DWORD), ("MinimumWorkingSetSize", ctypes.c_size_t),
                        ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", wintypes.DWORD),
                        ("Affinity", ctypes.c_size_t), ("PriorityClass", wintypes.DWORD),
                        ("SchedulingClass", wintypes.DWORD)]

        class _Extended(ctypes.Structure):
            _fields_ = [("BasicLimitInformation", _Basic), ("IoInfo", ctypes.c_uint64 * 6),
                        ("ProcessMemoryLimit", ctypes.c_size_t), ("JobMemoryLimit", ctypes.c_size_t),
                        ("PeakProcessMemoryUsed", ctypes.c_size_t), ("PeakJobMemoryUsed", ctypes.c_size_t)]

        self.k32 = ctypes.WinDLL("kernel32", use_last_error=True)
        self.k32.CreateJobObjectW.restype = wintypes.HANDLE
        self.k32.AssignProcessToJobObject.argtypes = [wintypes.HANDLE, wintypes.HANDLE]
        self.handle = self.k32.CreateJobObjectW(None, None)
        info = _Extended()
        info.BasicLimitInformation.LimitFlags = 0x2000  # JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        self.ok = bool(self.handle) and bool(self.k32.SetInformationJobObject(
            self.handle, 9, ctypes.byref(info), ctypes.sizeof(info)))  # 9: JobObjectExtendedLimitInformation

    def add(self, proc: subprocess.Popen) -> bool:
        """Assign ``proc``; False where the system refuses (the worker still watches its parent)."""
        if sys.platform != "win32":
            return False
        # Popen's process handle; typeshed does not declare this Windows-only attribute (unused-ignore: the
        # line is unreachable, so not flagged, when mypy checks for another platform)
        handle = int(proc._handle)  # type: ignore[attr-defined, unused-ignore]
        return self.ok and bool(self.k32.AssignProcessToJobObject(self.handle, handle))


_JOB: _WindowsJob | None = None


def _windows_job() -> _WindowsJob:
    global _JOB
    if _JOB is None:
        _JOB = _WindowsJob()
    return _JOB


def send_command(proc: subprocess.Popen, name: str, **args: Any) -> bool:
    """Write a protocol command to the worker's stdin; False when the worker is already gone (or was
    started without a command pipe)."""
    stdin = proc.stdin
    if stdin is None:
        return False
    try:
        stdin.write(encode_command(name, **args))
        stdin.flush()
        return True
    except (OSError, ValueError):
        return False


def pump_events(proc: subprocess.Popen, reader: Any, on_event: Any) -> bool:
    """Read one chunk of the worker's stdout and hand its events to ``on_event``; False at the end.

    One chunk per call, so a caller can catch Ctrl-C between reads and keep following the worker.
    """
    stdout = proc.stdout
    if not isinstance(stdout, io.BufferedIOBase):  # start_worker pipes it, buffered: read1 takes what is there
        raise TypeError(f"the worker's stdout is {stdout!r}, not the buffered pipe start_worker gives it")
    chunk = stdout.read1(65536)
    if not chunk:
        return False
    for event in reader.feed(chunk):
        on_event(event)
    return True
