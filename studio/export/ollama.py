"""Ollama Modelfile: FROM the GGUF, a TEMPLATE in Go-template syntax that renders conversations
exactly as the model's chat template does, the stop tokens, and greedy sampling parameters.

Supported chat formats: ChatML (SmolLM, Qwen2, ...) with or without a default system prompt, ChatML
whose generation prompt opens a thinking block (Qwen3.5), Llama 3, Phi-3 / 3.5, Phi-4-mini, Phi-4,
Gemma (1-3), Gemma 4, and gpt-oss's harmony format (its fixed system preamble found by rendering). The family is found
by rendering probe conversations with the tokenizer's own template and checking that the Go template
(rendered by the small evaluator below) gives the same text.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from studio.data.chat_render import TemplateError, render_chat
from studio.export.errors import UnsupportedModel
from studio.scoring import SAMPLE_PARAMS


@dataclass(frozen=True)
class ChatFamily:
    name: str
    template: str  # Ollama (Go text/template) syntax
    stops: tuple[str, ...]
    # the chat template starts every conversation with a fixed text of the model's own (harmony's system
    # preamble: reasoning effort, channels): found by rendering, it goes in front of ``template``
    preamble: bool = False


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
    # gpt-oss: a system prompt is a developer message; past answers are the final channel; the model
    # writes its channels after "<|start|>assistant" and ends its answer with <|return|> (or <|call|>)
    ChatFamily("harmony",
               "{{ range .Messages }}{{ if eq .Role \"system\" }}<|start|>developer<|message|># Instructions\n\n"
               "{{ .Content }}\n\n<|end|>{{ else }}{{ if eq .Role \"assistant\" }}<|start|>assistant<|channel|>final"
               "<|message|>{{ .Content }}<|end|>{{ else }}<|start|>{{ .Role }}<|message|>{{ .Content }}<|end|>"
               "{{ end }}{{ end }}{{ end }}<|start|>assistant",
               ("<|return|>", "<|call|>"), preamble=True),
    # Phi-3 / 3.5 (and Phi-4-mini below, without the newlines): <|role|> turns closed by <|end|>
    ChatFamily("phi3",
               "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n",
               ("<|end|>", "<|user|>", "<|assistant|>")),
    ChatFamily("phi4-mini",
               "{{- range .Messages }}<|{{ .Role }}|>{{ .Content }}<|end|>{{ end }}<|assistant|>",
               ("<|end|>", "<|user|>", "<|assistant|>")),
    # Phi-4: ChatML with <|im_sep|> after the role instead of a newline
    ChatFamily("phi4",
               "{{- range .Messages }}<|im_start|>{{ .Role }}<|im_sep|>{{ .Content }}<|im_end|>{{ end }}"
               "<|im_start|>assistant<|im_sep|>",
               ("<|im_end|>", "<|im_start|>", "<|im_sep|>")),
    # Gemma (1, 2, 3): turns ``<start_of_turn>user|model``; Gemma 3's template puts a system message at
    # the head of the first user turn (Gemma 1 and 2 refuse one: their probes with it are not compared)
    ChatFamily("gemma",
               '{{- $system := "" }}{{- range .Messages }}'
               '{{ if eq .Role "system" }}{{ $system = .Content }}'
               '{{ else if eq .Role "user" }}<start_of_turn>user\n'
               '{{ if $system }}{{ $system }}\n\n{{ $system = "" }}{{ end }}{{ .Content }}<end_of_turn>\n'
               '{{ else }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n{{ end }}'
               '{{ end }}<start_of_turn>model\n',
               ("<end_of_turn>", "<start_of_turn>")),
    # Gemma 4: ``<|turn>system|user|model`` turns closed by ``<turn|>``, a system turn of its own; with
    # thinking off (the template's default) the 26B/31B generation prompt holds an empty thought channel
    ChatFamily("gemma4",
               '{{- range .Messages }}<|turn>{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}{{ end }}\n'
               '{{ .Content }}<turn|>\n{{ end }}<|turn>model\n<|channel>thought\n<channel|>',
               ("<turn|>", "<|turn>")),
    ChatFamily("gemma4-plain",
               '{{- range .Messages }}<|turn>{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}{{ end }}\n'
               '{{ .Content }}<turn|>\n{{ end }}<|turn>model\n',
               ("<turn|>", "<|turn>")),
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
    """Render ``template`` with ``data``: text, fields (``.X``, ``$.X``), ``range``, ``if`` / ``else if``
    / ``else``, ``end``, ``eq`` and ``not``, string literals, and variables (``$x := v``, ``$x = v``,
    which Go keeps across ``range`` iterations)."""
    tokens = _tokens(template)
    tree, rest = _parse(tokens, 0)
    if rest != len(tokens):
        raise ValueError("unbalanced {{ end }} in template")
    return _eval(tree, data, data, {})


def _parse(tokens: list[tuple[str, str]], i: int) -> tuple[list, int]:
    """Nodes up to the ``end`` / ``else`` that closes them; returns the nodes and that token's index."""
    nodes: list = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
        elif value == "end" or value.startswith("else"):
            return nodes, i
        elif value.startswith(("range ", "if ")):
            word, expr = value.split(None, 1)
            node, i = _parse_block(tokens, i + 1, word, expr)
            nodes.append(node)
        elif _ASSIGN.fullmatch(value):
            nodes.append(("set", *_ASSIGN.fullmatch(value).groups()))  # type: ignore[union-attr]
        else:
            nodes.append(("field", value))
        i += 1
    return nodes, i


