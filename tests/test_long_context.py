"""Long sequences on the same memory (studio.train.long_context, the planner's terms for them).

The tiled LM head and the tiled MLP must change no value: the same loss within 1e-4 and the same gradients
as the plain model, in 4-bit on the CPU; the planner must reach the issue's 80k tokens on paper for
Llama-3.1-8B on 24 GB and turn the costly parts on only when a length needs them.
"""
from __future__ import annotations

import pytest
import torch

from studio import memory, methods, models, planner
from studio.memory import GiB
from studio.recipe import Recipe
from studio.settings import Settings
from studio.train import loading, long_context, recovery


def _model(folder, tiled_head: bool, tiled_mlp: int = 0, dropout: float = 0.0, quant: str = "4bit",
           method: str = "lora"):
    r = Recipe()
    r.model.name_or_path = str(folder)
    r.quant.mode = quant
    r.lora.rank, r.lora.dropout, r.lora.method = 8, dropout, method
    r.train.grad_ckpt, r.train.tiled_head = not methods.needs_no_grad_ckpt(method), tiled_head
    model = loading.load_model(folder, r, "cpu")
    if tiled_mlp:
        assert long_context.add_tiled_mlp(model.get_base_model(), tiled_mlp) == model.config.num_hidden_layers
    with torch.no_grad():  # LoRA B starts at zero: give it values so the adapter's gradients all flow
        gen = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    model.train()
    return model


def _loss_and_grads(model, ids, labels, **kw):
    torch.manual_seed(7)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, **kw)
    out.loss.backward()
    return float(out.loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _batch(vocab: int):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (2, 40), generator=gen)
    labels = ids.clone()
    labels[:, :15] = -100  # the prompt: no loss there
    labels[1, 30:] = -100  # and padding
    return ids, labels


def _worst(a: dict, b: dict) -> float:
    return max(((a[n] - b[n]).norm() / (a[n].norm() + 1e-12)).item() for n in a)


@pytest.mark.parametrize("quant", ["4bit", "none"])
def test_the_tiled_head_gives_the_same_loss_and_gradients(tiny_model_dir, quant):
    full = _model(tiny_model_dir, tiled_head=False, quant=quant)
    tiled = _model(tiny_model_dir, tiled_head=True, quant=quant)
    assert long_context.has_tiled_head(tiled) and not long_context.has_tiled_head(full)
    ids, labels = _batch(full.config.vocab_size)
    loss_full, grads_full = _loss_and_grads(full, ids, labels)
    loss_tiled, grads_tiled = _loss_and_grads(tiled, ids, labels, tiled_loss=True)
    assert abs(loss_full - loss_tiled) < 1e-4
    assert _worst(grads_full, grads_tiled) < 1e-4
    # the Trainer's token count across accumulated micro-batches divides the summed loss the same way
    n = int((labels[:, 1:] != -100).sum()) * 3
    assert abs(_loss_and_grads(full, ids, labels, num_items_in_batch=n)[0]
               - _loss_and_grads(tiled, ids, labels, tiled_loss=True, num_items_in_batch=n)[0]) < 1e-5


@pytest.mark.parametrize("method", ["dora", "adalora", "prefix", "prompt"])
def test_every_adapter_method_gets_the_same_loss(tiny_model_dir, method):
    """Prompt learning pads the labels for its virtual tokens and prefix tuning passes its key/values:
    both go through the tiled head's forward as through the model's own."""
    full = _model(tiny_model_dir, tiled_head=False, quant="none", method=method)
    tiled = _model(tiny_model_dir, tiled_head=True, quant="none", method=method)
    ids, labels = _batch(full.config.vocab_size)
    a, _ = _loss_and_grads(full, ids, labels)
    b, _ = _loss_and_grads(tiled, ids, labels, tiled_loss=True)
    assert abs(a - b) < 1e-4


def test_packed_sequences_get_the_same_loss(tiny_model_dir):
    """Packing (studio.train.packing): one row of examples, position ids restarting, -100 between them."""
    from studio.train import packing

    full = _model(tiny_model_dir, tiled_head=False)
    tiled = _model(tiny_model_dir, tiled_head=True)
    gen = torch.Generator().manual_seed(3)
    rows = [{"input_ids": torch.randint(3, 300, (n,), generator=gen).tolist()} for n in (9, 14, 6)]
    for row in rows:
        row["labels"] = list(row["input_ids"])
    batch = packing.collator()(rows)
    a = float(full(**batch).loss)
    b = float(tiled(**batch, tiled_loss=True).loss)
    assert abs(a - b) < 1e-4


def test_without_the_switch_the_model_is_untouched(tiny_model_dir):
    tiled = _model(tiny_model_dir, tiled_head=True)
    ids, labels = _batch(tiled.config.vocab_size)
    out = tiled(input_ids=ids, labels=labels)  # generation and plain calls: logits as before
    assert out.logits.shape[-1] == tiled.config.vocab_size
    tiled.eval()
    with torch.no_grad():
        gen = tiled.generate(input_ids=ids[:1, :5], attention_mask=torch.ones(1, 5, dtype=torch.long),
                             max_new_tokens=3, do_sample=False)
    assert gen.shape == (1, 8)


def test_the_tiled_mlp_gives_the_same_loss_and_gradients(tiny_model_dir):
    plain = _model(tiny_model_dir, tiled_head=True)
    tiled = _model(tiny_model_dir, tiled_head=True, tiled_mlp=16)  # 80 tokens: 5 tiles of 16
    ids, labels = _batch(plain.config.vocab_size)
    a, grads_a = _loss_and_grads(plain, ids, labels, tiled_loss=True)
    b, grads_b = _loss_and_grads(tiled, ids, labels, tiled_loss=True)
    assert abs(a - b) < 1e-4
    assert _worst(grads_a, grads_b) < 1e-4


