"""PySide6 6.12 on CPython 3.11 returned None/True from void calls and Signal.emit without a new
reference, so a long session aborted with "deallocating True". The pinned version must not.

From CPython 3.12 None and True are immortal: their reference counts never change, the bug cannot
hurt, and this check could not fail, so it runs only where it means something.
"""
import sys

import pytest
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage, QPainter, QPen


class _Emitter(QObject):
    sig = Signal(int)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None and True are immortal from CPython 3.12")
def test_void_calls_and_emits_keep_their_references(qapp):
    img = QImage(8, 8, QImage.Format.Format_ARGB32)
    painter, pen, obj = QPainter(img), QPen(), _Emitter()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(200):
        painter.setPen(pen)
        obj.sig.emit(1)
    painter.end()
    assert sys.getrefcount(None) >= none_before - 5
    assert sys.getrefcount(True) >= true_before - 5
