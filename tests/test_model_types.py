"""A model newer than the installed transformers is named as such, with the version that knows it (issue 28)."""
from __future__ import annotations

import json

import pytest
import tiny

from studio import model_types, models, multimodal
from studio.errors import LoadError


def _newer(folder, model_type="qwen4", saved="99.1.0", **extra):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type=model_type, transformers_version=saved, architectures=["Qwen4ForCausalLM"], **extra)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_a_folder_of_an_unknown_type_names_the_type_the_installed_and_the_saving_version(tmp_path):
    folder = _newer(tiny.make_model(tmp_path / "m"))
    with pytest.raises(models.ModelError) as e:
        models.resolve(str(folder))
    text = str(e.value)
    assert "'qwen4'" in text and model_types.installed_transformers() in text and "99.1.0" in text
    assert "Update LoRA Studio" in text and e.value.hint == model_types.HINT


def test_the_worker_loader_refuses_it_with_the_same_words(tmp_path):
    folder = _newer(tiny.make_model(tmp_path / "m"))
    with pytest.raises(LoadError, match="'qwen4' is newer than the installed transformers") as e:
        multimodal.load_causal_lm(folder, {})
    assert e.value.hint == model_types.HINT


def test_an_unknown_text_model_inside_a_known_multimodal_config_is_named():
    config = {"model_type": "gemma3", "text_config": {"model_type": "gemma9_text"}}
    assert "'gemma9_text'" in model_types.unknown_type(config, "x")


def test_known_types_and_allowed_remote_code_pass():
    assert model_types.unknown_type({"model_type": "qwen3_5", "text_config": {"model_type": "qwen3_5_text"}}, "x") is None
    remote = {"model_type": "acme", "auto_map": {"AutoConfig": "configuration_acme.AcmeConfig"}}
    assert model_types.unknown_type(remote, "x", trust_remote_code=True) is None
    assert "trust_remote_code" in model_types.unknown_type(remote, "x")


def test_an_older_saving_version_is_not_called_the_one_that_knows_it():
    text = model_types.unknown_type({"model_type": "qwen4", "transformers_version": "4.40.0"}, "x")
    assert "which knows it" not in text and "4.40.0" in text
