"""Build the demo dataset (train.jsonl, heldout.jsonl) from the hand-written cards in cards.txt.

Every card was written for LoRA Studio. The behaviour it teaches is the "answer card": a one-line
answer, two or three key points and a confidence word. Run ``python resources/demo/build.py`` after
editing the cards; it checks each card against ``studio.scoring.FORMAT_PATTERN`` and rewrites both
files (the generated files are committed, so the build is only needed after an edit).

Card syntax: blocks separated by blank lines; ``Q:`` the question, ``A:`` the one-sentence answer,
``- `` two or three key points, ``C:`` high, medium or low; ``S:`` (optional, first) a system message.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # run from a checkout without installing

from studio.scoring import FORMAT_PATTERN, FORMAT_REGEX  # noqa: E402

TRAIN = HERE / "train.jsonl"
HELDOUT = HERE / "heldout.jsonl"
SEED = 20261122

CARDS = HERE / "cards.txt"  # the hand-written cards (syntax above)
PROMPTS = HERE / "heldout_prompts.txt"  # one held-out prompt a line; none appears in the cards
PREFERENCE = HERE / "preference.jsonl"  # the same cards as pairs: chosen = the card, rejected = not a card
GRPO = HERE / "grpo.jsonl"  # the cards' questions as prompts that show one card first, with the card's pattern
GRPO_HELDOUT = HERE / "heldout_grpo.jsonl"  # the held-out prompts in the same shape
# grpo learns from what the model samples, and the base never samples a card unprompted; shown one card in
# the prompt it writes part of one (and now and then a whole one), which the pattern reward can grade.
GRPO_SYSTEM = "Reply with an answer card, in exactly the form of the example."


class CardError(ValueError):
    """A hand-written card is malformed; the message names the card."""


def parse_cards(text: str) -> list[dict[str, Any]]:
    """Split the card text into dicts with system, question, answer, points, confidence."""
    cards = []
    for block in (b.strip() for b in text.strip().split("\n\n")):
        card: dict[str, Any] = {"system": None, "points": []}
        for line in block.splitlines():
            tag, _, value = line.partition(" ")
            key = {"S:": "system", "Q:": "question", "A:": "answer", "C:": "confidence"}.get(tag)
            if tag == "-":
                card["points"].append(value)
            elif key and card.get(key) is None:
                card[key] = value
            else:
                raise CardError(f"card {block.splitlines()[0]!r}: unexpected line {line!r} "
                                f"(unknown tag, a repeated tag, or a missing blank line)")
        for key in ("question", "answer", "confidence"):
            if not card.get(key):
                raise CardError(f"card {block.splitlines()[0]!r}: missing {key}")
        cards.append(card)
    return cards


def render(card: dict[str, Any]) -> str:
    """The assistant reply: the answer card the fine-tune teaches."""
    points = "".join(f"- {p}\n" for p in card["points"])
    return f"Answer: {card['answer']}\nKey points:\n{points}Confidence: {card['confidence']}"


def train_rows() -> list[dict[str, Any]]:
    """Training rows in a fixed shuffled order, each checked against the format regex."""
    rows = []
    for card in parse_cards(CARDS.read_text(encoding="utf-8")):
        reply = render(card)
        if not FORMAT_PATTERN.search(reply):
            raise CardError(f"card {card['question']!r} does not match the answer-card format")
        messages = [{"role": "system", "content": card["system"]}] if card["system"] else []
        messages += [{"role": "user", "content": card["question"]},
                     {"role": "assistant", "content": reply}]
        rows.append({"messages": messages})
    random.Random(SEED).shuffle(rows)  # mix topics so any prefix of the file is varied
    return rows


def heldout_rows() -> list[dict[str, Any]]:
    """Held-out prompts, each carrying the regex that scores its answer."""
    prompts = [line.strip() for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"messages": [{"role": "user", "content": p}], "pattern": FORMAT_REGEX} for p in prompts]


def unformatted(card: dict[str, Any], i: int) -> str:
    """The same content written the ways the base model tends to answer: never an answer card."""
    points = card["points"]
    style = i % 3
    if style == 0:  # one paragraph of prose
        return " ".join([card["answer"], *points])
    if style == 1:  # a chatty opener, the answer and one point
        first = points[0][0].lower() + points[0][1:]
        return f"Great question! {card['answer']} Also, {first}"
    return card["answer"] + "\n\n" + "".join(f"* {p}\n" for p in points).rstrip("\n")  # a bare list


def preference_rows() -> list[dict[str, Any]]:
    """prompt/chosen/rejected rows for DPO and ORPO: the chosen answer is the card, the rejected one is not."""
    rows = []
    for i, card in enumerate(c for c in parse_cards(CARDS.read_text(encoding="utf-8")) if not c["system"]):
        rejected = unformatted(card, i)
        if FORMAT_PATTERN.search(rejected):
            raise CardError(f"card {card['question']!r}: its rejected answer matches the answer-card format")
        rows.append({"prompt": card["question"], "chosen": render(card), "rejected": rejected})
    random.Random(SEED).shuffle(rows)
    return rows


def _example_card() -> dict[str, Any]:
    """The one card every grpo prompt shows (the first card without a system message; not a grpo prompt)."""
    return next(c for c in parse_cards(CARDS.read_text(encoding="utf-8")) if not c["system"])


def grpo_prompt(question: str, example: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "system", "content": GRPO_SYSTEM}, {"role": "user", "content": example["question"]},
            {"role": "assistant", "content": render(example)}, {"role": "user", "content": question}]


def grpo_rows() -> list[dict[str, Any]]:
    """Prompts (the 'prompts' format) for --objective grpo: every card's question after the example card."""
    example = _example_card()
    rows = [{"prompt": grpo_prompt(c["question"], example), "pattern": FORMAT_REGEX}
            for c in parse_cards(CARDS.read_text(encoding="utf-8"))
            if not c["system"] and c["question"] != example["question"]]
    random.Random(SEED).shuffle(rows)
    return rows


def grpo_heldout_rows() -> list[dict[str, Any]]:
    """The held-out prompts after the same example card, scored by the same pattern."""
    example = _example_card()
    return [{"messages": grpo_prompt(r["messages"][-1]["content"], example), "pattern": FORMAT_REGEX}
            for r in heldout_rows()]


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> None:
    """Regenerate the five files atomically."""
    from studio.fsutil import atomic_write_text

    train, held, pref, grpo = train_rows(), heldout_rows(), preference_rows(), grpo_rows()
    atomic_write_text(TRAIN, to_jsonl(train))
    atomic_write_text(HELDOUT, to_jsonl(held))
    atomic_write_text(PREFERENCE, to_jsonl(pref))
    atomic_write_text(GRPO, to_jsonl(grpo))
    atomic_write_text(GRPO_HELDOUT, to_jsonl(grpo_heldout_rows()))
    print(f"wrote {len(train)} rows to {TRAIN}, {len(held)} rows to {HELDOUT}, {len(pref)} pairs to {PREFERENCE} "
          f"and {len(grpo)} prompts to {GRPO} (held out: {GRPO_HELDOUT})")


if __name__ == "__main__":
    main()
