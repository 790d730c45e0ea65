"""Text training of a multimodal checkpoint (issue 28): the language model alone, the adapter back on the whole."""
from __future__ import annotations

import json

import pytest
import tiny

from studio import multimodal
from studio.errors import LoadError


@pytest.fixture(scope="module", params=["qwen3_5", "gemma3"])
def checkpoint(request, tmp_path_factory):
    return tiny.make_multimodal(tmp_path_factory.mktemp(request.param), request.param)


def test_names_map_both_layouts_and_leave_the_towers_out():
    assert multimodal.to_text("model.language_model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    assert multimodal.to_text("language_model.model.norm.weight") == "model.norm.weight"
    assert multimodal.to_text("language_model.lm_head.weight") == "lm_head.weight"
    assert multimodal.to_text("model.visual.blocks.0.attn.qkv.weight") is None
    assert multimodal.to_text("vision_tower.encoder.layers.0.mlp.fc1.weight") is None
    assert multimodal.to_text("multi_modal_projector.mm_soft_emb_norm.weight") is None
    assert multimodal.to_text("model.layers.3.self_attn.q_proj.weight") == "model.layers.3.self_attn.q_proj.weight"
    old = multimodal.layout(["language_model.model.embed_tokens.weight", "vision_tower.x"])
    assert multimodal.to_checkpoint("model.layers.1.mlp.down_proj.weight", old) == "language_model.model.layers.1.mlp.down_proj.weight"
    assert multimodal.to_checkpoint("lm_head.weight", old) == "language_model.lm_head.weight"
    assert multimodal.to_checkpoint("model.norm.weight", None) == "model.norm.weight"


def test_the_language_model_loads_alone_in_4bit_with_the_checkpoints_weights(checkpoint):
    import torch
    from safetensors import safe_open
    from transformers import BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = multimodal.load_causal_lm(checkpoint, dict(dtype=torch.float32, quantization_config=q, device_map={"": "cpu"}))
    assert type(model).__name__.endswith("ForCausalLM")
    names = [n for n, _ in model.named_modules()]
    assert not [n for n in names if "vision" in n or "visual" in n]
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as f:
        key = next(k for k in f.keys() if k.endswith("embed_tokens.weight") and "language_model" in k)
        emb = f.get_tensor(key)
    assert torch.equal(model.get_input_embeddings().weight.float(), emb.float())  # not a fresh random init
    assert "the vision tower is not loaded" in multimodal.training_note(checkpoint)


def test_the_adapter_goes_back_on_the_whole_checkpoint(checkpoint, tmp_path):
    """LoRA on the language model (4-bit, all-linear), merged into the multimodal checkpoint: the language model's
    weights change, the tower's are copied bit for bit, and the export's own logits check passes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import BitsAndBytesConfig

    from studio import runs
    from studio.export import export
    from studio.recipe import Recipe

    recipe = Recipe()
    recipe.model.name_or_path = str(checkpoint)
    run_dir = runs.create(recipe, tmp_path)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = multimodal.load_causal_lm(checkpoint, dict(dtype=torch.float32, quantization_config=q, device_map={"": "cpu"}))
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    model.save_pretrained(str(run_dir / runs.ADAPTER))
    runs.write_state(run_dir, base_model=str(checkpoint), status="finished")

    res = export(run_dir, "merged")
    check = {c["name"]: c for c in res.checks}["merge_logits"]
    assert check["ok"] and check["details"]["adapter_effect"] > 100 * check["details"]["max_abs_diff"]
    base = load_file(str(checkpoint / "model.safetensors"))
    merged = {}
    for shard in res.path.glob("*.safetensors"):
        merged.update(load_file(str(shard)))
    assert set(merged) == set(base)  # the whole checkpoint, under its own names
    towers = [k for k in base if multimodal.to_text(k) is None]
    assert towers and all(torch.equal(merged[k], base[k]) for k in towers)
    changed = [k for k in base if not torch.equal(merged[k], base[k])]
    assert changed and all(multimodal.to_text(k) is not None and "layers." in k for k in changed)
    assert json.loads((res.path / "config.json").read_text())["architectures"][0].endswith("ForConditionalGeneration")


def test_a_language_model_weight_missing_from_the_checkpoint_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tiny.make_multimodal(tmp_path / "m", "gemma3")
    sd = load_file(str(folder / "model.safetensors"))
    gone = next(k for k in sd if k.endswith("layers.2.mlp.up_proj.weight"))
    del sd[gone]
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(LoadError, match="layers.2.mlp.up_proj.weight"):
        multimodal.load_causal_lm(folder, {})
