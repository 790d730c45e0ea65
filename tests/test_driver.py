"""The one stop ladder (studio/driver.py): the stop command, then after its deadline the polite signal, then
after its deadline the end of the whole tree. Real child processes that honour or ignore each step, no fakes;
a wrong ladder (a skipped step, a step before its deadline, a tree left behind) fails one of these tests. The
same tests run under Windows Python (``make test-windows``), where the polite signal is CTRL_BREAK_EVENT.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from proctools import gone

from studio import driver, procs

pytestmark = pytest.mark.platform
ROOT = Path(__file__).resolve().parent.parent
FAST = driver.Deadlines(stop_s=1.5, term_s=1.5)


def _under_wine() -> bool:
    if os.name != "nt":
        return False
    import ctypes

    return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")


NEEDS_SIGNAL = pytest.mark.skipif(_under_wine(), reason="Wine 8 cannot deliver CTRL_BREAK_EVENT to an attached "
                                  "console (tests/test_procs.py says more); the command and the end are tested")

# A stand-in worker. mode "command": ends on the stop command (or stdin closing) with a `done` event;
# "signal": reads no commands, ends on the polite signal; "stubborn": ignores both. With a third argument it
# starts a child of its own first (a grandchild of the caller: torchrun's ranks, pip, llama.cpp).
WORKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from studio import procs
    from studio.events import read_commands, stop_requested
    out, mode = Path(sys.argv[1]), sys.argv[2]
    def event(type, **data):
        sys.stdout.write(json.dumps({"v": 1, "type": type, "seq": 1, "ts": 0, "run": "t", "data": data}) + "\\n")
        sys.stdout.flush()
    def stopped(how):
        out.write_text(how)
        event("done", status="stopped", how=how)
        os._exit(0)
    if mode == "stubborn":
        import signal
        for sig in procs.stop_signals():
            signal.signal(sig, signal.SIG_IGN)
    else:
        procs.on_stop_signal(lambda *_: stopped("signal"))
    if mode == "command":
        read_commands(lambda line: stop_requested(line) and stopped("command"), on_close=lambda: stopped("stdin"))
    if len(sys.argv) > 3:
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(sys.argv[3]).write_text(str(child.pid))
    event("hello", pid=os.getpid())
    time.sleep(600)
""")


def _argv(tmp_path: Path, mode: str, child: bool = False) -> tuple[list[str], Path]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "stopped.txt"
    return [sys.executable, str(script), str(out), mode] + ([str(tmp_path / "child.pid")] if child else []), out


def _ready(tmp_path: Path, mode: str, deadlines: driver.Deadlines = FAST,
           child: bool = False) -> tuple[driver.Worker, Path]:
    argv, out = _argv(tmp_path, mode, child)
    worker = driver.Worker(argv, None, deadlines, env=procs.worker_env())
    assert worker.next_event(60).type == "hello"
    return worker, out


def test_a_worker_that_honours_the_command_ends_at_the_first_step(tmp_path):
    worker, out = _ready(tmp_path, "command", driver.Deadlines(stop_s=30, term_s=30))
    started = time.monotonic()
    assert worker.shutdown() == 0
    assert out.read_text() == "command" and time.monotonic() - started < 20
    assert worker.ladder.stage == 1, "no signal and no kill once the command did it"


@NEEDS_SIGNAL
def test_a_worker_that_ignores_the_command_gets_the_polite_signal_after_the_first_deadline(tmp_path):
    worker, out = _ready(tmp_path, "signal")
    started = time.monotonic()
    code = worker.shutdown()
    elapsed = time.monotonic() - started
    assert code == 0 and out.read_text() == "signal", "the signal step was skipped (the worker was killed)"
    assert elapsed >= FAST.stop_s - 0.1, "the signal came before the command's deadline"
    assert elapsed < FAST.stop_s + FAST.term_s + 10


def test_a_worker_that_ignores_every_polite_stop_ends_after_the_second_deadline_with_its_child(tmp_path):
    worker, out = _ready(tmp_path, "stubborn", child=True)
    grandchild = int((tmp_path / "child.pid").read_text())
    assert procs.pid_alive(grandchild)
    started = time.monotonic()
    code = worker.shutdown()
    elapsed = time.monotonic() - started
    assert code != 0 and not out.exists()
    assert worker.ladder.stage == 3
    assert elapsed >= FAST.stop_s + FAST.term_s - 0.1, "the tree ended before the signal's deadline"
    assert elapsed < FAST.stop_s + FAST.term_s + 15
    assert gone(grandchild), "the worker's own child must end with it"


