"""The worker controller against fake workers that finish, crash, fail, hang, flood and print garbage."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from studio import procs
from ui.controllers import CommandController, WorkerController

pytestmark = [pytest.mark.timeout(60), pytest.mark.platform]
WINDOWS = os.name == "nt"


class Recorder:
    """Collects every signal of a controller."""

    def __init__(self, c: WorkerController) -> None:
        self.metrics, self.memory, self.errors, self.logs, self.done, self.progress = [], [], [], [], [], []
        self.malformed = 0
        c.sig_metric.connect(self.metrics.append)
        c.sig_memory.connect(self.memory.append)
        c.sig_error.connect(lambda *a: self.errors.append(a))
        c.sig_log.connect(self.logs.append)
        c.sig_stderr.connect(self.logs.append)
        c.sig_done.connect(self.done.append)
        c.sig_progress.connect(lambda *a: self.progress.append(a))
        c.sig_malformed.connect(lambda n, _l: setattr(self, "malformed", n))


def run_to_end(qtbot, c: WorkerController, argv, timeout=20000, **kw):
    with qtbot.waitSignal(c.sig_finished, timeout=timeout) as blocker:
        c.start(argv, env=procs.worker_env(), **kw)
    return blocker.args


def test_a_normal_run_delivers_every_event_in_order(qtbot, fake_argv):
    c = WorkerController()
    rec = Recorder(c)
    code, saw_done = run_to_end(qtbot, c, fake_argv("ok"))
    assert (code, saw_done) == (0, True)
    assert [m["step"] for m in rec.metrics] == [1, 2, 3, 4, 5]
    assert rec.metrics[-1]["loss"] == pytest.approx(0.4)
    assert rec.progress[-1] == ("train", 5, 5)
    assert len(rec.memory) == 5 and rec.memory[0]["budget"] == 8 * 1024 ** 3
    assert rec.errors == [] and rec.done == [{"status": "finished"}]


def test_a_crash_without_an_error_event_is_reported_not_silent(qtbot, fake_argv):
    c = WorkerController()
    rec = Recorder(c)
    code, saw_done = run_to_end(qtbot, c, fake_argv("crash"))
    assert not saw_done and len(rec.errors) == 1 and rec.errors[0][0] == "internal"
    if WINDOWS:  # no signals there: the fake ends itself with TerminateProcess(15)
        assert code == 15 and "exited with code 15" in rec.errors[0][1]
    else:
        assert code == -9 and "signal 9" in rec.errors[0][1]
    assert any("fake crash" in line for line in rec.logs)  # stderr reached the log panel


def test_the_workers_error_and_hint_come_through_once(qtbot, fake_argv):
    c = WorkerController()
    rec = Recorder(c)
    code, _ = run_to_end(qtbot, c, fake_argv("error"))
    assert code == 1
    assert rec.errors == [("oom", "CUDA out of memory at step 3", "lower the micro-batch")]


def test_garbage_lines_are_counted_and_skipped(qtbot, fake_argv):
    c = WorkerController()
    rec = Recorder(c)
    code, _ = run_to_end(qtbot, c, fake_argv("garbage"))
    assert code == 0
    assert [m["step"] for m in rec.metrics] == [1, 2, 3]  # the last one had no final newline
    assert rec.malformed >= 3
    assert rec.errors == []


def test_stop_is_a_polite_command_first(qtbot, fake_argv):
    c = WorkerController(stop_grace_s=10)
    rec = Recorder(c)
    with qtbot.waitSignal(c.sig_hello, timeout=10000):
        c.start(fake_argv("obey"), env=procs.worker_env())
    with qtbot.waitSignal(c.sig_finished, timeout=10000) as blocker:
        c.stop()
    assert blocker.args == [0, True]
    assert rec.done == [{"status": "stopped"}]


def test_a_hung_worker_is_terminated_then_killed(qtbot, fake_argv):
    c = WorkerController(stop_grace_s=0.3, term_grace_s=0.3)
    rec = Recorder(c)
    with qtbot.waitSignal(c.sig_hello, timeout=10000):
        c.start(fake_argv("hang"), env=procs.worker_env())
    with qtbot.waitSignal(c.sig_finished, timeout=10000) as blocker:
        c.stop()
    # it ignored stop and SIGTERM (SIGBREAK on Windows), then was killed: SIGKILL, or TerminateProcess on Windows
    assert blocker.args[0] != 0 if WINDOWS else blocker.args[0] == -9
    assert not c.running
    assert rec.errors and rec.errors[0][0] == "internal"


def test_stderr_to_a_file_is_tailed_into_the_log(qtbot, fake_argv, tmp_path):
    c = WorkerController()
    rec = Recorder(c)
    log = tmp_path / "worker.log"
    run_to_end(qtbot, c, fake_argv("stderr"), stderr_path=log)
    assert [line for line in rec.logs if line.startswith("stderr line")] == ["stderr line 0", "stderr line 1", "stderr line 2"]
    assert log.read_text().count("stderr line") == 3


def test_a_flood_is_parsed_completely(qtbot, fake_argv):
    c = WorkerController()
    rec = Recorder(c)
    code, saw_done = run_to_end(qtbot, c, fake_argv("flood", 2000, 1))
    assert (code, saw_done) == (0, True)
    assert len(rec.metrics) == 2000 and rec.malformed == 0


def test_a_controller_deleted_while_its_worker_writes_does_not_crash(qtbot, fake_argv):
    """The page (and with it the controller) goes away while the worker still floods its pipes: the
    reader threads drain them to the end without touching the deleted QObjects (a thread that emitted a
    signal on an object the GUI thread was deleting crashed the whole test run once)."""
    import shiboken6

    c = WorkerController()
    c.start(fake_argv("flood", 2000, 1), env=procs.worker_env())
    proc, readers = c.proc, list(c._readers)
    threads = [r._thread for r in readers]
    qtbot.waitUntil(lambda: any(r._buf for r in readers) or proc.poll() is not None, timeout=10000)
    shiboken6.delete(c)
    assert not any(shiboken6.isValid(r) for r in readers)
    proc.wait(timeout=20)
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive()
    qtbot.wait(200)  # the event loop runs on with nothing pending for the dead objects


def test_a_detached_worker_outlives_its_window(tmp_path, fake_argv):
    """The GUI process exits after detach (\"keep running\"); the worker finishes on its own."""
    marker = tmp_path / "finished.txt"
    gui = textwrap.dedent(f"""
        import sys
        from PySide6.QtCore import QCoreApplication, QTimer
        from studio import procs
        from ui.controllers import WorkerController
        app = QCoreApplication([])
        c = WorkerController()
        c.outlives_window = True  # a training run's controller: the others end with the window (a job on Windows)
        def hello(_d):
            c.detach()
            print("pid", c.pid, flush=True)
            QTimer.singleShot(0, app.quit)
        c.sig_hello.connect(hello)
        c.start({fake_argv("survive", marker)!r}, env=procs.worker_env())
        app.exec()
        sys.stdout.flush()
        import os; os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", gui], capture_output=True, text=True, timeout=30,
                         env=procs.worker_env())
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.read_text().startswith("finished stdout_ok=False")  # kept going after its reader left


def test_command_controller_answers_with_the_done_event_or_the_error(qtbot):
    c = CommandController()
    with qtbot.waitSignal(c.sig_done, timeout=30000) as blocker:
        c.run_command("models", "demo")
    assert blocker.args[0]["model"]["architecture"] == "LlamaForCausalLM"
    with qtbot.waitSignal(c.sig_error, timeout=30000) as blocker:
        c.run_command("models", "no-such-model")
    kind, message, _hint = blocker.args
    assert kind == "config" and "no-such-model" in message and "not found" in message


def test_replacing_a_running_command_keeps_busy_balanced(qtbot):
    c = CommandController()
    busy, done = [], []
    c.sig_busy.connect(busy.append)
    c.sig_done.connect(done.append)
    c.run_argv([sys.executable, "-c", "import time; time.sleep(30)"])
    with qtbot.waitSignal(c.sig_finished, timeout=30000):
        c.run_command("models", "demo")
    qtbot.waitUntil(lambda: len(busy) == 4, timeout=5000)
    assert busy == [True, False, True, False] and not c.running and len(done) == 1
