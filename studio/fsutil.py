"""Atomic writes (temp file or folder in the destination, fsync, rename), file hashes, and what a failed
write means (``is_write_error``, ``disk_full``: training and export tell a full disk apart alike).

Windows differs in three ways that matter here, and each helper below handles them:
- ``os.fsync`` is ``FlushFileBuffers``, which needs a handle opened for writing (a read-only one
  fails with EBADF), so files are flushed through a read-write handle there;
- a directory cannot be opened to flush a rename, so ``fsync_dir`` is a no-op there (NTFS
  journals its metadata);
- a rename fails with a sharing violation while any process holds a file inside open without
  FILE_SHARE_DELETE (an antivirus scanner, the search indexer, TensorBoard), usually for
  milliseconds, so ``replace`` retries briefly before it gives up.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

WINDOWS = os.name == "nt"
# ERROR_ACCESS_DENIED and ERROR_SHARING_VIOLATION: what a rename meets while a handle is open inside
_SHARING_ERRORS = (5, 32)
REPLACE_RETRY_S = 2.0


def replace(src: Path | str, dst: Path | str, retry_s: float = REPLACE_RETRY_S) -> None:
    """``os.replace``, retried for up to ``retry_s`` on Windows' transient sharing violations.

    POSIX renames do not depend on open handles, so a PermissionError there is final at once.
    """
    deadline = time.monotonic() + retry_s
    delay = 0.01
    while True:
        try:
            os.replace(src, dst)
            return
        except PermissionError as e:
            if not WINDOWS or getattr(e, "winerror", None) not in _SHARING_ERRORS or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def fsync_file(path: Path | str) -> None:
    """Flush one file's data to the disk (through a handle that Windows accepts for it).

    A read-only file cannot be opened for writing on Windows; it was closed by its writer, so the
    system writes it back on its own, and its flush is skipped rather than failing the checkpoint.
    """
    if WINDOWS:
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
        except PermissionError:
            return
    else:
        fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_files(*paths: Path) -> str:
    """sha256 over the files' bytes, one after another, read 4 MiB at a time (never whole in memory)."""
    import hashlib

    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened: Windows)."""
    if WINDOWS:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # missing, unreadable, not UTF-8, not JSON, too deep: "no value"
        return default


def fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fsync_file(os.path.join(dirpath, name))
        fsync_dir(Path(dirpath))


@contextlib.contextmanager
def atomic_dir(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; on success fsync it and rename it to ``final``.

    On any exception the temp folder is removed, so nothing partial ever stands under ``final``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            replace(final, old)
            replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def existing_parent(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (to ask the file system about free space)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def is_write_error(exc: BaseException) -> bool:
    """An OSError, or safetensors' SafetensorError (it wraps the I/O error of a full disk in its own type)."""
    return isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError"


def disk_full(exc: BaseException) -> bool:
    """Whether a write failed for want of space: errno, or the words Rust and torch put it in."""
    text = str(exc)
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in text \
        or "os error 28" in text or "Disk quota exceeded" in text
