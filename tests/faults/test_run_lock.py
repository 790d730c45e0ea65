"""Attack class: two workers on one run folder (lock file deleted, or the lock dodged entirely).

The lock sits on the run folder's own inode, which cannot be unlinked from under the worker, and a
worker that finds a live worker's pid in state.json refuses even when it got the lock.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from faultkit import run_worker

from studio import attach, runs

pytestmark = pytest.mark.platform


def _run_folder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / runs.RECIPE).write_text("{}")
    return run_dir


def test_deleting_files_in_the_run_folder_does_not_release_the_lock(tmp_path):
    run_dir = _run_folder(tmp_path)
    held = attach.hold_run_lock(run_dir)
    assert held is not None
    try:
        for p in run_dir.iterdir():  # what an attacker (or a cleanup script) can remove
            if p.name.startswith(".") and os.name == "nt":
                with pytest.raises(PermissionError):  # Windows refuses to delete a file that is open
                    p.unlink()
            elif p.name.startswith("."):
                p.unlink()
        assert attach.hold_run_lock(run_dir) is None
        rc, events = run_worker(run_dir, "--resume")
        assert rc == 1 and events[0].data["message"] == f"{run_dir}: another worker is already training this run"
    finally:
        held.close()
    again = attach.hold_run_lock(run_dir)
    assert again is not None
    again.close()


def test_a_live_worker_pid_in_state_json_is_refused_even_without_the_lock(tmp_path):
    run_dir = _run_folder(tmp_path)
    # A process with this run's worker command line, as the liveness check knows workers.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "workers.train", str(run_dir)])
    try:
        runs.write_state(run_dir, status="running", pid=proc.pid)
        rc, events = run_worker(run_dir, "--resume")
    finally:
        proc.kill()
        proc.wait()
    assert rc == 1 and [e.type for e in events] == ["error"]
    assert events[0].data["message"] == f"{run_dir}: another worker (pid {proc.pid}) is already training this run"
    assert not (run_dir / runs.EVENTS).exists()
    assert runs.read_state(run_dir)["pid"] == proc.pid  # the live run's state is not touched
