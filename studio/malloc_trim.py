"""Handing memory the process freed back to the system, before a step that needs a lot of it."""
from __future__ import annotations

import sys


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap memory back to the system. glibc keeps freed blocks of up to
    32 MiB in the process's heap for reuse (its mmap threshold grows after each large free), so tensors
    read one at a time, or a tokenizer built and dropped, still count in the process's memory when the
    next step loads a whole model. Elsewhere than glibc (macOS, Windows) only the collection runs."""
    import gc

    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the C library the interpreter runs on
    except OSError:
        trim = None
    if trim is not None:  # musl has none: nothing to hand back that way
        trim(0)
