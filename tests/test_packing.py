"""Packing for SFT: the same loss as padded micro-batches, no padding, attention kept within each example."""
import pytest
from test_train_worker import run_worker, tiny_recipe

from studio import runs
from studio.events import read_events
from studio.recipe import Recipe


def _batch_losses(model_dir, data, packed: bool, micro_batch: int = 4):
    import torch
    from transformers import DataCollatorForSeq2Seq

    from studio.train import dataset, loading, packing

    r = tiny_recipe(model_dir, data)
    r.quant.mode, r.data.val_fraction = "none", 0.0
    tok = loading.load_tokenizer(model_dir, r)
    model = loading.load_model(model_dir, r, "cpu").eval()
    rows = [dataset.build(tok, r).train[i] for i in range(8)]
    collate = packing.collator() if packed else DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    losses, pads = [], 0
    for i in range(0, len(rows), micro_batch):
        batch = collate([dict(x) for x in rows[i:i + micro_batch]], return_tensors="pt")
        pads += int((batch["attention_mask"] == 0).sum()) if "attention_mask" in batch else 0
        with torch.no_grad():
            losses.append(float(model(**batch, use_cache=False).loss))
    return losses, pads, batch


def test_packed_micro_batches_give_the_padded_loss_without_padding(tiny_model_dir, chat_jsonl):
    padded, pads, batch = _batch_losses(tiny_model_dir, chat_jsonl, packed=False)
    packed, no_pads, pbatch = _batch_losses(tiny_model_dir, chat_jsonl, packed=True)
    assert packed == pytest.approx(padded, abs=1e-4)
    assert pads > 0 and no_pads == 0 and pbatch["input_ids"].shape[0] == 1  # one sequence per micro-batch
    assert pbatch["input_ids"].shape[1] < batch["input_ids"].numel()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_attention_stays_within_each_packed_example(tiny_model_dir, chat_jsonl, attn):
    from studio.train import loading, packing

    r = tiny_recipe(tiny_model_dir, chat_jsonl, attn=attn)
    r.quant.mode = "none"
    model = loading.load_model(tiny_model_dir, r, "cpu")
    assert packing.leak(model, 300) < 1e-5
    packing.check(model, attn, 300)


def test_a_model_that_leaks_across_packed_examples_is_refused(tiny_model_dir, chat_jsonl, monkeypatch):
    from studio.train import loading, packing

    r = tiny_recipe(tiny_model_dir, chat_jsonl)
    r.quant.mode = "none"
    model = loading.load_model(tiny_model_dir, r, "cpu")
    import transformers.masking_utils as mu

    monkeypatch.setattr(mu, "find_packed_sequence_indices", lambda position_ids: None)  # attention as one sequence
    with pytest.raises(loading.LoadError, match="--no-packing"):
        packing.check(model, "sdpa", 300)


def test_a_packed_run_logs_the_same_first_loss_as_an_unpacked_one(tiny_model_dir, chat_jsonl, tmp_path):
    first = {}
    for packed in (False, True):
        recipe = tiny_recipe(tiny_model_dir, chat_jsonl, max_steps=2, packing=packed)
        recipe.quant.mode, recipe.lora.dropout = "none", 0.0
        run_dir = runs.create(recipe, tmp_path / str(packed))
        proc = run_worker(run_dir)
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        events = read_events(run_dir / runs.EVENTS)
        first[packed] = next(e.data["loss"] for e in events if e.type == "metric" and "loss" in e.data)
    assert first[True] == pytest.approx(first[False], abs=1e-4)


def test_packing_is_for_sft_only():
    r = Recipe()
    r.model.name_or_path, r.data.path, r.train.packing, r.train.objective = "demo", "x.jsonl", True, "orpo"
    assert any(p.field == "train.packing" for p in r.validate())


def test_data_inspect_shows_the_packed_micro_batch_and_the_padding_it_removes(tiny_model_dir, chat_jsonl):
    from studio.data import inspect
    from studio.data.tokens import PACK_BOUNDARY

    report = inspect(str(chat_jsonl), tokenizer=str(tiny_model_dir), seq_len=64, packing=3)
    assert report.packing["micro_batch"] == 3 and report.packing["padding_packed"] == 0
    assert report.packing["padding_unpacked"] > 0
    view = report.mask_view
    assert [t for t, _ in view].count(PACK_BOUNDARY) == 2  # three examples, two boundaries
    starts = [0] + [i + 1 for i, (t, _) in enumerate(view) if t == PACK_BOUNDARY]
    assert not any(view[i][1] for i in starts)  # no example's first token carries the loss
    assert report.to_dict()["packing"] == report.packing