def test_the_tiled_mlp_draws_the_same_dropout_masks_in_backward():
    """With dropout, backward runs each tile again: its gradient must be the one of the forward's masks."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.3), torch.nn.Linear(32, 8))
    x = torch.randn(3, 10, 8, requires_grad=True)

    def own(t):
        return mlp(t)

    torch.manual_seed(5)
    y = long_context._TiledMLP.apply(x, own, 4)
    (y * y).sum().backward()
    tiled_grad = x.grad.clone()
    # the reference: the same tiles with autograd all the way, from the same random state
    x.grad = None
    torch.manual_seed(5)
    flat = x.reshape(-1, 8)
    ref = torch.cat([own(t) for t in flat.split(4)]).view_as(x)
    assert torch.equal(ref.detach(), y.detach())
    (ref * ref).sum().backward()
    assert torch.allclose(tiled_grad, x.grad, atol=1e-6)


LLAMA_80K = {"quant.mode": "4bit", "lora.rank": 32, "train.micro_batch": 1, "train.grad_accum": 1}


def test_llama_8b_fits_80k_tokens_on_24_gb():
    info = models.resolve("llama-3.1-8b-instruct")
    plan = planner.fit(info, 24 * GiB, fixed={**LLAMA_80K, "train.seq_len": 80_000})
    assert plan.fits and plan.settings.seq_len == 80_000
    s = plan.settings
    assert s.rank == 32 and s.quant_mode == "4bit" and s.micro_batch == 1  # the settings kept
    assert s.tiled_head and s.tiled_mlp and s.offload and s.grad_ckpt
    assert plan.host_offload > 20 * GiB  # the offloaded layer inputs, in host RAM
    assert plan.longest_seq_len >= 80_000
    assert any("Activation offloading" in r for r in plan.reasons)


def test_the_costly_parts_stay_off_when_the_length_fits_without_them():
    info = models.resolve("llama-3.1-8b-instruct")
    plan = planner.fit(info, 24 * GiB, fixed={**LLAMA_80K, "train.seq_len": 4096})
    assert plan.fits and not plan.settings.tiled_mlp and not plan.settings.offload
    assert plan.settings.tiled_head  # the tiled head costs no memory and little time: always on
    assert plan.longest_seq_len > 4096


def test_host_ram_bounds_offloading():
    info = models.resolve("llama-3.1-8b-instruct")
    fixed = {**LLAMA_80K, "train.seq_len": 80_000}
    plan = planner.fit(info, 24 * GiB, fixed=fixed, host_limit=8 * GiB)
    assert not plan.fits or plan.host_offload <= 8 * GiB
    roomy = planner.fit(info, 24 * GiB, fixed=fixed, host_limit=64 * GiB)
    assert roomy.fits and roomy.host_budget == 64 * GiB


def test_the_tiled_head_replaces_the_logits_term():
    info = models.resolve("llama-3.1-8b-instruct")
    base = Settings(quant_mode="4bit", rank=32, micro_batch=1, seq_len=8192, compute_dtype="bfloat16")
    full = memory.estimate(info, base.replace(tiled_head=False))
    tiled = memory.estimate(info, base)
    assert full.components["logits_and_loss"] > 10 * GiB  # the 11.7 GiB at 8k: the fp32 logits and kin
    assert "logits_and_loss" not in tiled.components
    assert tiled.device_total < full.device_total - 8 * GiB


def test_the_oom_ladder_tries_the_long_sequence_parts_before_truncating():
    r = Recipe()
    r.train.micro_batch, r.train.grad_ckpt, r.train.tiled_head, r.train.seq_len = 1, True, False, 4096
    words = []
    while (change := recovery.next_change(r, p95=1024, device="cuda")) is not None:
        words.append(next(iter(change.fields)))
    assert words[:4] == ["train.tiled_head", "train.tiled_mlp", "train.offload_activations", "train.seq_len"]


def test_liger_kernels_are_chosen_only_where_they_run():
    from studio import kernels

    assert kernels.resolve("auto", "llama", "cpu") == ("torch", "")  # Triton: NVIDIA GPUs only
    chosen, why = kernels.resolve("liger", "llama", "cpu")
    assert chosen == "torch" and "NVIDIA GPUs only" in why
    chosen, why = kernels.resolve("liger", "phi", "cuda")
    assert chosen == "torch" and "does not patch the phi family" in why
    if not kernels.liger_installed():  # this machine: the extra is not installed
        chosen, why = kernels.resolve("liger", "llama", "cuda")
        assert chosen == "torch" and "lora-studio[liger]" in why
        assert planner.kernels_for(models.resolve("llama-3.1-8b-instruct"), "cuda") == "torch"


def test_liger_kernels_keep_less_per_layer():
    info = models.resolve("llama-3.1-8b-instruct")
    s = Settings(quant_mode="4bit", rank=32, micro_batch=1, seq_len=4096, compute_dtype="bfloat16")
    torch_layer = memory.layer_bytes_per_token(info, s.replace(kernels="torch"), 0.0)[0]
    liger_layer = memory.layer_bytes_per_token(info, s.replace(kernels="liger"), 0.0)[0]
    # per token: the two norms keep bf16 inputs (2 x 2h less) and the SwiGLU no activation (one a*I less)
    assert torch_layer - liger_layer == 2 * (4 - 2) * info.hidden + 2 * info.intermediate
    # the CPU never runs them, whatever the setting says
    assert memory.layer_bytes_per_token(info, s.replace(kernels="liger"), 0.0, device="cpu") == \
        memory.layer_bytes_per_token(info, s.replace(kernels="torch"), 0.0, device="cpu")
