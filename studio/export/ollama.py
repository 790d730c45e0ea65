"""Ollama Modelfile: FROM the GGUF, a TEMPLATE in Go-template syntax that renders conversations
exactly as the model's chat template does, the stop tokens, and greedy sampling parameters.

Supported chat formats: ChatML (SmolLM, Qwen2, ...) with or without a default system prompt, ChatML
whose generation prompt opens a thinking block (Qwen3.5), and Llama 3. The family is found by
rendering probe conversations with the tokenizer's own template and checking that the Go template
(rendered by the small evaluator below) gives the same text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from studio.data.chat_render import render_chat
from studio.export.errors import UnsupportedModel
from studio.scoring import SAMPLE_PARAMS


@dataclass(frozen=True)
class ChatFamily:
    name: str
    template: str  # Ollama (Go text/template) syntax
    stops: tuple[str, ...]


FAMILIES = (
    ChatFamily("chatml",
               "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
               "<|im_start|>assistant\n",
               ("<|im_end|>", "<|im_start|>")),
    # ChatML whose generation prompt opens a reasoning block (Qwen3.5, thinking models): the answer
    # starts inside <think>, as the tokenizer's template has it with thinking on (its default)
    ChatFamily("chatml-think",
               "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
               "<|im_start|>assistant\n<think>\n",
               ("<|im_end|>", "<|im_start|>")),
    ChatFamily("llama3",
               "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
               "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
               ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>")),
)

PROBES = (
    [{"role": "user", "content": "What is 2 plus 3?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a fact."}],
    [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "A"},
     {"role": "assistant", "content": "B"}, {"role": "user", "content": "C"}],
)
_MARK = "\x00SYSTEM\x00"


# -- a Go text/template evaluator for the subset the templates above use ----------------------------

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _tokens(template: str) -> list[tuple[str, str]]:
    """Text and action tokens, with ``{{-`` / ``-}}`` whitespace trimming applied."""
    out: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        text = text.lstrip() if trim_next else text
        text = text.rstrip() if m.group(1) else text
        if text:
            out.append(("text", text))
        out.append(("action", m.group(2)))
        trim_next, pos = bool(m.group(3)), m.end()
    tail = template[pos:].lstrip() if trim_next else template[pos:]
    if tail:
        out.append(("text", tail))
    return out


def render_go(template: str, data: dict) -> str:
    """Render ``template`` with ``data`` (supports text, .Field, range, if/else, end)."""
    tree, rest = _parse(_tokens(template), 0)
    if rest != len(_tokens(template)):
        raise ValueError("unbalanced {{ end }} in template")
    return _eval(tree, data, data)


def _parse(tokens: list[tuple[str, str]], i: int) -> tuple[list, int]:
    nodes: list = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
        elif value in ("end", "else"):
            return nodes, i
        elif value.startswith(("range ", "if ")):
            word, expr = value.split(None, 1)
            body, i = _parse(tokens, i + 1)
            other: list = []
            if tokens[i][1] == "else":
                other, i = _parse(tokens, i + 1)
            nodes.append((word, expr, body, other))
        else:
            nodes.append(("field", value))
        i += 1
    return nodes, i


def _lookup(expr: str, dot: Any, root: dict) -> Any:
    if not re.fullmatch(r"\$?(\.\w+)+|\.", expr):
        raise ValueError(f"unsupported template action {{{{ {expr} }}}}")
    value = root if expr.startswith("$") else dot
    for part in [p for p in expr.lstrip("$").split(".") if p]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _eval(nodes: list, dot: Any, root: dict) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "field":
            value = _lookup(node[1], dot, root)
            out.append("" if value is None else str(value))
        elif node[0] == "range":
            items = _lookup(node[1], dot, root) or []
            if items:
                out.extend(_eval(node[2], item, root) for item in items)
            else:
                out.append(_eval(node[3], dot, root))
        elif node[0] == "if":
            out.append(_eval(node[2] if _lookup(node[1], dot, root) else node[3], dot, root))
    return "".join(out)


# -- choosing the family and writing the Modelfile -----------------------------------------------

@dataclass
class OllamaChat:
    family: ChatFamily
    system: str | None  # the default system prompt the chat template inserts, if any
    checked: int  # probe conversations rendered identically


def ollama_render(family: ChatFamily, messages: list[dict], system: str | None) -> str:
    """What Ollama sends the model: the Modelfile SYSTEM goes first when the chat has no system message."""
    if system is not None and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system}] + list(messages)
    go_messages = [{"Role": m["role"], "Content": m["content"]} for m in messages]  # Ollama's api.Message fields
    return render_go(family.template, {"Messages": go_messages})


def hf_render(tokenizer: Any, messages: list[dict]) -> str:
    """The tokenizer's rendering, without a BOS text the tokenizer would add again itself."""
    text = render_chat(tokenizer, messages, add_generation_prompt=True)
    bos = tokenizer.bos_token
    adds_bos = bos and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]
    return text[len(bos):] if adds_bos and text.startswith(bos) else text


