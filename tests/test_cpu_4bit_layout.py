"""Evaluation in the middle of 4-bit training must not change the gradients that follow.

bitsandbytes 0.50 repacks 4-bit weights in place for CPU inference on AVX512-BF16 machines
(this one included) and computes wrong gradients afterwards; loading.keep_cpu_4bit_layout
prevents it. On a CPU without that instruction set the test passes either way.
"""
import torch

from studio.recipe import Recipe
from studio.train import loading


def _model(tiny_model_dir):
    r = Recipe()
    r.model.name_or_path = str(tiny_model_dir)
    r.lora.rank, r.lora.dropout = 8, 0.0
    r.train.grad_ckpt = False
    model = loading.load_model(tiny_model_dir, r, "cpu")
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _grads(model, ids):
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_generation_before_training_leaves_gradients_exact(tiny_model_dir):
    ids = torch.randint(3, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    untouched, sampled = _model(tiny_model_dir), _model(tiny_model_dir)
    sampled.eval()
    with torch.no_grad():
        sampled.generate(input_ids=ids[:, :8], attention_mask=torch.ones(2, 8, dtype=torch.long),
                         max_new_tokens=4, do_sample=False)
    a, b = _grads(untouched, ids), _grads(sampled, ids)
    worst = max(((a[n] - b[n]).norm() / (a[n].norm() + 1e-12)).item() for n in a)
    assert worst < 1e-4, worst
