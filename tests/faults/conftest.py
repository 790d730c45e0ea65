"""Fixtures for the fault tests (helpers live in faultkit.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from faultkit import kill_at_step, new_run, run_worker


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, tiny_model_dir, chat_jsonl) -> Path:
    """One uninterrupted run: the adapter and losses every interrupted run must reproduce."""
    run_dir = new_run(tmp_path_factory.mktemp("reference"), tiny_model_dir, chat_jsonl)
    rc, events = run_worker(run_dir)
    assert rc == 0, (Path(run_dir) / "worker.log").read_text()[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def killed_run(tmp_path_factory, tiny_model_dir, chat_jsonl) -> Path:
    """A run SIGKILLed after step 5 (checkpoints step-2 and step-4 on disk); copy before changing it."""
    run_dir = new_run(tmp_path_factory.mktemp("killed"), tiny_model_dir, chat_jsonl)
    kill_at_step(run_dir, 5)
    return run_dir
