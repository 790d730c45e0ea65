"""Handing memory the process freed back to the system: before a step that needs a lot of it, and as it goes."""
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


# Blocks of this size or more come from mmap once return_large_blocks() ran: 1 MiB keeps the small, frequent
# allocations (Python objects, shapes, kernels' scratch) on the heap and sends every tensor of a training step
# at real lengths (6-50 MiB per layer at 8k tokens on a small model) straight back to the system when freed.
LARGE_BLOCK = 1 << 20
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def return_large_blocks(threshold: int = LARGE_BLOCK) -> bool:
    """Fix glibc's mmap threshold so that blocks of ``threshold`` bytes or more go back to the system when
    freed. True when glibc took it.

    glibc raises its threshold to the size of each mmapped block freed (up to 32 MiB), after which the tensors
    of a decoder layer come from the heap; freed between layers, they stay in the process, and the heap only
    shrinks from its top. Training the demo model on the CPU at 8192 tokens so held 12 GiB of memory for
    5.3 GiB of live tensors (bench/memory_components.py --lengths measures both); with the threshold fixed the
    process holds what the planner predicts. A fixed threshold also stops glibc's dynamic adjustment.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    except OSError:
        mallopt = None
    return bool(mallopt is not None and mallopt(M_MMAP_THRESHOLD, threshold))  # musl has none
