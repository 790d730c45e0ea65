"""studio.memory: every component scales as it should, and the counts match peft and bitsandbytes."""
from __future__ import annotations

import pytest

from studio import memory, models
from studio.recipe import PLANNED

SHORT = {key.split(".", 1)[1] if key != "quant.mode" else "quant": key for key in PLANNED}  # est(x, rank=8)
BASE = {SHORT[k]: v for k, v in dict(
    quant="4bit", double_quant=True, rank=16, alpha=32, targets=["all-linear"], micro_batch=2, grad_accum=8,
    seq_len=1024, grad_ckpt=False, attn="sdpa", optimizer="adamw_torch", compute_dtype="bfloat16").items()}
WEIGHTS = ("base_weights_4bit", "quant_constants", "unquantized_weights", "lora_weights", "lora_grads",
           "optimizer_state")


@pytest.fixture(scope="module")
def llama8b():
    return models.resolve("llama-3.1-8b-instruct")


def est(info, dropout=0.05, **changes):
    return memory.estimate(info, {**BASE, **{SHORT.get(k, k): v for k, v in changes.items()}}, dropout=dropout)


def test_doubling_batch_doubles_activations_not_weights(llama8b):
    full = {"train.tiled_head": False}  # the full logits' loss (the tiled head: test_long_context.py)
    one, two = est(llama8b, micro_batch=2, **full), est(llama8b, micro_batch=4, **full)
    for name in ("logits_and_loss", "lora_activations"):
        assert two.components[name] == 2 * one.components[name]
    rotary = 2 * BASE["train.seq_len"] * llama8b.head_dim * 2  # cos and sin: one copy for the whole batch
    assert 2 * one.components["activations"] - two.components["activations"] == rotary
    for name in WEIGHTS:
        assert two.components[name] == one.components[name]


def test_sequence_length_scales_linearly_and_eager_scores_quadratically(llama8b):
    a, b = est(llama8b, seq_len=512, attn="eager"), est(llama8b, seq_len=1024, attn="eager")
    assert b.components["activations"] == 2 * a.components["activations"]
    assert b.components["attention_scores"] == 4 * a.components["attention_scores"]
    assert "attention_scores" not in est(llama8b, attn="sdpa").components
    assert "attention_scores" not in est(llama8b, attn="flash_attention_2").components


def test_gradient_checkpointing_keeps_only_layer_inputs(llama8b):
    full, ckpt = est(llama8b, grad_ckpt=False), est(llama8b, grad_ckpt=True)
    tokens = BASE["train.micro_batch"] * BASE["train.seq_len"]
    assert ckpt.components["activations"] == llama8b.layers * 2 * llama8b.hidden * tokens
    assert ckpt.peak_allocated < full.peak_allocated


def test_quantisation_bytes(llama8b):
    qn = sum(g.weight_numel for g in llama8b.linears if g.quantized)
    four = est(llama8b, quant="4bit", double_quant=False).components
    assert four["base_weights_4bit"] == qn // 2
    layers = sum(g.count for g in llama8b.linears if g.quantized)
    assert four["quant_constants"] == qn * 4 // 64 + 64 * layers  # one fp32 absmax per 64 weights + NF4 code book
    dq = est(llama8b, quant="4bit", double_quant=True).components["quant_constants"]
    assert dq == pytest.approx(qn * (1 / 64 + 4 / (64 * 256)), rel=0.01)  # 4.127 bits per weight (QLoRA paper)
    eight = est(llama8b, quant="8bit").components["base_weights_8bit"]
    sixteen = est(llama8b, quant="none").components["base_weights_16bit"]
    assert four["base_weights_4bit"] < eight < sixteen == 2 * qn
    rest = llama8b.total_params - qn
    assert four["unquantized_weights"] == 2 * rest  # kept in bf16, not upcast to fp32


def test_rank_and_optimizer(llama8b):
    r8, r16 = est(llama8b, rank=8), est(llama8b, rank=16)
    assert r16.trainable_params == 2 * r8.trainable_params
    assert r16.components["lora_weights"] == 4 * r16.trainable_params
    adam, adam8 = est(llama8b, optimizer="adamw_torch"), est(llama8b, optimizer="adamw_8bit")
    tensors = 2 * sum(g.count for g in memory.targeted(llama8b, ["all-linear"]))  # torch keeps "step" as a tensor
    assert adam.components["optimizer_state"] == 8 * adam.trainable_params + 4 * tensors
    assert adam8.components["optimizer_state"] < adam.components["optimizer_state"] / 3
    paged = est(llama8b, optimizer="paged_adamw_8bit")
    assert paged.components["optimizer_state"] == 0
    assert paged.components["paged_optimizer_state"] == adam8.components["optimizer_state"]
    assert paged.device_total - paged.peak_reserved == memory.CUDA_CONTEXT + paged.components["paged_optimizer_state"]


def test_dropout_adds_the_dropped_inputs(llama8b):
    tokens = BASE["train.micro_batch"] * BASE["train.seq_len"]
    groups = memory.targeted(llama8b, ["all-linear"])
    a_outputs = 2 * BASE["lora.rank"] * sum(g.count for g in groups) * tokens
    inputs = sum(g.in_features * g.count for g in groups) * tokens
    # dropout: lora_A keeps its own dropped copy (bf16) and dropout its mask (bool on CUDA, the input's dtype on the CPU)
    assert est(llama8b, dropout=0.1).components["lora_activations"] == a_outputs + 3 * inputs
    # no dropout: lora_A keeps its input, one copy per distinct input (q/k/v share one, gate/up share one;
    # sdpa already keeps o_proj's input as its output)
    h, i, layers = llama8b.hidden, llama8b.intermediate, llama8b.layers
    assert est(llama8b, dropout=0.0).components["lora_activations"] == a_outputs + 2 * (2 * h + i) * layers * tokens


