"""The window's runtime setup dialog, offer bar and Help > Diagnostics, against real processes."""
from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtGui import QAction  # noqa: E402
from PySide6.QtWidgets import QMainWindow  # noqa: E402

from studio.runtime import setup, state
from ui import runtime_dialog  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

FAKE_SETUP = textwrap.dedent("""
    import sys
    from studio import events
    e = events.Emitter(stream=sys.stdout.buffer)
    e.emit("progress", phase="runtime", done=0, total=2, label="Installing PyTorch")
    e.emit("log", line="Collecting torch==2.13.0")
    e.emit("progress", phase="runtime", done=1, total=2, label="Installing the training libraries")
    e.emit("done", python="/x/bin/python", log="/x/setup.log")
""")

@pytest.fixture
def window(qtbot):
    w = QMainWindow()
    w.menuBar().addMenu("&Help")
    qtbot.addWidget(w)
    w.show()
    return w

def test_setup_dialog_shows_progress_output_and_success(qtbot, window):
    dialog = runtime_dialog.RuntimeSetupDialog(window, [sys.executable, "-c", FAKE_SETUP])
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.sig_done, timeout=30000) as done:
        dialog.start()
    assert done.args == [True] and dialog.ok is True
    assert "Collecting torch==2.13.0" in dialog.output.toPlainText()
    assert dialog.bar.value() == dialog.bar.maximum() and "ready" in dialog.message.text()
    assert dialog.cancel_button.text() == "Close" and dialog.log_button.isHidden()

def test_a_real_failed_setup_is_shown_in_words_with_the_log(qtbot, window, tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_BASE_PYTHON", str(tmp_path / "no-python"))
    monkeypatch.setenv("LORA_STUDIO_TORCH_INDEX", "http://127.0.0.1:9/")  # no network in this test
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("LORA_STUDIO_PYTHON", raising=False)
    dialog = runtime_dialog.RuntimeSetupDialog(window)  # the real `lora-studio runtime setup --events`
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.sig_done, timeout=60000) as done:
        dialog.start()
    assert done.args == [False]
    assert "LORA_STUDIO_BASE_PYTHON" in dialog.message.text() and str(state.log_path()) in dialog.message.text()
    assert not dialog.log_button.isHidden() and Path(dialog.log_path).is_file()

def test_a_setup_that_dies_without_a_word_is_still_reported(qtbot, window):
    dialog = runtime_dialog.RuntimeSetupDialog(window, [sys.executable, "-c", "import sys; sys.exit(3)"])
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.sig_done, timeout=30000) as done:
        dialog.start()
    assert done.args == [False] and "exit code 3" in dialog.message.text()

def test_attach_offers_setup_once_and_adds_help_entries(qtbot, window, monkeypatch):
    monkeypatch.delenv("LORA_STUDIO_PYTHON", raising=False)
    monkeypatch.setattr(state, "current_python_has_ml", lambda: False)  # as in the bundle: no torch here
    runtime_dialog.attach(window)
    runtime_dialog.attach(window)
    qtbot.waitUntil(lambda: runtime_dialog.offer_visible(window), timeout=5000)
    names = [a.objectName() for a in window.findChildren(QAction) if a.objectName().startswith("action")]
    assert sorted(names) == ["actionDiagnostics", "actionRuntimeSetup"]
    runtime_dialog._hide_offer(window)
    assert not runtime_dialog.offer_visible(window)

def test_no_offer_when_this_interpreter_can_train(qtbot, window, monkeypatch):
    monkeypatch.delenv("LORA_STUDIO_PYTHON", raising=False)
    runtime_dialog.attach(window)  # the dev venv has torch: nothing to set up
    assert not runtime_dialog.offer_visible(window)


def test_diagnostics_dialog_shows_the_doctor_report(qtbot, window, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    dialog = runtime_dialog.DiagnosticsDialog(window, setup.cli_command("doctor", "--events", "--no-probe"))
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.process.sig_finished, timeout=60000):
        dialog.start()
    assert dialog.report is not None and "Disk:" in dialog.text.toPlainText()
    assert dialog.report["runtime"]["path"] == str(state.runtime_dir())
    # a source install runs the workers under its own Python: no managed runtime is "missing"
    assert "ML runtime:   none needed" in dialog.text.toPlainText() and dialog.bar.isHidden()


def test_diagnostics_show_the_fast_facts_while_the_probe_runs(qtbot, window, monkeypatch, tmp_path):
    slow = tmp_path / "slow_doctor.py"  # stands in for the real doctor: its probe takes a while
    slow.write_text(
        "import sys, time\n"
        "from studio import events\n"
        "from studio.runtime import doctor\n"
        "em = events.Emitter(stream=events.reserve_stdout())\n"
        "report = doctor.diagnose(probe_ml=False)\n"
        "em.emit('progress', phase='doctor', done=0, total=1, report=report, label='Asking the ML runtime')\n"
        "time.sleep(30)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    dialog = runtime_dialog.DiagnosticsDialog(window, [sys.executable, str(slow)])
    qtbot.addWidget(dialog)
    dialog.start()
    qtbot.waitUntil(lambda: "Disk:" in dialog.text.toPlainText(), timeout=30000)
    assert "Asking the ML runtime" in dialog.text.toPlainText() and not dialog.bar.isHidden()
    dialog.process.kill_now()
