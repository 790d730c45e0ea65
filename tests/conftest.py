from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist every worker trains tiny models (in process and in worker subprocesses, which inherit this).
# With one xdist worker per core, torch's default of one OpenMP thread per core in each process oversubscribes
# the machine and its spinning threads slow every worker: one thread per process ran the preference tests
# 1.45x faster on the 2-core CI machine (89 s against 61 s).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# MLflow logs every run when the optional extra is installed; only tests/test_registry.py wants it.
os.environ.setdefault("LORA_STUDIO_MLFLOW", "0")

import tiny  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _session_home(tmp_path_factory):
    """The data folder of session- and module-scoped fixtures, which train before any test's own is set: without
    it their workers wrote calibration records, answer caches and MLflow runs into the user's real data folder."""
    patch = pytest.MonkeyPatch()
    patch.setenv("LORA_STUDIO_HOME", str(tmp_path_factory.mktemp("session-home")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _studio_home(tmp_path_factory, monkeypatch):
    """Every test gets its own data folder; the converted demo model is shared (see demo_model)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LORA_STUDIO_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide random Llama with a locally trained tokenizer (read-only: copy to modify)."""
    return tiny.make_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_model_dir) -> Path:
    return tiny_model_dir


@pytest.fixture(scope="session")
def chat_jsonl(tmp_path_factory) -> Path:
    return tiny.write_chat_jsonl(tmp_path_factory.mktemp("data") / "chat.jsonl")


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Path:
    """The real demo model (SmolLM2-135M-Instruct) converted once per test session."""
    from studio.demo import convert_gguf, find_gguf

    return convert_gguf(find_gguf(), tmp_path_factory.mktemp("demo") / "SmolLM2-135M-Instruct")


# Issue 32, the Windows leg (make test-windows, docs/windows.md): the `platform` tests that fail under
# Windows Python only because the studio's process control is not ported yet (studio/procs.py). Delete
# a line when its test passes there: xfail(strict=True) turns a fixed test into a failure until then.
# What each one hits under Windows CPython 3.11 (Wine 8) is noted beside it.
WINDOWS_PENDING: dict[str, str] = {}
# Fails under Windows, but not the same way each time: expected to fail, not required to (strict=False).
WINDOWS_PENDING_FLAKY = {
    # Passed in 3 of 4 full Windows legs this session and alone under Wine; once the reattached reader never sent
    # its stop (the run had no 'progress' two steps past the kill, or request_stop found no live worker).
    # Same family as above (a worker whose CLI is gone, stopped through the run folder); not pinned down.
    "tests/faults/test_reattach.py::test_killed_cli_leaves_the_worker_training_attach_follows_and_stops_it":
        "once in four legs the stop after reattaching was never sent",
}
# Not run at all: under Wine the failure ends the test process itself, silently and with exit code 0.
WINDOWS_PENDING_NOT_RUN: dict[str, str] = {}


def pytest_collection_modifyitems(config, items):
    if sys.platform != "win32":
        return
    for item in items:
        if item.nodeid in WINDOWS_PENDING:
            item.add_marker(pytest.mark.xfail(strict=True, reason="issue 32: process control not yet ported"))
        elif item.nodeid in WINDOWS_PENDING_FLAKY:
            item.add_marker(pytest.mark.xfail(strict=False, reason="issue 32: process control not yet ported"))
        elif item.nodeid in WINDOWS_PENDING_NOT_RUN:
            item.add_marker(pytest.mark.xfail(run=False, reason="issue 32: process control not yet ported "
                                                                "(running it ends the test process under Windows)"))
