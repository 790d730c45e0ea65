"""Hybrid attention in the planner (issue 28): Qwen3.5's Gated DeltaNet layers are modelled per layer kind, the path
they take (flash-linear-attention on a GPU, transformers' torch code otherwise) changes memory and time, and a
Qwen3.5 9B-shaped model plans on a 24 GB card in 4-bit."""
from __future__ import annotations

import pytest

from studio import kernels, memory, models, planner, speed

GiB = 1024 ** 3
# Qwen3.5-9B's language model as published (its config.json's text_config): 32 layers, every 4th full attention
QWEN35_9B = {"model_type": "qwen3_5_text", "architectures": ["Qwen3_5ForCausalLM"], "vocab_size": 248320,
             "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 32, "num_attention_heads": 16,
             "num_key_value_heads": 4, "head_dim": 256, "full_attention_interval": 4, "linear_num_key_heads": 16,
             "linear_num_value_heads": 32, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
             "linear_conv_kernel_dim": 4, "max_position_embeddings": 262144, "tie_word_embeddings": False}


@pytest.fixture(scope="module")
def qwen35_9b() -> models.ModelInfo:
    info = models._shape_from_config(QWEN35_9B, name="qwen3.5-9b-shape", source="test")
    info.params, info.linears = models.count_parameters(QWEN35_9B)
    return info


def test_the_config_gives_the_layer_kinds(qwen35_9b):
    info = qwen35_9b
    assert (info.linear_layers, info.full_layers, info.linear_leading) == (24, 8, 3)
    assert (info.linear_k_heads, info.linear_v_heads, info.linear_k_dim, info.linear_v_dim) == (16, 32, 128, 128)
    assert info.attn_output_gate and info.qk_norm
    assert next(g for g in info.linears if g.name == "q_proj").out_features == 2 * info.q_dim  # the gate's half
    assert 8.0e9 < info.total_params < 10.0e9


def test_a_9b_plans_on_24_gb_in_4bit_and_says_which_path_its_linear_layers_take(qwen35_9b, monkeypatch):
    monkeypatch.setattr(kernels, "fla_installed", lambda: False)
    plan = planner.fit(qwen35_9b, 24 * GiB, fixed={"quant.mode": "4bit"})
    assert plan.fits and plan.settings.quant_mode == "4bit"
    assert plan.predicted["device_total_bytes"] <= 24 * GiB - planner.margin_bytes(24 * GiB)
    assert "flash-linear-attention is not installed" in plan.linear_attention
    assert any(r.startswith("Linear attention (24 of 32 layers") for r in plan.reasons)


def test_the_torch_path_keeps_more_and_runs_slower_than_fla(qwen35_9b, monkeypatch):
    s = {"quant.mode": "4bit", "quant.compute_dtype": "bfloat16", "train.seq_len": 4096, "train.micro_batch": 1,
         "train.grad_ckpt": True, "train.attn": "sdpa", "lora.targets": ["all-linear"]}
    monkeypatch.setattr(kernels, "fla_installed", lambda: False)
    torch_bytes = memory.linear_attention_bytes(qwen35_9b, s, "cuda")
    torch_flops, _ = speed.step_flops(qwen35_9b, s, "cuda")
    monkeypatch.setattr(kernels, "fla_installed", lambda: True)
    fla_bytes = memory.linear_attention_bytes(qwen35_9b, s, "cuda")
    fla_flops, _ = speed.step_flops(qwen35_9b, s, "cuda")
    assert torch_bytes > 3 * fla_bytes  # fp32 chunk tensors against fla's few saved inputs
    assert torch_flops > fla_flops
    assert memory.linear_attention_path("cpu") == ("torch", "torch")  # fla runs on NVIDIA GPUs only
    # the layer recomputed under checkpointing is the heavier kind: a linear-attention one on the torch path
    peak = memory.peak_layer_bytes_per_token(qwen35_9b, s, 0.05, "cuda")
    mean = memory.layer_bytes_per_token(qwen35_9b, s, 0.05, "cuda")
    assert peak[0] > mean[0]


def test_a_gemma4_config_gives_its_global_layers_and_per_layer_inputs():
    config = {"model_type": "gemma4_text", "vocab_size": 262144, "hidden_size": 1536, "num_hidden_layers": 6,
              "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "global_head_dim": 512,
              "hidden_size_per_layer_input": 256, "num_kv_shared_layers": 2, "sliding_window": 512,
              "layer_types": ["sliding_attention"] * 2 + ["full_attention"] + ["sliding_attention"] * 2
              + ["full_attention"]}
    info = models._shape_from_config(config, name="g4", source="test")
    assert (info.full_head_dim, info.per_layer_input, info.sliding_layers) == (512, 256, 4)
    assert (info.kv_shared_sliding, info.kv_shared_full) == (1, 1)
    assert info.norms_per_layer == 5


def test_the_run_log_names_the_linear_attention_path(monkeypatch):
    """The worker says which code runs the linear-attention layers when the model loads (CPU: transformers' torch)."""
    from types import SimpleNamespace

    from studio.train.run import TrainingRun

    said: list[str] = []
    run = SimpleNamespace(device="cpu", em=SimpleNamespace(emit=lambda kind, message: said.append(message)),
                          model=SimpleNamespace(config=SimpleNamespace(
                              layer_types=["linear_attention", "full_attention"] * 2)))
    TrainingRun._say_linear_attention(run)  # type: ignore[arg-type]
    assert said == [f"linear attention (2 of 4 layers): {kernels.linear_attention_words('cpu')}"]
    assert "torch code" in said[0]
