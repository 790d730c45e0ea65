"""Each family of issue 28 trains in 4-bit on the CPU and its adapter loads on the 16-bit base (the GGUF side of
each family is in tests/test_gguf_*.py; bench/gguf_families.py runs all of it through the CLI and llama.cpp)."""
from __future__ import annotations

import pytest
import tiny
from test_gguf_gemma import make_gemma
from test_gguf_gpt_oss import make_gpt_oss
from test_gguf_phi import make_case
from test_gguf_qwen35 import make_qwen35

BUILD = {
    "gemma2": lambda out: make_gemma(out, "gemma2"),
    "gemma3 (multimodal)": lambda out: make_gemma(out, "gemma3"),
    "phi": lambda out: make_case(out, "phi"),
    "phi3_longrope": lambda out: make_case(out, "phi3_longrope"),
    "smollm3": lambda out: make_case(out, "smollm3"),
    "gpt_oss": lambda out: make_gpt_oss(out, mxfp4=False),
    "qwen3_5 (multimodal)": lambda out: make_qwen35(out, multimodal=True),
    "qwen3_5_moe_text": lambda out: make_qwen35(out, moe=True),
    "gemma4 (multimodal)": lambda out: tiny.make_multimodal(out, "gemma4"),
}


@pytest.mark.parametrize("family", list(BUILD))
def test_two_4bit_steps_then_the_adapter_on_the_16bit_base(family, tmp_path):
    import torch
    from peft import PeftModel

    from studio import multimodal
    from studio.recipe import Recipe
    from studio.train.loading import load_model

    folder = BUILD[family](tmp_path / "model")
    recipe = Recipe()
    recipe.model.name_or_path = str(folder)
    recipe.lora.rank, recipe.lora.alpha, recipe.lora.dropout = 4, 8, 0.0
    recipe.train.grad_ckpt = False
    model = load_model(folder, recipe, "cpu")  # 4-bit NF4 base, LoRA all-linear, as a run loads it
    assert any("4bit" in type(m).__name__ for m in model.modules())
    ids = torch.randint(3, 300, (2, 24))
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    for _ in range(2):
        loss = model(input_ids=ids, labels=ids).loss
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable))  # the adapter learned
    model.save_pretrained(str(tmp_path / "adapter"))

    base = multimodal.load_causal_lm(folder, dict(dtype=torch.float32))  # the 16-bit (here 32-bit) base
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))(input_ids=ids).logits
    assert torch.isfinite(adapted).all() and not torch.allclose(plain, adapted)
