"""Vision-language models on image + text rows (studio.vision): tiny checkpoints, labels, the collator, a 4-bit
training run through the worker's own entry, the adapter on the base, and chat with an image."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import tiny

from studio import vision

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "yellow": (230, 230, 20)}


@pytest.fixture(scope="module", params=["qwen2_vl", "gemma3"])
def vlm(request, tmp_path_factory) -> Path:
    return tiny.make_vlm(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> Path:
    return tiny.make_vlm(tmp_path_factory.mktemp("qwen2_vl"), "qwen2_vl")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("images")
    return {name: str(tiny.write_image(folder / f"{name}.png", (56, 56), rgb)) for name, rgb in COLOURS.items()}


def example(image: str, question: str = "What colour is this?", answer: str = "Red.") -> dict:
    return {"messages": [{"role": "user", "content": f"<image>{question}"},
                         {"role": "assistant", "content": answer}],
            "images": [image], "image_sizes": [[56, 56]]}


def colour_rows(images: dict[str, str], n: int = 8) -> list[dict]:
    names = sorted(images)
    return [example(images[names[i % len(names)]], answer=f"It is {names[i % len(names)]}.") for i in range(n)]


def test_the_tiny_vlm_loads_with_its_processor_and_reads_an_image(vlm, images):
    import torch
    from transformers import AutoModelForImageTextToText

    assert vision.is_vlm(vlm)
    processor = vision.load_processor(vlm)
    model = AutoModelForImageTextToText.from_pretrained(str(vlm))
    enc = processor(text=[vision.render(processor, vision.part_messages(example(images["red"])["messages"][:1]),
                                        add_generation_prompt=True)],
                    images=[vision.load_image(images["red"])], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[:2] == enc["input_ids"].shape and torch.isfinite(logits).all()


def test_is_vlm_needs_a_vision_config_and_a_processor(tiny_model_dir, tmp_path):
    assert not vision.is_vlm(tiny_model_dir)  # a text model
    assert not vision.is_vlm(tiny.make_multimodal(tmp_path / "mm", "gemma3"))  # a tower, but no processor files


@pytest.mark.parametrize("family, tokens", [("qwen2_vl", 4), ("gemma3", 4)])
def test_labels_cover_the_answer_only_and_never_an_image_token(family, tokens, tmp_path, images):
    folder = tiny.make_vlm(tmp_path / family, family)
    processor = vision.load_processor(folder)
    tok = processor.tokenizer
    row = vision.encode_vision_example(processor, example(images["blue"], answer="It is blue."), 256)
    ids, labels = row.row["input_ids"], row.row["labels"]
    image_id = tok.convert_tokens_to_ids(tiny.VLM_TOKENS[family]["image"])
    # as many image tokens as the processor's own count for this image
    pixels = processor.image_processor(images=[vision.load_image(images["blue"])], return_tensors="pt")
    if family == "qwen2_vl":
        expected = int(pixels["image_grid_thw"][0].prod()) // processor.image_processor.merge_size ** 2
    else:
        expected = processor.image_seq_length
    assert row.image_tokens == ids.count(image_id) == expected == tokens
    assert all(label == -100 for t, label in zip(ids, labels) if t == image_id)
    end = "<|im_end|>" if family == "qwen2_vl" else "<end_of_turn>"
    assert tok.decode([x for x in labels if x != -100]) == "It is blue." + end
    assert len(ids) == len(labels) == len(row.row["attention_mask"])
    # train_on='all': the text carries the loss, the images still do not
    everything = vision.encode_vision_example(processor, example(images["blue"]), 256, train_on="all").row
    trained = [lab for lab in everything["labels"] if lab != -100]
    assert image_id not in trained and all(lab in (t, -100) for t, lab in zip(everything["input_ids"],
                                                                              everything["labels"]))
    assert "What colour is this?" in tok.decode(trained) and "Red." in tok.decode(trained)


def test_a_row_too_long_for_its_image_is_left_out_and_a_long_answer_is_cut(qwen, images):
    processor = vision.load_processor(qwen)
    full = vision.encode_vision_example(processor, example(images["red"], answer="It is red. " * 10), 512)
    image_at = full.row["input_ids"].index(processor.image_token_id)
    with pytest.raises(vision.TooLong):
        vision.encode_vision_example(processor, example(images["red"]), image_at)  # the image's last token is cut
    cut = vision.encode_vision_example(processor, example(images["red"], answer="It is red. " * 10), image_at + 12)
    assert cut.truncated and len(cut.row["input_ids"]) == image_at + 12 and cut.image_tokens == full.image_tokens
    assert cut.row["labels"] == full.row["labels"][:image_at + 12]


def test_markers_must_match_the_images_and_a_missing_image_is_named(qwen, images, tmp_path):
    from studio.data.chat_render import TemplateError

    processor = vision.load_processor(qwen)
    two = example(images["red"])
    two["messages"][0]["content"] = "<image><image>Which?"
    with pytest.raises(TemplateError, match="2 <image> marker"):
        vision.encode_vision_example(processor, two, 256)
    with pytest.raises(vision.VisionError, match="nope.png does not exist"):
        vision.encode_vision_example(processor, example(str(tmp_path / "nope.png")), 256)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(vision.VisionError, match="bad.png is not a PNG, JPEG, WebP, GIF or BMP image"):
        vision.load_image(tmp_path / "bad.png")


def test_images_are_shrunk_to_max_pixels_keeping_their_aspect(tmp_path):
    img = vision.load_image(tiny.write_image(tmp_path / "big.png", (400, 200)), max_pixels=20000)
    assert img.size == (200, 100) and img.mode == "RGB"


def test_the_collator_pads_and_gives_each_family_its_pixels(vlm, images):
    processor = vision.load_processor(vlm)
    rows = [vision.encode_vision_example(processor, example(images[c], answer="x" * n), 256)
            for c, n in (("red", 1), ("green", 9))]
    batch = vision.VisionCollator(processor)([vision.VisionDataset(rows)[i] for i in range(2)])
    width = max(len(r.row["input_ids"]) for r in rows)
    assert tuple(batch["input_ids"].shape) == tuple(batch["labels"].shape) == (2, width)
    short = min(range(2), key=lambda i: len(rows[i].row["input_ids"]))
    pad = width - len(rows[short].row["input_ids"])
    assert pad > 0 and (batch["labels"][short, -pad:] == -100).all() and (batch["attention_mask"][short, -pad:] == 0).all()
    if "image_grid_thw" in batch:  # Qwen2-VL: every image's patch rows one after another
        assert tuple(batch["image_grid_thw"].shape) == (2, 3)
        assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(-1).sum())
    else:  # Gemma 3: one stacked image per row
        assert tuple(batch["pixel_values"].shape) == (2, 3, 32, 32)
        assert tuple(batch["token_type_ids"].shape) == (2, width)


def test_lora_targets_the_language_model_and_the_tower_only_when_asked(vlm):
    import re

    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(vlm))
    names = [n for n, _ in model.named_modules()]
    text = [n for n in names if re.fullmatch(vision.lora_targets(model, ["all-linear"]), n)]
    assert text and all(vision.in_language_model(n) and "language_model" in n for n in text)
    assert not [n for n in text if "lm_head" in n]
    both = [n for n in names if re.fullmatch(vision.lora_targets(model, ["all-linear"], vision_lora=True), n)]
    tower = sorted(set(both) - set(text))
    assert tower and all(vision.in_tower(n) for n in tower)
    assert not [n for n in tower if "merger" in n or "projector" in n]  # the projector is never adapted
    q_only = [n for n in names if re.fullmatch(vision.lora_targets(model, ["q_proj"]), n)]
    assert q_only and all(n.endswith("q_proj") and vision.in_language_model(n) for n in q_only)


# ------------------------------------------------------------------ a training run

def _recipe(model: Path, data: Path, **train):
    from studio.recipe import Recipe

    r = Recipe(name="vision")
    r.model.name_or_path, r.data.path = str(model), str(data)
    r.data.val_fraction = 0.2
    r.data.max_pixels = 56 * 56
    r.lora.rank, r.lora.alpha, r.lora.dropout = 8, 16, 0.0
    r.train.micro_batch, r.train.grad_accum, r.train.seq_len, r.train.lr = 4, 1, 96, 1e-2
    r.train.scheduler = "constant"
    r.train.warmup_ratio, r.train.save_steps, r.train.grad_ckpt = 0.0, 3, False
    for k, v in train.items():
        setattr(r.train, k, v)
    return r


def run_in_process(run_dir: Path, rows: list[dict]) -> tuple[int, list]:
    """The worker's own entry (workers.train._train) in this process, on ``rows`` written where the run's recipe
    reads its data: messages with <image> markers beside an images column, read by studio.data like a user's file."""
    from studio import runs
    from studio.events import Emitter, read_events
    from studio.recipe import Recipe
    from studio.train.callbacks import Control
    from workers.train import _train

    data = Path(Recipe.load(run_dir / "recipe.json").data.path)
    data.write_text("".join(json.dumps({"messages": r["messages"], "images": r["images"]}) + "\n" for r in rows))
    emitter = Emitter(run=run_dir.name, log_path=run_dir / runs.EVENTS, stream=io.BytesIO())
    code = _train(run_dir, emitter, Control(), False)
    return code, list(read_events(run_dir / runs.EVENTS))