def test_closing_stdin_is_the_chats_first_step(tmp_path):
    worker, out = _ready(tmp_path, "command", driver.Deadlines(stop_s=30, term_s=30))
    assert worker.shutdown(ask=worker.close_stdin) == 0
    assert out.read_text() == "stdin" and worker.ladder.stage == 1


def test_an_undeliverable_command_moves_to_the_signal_at_once(tmp_path):
    """The window's ladder for a worker whose stdin is gone (or that reads none: the runtime setup)."""
    argv, out = _argv(tmp_path, "stubborn")
    worker = driver.Worker(argv, None, driver.Deadlines(stop_s=60, term_s=60), env=procs.worker_env())
    assert worker.next_event(60).type == "hello"
    ladder = driver.StopLadder(worker.pid, lambda: False, worker.deadlines)
    assert ladder.step() == 60 and ladder.stage == 2, "no wait for a command that never arrived"
    assert ladder.step() is None and ladder.stage == 3
    assert worker.proc.wait(timeout=30) != 0


def test_the_ladder_never_signals_a_process_that_has_ended(tmp_path):
    worker, _ = _ready(tmp_path, "command")
    worker.send("stop")
    assert worker.proc.wait(timeout=30) == 0
    assert worker.shutdown() == 0 and worker.kill() == 0


# The CLI: follow a worker, Ctrl-C. A real SIGINT to a real CLI process (POSIX: on Windows Ctrl-C reaches a
# console's group, which pytest shares).
CLI = textwrap.dedent("""
    import sys
    from studio import driver, procs
    seen, stop_s = [], float(sys.argv.pop(1))
    worker = driver.Worker(sys.argv[1:], None, driver.Deadlines(stop_s=stop_s, term_s=60), env=procs.worker_env())
    def on_event(ev):
        seen.append(ev.type)
        if ev.type == "hello":
            print("ready", flush=True)
    code = worker.follow(on_event, "stopping (Ctrl-C again to end at once)")
    print(" ".join(seen), code, worker.ladder.stage, flush=True)
""")


def _fresh_signals() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _cli(tmp_path: Path, mode: str, stop_s: float, child: bool = False) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "cli.py"
    script.write_text(CLI)
    argv, out = _argv(tmp_path, mode, child)
    # as a shell starts the CLI: Ctrl-C's signal neither blocked nor ignored, whatever an earlier test in this
    # pytest worker left in the process (a child inherits the signal mask and ignored signals across exec)
    reset = None if os.name == "nt" else _fresh_signals
    cli = subprocess.Popen([sys.executable, str(script), str(stop_s), *argv], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=procs.worker_env(), text=True, preexec_fn=reset)
    assert cli.stdout.readline().strip() == "ready"
    return cli, out


@pytest.mark.skipif(os.name == "nt", reason="SIGINT to one process: Ctrl-C on Windows goes to a whole console")
def test_ctrl_c_sends_the_stop_command_and_the_last_events_still_arrive(tmp_path):
    cli, out = _cli(tmp_path, "command", stop_s=60)
    cli.send_signal(signal.SIGINT)
    stdout, stderr = cli.communicate(timeout=60)
    assert "stopping (Ctrl-C again to end at once)" in stderr
    assert stdout.split() == ["hello", "done", "0", "1"], "the worker's done event after the stop is shown"
    assert out.read_text() == "command"


@pytest.mark.skipif(os.name == "nt", reason="SIGINT to one process: Ctrl-C on Windows goes to a whole console")
def test_a_second_ctrl_c_ends_the_tree_at_once(tmp_path):
    cli, out = _cli(tmp_path, "stubborn", stop_s=60, child=True)
    grandchild = int((tmp_path / "child.pid").read_text())
    cli.send_signal(signal.SIGINT)
    time.sleep(1.0)
    started = time.monotonic()
    cli.send_signal(signal.SIGINT)
    stdout, _ = cli.communicate(timeout=30)
    assert time.monotonic() - started < 20, "the second Ctrl-C must not wait for the deadlines"
    words = stdout.split()
    assert words[-1] == "3" and int(words[-2]) != 0 and not out.exists()
    assert gone(grandchild)
