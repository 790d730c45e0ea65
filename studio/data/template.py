"""Turn a normalised example into token ids and labels, with the loss on assistant turns only.

The model's own chat template renders the conversation. Assistant spans are found by rendering
growing prefixes of the conversation (the text up to a turn with the generation prompt, then up to
the end of that turn), so the mask follows whatever template the model has. Tokens whose
characters fall inside an assistant span carry the loss; everything else gets label -100.
"""
from __future__ import annotations

import json
from typing import Any

from studio.data.chat_render import TemplateError, render_chat

IGNORE = -100

# Used when a tokenizer has no chat template: ChatML, the most widely understood convention.
DEFAULT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def chat_template(tokenizer: Any) -> str:
    """The model's own template, or ChatML when it has none."""
    return getattr(tokenizer, "chat_template", None) or DEFAULT_TEMPLATE


def render(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = False,
           tools: list | None = None) -> str:
    """The conversation as the chat template writes it (``chat_render``: sandboxed, size-limited, with a
    deadline); a template that refuses it raises TemplateError, one that never ends TemplateRunaway."""
    return render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt, tools=tools or None,
                       chat_template=chat_template(tokenizer))


# ------------------------------------------------------------------ tools

_PROBE_TOOL = {"type": "function", "function": {"name": "probe_tool_zq", "description": "probe",
                                                "parameters": {"type": "object", "properties": {}}}}
_PROBE: list[dict] = [{"role": "user", "content": "hi"},
          {"role": "assistant", "content": "", "tool_calls": [
              {"type": "function", "function": {"name": "probe_call_zq", "arguments": {"x": 1}}}]},
          {"role": "tool", "content": "probe_result_zq", "name": "probe_call_zq"},
          {"role": "assistant", "content": "done"}]
_SUPPORT: dict[str, bool] = {}  # chat template text -> tools support

FALLBACK_NOTE = ("the model's chat template has no tools support: tool calls are written into the assistant's text "
                 "as <tool_call>{\"name\": …, \"arguments\": …}</tool_call>, tool results as user turns in "
                 "<tool_response> tags, and the tool list into the system turn (docs/data.md, 'Tool calls')")


def tool_support(tokenizer: Any) -> bool:
    """Whether the chat template writes assistant tool calls and tool results (tried on a probe conversation)."""
    key = str(chat_template(tokenizer))
    if key not in _SUPPORT:
        try:
            text = render(tokenizer, _PROBE, tools=[_PROBE_TOOL])
            _SUPPORT[key] = "probe_call_zq" in text and "probe_result_zq" in text
        except TemplateError:
            _SUPPORT[key] = False
    return _SUPPORT[key]


def uses_tools(example: dict) -> bool:
    """The example has a tools schema, tool calls or tool results."""
    return "tools" in example or any(m.get("role") == "tool" or m.get("tool_calls")
                                     for m in example.get("messages", ()))


def prepare(tokenizer: Any, example: dict) -> tuple[list[dict], list | None]:
    """The messages and tools the chat template is given; without tools support, the documented fallback."""
    messages = example["messages"]
    if not uses_tools(example):
        return messages, None
    if tool_support(tokenizer):
        return messages, example.get("tools")
    return fallback_messages(messages, example.get("tools")), None


def fallback_messages(messages: list[dict], tools: list | None) -> list[dict]:
    """Tool calls and results as plain text turns any chat template can write (Hermes-style tags)."""
    out: list[dict] = []
    for m in messages:
        if m["role"] == "tool":
            body = f"<tool_response>\n{m['content']}\n</tool_response>"
            if out and out[-1].get("_tool"):
                out[-1]["content"] += "\n" + body
            else:
                out.append({"role": "user", "content": body, "_tool": True})
        elif m.get("tool_calls"):
            calls = "\n".join("<tool_call>\n" + json.dumps(
                {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}, ensure_ascii=False)
                + "\n</tool_call>" for c in m["tool_calls"])
            out.append({"role": "assistant", "content": f"{m['content']}\n{calls}" if m["content"] else calls})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    out = [{k: v for k, v in m.items() if k != "_tool"} for m in out]
    if tools:
        listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        intro = ("You can call these tools. To call one, answer with <tool_call>{\"name\": ..., \"arguments\": "
                 f"{{...}}}}</tool_call>.\n<tools>\n{listing}\n</tools>")
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{intro}"}
        else:
            out.insert(0, {"role": "system", "content": intro})
    return out


# ------------------------------------------------------------------ masks

def assistant_spans(tokenizer: Any, messages: list[dict],
                    tools: list | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of every assistant turn (end marker included).

    Assistant turns that call tools are spans like any other: the calls carry the loss.
    """
    text = render(tokenizer, messages, tools=tools)
    spans: list[tuple[int, int]] = []
    for i, msg in enumerate(messages):
        if msg.get("role") != "assistant":
            continue
        start = len(render(tokenizer, messages[:i], add_generation_prompt=True, tools=tools)) if i else 0
        upto = render(tokenizer, messages[: i + 1], tools=tools)
        end = len(upto)
        if not text.startswith(upto):
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
        messages, tools = prepare(tokenizer, example)
        return render(tokenizer, messages, tools=tools)
    text = example["text"]
    # a document's chunk before its last does not end the document: no end-of-sequence token after it
    if example.get("eos", True) and tokenizer.eos_token and not text.endswith(tokenizer.eos_token):
        text += tokenizer.eos_token
    return text


def training_text(tokenizer: Any, example: dict) -> str:
    """``example_text`` rendered the way training renders it: for a conversation also every prefix with
    the generation prompt (the loss mask), so a template that refuses only those is caught by
    ``data inspect`` too, not first by training."""
    if "messages" in example:
        messages, tools = prepare(tokenizer, example)
        return assistant_spans(tokenizer, messages, tools)[0]
    return example_text(tokenizer, example)


def encode_with_offsets(tokenizer: Any, example: dict, train_on: str = "assistant") -> dict:
    """Untruncated ids and labels plus the rendered text and each token's character span in it."""
    if "messages" in example:
        messages, tools = prepare(tokenizer, example)
        text, spans = assistant_spans(tokenizer, messages, tools)
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
