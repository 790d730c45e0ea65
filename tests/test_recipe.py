import json

import pytest

from studio.recipe import SCHEMA_VERSION, Recipe, RecipeError, field_doc


def _ok() -> Recipe:
    r = Recipe()
    r.data.path = "data.jsonl"
    return r


def test_round_trip_keeps_every_field(tmp_path):
    r = _ok()
    r.lora.rank, r.lora.targets, r.train.optimizer = 8, ["q_proj", "v_proj"], "paged_adamw_8bit"
    r.data.columns = {"prompt": "question"}
    r.save(tmp_path / "r.json")
    back = Recipe.load(tmp_path / "r.json")
    assert back == r
    assert json.loads((tmp_path / "r.json").read_text())["schema_version"] == SCHEMA_VERSION


def test_default_recipe_with_data_is_valid():
    assert _ok().validate() == []


def test_validate_reports_every_problem_with_field_and_hint():
    r = Recipe()
    r.train.lr, r.train.micro_batch, r.quant.mode, r.lora.rank = 3.0, 0, "3bit", "big"
    problems = {p.field: p for p in r.validate()}
    assert set(problems) >= {"data.path", "train.lr", "train.micro_batch", "quant.mode", "lora.rank"}
    assert "4bit" in problems["quant.mode"].hint
    assert all(p.hint for p in problems.values())


def test_unknown_keys_warn_and_never_crash():
    warnings: list[str] = []
    r = Recipe.from_dict({"lora": {"rank": 4, "colour": "red"}, "extra": 1, "train": 5}, warnings)
    assert r.lora.rank == 4
    assert any("lora.colour" in w for w in warnings)
    assert any("'extra'" in w for w in warnings)
    assert any("'train'" in w for w in warnings)


def test_version_0_is_migrated():
    warnings: list[str] = []
    r = Recipe.from_dict({"lora": {"targets": "q_proj, v_proj"}, "quant": {"load_in_4bit": False}}, warnings)
    assert r.lora.targets == ["q_proj", "v_proj"]
    assert r.quant.mode == "none"
    assert r.schema_version == SCHEMA_VERSION


def test_bad_json_names_file_and_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{\n  "lora": {,\n}')
    with pytest.raises(RecipeError, match=r"bad.json: not valid JSON at line 2"):
        Recipe.load(p)


def test_every_field_has_a_doc():
    import dataclasses

    from studio.recipe import _SECTIONS

    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert field_doc(section, f.name), f"{section}.{f.name} has no doc"
