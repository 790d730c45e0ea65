"""The demo dataset and its scorer: the format regex, the files' shape, and the held-out split."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from studio import scoring
from studio.scoring import FORMAT_PATTERN, EvalResult, PromptFileError, format_report, load_prompts, score_answers

DEMO = Path(__file__).resolve().parent.parent / "resources" / "demo"
TRAIN = DEMO / "train.jsonl"
HELDOUT = DEMO / "heldout.jsonl"

GOOD = ("Answer: Paris is the capital of France.\nKey points:\n- It lies on the Seine.\n"
        "- It is the largest city.\nConfidence: high")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


@pytest.fixture(scope="module")
def train() -> list[dict]:
    return _rows(TRAIN)


@pytest.fixture(scope="module")
def heldout() -> list[dict]:
    return _rows(HELDOUT)


# --- the regex ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    GOOD,
    GOOD + "\n",
    GOOD + ".  \n\n",
    "\n" + GOOD,
    GOOD.replace("high", "low"),
    GOOD.replace("Confidence:", "- A third point.\nConfidence:"),
])
def test_regex_accepts_answer_cards(text: str) -> None:
    assert FORMAT_PATTERN.search(text)


@pytest.mark.parametrize("text", [
    GOOD.replace("\nConfidence: high", ""),                              # missing confidence
    GOOD.replace("Answer:", "Summary:"),                                 # wrong header
    GOOD.replace("Key points:", "Key Points:"),                          # wrong header case
    GOOD.replace("- It lies on the Seine.\n- It is the largest city.\n", ""),  # no bullets
    GOOD.replace("- It is the largest city.\n", ""),                     # only one bullet
    GOOD.replace("Confidence:", "- a\n- b\nConfidence:"),                # four bullets
    "Sure! Here is the answer.\n" + GOOD,                                # prose before Answer:
    GOOD + "\nI hope this helps!",                                       # prose after
    GOOD.replace("high", "very high"),                                   # not one of the words
    GOOD.replace("high", "High"),                                        # wrong case
    GOOD.replace("Answer: Paris", "Answer:\nParis"),                     # answer not on its line
    GOOD.replace("- It", "* It"),                                        # wrong bullet marker
    "**Answer:** Paris.\n**Key points:**\n- a\n- b\n**Confidence:** high",  # markdown bold
    "",
])
def test_regex_rejects_near_misses(text: str) -> None:
    assert not FORMAT_PATTERN.search(text)


def test_every_train_answer_matches(train: list[dict]) -> None:
    bad = [r["messages"][-1]["content"] for r in train
           if not FORMAT_PATTERN.search(r["messages"][-1]["content"])]
    assert bad == []


def test_confidence_levels_all_used(train: list[dict]) -> None:
    words = {r["messages"][-1]["content"].rsplit(" ", 1)[-1] for r in train}
    assert words == {"high", "medium", "low"}


# --- the files ---------------------------------------------------------------------------------

def test_train_rows_are_chat_messages(train: list[dict]) -> None:
    assert len(train) >= 300
    for row in train:
        assert set(row) == {"messages"}
        roles = [m["role"] for m in row["messages"]]
        assert roles in (["user", "assistant"], ["system", "user", "assistant"])
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in row["messages"])


def test_answers_are_short(train: list[dict]) -> None:
    # ~60 tokens with the SmolLM2 tokenizer; 70 words is a generous, tokenizer-free bound.
    long = [r["messages"][-1]["content"] for r in train
            if len(r["messages"][-1]["content"].split()) > 70]
    assert long == []


def test_no_duplicate_questions(train: list[dict]) -> None:
    questions = [_norm(r["messages"][-2]["content"]) for r in train]
    assert len(questions) == len(set(questions))


def test_heldout_shape_and_split(train: list[dict], heldout: list[dict]) -> None:
    assert len(heldout) == 20
    train_questions = {_norm(r["messages"][-2]["content"]) for r in train}
    for row in heldout:
        assert [m["role"] for m in row["messages"]] == ["user"]
        assert re.compile(row["pattern"]).pattern == FORMAT_PATTERN.pattern
        assert _norm(row["messages"][0]["content"]) not in train_questions
    assert len({_norm(r["messages"][0]["content"]) for r in heldout}) == 20


def test_committed_files_match_build_script() -> None:
    spec = importlib.util.spec_from_file_location("demo_build", DEMO / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.to_jsonl(build.train_rows()) == TRAIN.read_text(encoding="utf-8")
    assert build.to_jsonl(build.heldout_rows()) == HELDOUT.read_text(encoding="utf-8")
    assert build.to_jsonl(build.grpo_rows()) == (DEMO / "grpo.jsonl").read_text(encoding="utf-8")
    assert build.to_jsonl(build.grpo_heldout_rows()) == (DEMO / "heldout_grpo.jsonl").read_text(encoding="utf-8")


# --- the scorer --------------------------------------------------------------------------------

def test_score_answers_counts_matches() -> None:
    assert score_answers([GOOD, "nope", GOOD, "x"], [None, None, scoring.FORMAT_REGEX, "x"]) == 0.75
    assert score_answers([], []) == 0.0
    with pytest.raises(ValueError):
        score_answers([GOOD], [])


def test_load_prompts_reads_heldout_and_train() -> None:
    rows = load_prompts(HELDOUT)
    assert len(rows) == 20 and all(r["pattern"] and r["reference"] is None for r in rows)
    train_rows = load_prompts(TRAIN)
    assert train_rows[0]["messages"][-1]["role"] == "user"
    assert FORMAT_PATTERN.search(train_rows[0]["reference"])


@pytest.mark.parametrize("line, needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"messages": []}', "non-empty list"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "message 0"),
    ('{"messages": [{"role": "system", "content": "hi"}]}', "end with a user message"),
    ('{"messages": [{"role": "user", "content": "hi"}], "pattern": "("}', "not a valid regular"),
])
def test_load_prompts_names_file_and_line(tmp_path: Path, line: str, needle: str) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "ok"}]}\n\n' + line + "\n")
    with pytest.raises(PromptFileError) as err:
        load_prompts(path)
    assert f"{path}:3:" in str(err.value) and needle in str(err.value)


def test_load_prompts_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match="file not found"):
        load_prompts(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n \n")
    with pytest.raises(PromptFileError, match="no prompts"):
        load_prompts(tmp_path / "empty.jsonl")


def test_format_report_shows_scores_and_a_fixed_sample() -> None:
    before = EvalResult(["q1", "q2"], ["plain prose", "more prose"], [False, False])
    after = EvalResult(["q1", "q2"], ["still prose", GOOD], [False, True])
    text = format_report(before, after)
    assert "0/2 (0%) before -> 1/2 (50%) after" in text
    assert "Sample prompt: q2" in text and "more prose" in text and "Confidence: high" in text
    assert format_report(0.05, 0.9) == "Held-out format score: 5% before -> 90% after"


def test_generate_answers_batched_matches_one_by_one(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    rows = load_prompts(HELDOUT)[:2]
    one = scoring.generate_answers(model, tok, rows, max_new_tokens=4)
    many = scoring.generate_answers(model, tok, rows, max_new_tokens=4, batch_size=2)
    assert len(one) == len(many) == 2 and all(isinstance(a, str) for a in one)
    assert "<|im_start|>" not in "".join(one)  # only the new tokens are decoded
    assert one == many


def test_only_rows_with_a_pattern_are_scored() -> None:
    """A held-out file where some rows carry a pattern: the others are samples to read, not scored against the
    demo's answer card (even an answer that is a perfect card)."""
    rows = [{"messages": [{"role": "user", "content": "q1"}], "pattern": r"\Ayes\Z"},
            {"messages": [{"role": "user", "content": "q2"}], "pattern": None},
            {"messages": [{"role": "user", "content": "q3"}], "pattern": r"\Ano\Z"}]
    result = scoring.evaluate(["yes", GOOD, "maybe"], rows)
    assert result.unscored == [2] and result.timed_out == []
    assert result.score == 0.5  # 1 of the 2 rows with a pattern; the card in row 2 is not counted
    assert scoring.evaluate([GOOD, GOOD, "no"], rows).score == 0.5


def test_the_eval_report_counts_rows_with_a_pattern() -> None:
    from studio import evalreport

    rows = [{"messages": [{"role": "user", "content": "q1"}], "pattern": r"\Ayes\Z"},
            {"messages": [{"role": "user", "content": "q2"}], "pattern": None}]
    report = evalreport.build({"base": 1.0, "adapter": 0.5}, 10, 2, rows,
                              {"base": ["no", GOOD], "adapter": ["yes", GOOD]}, "heldout", scored=True)
    h = report["heldout"]
    assert (h["total"], h["scored_rows"], h["matched"], h["score"]) == (2, 1, {"base": 0, "adapter": 1},
                                                                        {"base": 0.0, "adapter": 1.0})
    assert h["items"][1]["base_match"] is None and h["items"][1]["adapter_match"] is None
    assert evalreport.summary(report)["score_total"] == 1
    assert "held-out format score 0/1 \u2192 1/1 (1 row(s) without a pattern answered, not scored)" in \
        evalreport.format_text(report)