def test_three_figures_add_up(llama8b):
    for changes in ({}, {"grad_ckpt": True}, {"quant": "none"}, {"optimizer": "paged_adamw_32bit"}):
        e = est(llama8b, **changes)
        outside = {"allocator_overhead", "cuda_context", "paged_optimizer_state"}
        assert e.peak_allocated == sum(v for k, v in e.components.items() if k not in outside)
        assert e.peak_reserved == e.peak_allocated + e.components["allocator_overhead"]
        assert e.device_total == sum(e.components.values())
        assert set(e.sources) == set(e.components)


def test_vocabulary_drives_the_logits(llama8b):
    small = models.resolve("mistral-7b-instruct-v0.3")  # same layers, vocab 32768 instead of 128256
    full = {"train.tiled_head": False}
    big_l, small_l = est(llama8b, **full).components["logits_and_loss"], est(small, **full).components["logits_and_loss"]
    norm = memory.final_norm_bytes(llama8b, memory.Settings.of(BASE))  # same hidden size: the same final norm
    assert (big_l - norm) / (small_l - norm) == pytest.approx(128256 / 32768)


def test_lora_parameter_count_matches_peft(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    info = models.resolve(str(tiny_model_dir))
    for targets in (["all-linear"], ["q_proj", "v_proj"]):
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
        peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=targets[0] if targets == ["all-linear"]
                                                       else targets, task_type="CAUSAL_LM"))
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert memory.lora_params(info, 8, targets) == trainable


def test_4bit_storage_matches_bitsandbytes(tiny_model_dir):
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    info = models.resolve(str(tiny_model_dir))
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=False,
                           bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), quantization_config=q, dtype=torch.float32,
                                                 device_map={"": "cpu"})
    packed = constants = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            packed += m.weight.numel() * m.weight.element_size()
            qs = m.weight.quant_state
            constants += sum(t.numel() * t.element_size() for t in (qs.absmax, qs.code))
    e = memory.estimate(info, {**BASE, "quant.double_quant": False, "quant.compute_dtype": "float32"})
    assert packed == e.components["base_weights_4bit"]
    assert constants == e.components["quant_constants"]
    rest = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
               if not isinstance(p, bnb.nn.Params4bit))
    assert rest == e.components["unquantized_weights"]


def test_static_bytes_is_a_lower_bound_of_the_device_total(llama8b):
    for changes in ({}, {"quant.mode": "none"}, {"train.optimizer": "paged_adamw_8bit"}, {"train.grad_ckpt": True, "train.seq_len": 128}):
        s = {**BASE, **changes}
        assert memory.static_bytes(llama8b, s) <= memory.estimate(llama8b, s).device_total


def test_soft_capping_adds_its_tanh_outputs():
    gemma = models.resolve("gemma-2-9b-it")
    assert gemma.logit_softcap and gemma.attn_softcap and not gemma.supports_sdpa
    e = memory.estimate(gemma, {**BASE, "train.attn": "eager", "train.tiled_head": False})
    tokens = BASE["train.micro_batch"] * BASE["train.seq_len"]
    assert e.components["logits_and_loss"] == tokens * gemma.vocab * (memory.LOGITS_BYTES_PER_VOCAB + 2) \
        + memory.final_norm_bytes(gemma, memory.Settings.of(BASE))
    assert e.components["attention_scores"] == gemma.layers * gemma.heads * BASE["train.seq_len"] * (4 + 2 + 2) * tokens


@pytest.mark.parametrize("changes", [{}, {"grad_ckpt": True}, {"grad_ckpt": True, "attn": "eager"},
                                     {"grad_ckpt": True, "seq_len": 8192, "micro_batch": 1},
                                     {"seq_len": 64, "micro_batch": 1, "grad_ckpt": True}])
@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_the_peak_is_the_worst_phase_of_the_step(llama8b, changes, device):
    s = {**BASE, **{SHORT[k]: v for k, v in changes.items()}}
    phases = memory.phase_peaks(llama8b, s, 0.05, device)
    assert set(phases) == {"forward", "loss_backward", "layers_backward", "optimizer_step"}
    assert memory.estimate(llama8b, s, 0.05, device=device).peak_allocated == max(phases.values())
    assert phases["forward"] < phases["loss_backward"]  # the logits' gradients come on top of the loss's output


def test_on_the_cpu_the_total_is_the_workers_resident_peak(llama8b):
    cpu = memory.estimate(llama8b, {**BASE, "quant.compute_dtype": "float32"}, device="cpu")
    beside = memory.CPU_RUNTIME + memory.CPU_KERNEL_WORKSPACE_TILED  # the tiled head: less kernel workspace
    assert cpu.device_total == cpu.peak_allocated + beside == cpu.peak_reserved + beside
    assert cpu.components["process_runtime"] == memory.CPU_RUNTIME
    assert sum(cpu.components.values()) == cpu.device_total
    assert "process_runtime" not in est(llama8b).components  # on a GPU the context stands for it