def test_a_4bit_run_on_image_rows_learns_and_adapts_the_language_model_only(trained, qwen, images):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    from studio import runs
    from studio.events import read_events

    run_dir = trained  # 10 steps on 10 image rows (the fixture below; chat reuses the run)
    events = list(read_events(run_dir / runs.EVENTS))
    losses = [e.data["loss"] for e in events if e.type == "metric" and "loss" in e.data]
    assert len(losses) == 10 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.4, losses
    print("vision run losses", losses)
    logs = " ".join(e.data.get("message", "") for e in events if e.type == "log")
    assert "vision-language model: the whole model loads, the language model in 4-bit NF4" in logs
    assert "the vision tower is frozen" in logs
    state = runs.read_state(run_dir)
    assert state["status"] == "finished" and state["eval"]["val_loss_adapter"] < state["eval"]["val_loss_base"] - 0.2
    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert weights and all("language_model" in k and vision.in_language_model(k) for k in weights)
    assert any("checkpoint" in e.type for e in events)
    base = AutoModelForImageTextToText.from_pretrained(str(qwen), dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    processor = vision.load_processor(qwen)
    row = vision.encode_vision_example(processor, colour_rows(images, 1)[0], 96)
    batch = vision.VisionCollator(processor)([vision.VisionDataset([row])[0]])
    batch.pop("labels")
    with torch.no_grad():
        after = tuned(**batch).logits
        with tuned.disable_adapter():
            before = tuned(**batch).logits
    assert (after - before).abs().max() > 1e-2


def test_vision_lora_adapts_the_tower_too(qwen, images, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from studio import runs

    run_dir = runs.create(_recipe(qwen, tmp_path / "rows.jsonl", max_steps=1, vision_lora=True), tmp_path)
    code, events = run_in_process(run_dir, colour_rows(images, 5))
    assert code == 0, [e.data for e in events if e.type == "error"]
    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert any(vision.in_tower(k) for k in weights) and any("language_model" in k for k in weights)


@pytest.mark.parametrize("case, words", [
    ("text-model", "4 row.s. carry images, and the model .*tiny-llama.* takes text only. Pick a vision model"),
    ("dpo", "train.objective 'dpo' trains on text only"),
    ("packing", "train.packing"),
])
def test_image_rows_where_they_cannot_train_are_refused_by_name(case, words, qwen, tiny_model_dir, images, tmp_path,
                                                              monkeypatch):
    from studio import runs

    model = tiny_model_dir if case == "text-model" else qwen
    extra = {"objective": "dpo"} if case == "dpo" else {"packing": True} if case == "packing" else {}
    run_dir = runs.create(_recipe(model, tmp_path / "rows.jsonl", max_steps=1, **extra), tmp_path)
    code, events = run_in_process(run_dir, colour_rows(images, 4))
    error = next(e.data for e in events if e.type == "error")
    assert code != 0 and error["kind"] == "data"
    assert str(tmp_path / "rows.jsonl") in error["message"]
    import re

    assert re.search(words, error["message"]), error["message"]


# ------------------------------------------------------------------ chat with an image

@pytest.fixture(scope="module")
def trained(qwen, images, tmp_path_factory) -> Path:
    from studio import runs

    folder = tmp_path_factory.mktemp("vision-runs")
    run_dir = runs.create(_recipe(qwen, folder / "rows.jsonl", max_steps=10), folder)
    code, events = run_in_process(run_dir, colour_rows(images, 10))
    assert code == 0, [e.data for e in events if e.type == "error"]
    return run_dir


def chat(*args, timeout=180):
    import subprocess
    import sys

    from studio.procs import worker_env

    cli = [sys.executable, "-c", "import sys; from studio.cli import main; sys.exit(main())"]
    return subprocess.run([*cli, *map(str, args)], env=worker_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_chat_answers_about_an_image_with_the_adapter_and_the_base(trained, images):
    ask = ("--image", images["green"], "--prompt", "What colour is this?", "--max-new-tokens", "5", "--json")
    tuned = chat("chat", trained, *ask)
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    answer = json.loads(tuned.stdout)
    assert answer["tokens"] >= 1 and isinstance(answer["text"], str)
    assert answer["text"].startswith("It is"), answer  # what the image rows taught it
    base = chat("chat", trained, "--base", *ask)
    assert base.returncode == 0, base.stderr[-3000:]
    assert json.loads(base.stdout)["text"] != answer["text"]
    again = chat("chat", trained, *ask)
    assert json.loads(again.stdout)["text"] == answer["text"]  # greedy: the same answer


def test_chat_refuses_an_image_it_cannot_read_or_a_text_model(tiny_model_dir, qwen, images, tmp_path):
    missing = chat("chat", qwen, "--image", tmp_path / "gone.png", "--prompt", "Hi")
    assert missing.returncode == 2 and "gone.png does not exist" in missing.stderr
    text_only = chat("chat", tiny_model_dir, "--image", images["red"], "--prompt", "Hi", "--max-new-tokens", "2")
    assert text_only.returncode == 2 and "takes text only, so it cannot read images" in text_only.stderr, \
        text_only.stderr[-2000:]
    no_prompt = chat("chat", qwen, "--image", images["red"])
    assert no_prompt.returncode == 2 and "--prompt" in no_prompt.stderr


@pytest.mark.parametrize("family", ["gemma3", "llava"])
def test_a_gemma3_or_llava_run_on_image_rows_trains_and_saves(family, images, tmp_path):
    from safetensors.torch import load_file

    from studio import runs

    model = tiny.make_vlm(tmp_path / family, family)
    run_dir = runs.create(_recipe(model, tmp_path / "rows.jsonl", max_steps=6), tmp_path)
    code, events = run_in_process(run_dir, colour_rows(images, 10))
    assert code == 0, [e.data for e in events if e.type == "error"]
    losses = [e.data["loss"] for e in events if e.type == "metric" and "loss" in e.data]
    print(family, "losses", losses)
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert weights and all(vision.in_language_model(k) and "language_model" in k for k in weights)


def test_an_image_whose_header_claims_too_many_pixels_is_refused_before_decoding(tmp_path):
    """chat --image and the Playground read what the user picks: the import's bomb check applies there too."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 30000, 30000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (tmp_path / "bomb.png").write_bytes(bytes(data))
    with pytest.raises(vision.VisionError, match="bomb.png is too large"):
        vision.load_image(tmp_path / "bomb.png")
    img = vision.load_image(tiny.write_image(tmp_path / "wide.png", (400, 100)), max_pixels=10_000)
    assert img.size == (200, 50)  # image_tokens.bounded: what the planner counts


# ------------------------------------------------------------------ prompt files and held-out answers with images

def test_prompt_files_read_images_as_the_data_import_does(images, tmp_path):
    """A prompt row's images: content parts or an images column beside <image> markers, paths relative to the
    prompt file, each image checked; the row errors are the import's, named by file and line."""
    import shutil

    from studio.scoring import PromptFileError, load_prompts, row_images

    shutil.copy(images["red"], tmp_path / "red.png")
    rows = [{"messages": [{"role": "user", "content": [{"type": "image", "image": "red.png"},
                                                       {"type": "text", "text": "What colour is this?"}]}],
             "pattern": "red"},
            {"messages": [{"role": "user", "content": "<image>What colour is this?"},
                          {"role": "assistant", "content": "It is red."}], "images": ["red.png"]},
            {"messages": [{"role": "user", "content": "No picture here."}]}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second, third = load_prompts(path)
    red = str(tmp_path / "red.png")
    assert first["messages"] == [{"role": "user", "content": "<image>What colour is this?", "images": [red]}]
    assert first["pattern"] == "red" and row_images(first) == [red]
    assert second["messages"] == first["messages"] and second["reference"] == "It is red."
    assert row_images(third) == [] and third["messages"] == [{"role": "user", "content": "No picture here."}]
    for row, words in (({"messages": [{"role": "user", "content": "<image>Hi"}], "images": ["gone.png"]},
                        r"prompts.jsonl:1: image file .*gone.png does not exist"),
                       ({"messages": [{"role": "user", "content": "<image><image>Hi"}], "images": ["red.png"]},
                        r"prompts.jsonl:1: the text holds 2 <image> marker\(s\) but column 'images' lists 1"),
                       ({"messages": [{"role": "user", "content": "Hi <image>"}]},
                        r"prompts.jsonl:1: the text holds 1 <image> marker")):
        path.write_text(json.dumps(row) + "\n")
        with pytest.raises(PromptFileError, match=words):
            load_prompts(path)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    path.write_text(json.dumps({"messages": [{"role": "user", "content": [{"type": "image", "image": "bad.png"}]}]})
                    + "\n")
    with pytest.raises(PromptFileError, match="prompts.jsonl:1: .*bad.png"):
        load_prompts(path)


def test_a_vision_run_answers_its_validation_prompts_with_their_images(trained):
    """Part of every finished run: eval.json's held-out answers, base and adapter, of the validation rows with their
    images (the Train page's Evaluation card reads them)."""
    from studio import evalreport

    report = evalreport.read(trained)
    held = report["heldout"]
    assert held["source"] == "validation examples" and held["total"] >= 1, held
    for item in held["items"]:
        assert item["prompt"] == "<image>What colour is this?"
        assert len(item["images"]) == 1 and Path(item["images"][0]).is_file()
        assert isinstance(item["base"], str) and item["adapter"].startswith("It is"), item
        assert item["base"] != item["adapter"]
    assert "(image(s): " in evalreport.format_text(report)
    events = [json.loads(line) for line in (trained / "events.jsonl").read_text().splitlines()]
    assert not any("scored by the validation loss, not answered" in str(e["data"].get("message")) for e in events)


def test_compare_and_eval_answer_a_prompt_file_with_images(trained, images, tmp_path):
    import shutil

    for name in ("green", "blue"):
        shutil.copy(images[name], tmp_path / f"{name}.png")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"messages": [{"role": "user", "content": [{"type": "image", "image": "green.png"},
                                                              {"type": "text", "text": "What colour is this?"}]}],
                    "pattern": "^It is"}) + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "<image>What colour is this?"}],
                      "images": ["blue.png"]}) + "\n")
    compared = chat("compare", "base", trained, "--prompts", prompts, "--max-new-tokens", "6", "--json")
    assert compared.returncode == 0, compared.stderr[-3000:]
    out = json.loads(compared.stdout)
    assert [it["images"] for it in out["items"]] == [[str(tmp_path / "green.png")], [str(tmp_path / "blue.png")]]
    assert all(it["b"]["text"].startswith("It is") for it in out["items"]), out["items"]
    assert out["score"]["b"] == 1 and out["score"]["total"] == 1
    evaluated = chat("eval", trained, "--prompts", prompts, "--json", timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(evaluated.stdout)
    held = report["heldout"]
    assert held["source"] == str(prompts) and held["matched"]["adapter"] == 1
    assert held["items"][1]["images"] == [str(tmp_path / "blue.png")]
    assert report["val_loss"]["adapter"] < report["val_loss"]["base"]  # with the images, as training measured


@pytest.mark.parametrize("family", ["qwen2_vl", "gemma3", "llava"])
def test_the_planners_image_tokens_are_the_ones_training_feeds_the_model(family, tmp_path):
    """studio.image_tokens (what data inspect and the planner count, torch-free) against the image tokens the
    processor really puts in a training row, for images of several sizes and the studio's max_pixels bound."""
    from studio.image_tokens import ImageTokens

    folder = tiny.make_vlm(tmp_path / family, family, max_pixels=28 * 28 * 16)
    processor = vision.load_processor(folder, max_pixels=28 * 28 * 9)
    rule = ImageTokens.from_folder(folder, max_pixels=28 * 28 * 9)
    counts = []
    for w, h in ((56, 56), (200, 60), (31, 300), (640, 480), (29, 29)):
        image = str(tiny.write_image(tmp_path / f"{w}x{h}.png", (w, h)))
        row = vision.encode_vision_example(processor, example(image), 512, max_pixels=28 * 28 * 9)
        assert row.image_tokens == rule.count(w, h), (w, h)
        counts.append(row.image_tokens)
    assert len(set(counts)) > 1 if family == "qwen2_vl" else len(set(counts)) == 1, counts


def test_a_vision_runs_held_out_file_with_images_is_answered_before_and_after(qwen, images, tmp_path):
    """data.heldout rows carrying images: answered with them before and after training (the score events and
    eval.json's items), the base's answers cached with the images' bytes in the key."""
    from studio import evalreport, runs

    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image", "image": images[name]}, {"type": "text", "text": "What colour is this?"}]}],
        "pattern": "^It is"}) + "\n" for name in ("red", "blue")))
    recipe = _recipe(qwen, tmp_path / "rows.jsonl", max_steps=4)
    recipe.data.heldout = str(heldout)
    run_dir = runs.create(recipe, tmp_path)
    code, events = run_in_process(run_dir, colour_rows(images, 10))
    assert code == 0, [e.data for e in events if e.type == "error"]
    scores = {k: e.data[k] for e in events if e.type == "metric" for k in ("heldout_score_before",
                                                                          "heldout_score_after") if k in e.data}
    assert set(scores) == {"heldout_score_before", "heldout_score_after"}, scores
    held = evalreport.read(run_dir)["heldout"]
    assert held["source"] == str(heldout) and held["scored"] and held["total"] == 2
    assert [it["images"] for it in held["items"]] == [[images["red"]], [images["blue"]]]
    assert all(isinstance(it["base"], str) and isinstance(it["adapter"], str) for it in held["items"])


