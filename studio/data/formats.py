"""Dataset formats: how to recognise each one and how to turn a record into chat messages (or text).

``FORMATS`` is the registry (name -> Format); the GUI fills its format menu from ``describe()``.
A format declares its fields with the column names they are commonly found under; the
normaliser checks one record and raises ``RowProblem`` naming the field and the fix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from studio.data.report import WARNING, Problem, RowProblem

Warn = Callable[[Problem], None]

ROLES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant",
         "bot": "assistant", "model": "assistant", "ai": "assistant", "chatgpt": "assistant", "developer": "system"}
TURN_KEYS = ("role", "content")
TOOL_ROLES = {"tool", "function", "ipython", "function_call", "observation", "tool_call", "tool_response"}


@dataclass(frozen=True)
class Field:
    name: str  # canonical name, the key of a --columns mapping
    aliases: tuple  # column names it is found under (compared case-insensitively)
    required: bool = True


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    fields: tuple
    normalise: Callable[[Any, dict, Warn], dict]
    probe: Callable[[Any, dict], bool] | None = None  # extra check on the main field's value

    def resolve(self, keys: dict, columns: dict) -> dict | None:
        """Canonical field -> column for a record with ``keys`` (lower-case -> actual), or None if unfit."""
        colmap = {}
        for f in self.fields:
            if f.name in columns:
                actual = keys.get(str(columns[f.name]).strip().lower())
            else:
                actual = next((keys[a] for a in f.aliases if a in keys), None)
            if actual is not None:
                colmap[f.name] = actual
            elif f.required:
                return None
        for key in TURN_KEYS:  # keys inside each turn, for conversation formats
            if key in columns:
                colmap[key] = str(columns[key])
        return colmap

    def fits(self, record: Any, columns: dict) -> dict | None:
        """The column map if ``record`` looks like this format."""
        if not isinstance(record, dict):
            return None
        colmap = self.resolve({str(k).strip().lower(): k for k in record}, columns)
        if colmap is None:
            return None
        if self.probe and not self.probe(record.get(colmap[self.fields[0].name]), columns):
            return None
        return colmap


# ------------------------------------------------------------------ value checks

_KINDS = {"NoneType": "null", "list": "a list", "dict": "an object", "int": "a number", "float": "a number",
          "str": "text", "bool": "true/false"}


def kind_of(value: Any) -> str:
    """What a JSON value is, in the words a problem message uses."""
    name = type(value).__name__
    return _KINDS.get(name, name)


def _text(value: Any, field: str, *, required: bool = True, what: str = "") -> str:
    """A string field; numbers, lists and blanks are problems (named, with the fix)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if not required:
            return ""
        raise RowProblem(f"{what or field} is empty", f"fill in '{field}' or remove this row", field, code="empty")
    if isinstance(value, str):
        return value
    raise RowProblem(f"'{field}' holds {kind_of(value)}, not text", f"write '{field}' as a string (in quotes)", field,
                     code="not_text")


def _content(value: Any, field: str) -> str | None:
    """Message content: a string or a list of text parts (OpenAI style); None when absent."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        kinds = {p.get("type", "text") for p in value}
        if kinds - {"text"}:
            raise RowProblem(f"'{field}' holds {', '.join(sorted(kinds - {'text'}))} parts; only text is trained",
                             "remove the non-text parts or this row", field, code="not_text")
        return "".join(str(p.get("text", "")) for p in value)
    return _text(value, field)


def _as_list(value: Any, field: str) -> list:
    """A list of turns; a JSON string holding one (CSV cells) is accepted."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            raise RowProblem(f"'{field}' holds text that is not a valid JSON list", "fix the JSON in this cell",
                             field, code="not_list") from None
    if value is None:
        raise RowProblem(f"'{field}' is missing", f"add a '{field}' list of turns", field, code="missing")
    if not isinstance(value, list):
        raise RowProblem(f"'{field}' is not a list of turns", f"write '{field}' as a list of "
                         "{\"role\": ..., \"content\": ...} objects", field, code="not_list")
    if not value:
        raise RowProblem(f"'{field}' has no turns", "remove this row or add the conversation", field, code="empty")
    return value


# ------------------------------------------------------------------ conversations

