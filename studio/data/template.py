"""Turn a normalised example into token ids and labels, with the loss on assistant turns only.

The model's own chat template renders the conversation. Assistant spans are found by rendering
growing prefixes of the conversation (the text up to a turn with the generation prompt, then up to
the end of that turn), so the mask follows whatever template the model has. Tokens whose
characters fall inside an assistant span carry the loss; everything else gets label -100.
"""
from __future__ import annotations

from typing import Any

IGNORE = -100

# Used when a tokenizer has no chat template: ChatML, the most widely understood convention.
DEFAULT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TemplateError(ValueError):
    """The chat template cannot render this conversation so that turns can be masked."""


def chat_template(tokenizer: Any) -> str:
    """The model's own template, or ChatML when it has none."""
    return getattr(tokenizer, "chat_template", None) or DEFAULT_TEMPLATE


def render(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The conversation as the chat template writes it; a template that refuses it raises TemplateError."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             chat_template=chat_template(tokenizer))
    except Exception as e:  # jinja's own errors, or raise_exception() calls inside the template
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise TemplateError(f"the chat template cannot render this conversation: {first}") from e


def assistant_spans(tokenizer: Any, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of every assistant turn (end marker included)."""
    text = render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    for i, msg in enumerate(messages):
        if msg.get("role") != "assistant":
            continue
        start = len(render(tokenizer, messages[:i], add_generation_prompt=True)) if i else 0
        end = len(render(tokenizer, messages[: i + 1]))
        if not text.startswith(render(tokenizer, messages[: i + 1])):
            raise TemplateError("the chat template renders a conversation differently from its prefixes; "
                                "train with train_on='all' or pick a model with a standard template")
        # The end of a turn may carry trailing whitespace the model never predicts; keep the marker.
        while end > start and text[end - 1] in " \n":
            end -= 1
        spans.append((start, end))
    return text, spans


def encode_example(tokenizer: Any, example: dict, seq_len: int, train_on: str = "assistant") -> dict:
    """``{"input_ids", "labels", "attention_mask", "truncated"}`` for one example.

    ``example`` is ``{"messages": [...]}`` (chat) or ``{"text": "..."}`` (continued pre-training).
    """
    enc = encode_with_offsets(tokenizer, example, train_on)
    ids, labels = enc["input_ids"], enc["labels"]
    truncated = len(ids) > seq_len
    ids, labels = ids[:seq_len], labels[:seq_len]
    return {"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids), "truncated": truncated}


def example_text(tokenizer: Any, example: dict) -> str:
    """The exact text that is tokenised for an example (chat template, or text plus end-of-sequence)."""
    if "messages" in example:
        return render(tokenizer, example["messages"])
    text = example["text"]
    if tokenizer.eos_token and not text.endswith(tokenizer.eos_token):
        text += tokenizer.eos_token
    return text


def encode_with_offsets(tokenizer: Any, example: dict, train_on: str = "assistant") -> dict:
    """Untruncated ids and labels plus the rendered text and each token's character span in it."""
    if "messages" in example:
        text, spans = assistant_spans(tokenizer, example["messages"])
    else:
        text = example_text(tokenizer, example)
        spans = [(0, len(text))]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if train_on == "all":
        labels = list(ids)
    else:
        labels = [tok if _inside(off, spans) else IGNORE for tok, off in zip(ids, offsets)]
    return {"text": text, "input_ids": ids, "labels": labels, "offsets": [tuple(o) for o in offsets]}


def _inside(offset: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    start, end = offset
    if end <= start:  # zero-width tokens (added specials) take the position of their start
        end = start + 1
    return any(s <= start and end <= e for s, e in spans)
