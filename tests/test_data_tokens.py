"""Loss masks checked token by token against the chat template; token statistics; template failures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny

from studio.data import inspect, load_examples
from studio.data.template import IGNORE, encode_example, encode_with_offsets
from studio.data.tokens import mask_view

FIX = Path(__file__).parent / "fixtures" / "data"
END = "<|im_end|>"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    tiny.make_tokenizer(out)
    return out


def _tok(tok_dir: Path, template: str | None = tiny.CHATML):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    tok.chat_template = template
    return tok


def _runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    """Maximal runs of consecutive trained tokens."""
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != IGNORE:
            assert lab == i
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


@pytest.mark.parametrize("row", [0, 2])  # with a system turn; two assistant turns
def test_loss_mask_token_by_token(tok_dir, row):
    tok = _tok(tok_dir)
    example = load_examples(FIX / "messages.jsonl")[0][row]
    text = tok.apply_chat_template(example["messages"], tokenize=False)
    enc = encode_example(tok, example, seq_len=4096)
    assert enc["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    # Each trained run decodes to exactly one assistant reply plus its end marker, in order.
    replies = [m["content"] + END for m in example["messages"] if m["role"] == "assistant"]
    assert [tok.decode(r) for r in _runs(enc["input_ids"], enc["labels"])] == replies
    # Every other token is the template's scaffolding or a system/user turn.
    untrained = tok.decode([i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab == IGNORE])
    assert untrained == "".join(_strip_once(text, replies))
    assert enc["attention_mask"] == [1] * len(enc["input_ids"]) and not enc["truncated"]


def _strip_once(text: str, replies: list[str]) -> list[str]:
    parts, pos = [], 0
    for reply in replies:
        at = text.index(reply, pos)
        parts.append(text[pos:at])
        pos = at + len(reply)
    return parts + [text[pos:]]


def test_template_with_a_default_system_prompt_keeps_it_untrained(tok_dir):
    template = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}"
                + tiny.CHATML)
    tok = _tok(tok_dir, template)
    example = {"messages": [{"role": "user", "content": "Two plus two?"}, {"role": "assistant", "content": "Four."}]}
    enc = encode_example(tok, example, seq_len=4096)
    assert [tok.decode(r) for r in _runs(enc["input_ids"], enc["labels"])] == ["Four." + END]


def test_train_on_all_text_examples_and_truncation(tok_dir):
    tok = _tok(tok_dir)
    example = load_examples(FIX / "messages.jsonl")[0][0]
    full = encode_example(tok, example, seq_len=4096, train_on="all")
    assert full["labels"] == full["input_ids"]
    short = encode_example(tok, example, seq_len=10)
    assert short["truncated"] and len(short["input_ids"]) == len(short["labels"]) == 10
    text = encode_example(tok, {"text": "hello world"}, seq_len=4096)
    assert tok.decode(text["input_ids"]) == "hello world" + END and text["labels"] == text["input_ids"]


def test_token_statistics_match_the_training_encoding(tok_dir):
    tok = _tok(tok_dir)
    examples = load_examples(FIX / "messages.jsonl")[0]
    lengths = sorted(len(encode_with_offsets(tok, ex)["input_ids"]) for ex in examples)
    seq_len = lengths[1]
    r = inspect(FIX / "messages.jsonl", tokenizer=tok, seq_len=seq_len)
    t = r.tokens
    assert (t.count, t.min, t.max, t.p50, t.p95) == (4, lengths[0], lengths[-1], lengths[2], lengths[-1])
    assert t.truncated == sum(1 for n in lengths if n > seq_len) == 2
    assert sum(t.histogram["counts"]) == 4 and len(t.histogram["edges"]) == len(t.histogram["counts"]) + 1
    assert t.histogram["edges"][0] == lengths[0] and t.histogram["edges"][-1] > lengths[-1]
    assert t.template == "model"
    json.dumps(r.to_dict())


def test_mask_view_shows_the_rendered_text(tok_dir):
    tok = _tok(tok_dir)
    r = inspect(FIX / "messages.jsonl", tokenizer=tok, seq_len=4096)
    first = load_examples(FIX / "messages.jsonl")[0][0]
    assert "".join(t for t, _ in r.mask_view) == tok.apply_chat_template(first["messages"], tokenize=False)
    assert "".join(t for t, m in r.mask_view if m) == "Paris." + END
    cut = mask_view(tok, first, seq_len=5)
    assert [t for t, _ in cut] == [t for t, _ in r.mask_view] and not any(m for _, m in cut)


def test_rows_the_template_rejects_are_reported(tok_dir):
    strict = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
              "{% endif %}{% endfor %}" + tiny.CHATML)
    r = inspect(FIX / "messages.jsonl", tokenizer=_tok(tok_dir, strict), seq_len=512)
    (p,) = r.problems
    assert (p.row, p.line, p.code, p.severity) == (1, 1, "template", "error") and "no system role" in p.message
    assert (r.usable, r.skipped, r.tokens.count) == (3, 1, 3)


def test_tokenizer_without_template_uses_chatml_and_says_so(tok_dir):
    r = inspect(FIX / "alpaca.jsonl", tokenizer=_tok(tok_dir, None), seq_len=512)
    assert r.tokens.template == "default (ChatML)" and r.tokens.count == 3
    assert any("ChatML" in n for n in r.notes)


def test_rows_cut_and_rows_left_out_are_counted_apart_for_each_split(tok_dir):
    """A row cut to train.seq_len is kept (its tail is not trained); a row whose every assistant token falls past
    it is left out, and so is one with nothing to learn; the run says which, for training and validation apart."""
    from studio.recipe import Recipe
    from studio.train.dataset import TrainData, _encode_all, length_warnings

    tok = _tok(tok_dir)
    long = " ".join(["word"] * 200)
    examples = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
                {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": long}]},  # cut
                {"messages": [{"role": "user", "content": long}, {"role": "assistant", "content": "ok"}]},  # past it
                {"messages": [{"role": "user", "content": "only a question"}]}]  # nothing to learn
    r = Recipe()
    r.train.seq_len = 48
    enc = _encode_all(tok, examples, r)
    assert (len(enc.rows), enc.cut, enc.dropped_long, enc.dropped_empty, enc.refused) == (2, 1, 1, 1, 0)
    assert all(len(row["input_ids"]) <= 48 for row in enc.rows)

    data = TrainData(train=enc.rows, val=None, report=None, truncated=enc.cut, trained_tokens=1,
                     dropped=enc.dropped_long, dropped_empty=enc.dropped_empty, val_cut=2, val_dropped=0)
    assert length_warnings(data, 48) == [
        "1 training example(s) longer than train.seq_len=48 tokens were cut to it: their tail is not trained",
        "1 training example(s) were left out: every assistant token falls past it (raise train.seq_len to use them)",
        "2 validation example(s) longer than train.seq_len=48 tokens were cut to it: their tail is not scored",
        "1 example(s) were left out: they have no assistant tokens to learn"]