def _turn(msg: Any, i: int, field: str, keys: tuple) -> tuple[str, str | None] | None:
    """(role, content) of one turn, or None for a tool turn (ignored)."""
    where = f"{field}[{i}]"
    if not isinstance(msg, dict):
        raise RowProblem(f"turn {i + 1} is not an object", "write each turn as {\"role\": ..., \"content\": ...}",
                         where, code="not_object")
    role_key, content_key = keys
    raw_role = _first_of(msg, role_key, "role", "from")
    if not isinstance(raw_role, str):
        raise RowProblem(f"turn {i + 1} has no role", "give each turn a 'role' of system, user or assistant",
                         f"{where}.{role_key}", code="unknown_role")
    role = raw_role.strip().lower()
    if role in TOOL_ROLES or (role == "assistant" and msg.get("tool_calls") and not msg.get(content_key)):
        return None
    if role not in ROLES:
        raise RowProblem(f"unknown role '{raw_role}' in turn {i + 1}",
                         "use system, user or assistant (human/gpt are understood too)", f"{where}.{role_key}",
                         code="unknown_role")
    return ROLES[role], _content(_first_of(msg, content_key, "content", "value"), f"{where}.{content_key}")


def _first_of(msg: dict, *keys: str) -> Any:
    for k in keys:
        value = msg.get(k)
        if value is not None:
            return value
    return None


def conversation(turns: list, field: str, warn: Warn, keys: tuple = ("role", "content")) -> list[dict]:
    """Check a list of turns and return ``[{"role", "content"}, ...]`` ending with the assistant."""
    out, tools = [], 0
    role_key, content_key = keys
    for i, msg in enumerate(turns):
        # Fast path for the common, clean turn; anything unusual takes the careful path below.
        if type(msg) is dict:
            role, content = ROLES.get(msg.get(role_key)), msg.get(content_key)
            if role is not None and type(content) is str and content.strip():
                out.append({"role": role, "content": content})
                continue
        turn = _turn(msg, i, field, keys)
        if turn is None:
            tools += 1
            continue
        role, content = turn
        if not (content or "").strip():
            where = f"{field}[{i}].{content_key}"
            if role == "assistant":
                raise RowProblem(f"assistant turn {i + 1} is empty", "write the reply or remove this row", where,
                                 code="empty_assistant")
            warn(Problem(f"{role} turn {i + 1} is empty", "fill it in or remove the turn", where, severity=WARNING,
                         code="empty_turn"))
        out.append({"role": role, "content": content or ""})
    if tools:
        warn(Problem(f"{tools} tool turn(s) ignored", "tool calls are not trained; the other turns are", field,
                     severity=WARNING, code="tool_turns"))
    if not out or out[-1]["role"] != "assistant":
        _not_ending_with_assistant(out, field)
    return out


def _not_ending_with_assistant(out: list[dict], field: str) -> None:
    if not any(m["role"] == "assistant" for m in out):
        raise RowProblem("the conversation has no assistant turn", "add the assistant's reply; only it is trained",
                         field, code="no_assistant")
    raise RowProblem(f"the conversation ends with a {out[-1]['role']} turn, not the assistant",
                     "add the assistant's reply at the end or remove the last turn", field,
                     code="not_ending_assistant")


def _is_turns(value: Any, keys: tuple, columns: dict) -> bool:
    """The value is a list of turns with these keys (or the --columns role/content names)."""
    keys = keys + tuple(str(columns[k]) for k in TURN_KEYS if k in columns)
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return False
    first = value[0] if isinstance(value, list) and value else None
    return isinstance(first, dict) and any(k in first for k in keys)


def _messages(record: dict, colmap: dict, warn: Warn) -> dict:
    field = colmap["messages"]
    keys = (colmap.get("role", "role"), colmap.get("content", "content"))
    msgs = conversation(_as_list(_get(record, colmap, "messages"), field), field, warn, keys)
    return {"messages": _prepend_system(record, colmap, msgs)}


def _sharegpt(record: dict, colmap: dict, warn: Warn) -> dict:
    field = colmap["conversations"]
    keys = (colmap.get("role", "from"), colmap.get("content", "value"))
    msgs = conversation(_as_list(_get(record, colmap, "conversations"), field), field, warn, keys)
    return {"messages": _prepend_system(record, colmap, msgs)}


def _prepend_system(record: dict, colmap: dict, msgs: list[dict]) -> list[dict]:
    """A separate system column becomes the first turn, unless the conversation has its own."""
    system = record.get(colmap["system"]) if "system" in colmap else None
    if isinstance(system, str) and system.strip() and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


# ------------------------------------------------------------------ single-turn formats

def _with_system(record: dict, colmap: dict, user: str, assistant: str) -> dict:
    msgs = []
    if "system" in colmap:
        system = record.get(colmap["system"])
        if isinstance(system, str) and system.strip():
            msgs.append({"role": "system", "content": system})
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": msgs}


def _get(record: dict, colmap: dict, name: str) -> Any:
    col = colmap[name]
    try:
        return record[col]
    except KeyError:
        have = ", ".join(map(str, list(record)[:8])) or "nothing"
        raise RowProblem(f"column '{col}' is missing (this row has: {have})",
                         f"add '{col}' to this row, or map your column with --columns {name}=NAME", col,
                         code="missing") from None


