"""studio.planning (one budget rule, one entry), studio.settings (the typed value and its JSON edge) and
the adapter-method registry (studio.methods: every method carries every hook)."""
from __future__ import annotations

import dataclasses

import pytest

from studio import hardware, memory, methods, models, planner
from studio.hardware import GpuInfo
from studio.methods.base import Method, register
from studio.planning import Machine, budget_bytes, plan_for
from studio.recipe import PLANNED, setting_field
from studio.settings import SHAPE, Effective, Settings

GiB = 1024 ** 3


def gpu(index: int, total_gib: int, name: str = "Test GPU") -> GpuInfo:
    return GpuInfo(index=index, name=name, total_bytes=total_gib * GiB, free_bytes=total_gib * GiB, used_bytes=0,
                   utilization=0, temperature=40, driver="test")


def test_the_budget_is_the_users_then_the_first_gpus_then_the_cpus(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_budget_bytes", lambda total=None: 7 * GiB)
    gpus = [gpu(0, 24), gpu(1, 80)]
    assert budget_bytes(gpus, 10 * GiB) == 10 * GiB
    assert budget_bytes(gpus) == 24 * GiB  # the first GPU, not the biggest
    assert budget_bytes([]) == 7 * GiB
    assert budget_bytes(gpus, device="cpu") == 7 * GiB  # the CPU asked for: system RAM, even beside a GPU
    assert budget_bytes([], device="cuda") == hardware.DEFAULT_BUDGET  # a GPU that is not in this computer


def test_machine_detect_gives_each_process_its_gpu_or_a_share_of_the_cpu(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_budget_bytes", lambda total=None: 8 * GiB)
    gpus = [gpu(0, 24, "A"), gpu(1, 48, "B")]
    # planning for its own GPU, this computer's RAM is what activation offloading may fill
    assert Machine.detect(gpus, processes=2) == Machine("cuda", (24 * GiB, 48 * GiB), "A", 8 * GiB)
    assert Machine.detect(gpus, processes=1, picked=[1]).budgets == (48 * GiB,)
    assert Machine.detect(gpus, budget=16 * GiB, processes=2).budgets == (16 * GiB, 16 * GiB)
    assert Machine.detect([], processes=2) == Machine("cpu", (4 * GiB, 4 * GiB), "")


def test_plan_for_is_the_planners_fit_with_the_speed_added():
    info = models.resolve("llama-3.1-8b-instruct")
    plan = plan_for(info, Machine("cuda", (24 * GiB,), "NVIDIA GeForce RTX 4090"), {"lora.rank": 8})
    alone = planner.fit(info, 24 * GiB, fixed={"lora.rank": 8})
    assert plan.settings == alone.settings and plan.predicted == alone.predicted
    assert plan.estimate is not None and plan.to_dict()["estimate"]["tokens_per_s"] > 0
    two = plan_for(info, Machine("cuda", (24 * GiB, 24 * GiB)), speed=False)
    assert two.nproc == 2 and two.estimate is None


def test_settings_are_the_recipes_planned_fields_with_their_defaults():
    keys = [f.metadata["key"] for f in dataclasses.fields(Settings)]
    assert set(keys) == set(PLANNED) - {"lora.dropout"} | set(SHAPE)
    for f in dataclasses.fields(Settings):
        if f.metadata["key"] in PLANNED:
            want = setting_field(f.metadata["key"]).default
            if want is dataclasses.MISSING:
                want = tuple(setting_field(f.metadata["key"]).default_factory())
            assert f.default == want, f.name


def test_settings_round_trip_the_plan_json_and_are_frozen():
    d = planner.fit(models.resolve("qwen2.5-0.5b-instruct"), 8 * GiB, fixed={"train.objective": "dpo"}).to_dict()
    s = Settings.from_dict(d["settings"])
    assert s.to_dict() == d["settings"] and list(s.to_dict()) == list(d["settings"])  # the key order too
    assert s.objective == "dpo" and "train.packing" not in s.to_dict()  # a shape setting only when given
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.rank = 4  # type: ignore[misc]
    changed = s.replace(rank=s.rank + 1)
    assert changed.rank == s.rank + 1 and changed.to_dict() != s.to_dict() and s == Settings.from_dict(d["settings"])


def test_the_effective_step_is_typed_and_taken_once():
    s = Settings(method="prompt", seq_len=512, virtual_tokens=20, rank=8)
    once = memory.effective_settings(s)
    assert isinstance(once, Effective) and once.seq_len == 532 and once.targets == ()
    assert memory.effective_settings(once) is once  # not 552: the step is not taken twice
    assert memory.effective_settings(Settings(method="adalora", rank=8)).rank == 12
    assert memory.estimate(models.resolve("demo"), s).device_total == \
        memory.estimate(models.resolve("demo"), s.to_dict()).device_total  # the JSON edge gives the same


def _hooks(**over):
    base = dict(methods.get("lora").__dict__)
    base.update(name="test-method", **over)
    return Method(**base)


def test_a_method_missing_a_hook_is_refused_at_registration():
    table: dict[str, Method] = {}
    register(table, _hooks())
    assert "test-method" in table
    for hook in ("effective", "extra_tensors", "words", "trainable_terms", "activations", "transients", "peft_config"):
        with pytest.raises(TypeError, match=hook):
            register({}, _hooks(**{hook: None}))
    with pytest.raises(ValueError, match="twice"):
        register(table, _hooks())


def test_every_registered_method_has_its_own_home_and_terms():
    info = models.resolve("llama-3.1-8b-instruct")
    assert methods.NAMES == ("lora", "rslora", "dora", "adalora", "prefix", "prompt")
    for name, m in methods.METHODS.items():
        s = memory.effective_settings(Settings(method=name))
        assert memory.adapter_params(info, s) > 0, name
        assert m.words(s)
    extra = {name: methods.get(name).extra_tensors(info, Settings(method=name)) for name in methods.NAMES}
    assert not extra["lora"] and not extra["rslora"] and all(extra[n] for n in ("dora", "adalora", "prefix", "prompt"))
    assert methods.get("dora").transients(info, Settings(method="dora"))[0]["dora_weight_norm"] > 0
    assert methods.refusal("dora", "8bit", "cpu") and not methods.refusal("dora", "8bit", "cuda")
    assert methods.from_adapter_config({"peft_type": "PREFIX_TUNING"}) == "prefix"


def test_the_objectives_table_says_which_run_pairs_and_which_a_reference():
    from studio import objectives, recipe

    info = models.resolve("llama-3.2-1b-instruct")
    s = Settings(objective="orpo", micro_batch=2, grad_ckpt=False, compute_dtype="bfloat16")
    orpo, doubled = memory.estimate(info, s), memory.estimate(info, s.replace(objective=None, micro_batch=4))
    assert orpo.components["activations"] == doubled.components["activations"]  # 2 pairs: 4 sequences
    assert "reference_forward" not in orpo.components
    assert "reference_forward" in memory.estimate(info, s.replace(objective="dpo")).components
    assert recipe.OBJECTIVES == objectives.NAMES and recipe.PREFERENCE_OBJECTIVES == ("dpo", "orpo")
    assert objectives.get(None).name == "sft" and not planner.objective_reasons(s.replace(objective="sft"))
