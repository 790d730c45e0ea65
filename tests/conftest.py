from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# MLflow logs every run when the optional extra is installed; only tests/test_registry.py wants it.
os.environ.setdefault("LORA_STUDIO_MLFLOW", "0")

import tiny  # noqa: E402


@pytest.fixture(autouse=True)
def _studio_home(tmp_path_factory, monkeypatch):
    """Every test gets its own data folder; the converted demo model is shared (see demo_model)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LORA_STUDIO_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide random Llama with a locally trained tokenizer (read-only: copy to modify)."""
    return tiny.make_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_model_dir) -> Path:
    return tiny_model_dir


@pytest.fixture(scope="session")
def chat_jsonl(tmp_path_factory) -> Path:
    return tiny.write_chat_jsonl(tmp_path_factory.mktemp("data") / "chat.jsonl")


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Path:
    """The real demo model (SmolLM2-135M-Instruct) converted once per test session."""
    from studio.demo import convert_gguf, find_gguf

    return convert_gguf(find_gguf(), tmp_path_factory.mktemp("demo") / "SmolLM2-135M-Instruct")


# Issue 32, the Windows leg (make test-windows, docs/windows.md): the `platform` tests that fail under
# Windows Python only because the studio's process control is not ported yet (studio/procs.py). Delete
# a line when its test passes there: xfail(strict=True) turns a fixed test into a failure until then.
# What each one hits under Windows CPython 3.11 (Wine 8) is noted beside it.
WINDOWS_PENDING = {
    # runs.pid_alive: os.kill(pid, 0) is GenerateConsoleCtrlEvent(CTRL_C_EVENT, pid) on Windows, which
    # raises OSError [WinError 12] Invalid access (SystemError) for a process outside the console group
    "tests/faults/test_reattach.py::test_killed_cli_leaves_the_worker_training_attach_follows_and_stops_it":
        "attach.live_runs -> runs.pid_alive -> os.kill(pid, 0): WinError 12",
    "tests/faults/test_reattach.py::test_attach_to_a_run_that_is_not_training_says_how_to_continue":
        "lora-studio attach prints a traceback (pid_alive: WinError 12) and exits 1, not 2 with the message",
    "tests/faults/test_resume.py::test_sigkill_at_a_random_step_then_resume_is_exact":
        "after the kill (TerminateProcess) runs.summarize -> pid_alive of the dead worker: WinError 12",
    "tests/faults/test_resume.py::test_truncated_checkpoint_is_skipped_and_resume_stays_exact":
        "lora-studio resume: check_resumable -> attach.worker_pid -> pid_alive (WinError 12), a traceback, exit 1",
    "tests/faults/test_run_lock.py::test_a_live_worker_pid_in_state_json_is_refused_even_without_the_lock":
        "the worker dies in attach.worker_pid -> pid_alive (WinError 12) before its error event",
    "tests/faults/test_windows_paths.py::test_attach_stop_saves_the_adapter_runs_list_reads_it_and_resume_finishes":
        "lora-studio attach --stop: attach.worker_pid -> pid_alive (WinError 12); then SIGTERM is TerminateProcess",
    "tests/test_registry.py::test_queue_runs_in_order_and_survives_a_killed_runner":
        "the restarted runner adopts the live run: runqueue.run -> pid_alive (WinError 12)",
    "tests/ui/test_ui_pages.py::test_a_run_left_running_by_an_earlier_window_is_followed[False]":
        "MainWindow.attach_live_run -> attach.live_runs -> pid_alive (WinError 12)",
    "tests/ui/test_ui_pages.py::test_a_run_left_running_by_an_earlier_window_is_followed[True]":
        "MainWindow.attach_live_run -> attach.live_runs -> pid_alive (WinError 12)",
    # ui/controllers.py: signal.SIGKILL and os.killpg do not exist on Windows
    "tests/ui/test_ui_controllers.py::test_a_hung_worker_is_terminated_then_killed":
        "WorkerController._escalate_step -> _signal: AttributeError signal.SIGKILL (in a Qt slot: never finishes)",
    "tests/ui/test_ui_controllers.py::test_command_controller_answers_with_the_done_event_or_the_error":
        "CommandController.run_argv -> kill_now -> _signal(signal.SIGKILL): AttributeError",
    "tests/ui/test_ui_controllers.py::test_replacing_a_running_command_keeps_busy_balanced":
        "CommandController.run_argv -> kill_now -> _signal(signal.SIGKILL): AttributeError",
}
# Fails under Windows, but not the same way each time: expected to fail, not required to (strict=False).
WINDOWS_PENDING_FLAKY = {
    # commands.jsonl after the worker's stdin closed: one run took pause and resume, then the stop never ended
    # the worker (120 s); another took pause, then never resume (60 s). Not pinned down: the inbox thread
    # (studio.train.callbacks.Control._poll) beside the stdin reader at EOF, or the stop's save.
    "tests/faults/test_reattach.py::test_a_worker_without_its_window_takes_pause_and_stop_from_the_run_inbox":
        "the worker stops taking inbox commands after a pause",
}
# Not run at all: under Wine the failure ends the test process itself, silently and with exit code 0.
WINDOWS_PENDING_NOT_RUN = {
    "tests/faults/test_reattach.py::test_worker_pid_rejects_a_reused_pid":
        "pid_alive(os.getpid()): os.kill(own pid, 0) sends CTRL_C_EVENT to the test process's console",
}


def pytest_collection_modifyitems(config, items):
    if sys.platform != "win32":
        return
    for item in items:
        if item.nodeid in WINDOWS_PENDING:
            item.add_marker(pytest.mark.xfail(strict=True, reason="issue 32: process control not yet ported"))
        elif item.nodeid in WINDOWS_PENDING_FLAKY:
            item.add_marker(pytest.mark.xfail(strict=False, reason="issue 32: process control not yet ported"))
        elif item.nodeid in WINDOWS_PENDING_NOT_RUN:
            item.add_marker(pytest.mark.xfail(run=False, reason="issue 32: process control not yet ported "
                                                                "(running it ends the test process under Windows)"))
