"""The planner on several GPUs: one GPU, DDP or FSDP, per-GPU memory, on catalog models (no torch)."""
import pytest

from studio import launch, memory, models, planner
from studio.recipe import Recipe

GiB = 2**30


def settings(info, **over):
    s = planner.fit(info, 80 * GiB).settings.to_dict()
    s.update({"quant.mode": "4bit", "train.seq_len": 1024, "lora.rank": 16, "train.micro_batch": 1,
              "train.grad_ckpt": True, "train.optimizer": "adamw_torch", **over})
    return s


def test_fsdp_shards_weights_and_optimizer_state_ddp_does_not():
    info = models.resolve("llama-3.1-8b-instruct")
    s = settings(info)
    one = memory.per_gpu(info, s, "single", 1)
    ddp = memory.per_gpu(info, s, "ddp", 2)
    fsdp = memory.per_gpu(info, s, "fsdp", 2)
    for name in ("base_weights_4bit", "unquantized_weights", "lora_weights", "lora_grads", "optimizer_state"):
        assert ddp.components[name] == one.components[name]  # DDP: a whole copy on each GPU
        assert fsdp.components[name] == -(-one.components[name] // 2)  # FSDP: half on each of two
    assert ddp.components["ddp_grad_buckets"] == 4 * one.trainable_params
    assert ddp.device_total > one.device_total > fsdp.device_total
    assert fsdp.components["fsdp_gathered_layers"] < one.components["base_weights_4bit"] / 4
    assert memory.per_gpu(info, s, "fsdp", 4).device_total < fsdp.device_total  # more GPUs, less each
    with pytest.raises(ValueError, match="unknown strategy"):
        memory.per_gpu(info, s, "zero3", 2)


def test_planner_picks_ddp_when_the_model_fits_each_card():
    plan = planner.fit_gpus(models.resolve("llama-3.1-8b-instruct"), [24 * GiB, 24 * GiB])
    assert plan.fits and plan.strategy == "ddp" and plan.nproc == 2
    assert plan.predicted["device_total_bytes"] == plan.per_gpu["ddp"] <= 24 * GiB - plan.margin_bytes
    assert plan.per_gpu["fsdp"] < plan.per_gpu["single"] < plan.per_gpu["ddp"]
    assert "DDP" in plan.reasons[0] and "fits each" in plan.reasons[0]
    assert plan.to_dict()["strategy"] == "ddp"


def test_planner_picks_fsdp_with_a_4bit_base_when_no_single_card_holds_the_model():
    info = models.resolve("llama-3.1-70b-instruct")
    assert not planner.fit(info, 24 * GiB).fits
    plan = planner.fit_gpus(info, [24 * GiB, 24 * GiB])
    assert plan.fits and plan.strategy == "fsdp" and plan.settings.quant_mode == "4bit"
    assert plan.per_gpu["fsdp"] <= 24 * GiB - plan.margin_bytes < plan.per_gpu["single"]
    assert "fits no single" in plan.reasons[0] and "FSDP" in plan.reasons[0] and planner.FSDP_NOT_RUN in plan.reasons


def test_one_gpu_is_the_plain_plan_and_too_big_says_so():
    info = models.resolve("qwen2.5-0.5b-instruct")
    assert planner.fit_gpus(info, [24 * GiB]).to_dict() == planner.fit(info, 24 * GiB).to_dict()
    huge = planner.fit_gpus(models.resolve("llama-3.1-70b-instruct"), [8 * GiB, 8 * GiB])
    assert not huge.fits and "Even sharded over 2 GPUs" in huge.reasons[-1]


class _Gpu:
    def __init__(self, name):
        self.name = name


def test_where_several_gpus_cannot_work_the_reason_says_what_does():
    r = Recipe()
    assert launch.unsupported(r.train) is None  # one process: always
    r.train.nproc = 2
    assert "WSL2" in launch.unsupported(r.train, [_Gpu("A"), _Gpu("A")], platform="win32")
    assert "different models" in launch.unsupported(r.train, [_Gpu("RTX 3090"), _Gpu("RTX 4090")], platform="linux")
    assert "this machine has 1" in launch.unsupported(r.train, [_Gpu("RTX 3090")], platform="linux")
    assert launch.unsupported(r.train, [_Gpu("RTX 3090"), _Gpu("RTX 3090")], platform="linux") is None
    assert launch.unsupported(r.train, [], platform="linux") is None  # the CPU: gloo


def test_recipe_gpus_field():
    r = Recipe()
    r.model.name_or_path, r.data.path = "demo", "x.jsonl"
    r.train.gpus = "0,1"
    assert launch.processes(r.train) == 2 and not r.validate()
    r.train.gpus = "0,0"
    assert [p.field for p in r.validate()] == ["train.gpus"]
    r.train.gpus, r.train.nproc = "0,1", 3
    assert [p.field for p in r.validate()] == ["train.nproc"]


def test_a_mixture_of_experts_is_never_sharded_in_4bit_and_every_fsdp_plan_says_it_has_not_run():
    """An MoE's 4-bit experts are stored as bytes and the rest of a sharded 4-bit base as the compute dtype: FSDP
    would mix them (the worker refuses it), so the planner shards an MoE only with a 16-bit base, which for a 30B
    MoE on two 16 GB cards does not fit: it says so instead of planning the mix."""
    info = models.resolve("qwen3-30b-a3b")
    for gib in (12, 16):
        plan = planner.fit_gpus(info, [gib * GiB, gib * GiB])
        assert not (plan.strategy == "fsdp" and plan.settings.quant_mode == "4bit")
        assert not plan.fits and "Even sharded over 2 GPUs" in plan.reasons[-1]
    dense = planner.fit_gpus(models.resolve("llama-3.1-70b-instruct"), [24 * GiB, 24 * GiB])
    assert dense.strategy == "fsdp" and planner.FSDP_NOT_RUN in dense.reasons


def test_the_worker_refuses_sharded_4bit_experts_before_loading(tmp_path):
    import json

    import pytest
    import torch
    from transformers import BitsAndBytesConfig

    from studio.errors import LoadError
    from studio.train.loading import refuse_sharded_4bit_experts

    sharded = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_storage=torch.bfloat16)
    plain = BitsAndBytesConfig(load_in_4bit=True)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_moe", "num_experts": 4}))
    with pytest.raises(LoadError) as e:
        refuse_sharded_4bit_experts(tmp_path, sharded)
    assert "4 experts" in str(e.value) and "--strategy ddp" in e.value.hint
    refuse_sharded_4bit_experts(tmp_path, plain)  # one process: 4-bit experts as bytes, like every 4-bit weight
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_5_moe",
                                                      "text_config": {"num_experts": 8}}))
    with pytest.raises(LoadError):
        refuse_sharded_4bit_experts(tmp_path, sharded)  # a multimodal checkpoint's language model
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    refuse_sharded_4bit_experts(tmp_path, sharded)  # a dense model shards in 4-bit