def _parse_block(tokens: list[tuple[str, str]], i: int, word: str, expr: str) -> tuple[tuple, int]:
    """A range/if body and its else part (``else if`` nests an if that shares the ``end``); returns the
    node and the index of its ``end``."""
    body, i = _parse(tokens, i)
    if i >= len(tokens):
        raise ValueError(f"{{{{ {word} {expr} }}}} has no {{{{ end }}}}")
    other: list = []
    closer = tokens[i][1]
    if closer.startswith("else if "):
        nested, i = _parse_block(tokens, i + 1, "if", closer[len("else if "):])
        other = [nested]
    elif closer == "else":
        other, i = _parse(tokens, i + 1)
    if i >= len(tokens) or tokens[i][1] != "end":
        raise ValueError(f"{{{{ {word} {expr} }}}} has no {{{{ end }}}}")
    return (word, expr, body, other), i


_ASSIGN = re.compile(r"(\$\w+)\s*:?=\s*(.+)")
_ARG = re.compile(r'"(?:[^"\\]|\\.)*"|\S+')


def _value(expr: str, dot: Any, root: dict, variables: dict) -> Any:
    """An argument or a pipeline of one function (``eq a b``, ``not a``)."""
    args = _ARG.findall(expr.strip())
    if len(args) > 1:
        values = [_value(a, dot, root, variables) for a in args[1:]]
        if args[0] == "eq" and len(values) >= 2:
            return any(values[0] == v for v in values[1:])
        if args[0] == "not" and len(values) == 1:
            return not values[0]
        raise ValueError(f"unsupported template action {{{{ {expr} }}}}")
    arg = args[0] if args else ""
    if arg.startswith('"'):
        return json.loads(arg)
    if re.fullmatch(r"\$\w+", arg):
        if arg not in variables:
            raise ValueError(f"undefined variable {arg} in template")
        return variables[arg]
    return _lookup(arg, dot, root)


def _lookup(expr: str, dot: Any, root: dict) -> Any:
    if not re.fullmatch(r"\$?(\.\w+)+|\.", expr):
        raise ValueError(f"unsupported template action {{{{ {expr} }}}}")
    value = root if expr.startswith("$") else dot
    for part in [p for p in expr.lstrip("$").split(".") if p]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _eval(nodes: list, dot: Any, root: dict, variables: dict) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "field" and node[1] == "currentDate":  # Ollama's function: today, YYYY-MM-DD
            out.append(_today())
        elif node[0] == "field":
            value = _value(node[1], dot, root, variables)
            out.append("" if value is None else str(value))
        elif node[0] == "set":
            variables[node[1]] = _value(node[2], dot, root, variables)
        elif node[0] == "range":
            items = _value(node[1], dot, root, variables) or []
            if items:
                out.extend(_eval(node[2], item, root, variables) for item in items)
            else:
                out.append(_eval(node[3], dot, root, variables))
        elif node[0] == "if":
            out.append(_eval(node[2] if _value(node[1], dot, root, variables) else node[3], dot, root, variables))
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
    probes = _renderable(tokenizer)
    for family in FAMILIES:
        family = _with_preamble(family, tokenizer) if family.preamble else family
        system = _default_system(family, tokenizer)
        if all(ollama_render(family, p, system) == hf for p, hf in probes):
            return OllamaChat(family, system, len(probes))
    raise UnsupportedModel("the model's chat template is not one the Ollama export can translate",
                           f"supported: {', '.join(f.name for f in FAMILIES)}; export --format gguf instead")


def _today() -> str:
    import datetime

    return datetime.date.today().isoformat()


def _with_preamble(family: ChatFamily, tokenizer: Any) -> ChatFamily:
    """``family`` with the text the chat template puts before the first message in front of its template
    (unchanged when the rendering does not end with the family's own: the probes then tell it is another).
    Today's date in it (gpt-oss's "Current date:", from ``strftime_now``) becomes Ollama's ``currentDate``."""
    hf, own = hf_render(tokenizer, PROBES[0]), ollama_render(family, PROBES[0], None)
    preamble = hf[:len(hf) - len(own)]
    if not hf.endswith(own) or "{{" in preamble:
        return family
    return replace(family, template=preamble.replace(_today(), "{{ currentDate }}") + family.template)
def _renderable(tokenizer: Any) -> list[tuple[list[dict], str]]:
    """The probes the tokenizer's template renders, with its text. A template may refuse a system
    message (Gemma 1 and 2 raise); a conversation without one must render, or nothing is compared."""
    out = []
    for probe in PROBES:
        try:
            out.append((probe, hf_render(tokenizer, probe)))
        except TemplateError:
            if not any(m["role"] == "system" for m in probe):
                raise
    return out


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
