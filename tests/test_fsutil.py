"""Durable writes on both platforms (issue 32): the same tests run here and under Windows Python.

On Linux the Windows branches are exercised by switching ``fsutil.WINDOWS`` on: an fsync through a
read-only handle would pass on POSIX, so the test checks the handle's mode where it cannot check
Windows' refusal; under Windows Python (``make test-windows``) the real calls run.
"""
from __future__ import annotations

import os
import stat

import pytest

from studio import fsutil

pytestmark = pytest.mark.platform


def test_a_checkpoint_tree_is_flushed_even_with_read_only_files(tmp_path):
    """The Trainer's files and ours, in subfolders: every one flushed (under Windows Python this is the call that
    failed every checkpoint: FlushFileBuffers on a handle opened read-only)."""
    tree = tmp_path / "step-1"
    (tree / "sub").mkdir(parents=True)
    for name in ("adapter_model.safetensors", "sub/optimizer.pt", "trainer_state.json"):
        (tree / name).write_bytes(os.urandom(1024))
    fsutil.fsync_tree(tree)


def test_fsync_opens_a_writable_handle_on_windows(tmp_path, monkeypatch):
    seen = []
    real_open = os.open

    def spy(path, flags, *a):
        seen.append(flags)
        return real_open(path, flags, *a)

    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    monkeypatch.setattr(fsutil.os, "open", spy)
    monkeypatch.setattr(fsutil, "WINDOWS", True)
    fsutil.fsync_file(f)
    assert seen and seen[0] & os.O_RDWR, "Windows flushes only through a handle opened for writing"
    if os.name == "nt":  # the read-only handle is what fails there (EACCES): the bug this module fixes
        return
    monkeypatch.setattr(fsutil, "WINDOWS", False)
    seen.clear()
    fsutil.fsync_file(f)
    assert seen[0] & (os.O_RDWR | os.O_WRONLY) == 0, "POSIX flushes read-only files too"


def test_replace_retries_a_sharing_violation_then_succeeds(tmp_path, monkeypatch):
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_text("new")
    real, calls = os.replace, []

    def busy(a, b):
        calls.append(1)
        if len(calls) < 3:
            e = PermissionError(13, "The process cannot access the file because it is being used by another process")
            e.winerror = 32
            raise e
        real(a, b)

    monkeypatch.setattr(fsutil, "WINDOWS", True)
    monkeypatch.setattr(fsutil.os, "replace", busy)
    fsutil.replace(src, dst)
    assert len(calls) == 3 and dst.read_text() == "new"


def test_replace_gives_up_after_its_deadline_and_at_once_on_posix(tmp_path, monkeypatch):
    calls = []

    def denied(a, b):
        calls.append(1)
        e = PermissionError(13, "denied")
        e.winerror = 32
        raise e

    monkeypatch.setattr(fsutil.os, "replace", denied)
    monkeypatch.setattr(fsutil, "WINDOWS", False)
    with pytest.raises(PermissionError):
        fsutil.replace(tmp_path / "a", tmp_path / "b")
    assert len(calls) == 1
    monkeypatch.setattr(fsutil, "WINDOWS", True)
    with pytest.raises(PermissionError):
        fsutil.replace(tmp_path / "a", tmp_path / "b", retry_s=0.2)
    assert len(calls) > 2


def test_atomic_dir_over_an_existing_folder_with_spaces_and_non_ascii_names(tmp_path):
    final = tmp_path / "Jürgen's runs" / "run 1" / "adapter"
    with fsutil.atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("one")
    with fsutil.atomic_dir(final, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("two")
    assert (final / "a.txt").read_text() == "two"
    assert [p.name for p in final.parent.iterdir()] == ["adapter"], "no temp or .old folder is left"


def test_a_read_only_file_is_still_flushed(tmp_path):
    f = tmp_path / "ro.bin"
    f.write_bytes(b"x")
    f.chmod(stat.S_IREAD)
    try:
        fsutil.fsync_tree(tmp_path)  # Windows cannot open it for writing: skipped, never a failed checkpoint
    finally:
        f.chmod(stat.S_IREAD | stat.S_IWRITE)


def test_atomic_write_json_long_path(tmp_path):
    """A path longer than Windows' 260-character MAX_PATH (Python 3.6+ handles long paths where enabled)."""
    deep = tmp_path
    while len(str(deep)) < 300:
        deep = deep / ("d" * 40)
    try:
        fsutil.atomic_write_json(deep / "state.json", {"ok": True})
    except OSError as e:  # Windows without LongPathsEnabled: the error must be an OSError naming the path
        assert os.name == "nt" and "state" in str(e)
        return
    assert fsutil.read_json(deep / "state.json") == {"ok": True}
