"""What an export reads from a run folder: the base model folder and the PEFT adapter.

The training worker records the resolved local base model in ``state.json`` (``base_model``) and
saves the adapter in ``adapter/`` with ``base_model_name_or_path`` pointing at the same folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio import models, runs
from studio.export.adapter import check_adapter
from studio.export.errors import ConfigError
from studio.fsutil import read_json
from studio.safetensors_io import DamagedFile, model_files, read_header
from studio.safety import UnsafeInput, check_remote_code


@dataclass
class ExportInputs:
    run_dir: Path
    base_dir: Path
    adapter_dir: Path
    config: dict  # the base model's config.json
    model_name: str  # what the user called the base model (recipe), for names and metadata
    trust_remote_code: bool = False  # the recipe's model.trust_remote_code, passed to every transformers load

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))


def load_inputs(run_dir: Path) -> ExportInputs:
    """Check the run folder has everything an export needs; every problem names the file to look at."""
    run_dir = Path(run_dir).resolve()
    if not (run_dir / runs.RECIPE).is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no {runs.RECIPE})",
                          "pass the folder of a training run, e.g. one listed by 'lora-studio runs'")
    adapter = run_dir / runs.ADAPTER
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter} has no adapter_config.json + adapter_model.safetensors",
                          "the run has not finished training; export it after training saves the adapter")
    base = _base_dir(run_dir, adapter)
    recipe = read_json(run_dir / runs.RECIPE, default={})
    recipe = recipe if isinstance(recipe, dict) else {}
    found = recipe.get("model")
    model: dict = found if isinstance(found, dict) else {}
    trust = model.get("trust_remote_code") is True
    _check_remote_code(base, trust)  # first: a folder that asks to run code is refused before anything reads it
    check_adapter(adapter, weights=False)  # the weights are read once, by every format (targets.export)
    try:
        config = models.read_config(base)  # damaged, too deep, absurd (10,000 layers): named here
        models._shape_from_config(config, name=str(base), source="folder")
    except models.ModelError as e:
        raise ConfigError(f"{e}", "the base model folder was moved or damaged; restore it and export again") from None
    try:
        files = model_files(base)
        for f in files:
            read_header(f)  # a header that lies or a file cut short: named now, not deep inside a merge
    except DamagedFile as e:
        raise ConfigError(str(e), "restore the base model folder and export again") from None
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise ConfigError(f"{base / 'model.safetensors.index.json'}: the weights index cannot be read ({e})",
                          "restore the base model folder and export again") from None
    if not files:
        raise ConfigError(f"{base} has no safetensors weights (model.safetensors or an index)",
                          "export needs the base model in safetensors format")
    name = str(model.get("name_or_path") or base.name)
    return ExportInputs(run_dir, base, adapter, config, name, trust)


def _check_remote_code(base: Path, trust: bool) -> None:
    """The same refusal as training: a base folder that asks to run its own code needs the recipe's opt-in."""
    try:
        check_remote_code(base, trust)
    except UnsafeInput as e:
        raise ConfigError(str(e), e.hint) from None


def _base_dir(run_dir: Path, adapter: Path) -> Path:
    state = runs.read_state(run_dir)
    candidates = [state.get("base_model")]
    cfg = read_json(adapter / "adapter_config.json")
    if not isinstance(cfg, dict):
        raise ConfigError(f"{adapter / 'adapter_config.json'}: not a readable JSON object (damaged?)",
                          "export from a run whose adapter is intact, or resume or train the run again")
    candidates.append(cfg.get("base_model_name_or_path"))
    for c in candidates:
        if isinstance(c, str) and c and Path(c).is_dir() and (Path(c) / "config.json").is_file():
            return Path(c)
    raise ConfigError(f"{run_dir / runs.STATE}: the base model folder ({candidates[0] or candidates[1]}) is missing",
                      "restore the base model folder (or convert the demo model again with 'lora-studio demo-model')")