def detect_chat(tokenizer: Any) -> OllamaChat:
    """The chat family whose Go template reproduces the tokenizer's chat template on every probe."""
    if not getattr(tokenizer, "chat_template", None):
        raise UnsupportedModel("the model has no chat template, so Ollama would not know how to format a chat",
                               "export --format gguf and write your own Modelfile TEMPLATE")
    for family in FAMILIES:
        system = _default_system(family, tokenizer)
        if all(ollama_render(family, p, system) == hf_render(tokenizer, p) for p in PROBES):
            return OllamaChat(family, system, len(PROBES))
    raise UnsupportedModel("the model's chat template is not one the Ollama export can translate",
                           f"supported: {', '.join(f.name for f in FAMILIES)}; export --format gguf instead")


def _default_system(family: ChatFamily, tokenizer: Any) -> str | None:
    """The system prompt the chat template adds on its own (SmolLM2 adds one), found by rendering."""
    probe = PROBES[0]
    hf = hf_render(tokenizer, probe)
    if ollama_render(family, probe, None) == hf:
        return None
    pre, _, post = ollama_render(family, probe, _MARK).partition(_MARK)
    if hf.startswith(pre) and hf.endswith(post) and len(hf) >= len(pre) + len(post):
        return hf[len(pre):len(hf) - len(post)]
    return None


def modelfile(gguf_name: str, chat: OllamaChat, eos_tokens: list[str], params: dict,
              adapter_name: str | None = None) -> str:
    """The Modelfile text: FROM, ADAPTER (a LoRA GGUF on top of the base), TEMPLATE, SYSTEM (if the
    template has a default), stops, parameters."""
    for text in (chat.family.template, chat.system or ""):
        if '"""' in text:
            raise UnsupportedModel('the chat template contains """, which a Modelfile cannot quote',
                                   "export --format gguf and write the Modelfile by hand")
    lines = [f"FROM ./{gguf_name}"] + ([f"ADAPTER ./{adapter_name}"] if adapter_name else [])
    lines.append(f'TEMPLATE """{chat.family.template}"""')
    if chat.system is not None:
        lines.append(f'SYSTEM """{chat.system}"""')
    for stop in dict.fromkeys([*chat.family.stops, *eos_tokens]):
        lines.append(f"PARAMETER stop {_quote(stop)}")
    for key, value in params.items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sampling_params() -> dict:
    """Training's sample generation is greedy; Ollama's defaults (temperature 0.8, repeat penalty 1.1) are not."""
    temperature = float(SAMPLE_PARAMS.get("temperature", 0.0))
    return {"temperature": _num(temperature), "top_k": 1, "repeat_penalty": 1}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def model_name(text: str) -> str:
    """A name ``ollama create`` accepts (lower case letters, digits, '-', '_', '.'), from ``text``."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return name[:80] or "my-model"