def _pair(record: dict, colmap: dict, warn: Warn, ask: str, reply: str) -> dict:
    """Prompt/completion shapes: plain strings, or TRL-style lists of turns on either side."""
    prompt, answer = _get(record, colmap, ask), _get(record, colmap, reply)
    if isinstance(answer, dict) and isinstance(answer.get("text"), list) and answer["text"]:
        answer = answer["text"][0]  # SQuAD: {"text": [...], "answer_start": [...]}; the first answer
    if isinstance(prompt, list) or isinstance(answer, list):
        turns = (prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}])
        turns = turns + (answer if isinstance(answer, list) else [{"role": "assistant", "content": answer}])
        return {"messages": conversation(turns, colmap[ask], warn)}
    user = _text(prompt, colmap[ask], what=f"'{colmap[ask]}'")
    assistant = _text(answer, colmap[reply], what=f"'{colmap[reply]}'")
    if "context" in colmap:
        context = _text(record.get(colmap["context"]), colmap["context"], required=False)
        user = f"{context}\n\n{user}" if context else user
    return _with_system(record, colmap, user, assistant)


def _alpaca(record: dict, colmap: dict, warn: Warn) -> dict:
    instruction = _text(_get(record, colmap, "instruction"), colmap["instruction"], what="the instruction")
    extra = _text(record.get(colmap["input"]), colmap["input"], required=False) if "input" in colmap else ""
    output = _text(_get(record, colmap, "output"), colmap["output"], what="the output")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return _with_system(record, colmap, user, output)


def _prompt_completion(record: dict, colmap: dict, warn: Warn) -> dict:
    return _pair(record, colmap, warn, "prompt", "completion")


def _question_answer(record: dict, colmap: dict, warn: Warn) -> dict:
    return _pair(record, colmap, warn, "question", "answer")


def _text_format(record: Any, colmap: dict, warn: Warn) -> dict:
    if isinstance(record, str):
        value, field = record, "text"
    else:
        field = colmap["text"]
        value = _get(record, colmap, "text")
    return {"text": _text(value, field, what="the text")}


SYSTEM = Field("system", ("system", "system_prompt", "instructions_system"), required=False)
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("messages", "OpenAI chat: a 'messages' list of {role, content} (system/user/assistant)",
           (Field("messages", ("messages", "conversation", "conversations", "chat", "dialog", "dialogue")), SYSTEM),
           _messages, probe=lambda v, cols: _is_turns(v, ("role", "content"), cols)),
    Format("sharegpt", "ShareGPT: a 'conversations' list of {from, value} (human/gpt)",
           (Field("conversations", ("conversations", "conversation", "messages", "items")), SYSTEM),
           _sharegpt, probe=lambda v, cols: _is_turns(v, ("from", "value"), cols)),
    Format("alpaca", "Alpaca: instruction, optional input, output",
           (Field("instruction", ("instruction", "instructions")), Field("input", ("input", "context"), False),
            Field("output", ("output", "response")), SYSTEM), _alpaca),
    Format("prompt_completion", "Prompt and completion columns",
           (Field("prompt", ("prompt",)), Field("completion", ("completion", "response", "chosen")), SYSTEM),
           _prompt_completion),
    Format("question_answer", "Question and answer columns (optional context)",
           (Field("question", ("question", "query", "q")), Field("answer", ("answer", "answers", "a")),
            Field("context", ("context",), False), SYSTEM), _question_answer),
    Format("text", "Plain text for continued pre-training (a 'text' column or a .txt file)",
           (Field("text", ("text", "content", "document", "body", "passage")),), _text_format),
)}


# Other names people use for the same formats (accepted by --format and inspect(fmt=...)).
ALIASES = {"openai": "messages", "chat": "messages", "chatml": "messages", "conversations": "sharegpt",
           "prompt-completion": "prompt_completion", "completion": "prompt_completion",
           "question-answer": "question_answer", "qa": "question_answer", "instruction": "alpaca",
           "plain": "text", "raw": "text", "pretraining": "text", "auto": "auto"}


def canonical(name: str) -> str:
    """The registry name for ``name`` (case, dashes and the usual aliases forgiven); unknown names unchanged."""
    key = str(name).strip().lower()
    if key in FORMATS:
        return key
    return ALIASES.get(key, ALIASES.get(key.replace("_", "-"), key.replace("-", "_")))


def describe() -> dict[str, str]:
    """Format name -> one-line description, in menu order."""
    return {name: f.description for name, f in FORMATS.items()}
