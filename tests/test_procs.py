"""One process-control module for both platforms (issue 32): start, polite stop, the end of the whole
tree, existence and identity (the ladder that escalates through them: tests/test_driver.py). Real child processes, no fakes; the same tests run under Windows
Python (``make test-windows``), where the polite signal is CTRL_BREAK_EVENT and the end a job object.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from proctools import gone

from studio import procs

pytestmark = pytest.mark.platform
ROOT = Path(__file__).resolve().parent.parent


def _under_wine() -> bool:
    if os.name != "nt":
        return False
    import ctypes

    return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")


UNDER_WINE = _under_wine()

# A stand-in worker: says it is ready, writes which stop reached it, and exits 0 (a training saving its adapter).
WORKER = textwrap.dedent("""
    import sys, time, threading
    from pathlib import Path
    from studio import procs
    from studio.events import read_commands, stop_requested
    out = Path(sys.argv[1])
    mode = sys.argv[2]
    def stopped(how):
        out.write_text(how)
        sys.stdout.flush()
        import os; os._exit(0)
    if mode != "stubborn":
        procs.on_stop_signal(lambda *_: stopped("signal"))
        if mode == "commands":
            read_commands(lambda line: stop_requested(line) and stopped("command"))
    else:
        import signal
        for sig in procs.stop_signals():
            signal.signal(sig, signal.SIG_IGN)
    if len(sys.argv) > 3:  # a child of its own (pip under the runtime setup, torchrun's ranks)
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(sys.argv[3]).write_text(str(child.pid))
    print("ready", flush=True)
    time.sleep(600)
""")


def _start(tmp_path, mode: str, child: bool = False, outlive: bool = False) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "stopped.txt"
    argv = [sys.executable, str(script), str(out), mode] + ([str(tmp_path / "child.pid")] if child else [])
    proc = procs.start_worker(argv, stderr=None, env=procs.worker_env(), outlive=outlive)
    assert proc.stdout.readline().strip() == b"ready"
    return proc, out


@pytest.mark.skipif(UNDER_WINE, reason="Wine 8's GenerateConsoleCtrlEvent fails with ERROR_INVALID_HANDLE for a "
                    "console it attached to: CTRL_BREAK_EVENT needs a real Windows machine (the stop command, "
                    "tested below, is the first step of every stop and works under Wine)")
def test_the_polite_signal_runs_the_workers_handler(tmp_path):
    """SIGTERM on POSIX, CTRL_BREAK_EVENT on Windows (where os.kill(pid, SIGTERM) is TerminateProcess and no
    handler would run): either way the worker's stop handler runs and it exits 0."""
    proc, out = _start(tmp_path, "signal")
    assert procs.ask_to_stop(proc.pid)
    assert proc.wait(timeout=30) == 0
    assert out.read_text() == "signal"


def test_the_polite_signal_never_ends_a_worker_without_its_handler(tmp_path):
    """The old stop was os.kill(pid, SIGTERM): TerminateProcess on Windows, no checkpoint, no adapter. Now a
    polite signal either runs the worker's handler or, where it cannot be delivered, leaves the worker running
    for the ladder's next step; it never ends it unannounced."""
    proc, out = _start(tmp_path, "signal")
    delivered = procs.ask_to_stop(proc.pid)
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        code = None
    if code is None:
        assert not delivered and not out.exists()
        procs.kill_tree(proc.pid)
        proc.wait()
    else:
        assert code == 0 and out.read_text() == "signal"


def test_kill_tree_reaches_grandchildren(tmp_path):
    proc, _ = _start(tmp_path, "signal", child=True)
    child = int((tmp_path / "child.pid").read_text())
    procs.kill_tree(proc.pid)
    proc.wait(timeout=30)
    assert gone(child)


def test_pid_alive_knows_a_pid_by_its_start_time_and_never_signals():
    me = os.getpid()
    created = procs.process_created(me)
    assert procs.pid_alive(me) and procs.pid_alive(me, created)
    assert not procs.pid_alive(me, created - 3600), "a pid reused by a later process is not the run's worker"
    for nonsense in (None, 0, -1, True, "12", 2 ** 40, 3.5):
        assert not procs.pid_alive(nonsense)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not procs.pid_alive(dead.pid)


# The parent of a worker is killed outright (the CLI or window killed from a task manager): a worker that must
# not outlive it ends too (a job object on Windows, the worker's parent watch on POSIX); a training run lives on.
PARENT = textwrap.dedent("""
    import os, sys, time
    from studio import procs
    outlive = sys.argv[1] == "outlive"
    # POSIX workers that must not outlive the studio watch their parent; on Windows the job object alone is tested
    watch = not outlive and os.name != "nt"
    code = "import time\\nfrom workers import die_with_parent\\n" + ("die_with_parent()\\n" if watch else "") + \\
           "print('ready', flush=True)\\ntime.sleep(600)"
    proc = procs.start_worker([sys.executable, "-c", code], stderr=None, outlive=outlive)
    proc.stdout.readline()
    print(proc.pid, flush=True)
    time.sleep(600)
""")


@pytest.mark.parametrize("outlive", [False, True])
def test_a_worker_ends_with_its_parent_unless_it_outlives_it(tmp_path, outlive):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), "outlive" if outlive else "ends"],
                              stdout=subprocess.PIPE, env=procs.worker_env(), cwd=str(ROOT))
    worker = int(parent.stdout.readline())
    try:
        psutil.Process(parent.pid).kill()
        parent.wait(timeout=30)
        if outlive:
            time.sleep(2)
            assert procs.pid_alive(worker), "a training run outlives the window or terminal that started it"
        else:
            assert gone(worker), "a chat, export or download worker must not outlive the studio"
    finally:
        procs.kill_tree(worker)


def test_a_detached_process_has_no_stdin_and_writes_its_log(tmp_path):
    log_path = tmp_path / "runner.log"
    with open(log_path, "ab") as log:
        proc = procs.start_detached([sys.executable, "-c", "import sys; print(sys.stdin.read() == '')"], log)
    assert proc.wait(timeout=60) == 0
    assert log_path.read_text().strip() == "True"
