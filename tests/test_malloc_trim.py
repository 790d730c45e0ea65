"""studio.malloc_trim: freed tensors go back to the system once the worker fixed glibc's mmap threshold (the
CPU planner counts on it: docs/planner.md, "At the lengths users train")."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What a decoder layer does at 8k tokens: blocks of a few MiB, freed between layers, while a small block
# allocated after each (a checkpointed input, a Python object) stays. Prints the resident memory kept, in MiB.
LAYERS = textwrap.dedent("""
    import ctypes, sys
    from studio.malloc_trim import return_large_blocks
    if sys.argv[1] == "fixed":
        assert return_large_blocks()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    def rss():
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) // 1024
    def touched(n):
        p = libc.malloc(n)
        ctypes.memset(p, 1, n)
        return p
    libc.free(touched(32 << 20))  # one large block freed: glibc raises its threshold to it
    before, kept = rss(), []
    for _ in range(40):
        blocks = [touched(8 << 20) for _ in range(3)]
        kept.append(touched(64 << 10))
        for b in blocks:
            libc.free(b)
    print(rss() - before)
""")


def _kept(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", LAYERS, mode], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_go_back_to_the_system_with_the_threshold_fixed():
    assert _kept("dynamic") >= 16  # glibc's own threshold: the freed 8 MiB blocks stay in the heap
    assert _kept("fixed") < 8  # fixed at 1 MiB: only the small blocks kept (40 x 64 KiB)
