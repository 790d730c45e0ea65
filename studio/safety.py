"""Safe by default: no code from model folders, no pickle files, unless the user opts in per model.

A model folder can ask transformers to import its own Python files (``auto_map`` in config.json
or tokenizer_config.json); that code runs with the user's rights. Pickle weights (.bin, .pt,
.pkl) can run code while being loaded. Both are refused unless the recipe says otherwise for
that model, and even then the user is told which files would run.

Training, data inspection, export and the chat engine all check here before they read a model
folder, so the checks stand below all of them and import none.
"""
from __future__ import annotations

import stat
from pathlib import Path

from studio.errors import Fault, LoadError
from studio.fsutil import read_json

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
CODE_CONFIGS = ("config.json", "tokenizer_config.json", "processor_config.json")


class UnsafeInput(Fault):
    kind = "config"


def check_input_path(value: str, field: str) -> Path | None:
    """A dataset path resolved and checked: a regular file or folder, never a pipe, device or socket.

    Reading /dev/zero or a FIFO would hang or exhaust the worker; the path is only ever opened
    as a file, never passed to a shell.
    """
    if not str(value).strip():
        return None
    try:
        path = Path(str(value)).expanduser().resolve()
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError for a symlink loop, 3.13 OSError
        raise UnsafeInput(f"{field} {value}: a symbolic link that loops back on itself",
                          f"point {field} at the real dataset file or folder") from None
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None  # the dataset loader reports a missing file with its own message
    except OSError as e:
        raise UnsafeInput(f"{field} {path}: cannot be read ({e.strerror})",
                          f"point {field} at an existing file or folder") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UnsafeInput(f"{field} {path}: not a regular file or folder (a device, pipe or socket)",
                          f"point {field} at a dataset file or folder")
    return path


def _module_names(auto_map: dict | list) -> set[str]:
    """'modeling_x.XForCausalLM' or 'repo--modeling_x.X' or [slow, fast] -> {'modeling_x.py'}.

    Old tokenizer_config.json files hold the legacy list form ``"auto_map": [slow, fast]``, which
    transformers still honours for AutoTokenizer; it asks for code just the same.
    """
    names: set[str] = set()
    refs = auto_map.values() if isinstance(auto_map, dict) else auto_map
    for ref in refs:
        for item in ref if isinstance(ref, (list, tuple)) else [ref]:
            if isinstance(item, str) and "." in item:
                module = item.split("--")[-1].rsplit(".", 1)[0]
                names.add(module.replace(".", "/") + ".py")
    return names


def remote_code_files(folder: Path) -> list[str]:
    """The Python files a model folder asks transformers to run (empty when it asks for none)."""
    folder = Path(folder)
    asked: set[str] = set()
    for name in CODE_CONFIGS:
        config = read_json(folder / name, default={})
        if isinstance(config, dict) and isinstance(config.get("auto_map"), (dict, list)):
            asked |= _module_names(config["auto_map"])
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*.py")}
    return sorted(asked | (present if asked else set()))


def check_remote_code(folder: Path, trusted: bool) -> list[str]:
    """Refuse a model that needs its own code unless trusted; when trusted, warnings naming the files.

    Every place that loads a tokenizer, config or model from a folder calls this first and then
    passes ``trust_remote_code`` explicitly, so transformers never asks on the terminal.
    """
    files = remote_code_files(folder)
    if not files:
        return []
    listed = ", ".join(files)
    if not trusted:
        raise UnsafeInput(f"{folder}: this model asks to run Python code shipped in its folder ({listed}). "
                          "LoRA Studio does not run code from model folders. If you trust its author, read those "
                          "files and set model.trust_remote_code to true in the recipe for this model",
                          "pick a model that runs with the code in transformers, or opt in for this model as "
                          "described above", files=files)
    return [f"model.trust_remote_code is on: transformers will run these files from {folder}: {listed}"]


def check_weights_are_safe(folder: Path, allow_pickle: bool) -> None:
    """Refuse pickle-based weights unless the user opted in for this model."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in [*folder.glob("*.bin"), *folder.glob("*.pt")])
    if pickles and not allow_pickle:
        raise LoadError(f"{folder}: weights are pickle files ({', '.join(pickles[:3])}), which can run code when "
                        "loaded. Convert them to safetensors, or set model.allow_pickle if you trust this model "
                        "(they are then loaded with weights_only=True)")
    if not pickles:
        raise LoadError(f"{folder}: no weights (*.safetensors) found")


def check_model_path(name_or_path: str) -> None:
    """A recipe that names a single weights file rather than a model folder: say so (and never load it)."""
    path = Path(str(name_or_path)).expanduser()
    if path.is_file():
        kind = "a pickle file, which can run code when loaded" if path.suffix.lower() in PICKLE_SUFFIXES \
            else "a file"
        raise LoadError(f"model.name_or_path {path} is {kind}; give a model folder with config.json and "
                        "*.safetensors weights (convert pickle weights to safetensors first)")


def refused_pickle(folder: Path, exc: BaseException) -> LoadError:
    """The error for pickle weights that ``torch.load(weights_only=True)`` would not load."""
    names = ", ".join(sorted(p.name for p in Path(folder).iterdir() if p.suffix.lower() in PICKLE_SUFFIXES))
    first = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
    return LoadError(f"{folder}: the pickle weights ({names}) hold more than tensors and were refused "
                     f"(loaded with weights_only=True: {first}). Loading them fully could run code; get "
                     "safetensors weights for this model instead")
