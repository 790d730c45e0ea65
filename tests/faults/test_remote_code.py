"""Attack class: a model folder that ships Python and asks transformers to run it (``auto_map``).

Nothing may ever ask "run the custom code? [y/N]" on a terminal: every load passes
``trust_remote_code`` explicitly, and every entry point (training, data inspect, export) refuses a
folder that asks for code unless the recipe opts in for it.
"""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from studio import safety
from studio.procs import worker_env

ROOT = Path(__file__).resolve().parents[2]


def _evil_tokenizer_folder(src: Path, dest: Path, canary: Path, legacy: bool = False) -> Path:
    """A model folder whose tokenizer_config.json asks for tokenization_evil.py (which touches ``canary``)."""
    shutil.copytree(src, dest)
    cfg_path = dest / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    ref = ["tokenization_evil.EvilTokenizer", "tokenization_evil.EvilTokenizer"]
    cfg["auto_map"] = ref if legacy else {"AutoTokenizer": ref}
    cfg_path.write_text(json.dumps(cfg))
    (dest / "tokenization_evil.py").write_text(
        f"from pathlib import Path\nPath({str(canary)!r}).touch()\n"
        "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n")
    return dest


@pytest.mark.parametrize("legacy", [False, True], ids=["dict-auto_map", "legacy-list-auto_map"])
def test_data_inspect_never_runs_tokenizer_code_even_when_answered_yes(tmp_path, tiny_model_dir, chat_jsonl, legacy):
    canary = tmp_path / "CANARY"
    folder = _evil_tokenizer_folder(tiny_model_dir, tmp_path / "evil", canary, legacy)
    exe = Path(sys.executable).with_name("lora-studio")
    out = subprocess.run([str(exe), "data", "inspect", str(chat_jsonl), "--model", str(folder)],
                         input="y\ny\n", capture_output=True, text=True, timeout=240, env=worker_env())
    assert not canary.exists(), "the model folder's code ran"
    assert out.returncode == 2, out.stdout + out.stderr
    assert "tokenization_evil.py" in out.stderr and "never runs model code" in out.stderr
    assert "[y/N]" not in out.stdout + out.stderr and "Traceback" not in out.stderr


def test_legacy_list_form_auto_map_is_recognised(tmp_path, tiny_model_dir):
    folder = _evil_tokenizer_folder(tiny_model_dir, tmp_path / "evil", tmp_path / "CANARY", legacy=True)
    assert safety.remote_code_files(folder) == ["tokenization_evil.py"]
    with pytest.raises(safety.UnsafeInput, match=r"tokenization_evil\.py"):
        safety.check_remote_code(folder, trusted=False)


def test_export_refuses_a_base_model_that_asks_for_code(tmp_path, tiny_model_dir):
    """The export reads the recipe's opt-in; without it the base folder is refused before any load."""
    from studio import runs
    from studio.export.errors import ConfigError
    from studio.export.inputs import load_inputs
    from studio.recipe import Recipe

    canary = tmp_path / "CANARY"
    base = _evil_tokenizer_folder(tiny_model_dir, tmp_path / "evil", canary)
    recipe = Recipe(name="x")
    recipe.model.name_or_path, recipe.data.path = str(base), "d.jsonl"
    run_dir = runs.create(recipe, tmp_path / "runs")
    adapter = run_dir / runs.ADAPTER
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": 2}))
    import torch
    from safetensors.torch import save_file

    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{prefix}.lora_A.weight": torch.zeros(2, 64), f"{prefix}.lora_B.weight": torch.zeros(64, 2)},
              str(adapter / "adapter_model.safetensors"))
    runs.write_state(run_dir, base_model=str(base))
    with pytest.raises(ConfigError, match=r"tokenization_evil\.py.*model\.trust_remote_code"):
        load_inputs(run_dir)
    recipe.model.trust_remote_code = True
    recipe.save(run_dir / runs.RECIPE)
    assert load_inputs(run_dir).trust_remote_code is True
    assert not canary.exists()


def _loads_without_trust_flag(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("from_pretrained", "from_config")):
            continue
        owner = node.func.value
        name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
        if not name.startswith("Auto"):
            continue  # peft's PeftConfig/PeftModel read no code from the folder
        keywords = {k.arg for k in node.keywords}
        if "trust_remote_code" not in keywords and None not in keywords:
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        elif None in keywords and "trust_remote_code=" not in path.read_text(encoding="utf-8"):
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno} (**kwargs without trust_remote_code)")
    return bad


def test_every_transformers_load_passes_trust_remote_code():
    """Without an explicit value transformers prompts on the terminal; with one it never does."""
    offenders = [hit for folder in ("studio", "workers", "ui") for p in sorted((ROOT / folder).rglob("*.py"))
                 for hit in _loads_without_trust_flag(p)]
    assert offenders == []
