"""The desktop window (Qt only; never imports torch, transformers, peft, bitsandbytes or datasets).

PySide6 6.12 on CPython 3.11 returns the bool of ``SignalInstance.emit()`` without a new
reference, so every emit from Python code drops one reference to ``True``; after a few hundred
emits the interpreter aborts ("bool_dealloc: deallocating True or False"). Reproduce with
``sys.getrefcount(True)`` before and after ``obj.sig.emit('x')``. CPython 3.12+ makes the bools
immortal; on older interpreters we do the same by giving them a reference count no run can use up.
"""
import sys

if sys.implementation.name == "cpython" and sys.version_info < (3, 12):
    import ctypes

    for _flag in (True, False):
        ctypes.c_ssize_t.from_address(id(_flag)).value += 1 << 40  # ob_refcnt is the first field
