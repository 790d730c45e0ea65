"""Mixture-of-experts models in 4-bit: the fused experts really are NF4, compute what the
dequantised weights compute, and a QLoRA run trains, saves an adapter that loads on the 16-bit base."""
from pathlib import Path

import pytest
from test_train_worker import run_worker, stdout_events
from tiny import make_tokenizer

from studio import runs
from studio.recipe import Recipe
from studio.train import loading, moe4bit


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path_factory.mktemp("tiny-qwen3-moe")
    tok = make_tokenizer(out)
    config = AutoConfig.for_model(
        "qwen3_moe", vocab_size=len(tok), hidden_size=64, intermediate_size=128, moe_intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4,
        num_experts_per_tok=2, max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out)
    return out


def moe_recipe(folder: Path, quant: str = "4bit", dropout: float = 0.05) -> Recipe:
    r = Recipe(name="moe")
    r.model.name_or_path = str(folder)
    r.quant.mode = quant
    r.lora.rank, r.lora.alpha, r.lora.dropout = 8, 16, dropout
    r.train.grad_ckpt = False
    return r


def test_experts_are_nf4_and_compute_like_their_dequantised_weights(moe_dir):
    import torch

    model = loading.load_model(moe_dir, moe_recipe(moe_dir), "cpu")
    experts = moe4bit.quantized_experts(model)
    assert len(experts) == 2  # one per layer
    for module in experts:
        assert module.gate_up_proj.dtype == torch.uint8 and module.down_proj.dtype == torch.uint8
        assert module.gate_up_proj.numel() == 4 * 128 * 64 // 2  # two 4-bit weights per byte
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and not any("experts" in n or ".gate." in n for n in trained)  # experts stay frozen
    assert {n.split(".")[-4] for n in trained} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    _assert_computes_like_dequantised(model, moe_dir)


# The other MoE families the docs name (docs/ARCHITECTURE.md, moe4bit): Mixtral (gate and up fused, no bias),
# gpt-oss (transposed experts with biases, its own gated activation) and Qwen2-MoE (a shared expert beside them).
FAMILIES = {
    "mixtral": dict(intermediate_size=64, num_local_experts=4, num_experts_per_tok=2),
    "gpt_oss": dict(intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, head_dim=16,
                    layer_types=["sliding_attention", "full_attention"], sliding_window=8),
    "qwen2_moe": dict(intermediate_size=128, moe_intermediate_size=64, shared_expert_intermediate_size=64,
                      num_experts=4, num_experts_per_tok=2),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_moe_family_loads_nf4_experts_that_compute_like_their_dequantised_weights(family, tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = make_tokenizer(tmp_path)
    config = AutoConfig.for_model(
        family, vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **FAMILIES[family])
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(tmp_path)
    model = loading.load_model(tmp_path, moe_recipe(tmp_path), "cpu")
    experts = moe4bit.quantized_experts(model)
    assert len(experts) == 2  # every layer's experts, not left in 16-bit
    for module in experts:
        stored = [getattr(module, n) for n in moe4bit.EXPERT_PARAMS if isinstance(getattr(module, n, None), torch.Tensor)]
        assert stored and all(p.dtype == torch.uint8 for p in stored)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and not any(".experts." in n for n in trained)  # experts stay frozen
    _assert_computes_like_dequantised(model, tmp_path)


def _assert_computes_like_dequantised(model, folder: Path) -> None:
    """The 4-bit model's logits equal those of the same model in fp32 whose every 4-bit weight (experts and
    linear layers) is replaced by its dequantised values, run with transformers' own eager experts."""
    import bitsandbytes.functional as F
    import torch
    from transformers import AutoModelForCausalLM

    base = model.get_base_model()
    state = {}
    for name, module in base.named_modules():
        w = getattr(module, "weight", None)
        if w is not None and getattr(w, "quant_state", None) is not None:
            state[name + ".weight"] = F.dequantize_4bit(w.data, w.quant_state)
        for pname in getattr(module, moe4bit.STATES, {}):
            state[f"{name}.{pname}"] = moe4bit.dequantized(module, pname)
    for name, p in base.named_parameters():
        if p.dtype.is_floating_point and "lora_" not in name:
            state.setdefault(name.replace(".base_layer", ""), p.data)
    ref = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    missing = ref.load_state_dict(state, strict=False)
    assert not missing.missing_keys, missing.missing_keys
    ids = torch.tensor([[5, 17, 42, 9, 77, 3, 11, 12]])
    model.eval()
    with torch.no_grad(), model.disable_adapter():
        ours = model(input_ids=ids).logits
        expected = ref(input_ids=ids).logits
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_16bit_moe_with_dropout_is_refused_with_the_fix(moe_dir):
    with pytest.raises(loading.LoadError, match=r"lora.dropout 0.05.*Set lora.dropout to 0.*quant.mode 4bit"):
        loading.load_model(moe_dir, moe_recipe(moe_dir, quant="none"), "cpu")


def test_qlora_moe_run_trains_and_its_adapter_loads_on_the_16bit_base(moe_dir, chat_jsonl, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    r = moe_recipe(moe_dir)
    r.data.path, r.data.val_fraction = str(chat_jsonl), 0.0
    r.train.max_steps, r.train.micro_batch, r.train.grad_accum, r.train.seq_len = 8, 4, 1, 64
    r.train.lr, r.train.warmup_ratio = 5e-3, 0.0
    run_dir = runs.create(r, tmp_path)
    proc = run_worker(run_dir)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    events = stdout_events(proc)
    losses = [e.data["loss"] for e in events if e.type == "metric" and "loss" in e.data]
    assert len(losses) == 8 and sum(losses[-3:]) < sum(losses[:3])
    said = [e.data["message"] for e in events if e.type == "log" and "mixture of experts" in e.data.get("message", "")]
    assert said == ["mixture of experts: the experts of 2 layers are held in 4-bit (NF4) and stay frozen; "
                    "LoRA adapts k_proj, o_proj, q_proj, v_proj"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(moe_dir), dtype=torch.float32),
                                      str(run_dir / "adapter"))
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[5, 17, 42]])).logits).all()


def test_playground_loads_the_moe_in_4bit_and_refuses_an_adapter_of_the_experts(moe_dir, tmp_path):
    import json

    from studio.inference import ChatEngine, SettingsError

    engine = ChatEngine(moe_dir, moe_recipe(moe_dir), device="cpu", quant="4bit")
    assert moe4bit.quantized_experts(engine.model)
    import torch
    from safetensors.torch import save_file

    adapter = tmp_path / "experts-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"], "target_parameters": ["gate_up_proj"]}))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"  # a well-formed file: the config is the point
    save_file({f"{prefix}.lora_A.weight": torch.zeros(2, 8), f"{prefix}.lora_B.weight": torch.zeros(8, 2)},
              str(adapter / "adapter_model.safetensors"))
    with pytest.raises(SettingsError, match="16-bit"):
        engine.add_adapter("a", adapter)


def test_lora_on_4bit_experts_is_refused_with_what_works(moe_dir):
    r = moe_recipe(moe_dir)
    r.lora.targets = ["q_proj", "gate_up_proj"]
    with pytest.raises(loading.LoadError, match=r"\['gate_up_proj'\].*frozen.*quant.mode 8bit or none"):
        loading.load_model(moe_dir, r, "cpu")
