from __future__ import annotations

import sys
from pathlib import Path

import pytest

FAKE = Path(__file__).resolve().parent / "fake_workers" / "fake_worker.py"


@pytest.fixture
def fake_argv():
    """The command line of the fake worker in a given mode."""
    def make(mode: str, *args: str) -> list[str]:
        return [sys.executable, str(FAKE), mode, *map(str, args)]
    return make


def drop_path(window, path: Path) -> None:
    """Drop a local file or folder on the window, as a file manager would."""
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)


@pytest.fixture
def drop():
    return drop_path


@pytest.fixture()
def data_page(qtbot):
    """The Data page alone, shown at a window's size (its tests read its widgets)."""
    from ui.pages.data import DataPage
    from ui.session import Session

    p = DataPage(Session())
    qtbot.addWidget(p)
    p.resize(1100, 700)
    p.show()
    return p


@pytest.fixture
def window(qtbot):
    """The studio window, shown; afterwards every worker it started is killed (downloads, chats, runs)."""
    from ui.controllers import WorkerController
    from ui.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    yield w
    for c in w.findChildren(WorkerController):
        c.kill_now()


@pytest.fixture(autouse=True)
def _probed_cpu(_studio_home):
    """This CPU's speed as if probed once, so the Plan page does not start the few-second probe in every test
    (tests/test_speed.py runs the real probe)."""
    from studio import speed
    from studio.fsutil import atomic_write_json

    path = speed._cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    import time

    atomic_write_json(path, {"flops_per_s": 3e10, "seconds_per_layer_pass": 0.01, "seconds_per_element": 1e-8,
                             "seconds_per_micro_batch": 0.002, "probe_version": speed.PROBE_VERSION,
                             "measured_at": time.time()})