def test_a_fixed_size_family_is_never_shrunk_below_its_own_input_size(tmp_path):
    """Gemma 3 and LLaVA make the same tokens from any image: data.max_pixels below their input size would only
    lose detail, so their bound is their size; Qwen2-VL's tokens grow with the pixels, so it keeps the setting."""
    gemma = vision.load_processor(tiny.make_vlm(tmp_path / "g", "gemma3"), max_pixels=28 * 28)
    assert vision.pixel_bound(gemma, 28 * 28) == 32 * 32 == vision.processor_max_pixels(gemma)
    llava = vision.load_processor(tiny.make_vlm(tmp_path / "l", "llava"), max_pixels=28 * 28)
    assert vision.pixel_bound(llava, 28 * 28) == 32 * 32
    qwen = vision.load_processor(tiny.make_vlm(tmp_path / "q", "qwen2_vl"), max_pixels=28 * 28 * 2)
    assert vision.pixel_bound(qwen, 28 * 28 * 2) == 28 * 28 * 2 == vision.processor_max_pixels(qwen)


def test_a_rows_tools_schema_reaches_the_processors_template(qwen, images):
    """Tools beside an image row are rendered as the text path renders them, not dropped."""
    processor = vision.load_processor(qwen)
    processor.chat_template = "{% if tools %}TOOLS {{ tools | length }}\n{% endif %}" + processor.chat_template
    row = example(images["red"])
    with_tools = vision.encode_vision_example(processor, {**row, "tools": [{"type": "function", "function": {
        "name": "colour", "parameters": {"type": "object", "properties": {}}}}]}, 256)
    plain = vision.encode_vision_example(processor, row, 256)
    text = processor.tokenizer.decode(with_tools.row["input_ids"])
    assert text.startswith("TOOLS 1") and len(with_tools.row["input_ids"]) > len(plain.row["input_ids"])
    trained = [t for t, lab in zip(with_tools.row["input_ids"], with_tools.row["labels"]) if lab != -100]
    assert processor.tokenizer.decode(trained).startswith("Red.")
