"""The desktop window (Qt only; never imports torch, transformers, peft, bitsandbytes or datasets).

PySide6 6.12 on CPython 3.11 returns the singletons without a new reference: every call of a
void Qt method (``QPainter.setPen``…) drops one reference to ``None`` and every
``SignalInstance.emit()`` one to ``True``, so after a few hundred calls the interpreter aborts
("none_dealloc: deallocating None"). Reproduce with ``sys.getrefcount(None)`` before and after
100 ``painter.setPen(pen)`` calls. CPython 3.12+ makes these objects immortal; on older
interpreters we do the same by giving them a reference count no process can use up.
"""
import sys

if sys.implementation.name == "cpython" and sys.version_info < (3, 12):
    import ctypes

    for _singleton in (None, True, False, Ellipsis, NotImplemented):
        ctypes.c_ssize_t.from_address(id(_singleton)).value += 1 << 40  # ob_refcnt is the first field
