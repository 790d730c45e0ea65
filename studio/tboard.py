"""TensorBoard over runs' event files: whether it can run, which runs have files, its command line.

The Runs page's "Open in TensorBoard" starts what ``argv`` returns and opens the browser; the
rules (which folders, which port, which interpreter) are here, testable without a window.
"""
from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

from studio import procs
from studio.train.trackers import TB_DIR


def installed() -> bool:
    """Whether the training runtime can serve TensorBoard (the window's own interpreter is asked when it is that one)."""
    if procs.worker_python() != sys.executable:
        return True  # a separate managed runtime: its lock installs tensorboard
    return importlib.util.find_spec("tensorboard") is not None


def event_dirs(run_dirs: list[Path]) -> list[Path]:
    """The runs, of ``run_dirs``, that wrote TensorBoard event files."""
    return [Path(d) for d in run_dirs if (Path(d) / TB_DIR).is_dir()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def argv(run_dirs: list[Path], port: int) -> list[str]:
    """``tensorboard`` in the training runtime, on localhost, each run under its folder's name."""
    return procs.worker_argv("tensorboard.main", "--logdir_spec", ",".join(f"{d.name}:{d / TB_DIR}" for d in run_dirs),
                             "--host", "localhost", "--port", str(port))
