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
# MLflow logs every run when the optional extra is installed; only tests/test_registry.py wants it.
os.environ.setdefault("LORA_STUDIO_MLFLOW", "0")

import tiny  # noqa: E402


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
