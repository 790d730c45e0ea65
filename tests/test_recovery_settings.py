"""The memory settings a run records (checkpoints, state.json, out-of-memory events) use the recipe's own names,
the vocabulary of the plan, the CLI and the events; records written before that used bare names and still read."""
from __future__ import annotations

from studio import checkpoint
from studio.fsutil import atomic_write_json
from studio.recipe import Recipe, setting_field
from studio.train import recovery


def test_settings_are_recorded_under_the_recipe_names():
    r = Recipe()
    r.train.micro_batch, r.train.optimizer = 3, "adamw_8bit"
    recorded = recovery.settings_of(r)
    assert list(recorded) == list(recovery.MEMORY_SETTINGS)
    assert all(setting_field(key) is not None for key in recorded)  # each one a recipe setting
    assert recorded["train.micro_batch"] == 3 and recorded["train.optimizer"] == "adamw_8bit"


def test_a_checkpoint_recorded_before_the_recipe_names_still_tells_its_optimizer(tmp_path):
    r = Recipe()
    r.train.optimizer = "adamw_torch"
    for settings, fresh in (({"optimizer": "adamw_8bit"}, True), ({"optimizer": "adamw_torch"}, False),
                            ({"train.optimizer": "adamw_8bit"}, True), ({}, False)):
        atomic_write_json(tmp_path / checkpoint.MANIFEST, {"settings": settings})
        assert recovery._fresh_optimizer(checkpoint.Checkpoint(path=tmp_path, step=1), r) is fresh, settings
