"""Exports of a run trained on image rows (studio.vision): the adapter, the merged whole vision-language model
(tower, projector and processor files beside the merged language model), and GGUF + the vision projector file
(mmproj) llama.cpp's multimodal tools load. Tiny 4-bit runs in this process (tests/test_vision.py's helpers)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny
from test_vision import COLOURS, _recipe, colour_rows, run_in_process

from studio import vision

PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "chat_template.jinja", "tokenizer.json",
                   "tokenizer_config.json")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("images")
    return {name: str(tiny.write_image(folder / f"{name}.png", (56, 56), rgb)) for name, rgb in COLOURS.items()}


def _trained(folder: Path, family: str, images: dict[str, str], vision_lora: bool) -> Path:
    from studio import runs

    model = tiny.make_vlm(folder / family, family)
    if family == "gemma3":  # attention scaled by the head size, as llama.cpp's gemma3 reads a small model
        config = json.loads((model / "config.json").read_text())
        config["text_config"]["query_pre_attn_scalar"] = config["text_config"]["head_dim"]
        (model / "config.json").write_text(json.dumps(config))
    run_dir = runs.create(_recipe(model, folder / "rows.jsonl", max_steps=4, vision_lora=vision_lora), folder)
    code, events = run_in_process(run_dir, colour_rows(images, 8))
    assert code == 0, [e.data for e in events if e.type == "error"]
    return run_dir


# (family, train.vision_lora): the tower's LoRA merged too on Qwen2-VL
CASES = [("qwen2_vl", True), ("gemma3", False)]


@pytest.fixture(scope="module", params=CASES, ids=[f"{f}{'-vision_lora' if v else ''}" for f, v in CASES])
def trained(request, images, tmp_path_factory) -> Path:
    family, vision_lora = request.param
    return _trained(tmp_path_factory.mktemp(family), family, images, vision_lora)


def _base(run_dir: Path) -> Path:
    from studio import runs

    return Path(runs.read_state(run_dir)["base_model"])


def _image_batch(processor, image: str) -> dict:
    text = vision.render(processor, vision.part_messages([{"role": "user", "content": "<image>What colour is this?"}]),
                         add_generation_prompt=True)
    enc = processor(text=[text], images=[vision.load_image(image, 56 * 56)], return_tensors="pt",
                    add_special_tokens=False)
    return dict(enc)


def test_the_merged_vlm_is_the_whole_checkpoint_and_answers_as_base_plus_adapter(trained, images):
    """Merged folder: tower, projector, processor files; AutoModelForImageTextToText + the processor load it, and
    its logits on an image prompt equal the unquantised float32 base + adapter (peft) within 1e-4."""
    import torch
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    from studio.export import export

    result = export(trained, "merged")
    out = result.path
    check = next(c for c in result.checks if c["name"] == "merge_logits")
    assert check["ok"] and check["details"]["whole_vlm"] and check["details"]["image_prompts"] == 2, check
    assert check["details"]["max_abs_diff"] < 1e-4 < check["details"]["adapter_effect"], check
    assert all((out / name).is_file() for name in PROCESSOR_FILES)
    assert vision.is_vlm(out)

    base_dir = _base(trained)
    merged = AutoModelForImageTextToText.from_pretrained(str(out), dtype=torch.float32)
    base = AutoModelForImageTextToText.from_pretrained(str(base_dir), dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, str(trained / "adapter"))
    processor = vision.load_processor(out)  # AutoProcessor (images only without torchvision)
    batch = _image_batch(processor, images["green"])
    with torch.no_grad():
        got, want = merged(**batch).logits, tuned(**batch).logits
        with tuned.disable_adapter():
            before = tuned(**batch).logits
    diff, effect = float((got - want).abs().max()), float((want - before).abs().max())
    print(f"merged vs base+adapter on an image prompt: max diff {diff:.2e}, adapter effect {effect:.2e}")
    assert diff < 1e-4 and effect > 1e-2

    def tensors(folder: Path) -> dict:
        found = {}
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), "pt") as h:
                found.update({k: h.get_tensor(k) for k in h.keys()})
        return found

    before_w, after_w = tensors(base_dir), tensors(out)
    assert set(before_w) == set(after_w)  # the whole checkpoint, under its own names
    changed = {k for k in before_w if not torch.equal(before_w[k], after_w[k])}
    vision_lora = any(vision.in_tower(k) for k in json.loads((trained / "adapter" / "adapter_config.json")
                                                              .read_text())["target_modules"].replace("\\", "").split("|"))
    assert any("layers" in k and not vision.in_tower(k) for k in changed)
    assert any(vision.in_tower(k) for k in changed) == vision_lora, sorted(changed)[:5]
    # the projector is never adapted on its own (Qwen2-VL's merger sits inside its tower: vision_lora reaches it)
    assert vision_lora or not any("merger" in k or "multi_modal_projector" in k for k in changed)


def test_the_adapter_export_of_an_image_run(trained):
    from studio.export import export

    result = export(trained, "adapter")
    check = next(c for c in result.checks if c["name"] == "adapter_files")
    assert check["ok"], check
    assert (result.path / "adapter_model.safetensors").is_file()


def test_gguf_of_an_image_run_is_the_language_model_and_the_vision_projector(trained):
    """model-Q.gguf (the merged language model, llama.cpp's text architecture) + mmproj-f16.gguf (clip: the tower
    and projector, merged), each read back; in llama-mtmd-cli when LORA_STUDIO_LLAMA_CPP is set."""
    import os

    from studio.export import export
    from studio.export.gguf_readback import gguf_reader

    result = export(trained, "ollama" if "qwen" in str(_base(trained)) else "gguf")
    checks = {c["name"]: c for c in result.checks}
    names = {f["name"] for f in result.files}
    assert {"model-q8_0.gguf", "mmproj-f16.gguf"} <= names, names
    assert checks["mmproj"]["ok"], checks["mmproj"]
    assert checks["gguf_weights"]["ok"] and checks["gguf_vocab"]["ok"]
    projector = gguf_reader(result.path / "mmproj-f16.gguf")
    text = gguf_reader(result.path / "model-q8_0.gguf")
    family = json.loads((_base(trained) / "config.json").read_text())["model_type"]
    want = {"qwen2_vl": ("qwen2vl_merger", "qwen2vl"), "gemma3": ("gemma3", "gemma3")}[family]
    assert (projector.fields["clip.projector_type"], text.fields["general.architecture"]) == want
    assert projector.fields["general.architecture"] == "clip" and projector.fields["general.type"] == "mmproj"
    assert projector.fields["clip.vision.projection_dim"] == 64  # the language model's width
    tensors = {t.name for t in projector.tensors}
    assert {"v.patch_embd.weight", "v.blk.0.attn_q.weight", "v.blk.0.ffn_down.weight"} <= tensors
    assert not any(t.name.startswith("v.") for t in text.tensors)  # the tower is the projector file's only
    if family == "qwen2_vl":
        assert list(text.fields["qwen2vl.rope.dimension_sections"]) == [2, 3, 3, 0]
        assert {"v.patch_embd.weight.1", "mm.0.weight", "mm.2.weight"} <= tensors
        modelfile = (result.path / "Modelfile").read_text()
        assert modelfile.startswith("FROM ./model-q8_0.gguf\nFROM ./mmproj-f16.gguf\n"), modelfile[:80]
    else:
        assert {"mm.input_projection.weight", "mm.soft_emb_norm.weight"} <= tensors
        assert projector.fields["clip.vision.projector.scale_factor"] == 2  # 4x4 patches pooled to 2x2 tokens
    mtmd = checks["mtmd"]
    print(mtmd["summary"])
    if not os.environ.get("LORA_STUDIO_LLAMA_CPP"):
        assert mtmd["ok"] is None and "llama-mtmd-cli is not installed" in mtmd["summary"]
    else:
        assert mtmd["ok"], mtmd
        assert mtmd["details"]["image_tokens"] > 0
        if family == "gemma3":  # a fixed pooled grid: the same count as the processor's
            assert mtmd["details"]["image_tokens"] == mtmd["details"]["processor_image_tokens"] == 4


def test_a_family_without_a_llama_cpp_projector_is_refused_in_words():
    from studio.export import mmproj
    from studio.export.errors import UnsupportedModel

    with pytest.raises(UnsupportedModel, match="idefics3 is not one of them"):
        mmproj.plan_mmproj({"model_type": "idefics3", "vision_config": {}}, [])
