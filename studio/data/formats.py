"""Dataset formats: how to recognise each one and how to turn a record into chat messages (or text).

``FORMATS`` is the registry (name -> Format); the GUI fills its format menu from ``describe()``.
A format declares its fields with the column names they are commonly found under; the
normaliser checks one record and raises ``RowProblem`` naming the field and the fix.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from studio.data.images import IMAGE, IMAGE_COLUMNS, is_image_part, part_ref
from studio.data.report import WARNING, Problem, RowProblem

Warn = Callable[[Problem], None]

ROLES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant",
         "bot": "assistant", "model": "assistant", "ai": "assistant", "chatgpt": "assistant", "developer": "system",
         # tool results (OpenAI 'tool'/'function', Llama 'ipython', ShareGPT 'observation')
         "tool": "tool", "function": "tool", "ipython": "tool", "observation": "tool", "tool_response": "tool",
         # an assistant turn whose value is a call (ShareGPT 'function_call')
         "function_call": "tool_call", "tool_call": "tool_call"}
ROLE_TARGETS = ("system", "user", "assistant", "tool")  # what --roles may map a role value to
TURN_KEYS = ("role", "content")
# Keys a turn may carry that are read (or deliberately carried along); any other key is named as unused.
KNOWN_TURN_KEYS = frozenset({"role", "content", "from", "value", "tool_calls", "function_call", "name",
                             "tool_call_id", "id"})
# Content parts that are not text and not images (studio.data.images keeps those): named per row, not used.
MEDIA_KINDS = {"audio": "audio", "input_audio": "audio", "audio_url": "audio", "video": "video", "video_url": "video",
               "file": "files", "input_file": "files"}


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
    probe: Callable[[dict, dict, dict], bool] | None = None  # extra check: (record, colmap, columns)

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
        if "images" in columns and "images" not in colmap:  # --columns images=NAME: any format's image column
            actual = keys.get(str(columns["images"]).strip().lower())
            if actual is not None:
                colmap["images"] = actual
        return colmap

    def fits(self, record: Any, columns: dict) -> dict | None:
        """The column map if ``record`` looks like this format."""
        if not isinstance(record, dict):
            return None
        colmap = self.resolve({str(k).strip().lower(): k for k in record}, columns)
        if colmap is None:
            return None
        if self.probe and not self.probe(record, colmap, columns):
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


def _content(value: Any, field: str, warn: Warn | None = None) -> str | None:
    """Message content: a string or a list of parts; text parts are joined, an image part becomes an
    ``<image>`` marker at its place (what it names goes to ``warn.images`` when the caller collects them,
    ``scan.RowWarnings``), other parts are counted (media)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and all(isinstance(p, (dict, str)) for p in value):
        texts: list[str] = []
        media: dict[str, int] = {}  # media group -> parts of it
        for p in value:
            if isinstance(p, str):
                texts.append(p)
                continue
            kind = str(p.get("type") or ("text" if ("text" in p or "value" in p) else "unknown"))
            if kind in ("text", "input_text", "output_text"):
                text = p.get("text", p.get("value"))
                texts.append(text if isinstance(text, str) else "")
            elif is_image_part(p, kind):
                texts.append(IMAGE)
                images = getattr(warn, "images", None)
                if images is not None:
                    images.append((part_ref(p), field))
            else:
                group = MEDIA_KINDS.get(kind, f"'{kind}' parts")
                media[group] = media.get(group, 0) + 1
        text = "".join(texts)
        if media and not text.strip():  # (an image alone is content: a vision model reads it)
            raise RowProblem(f"the turn holds only {' and '.join(media)}; text-only training cannot use it",
                             "remove this row, or add the text the answer relies on", field, code="only_media")
        for group in media:
            if warn is not None:
                warn(media_problem(group, field))
        return text
    return _text(value, field)


def media_problem(group: str, field: str) -> Problem:
    """One warning per row and kind: what a text-only training leaves out."""
    return Problem(f"the row carries {group}; the {group} are not used (training reads text and images only)",
                   "nothing to do for text training; remove them to silence this", field, severity=WARNING,
                   code=f"media_{group}")


def _as_list(value: Any, field: str) -> list:
    """A list of turns; a JSON string holding one (CSV cells) is accepted."""
    value = _json_cell(value, field, "[")
    if value is None:
        raise RowProblem(f"'{field}' is missing", f"add a '{field}' list of turns", field, code="missing")
    if not isinstance(value, list):
        raise RowProblem(f"'{field}' is not a list of turns", f"write '{field}' as a list of "
                         "{\"role\": ..., \"content\": ...} objects", field, code="not_list")
    if not value:
        raise RowProblem(f"'{field}' has no turns", "remove this row or add the conversation", field, code="empty")
    return value


def _json_cell(value: Any, field: str, opener: str = "[{") -> Any:
    """A JSON list/object written as text (CSV cells, LLaMA-Factory 'tools' strings) parsed; others unchanged."""
    if isinstance(value, str) and value.lstrip()[:1] in opener and value.strip():
        try:
            return json.loads(value)
        except ValueError:
            raise RowProblem(f"'{field}' holds text that is not valid JSON", "fix the JSON in this cell",
                             field, code="not_list") from None
    return value


# ------------------------------------------------------------------ conversations

def _role(raw_role: Any, i: int, where: str, roles: dict) -> str:
    if not isinstance(raw_role, str):
        raise RowProblem(f"turn {i + 1} has no role", "give each turn a 'role' of system, user or assistant",
                         where, code="unknown_role")
    role = roles.get(raw_role) or roles.get(raw_role.strip().lower())
    if role is None:
        raise RowProblem(f"unknown role '{raw_role}' in turn {i + 1}",
                         f"use system, user or assistant (human/gpt are understood too), or map it with "
                         f"--roles {raw_role.strip()}=ROLE (system, user, assistant or tool)", where,
                         code="unknown_role")
    return role


def _arguments(value: Any) -> Any:
    """Tool-call arguments as an object when they are JSON text (chat templates write them with tojson)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return parsed if isinstance(parsed, dict) else value
    return {} if value is None else value


def tool_calls(value: Any, where: str) -> list[dict]:
    """OpenAI ``tool_calls``, a legacy ``function_call`` object or a ShareGPT call value, as template calls."""
    value = _json_cell(value, where)
    calls = value if isinstance(value, list) else [value]
    out = []
    for k, call in enumerate(calls):
        fn = call.get("function", call) if isinstance(call, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(fn, dict) or not isinstance(name, str) or not name.strip():
            raise RowProblem(f"tool call {k + 1} has no function name",
                             "write each call as {\"name\": ..., \"arguments\": {...}} (or OpenAI's "
                             "{\"function\": {\"name\": ..., \"arguments\": ...}})", where, code="tool_call")
        item: dict = {"type": "function", "function": {"name": name, "arguments": _arguments(
            fn.get("arguments", fn.get("parameters")))}}
        if isinstance(call, dict) and isinstance(call.get("id"), str):
            item["id"] = call["id"]
        out.append(item)
    return out


def tools_schema(value: Any, field: str) -> list[dict] | None:
    """A ``tools`` column (list or JSON text) as the list of JSON schemas chat templates take."""
    value = _json_cell(value, field)
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RowProblem(f"'{field}' is not a list of tool definitions",
                         "write it as a list of {\"type\": \"function\", \"function\": {\"name\": ..., "
                         "\"parameters\": ...}}", field, code="tools")
    return [t if "function" in t else {"type": "function", "function": t} for t in value]


def _turn(msg: Any, i: int, field: str, keys: tuple, roles: dict, warn: Warn) -> dict:
    """One turn as a template message: role, content, and tool calls or the tool's name where given."""
    where = f"{field}[{i}]"
    if not isinstance(msg, dict):
        raise RowProblem(f"turn {i + 1} is not an object", "write each turn as {\"role\": ..., \"content\": ...}",
                         where, code="not_object")
    role_key, content_key = keys
    role = _role(_first_of(msg, role_key, "role", "from"), i, f"{where}.{role_key}", roles)
    raw = _first_of(msg, content_key, "content", "value")
    unused = [str(k) for k in msg if k not in KNOWN_TURN_KEYS and k not in keys]
    if unused:
        warn(Problem(f"turn key(s) {', '.join(unused)} not used", "they are left out of training; remove them "
                     "to silence this", f"{field}[].{unused[0]}", severity=WARNING, code="unused_key"))
    if role == "tool_call":  # ShareGPT: the value is the call itself
        return {"role": "assistant", "content": "", "tool_calls": tool_calls(raw, f"{where}.{content_key}")}
    if role == "tool" and isinstance(raw, (dict, list)) and not _is_parts(raw):
        raw = json.dumps(raw, ensure_ascii=False)  # a structured tool result is written as JSON text
    content = _content(raw, f"{where}.{content_key}", warn)
    out: dict[str, Any] = {"role": role, "content": content or ""}
    if role == "assistant" and (msg.get("tool_calls") or msg.get("function_call")):
        key = "tool_calls" if msg.get("tool_calls") else "function_call"
        out["tool_calls"] = tool_calls(msg[key], f"{where}.{key}")
    elif role == "tool":
        for key in ("name", "tool_call_id"):
            if isinstance(msg.get(key), str):
                out[key] = msg[key]
    return out


def _is_parts(value: Any) -> bool:
    """A list of typed content parts (``[{"type": "text", ...}, ...]``)."""
    return isinstance(value, list) and bool(value) and all(isinstance(p, dict) and "type" in p for p in value)


def _first_of(msg: dict, *keys: str) -> Any:
    for k in keys:
        value = msg.get(k)
        if value is not None:
            return value
    return None


class Turns(list):
    """The messages ``conversation`` returns; ``special`` is False when every turn was a plain text turn
    without '<' in it, so the per-row checks for tools and media markers can skip it (speed)."""

    __slots__ = ("special",)
    special: bool


_PLAIN_ROLES = frozenset({"system", "user", "assistant"})


def conversation(turns: list, field: str, warn: Warn, keys: tuple = ("role", "content"),
                 roles: dict | None = None) -> list[dict]:
    """Check a list of turns and return template messages ending with an assistant turn.

    Assistant turns may call tools (``tool_calls``); tool results are ``tool`` turns. Both are kept
    and rendered with the model's chat template.
    """
    out = Turns()
    out.special = False
    roles = roles or ROLES
    role_key, content_key = keys
    for i, msg in enumerate(turns):
        # Fast path for the common, clean turn; anything unusual takes the careful path below.
        if type(msg) is dict and len(msg) == 2:
            raw, content = msg.get(role_key), msg.get(content_key)
            role = roles.get(raw) if type(raw) is str else None
            if role in _PLAIN_ROLES and type(content) is str and content.strip():
                out.append({"role": role, "content": content})
                if "<" in content:
                    out.special = True
                continue
        out.special = True
        turn = _turn(msg, i, field, keys, roles, warn)
        if not turn["content"].strip() and not turn.get("tool_calls"):
            where = f"{field}[{i}].{content_key}"
            if turn["role"] == "assistant":
                raise RowProblem(f"assistant turn {i + 1} is empty", "write the reply or remove this row", where,
                                 code="empty_assistant")
            warn(Problem(f"{turn['role']} turn {i + 1} is empty", "fill it in or remove the turn", where,
                         severity=WARNING, code="empty_turn"))
        out.append(turn)
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


def _with_tools(record: dict, colmap: dict, msgs: list[dict]) -> dict:
    out = {"messages": msgs}
    if "tools" in colmap:
        tools = tools_schema(record.get(colmap["tools"]), colmap["tools"])
        if tools:
            out["tools"] = tools
    return out


def _messages(record: dict, colmap: dict, warn: Warn) -> dict:
    field = colmap["messages"]
    keys = (colmap.get("role", "role"), colmap.get("content", "content"))
    msgs = conversation(_as_list(_get(record, colmap, "messages"), field), field, warn, keys, colmap.get("roles"))
    return _with_tools(record, colmap, _prepend_system(record, colmap, msgs))


def _sharegpt(record: dict, colmap: dict, warn: Warn) -> dict:
    field = colmap["conversations"]
    keys = (colmap.get("role", "from"), colmap.get("content", "value"))
    msgs = conversation(_as_list(_get(record, colmap, "conversations"), field), field, warn, keys,
                        colmap.get("roles"))
    return _with_tools(record, colmap, _prepend_system(record, colmap, msgs))


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
        return _with_tools(record, colmap, conversation(turns, colmap[ask], warn, roles=colmap.get("roles")))
    user = _text(prompt, colmap[ask], what=f"'{colmap[ask]}'")
    assistant = _text(answer, colmap[reply], what=f"'{colmap[reply]}'")
    if "context" in colmap:
        context = _text(record.get(colmap["context"]), colmap["context"], required=False)
        user = f"{context}\n\n{user}" if context else user
    return _with_system(record, colmap, user, assistant)


def _history(value: Any, field: str) -> list[dict]:
    """Alpaca ``history``: earlier [user, assistant] pairs, oldest first."""
    value = _json_cell(value, field)
    if value is None or value == []:
        return []
    if not isinstance(value, list):
        raise RowProblem(f"'{field}' is not a list of [user, assistant] pairs",
                         "write it as [[\"question\", \"answer\"], ...] or remove it", field, code="history")
    out = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RowProblem(f"history entry {i + 1} is not a [user, assistant] pair of texts",
                             "write each entry as [\"question\", \"answer\"]", f"{field}[{i}]", code="history")
        out += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return out


def _alpaca(record: dict, colmap: dict, warn: Warn) -> dict:
    instruction = _text(_get(record, colmap, "instruction"), colmap["instruction"], what="the instruction")
    extra = _text(record.get(colmap["input"]), colmap["input"], required=False) if "input" in colmap else ""
    output = _text(_get(record, colmap, "output"), colmap["output"], what="the output")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    example = _with_system(record, colmap, user, output)
    if "history" in colmap:
        earlier = _history(record.get(colmap["history"]), colmap["history"])
        if earlier:
            msgs = example["messages"]
            at = 1 if msgs[0]["role"] == "system" else 0
            example["messages"] = msgs[:at] + earlier + msgs[at:]
    return example


def _prompt_completion(record: dict, colmap: dict, warn: Warn) -> dict:
    return _pair(record, colmap, warn, "prompt", "completion")


# Columns that hold an answer to imitate: a row with one is not "prompts alone".
_ANSWER_COLUMNS = frozenset({"completion", "response", "chosen", "output", "messages", "conversations",
                             "conversation", "rejected", "text", "content", "document", "body", "passage",
                             "caption", "description"})


def _prompts(record: dict, colmap: dict, warn: Warn) -> dict:
    """A prompt alone (grpo samples the answers): the user turn, after an optional system prompt; a prompt
    given as turns ({role, content}, ending with a user turn) is kept as it is."""
    value = _get(record, colmap, "prompt")
    field = colmap["prompt"]
    if isinstance(value, list):
        ok = value and all(isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                           and isinstance(m.get("content"), str) for m in value)
        if not ok or value[-1]["role"] != "user":
            raise RowProblem(f"'{field}' is a list but not of {{role, content}} turns ending with a user turn",
                             "write the prompt as text, or as turns whose last one is the user's", field,
                             code="prompt")
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in value]}
    user = _text(value, field, what=f"'{field}'")
    if "input" in colmap:  # an instruction's input, as alpaca joins them
        extra = _text(record.get(colmap["input"]), colmap["input"], required=False)
        user = f"{user}\n\n{extra}" if extra else user
    msgs = _with_system(record, colmap, user, "")["messages"][:-1]
    return {"messages": msgs}


def _prompts_fit(record: dict, colmap: dict, columns: dict) -> bool:
    return not (_ANSWER_COLUMNS & {str(k).strip().lower() for k in record})


def _question_answer(record: dict, colmap: dict, warn: Warn) -> dict:
    return _pair(record, colmap, warn, "question", "answer")


def _has_image(record: dict) -> bool:
    return any(record.get(k) not in (None, "", [], {}) for k in record if str(k).strip().lower() in IMAGE_COLUMNS)


def _image_text(record: dict, colmap: dict, warn: Warn) -> dict:
    """An image with its caption or answer (and an optional prompt): user = the prompt, which the image's
    ``<image>`` marker is put in front of (studio.data.images.attach), assistant = the text."""
    field = colmap["images"]
    if record.get(field) in (None, "", [], {}):
        raise RowProblem(f"'{field}' is empty", f"give the row's image in '{field}' or remove this row", field,
                         code="empty")
    answer = _text(_get(record, colmap, "answer"), colmap["answer"], what=f"'{colmap['answer']}'")
    prompt = _text(record.get(colmap["prompt"]), colmap["prompt"], required=False) if "prompt" in colmap else ""
    return _with_system(record, colmap, prompt, answer)


def _text_format(record: Any, colmap: dict, warn: Warn) -> dict:
    if isinstance(record, str):
        value, field = record, "text"
    else:
        field = colmap["text"]
        value = _get(record, colmap, "text")
    return {"text": _text(value, field, what="the text")}


# ------------------------------------------------------------------ preference pairs

_HH = re.compile(r"(?:^|\n\n)(Human|Assistant|H|A): ?")


def _hh_turns(text: str) -> list[dict] | None:
    """'\\n\\nHuman: …\\n\\nAssistant: …' transcripts (Anthropic HH style) as turns; None when not one."""
    parts = _HH.split(text)
    if len(parts) < 5 or parts[0].strip():
        return None
    turns = [{"role": "user" if who in ("Human", "H") else "assistant", "content": body.strip()}
             for who, body in zip(parts[1::2], parts[2::2])]
    return turns if turns[-1]["role"] == "assistant" else None


def _side(value: Any, field: str, warn: Warn, roles: dict | None) -> list[dict]:
    """One side of a pair (chosen or rejected): a reply text, one turn, or a list of turns."""
    value = _json_cell(value, field)
    if isinstance(value, str):
        return [{"role": "assistant", "content": _text(value, field, what=f"'{field}'")}]
    if isinstance(value, dict) and "messages" in value:  # OpenAI: {"messages": [...]} style outputs
        value = value["messages"]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RowProblem(f"'{field}' holds {kind_of(value)}, not a reply", f"write '{field}' as the reply text or a "
                         "list of turns", field, code="not_text")
    out = []
    for i, msg in enumerate(value):
        keys = ("from", "value") if isinstance(msg, dict) and "from" in msg else ("role", "content")
        turn = _turn(msg, i, field, keys, roles or ROLES, warn)
        if turn["role"] == "assistant" and not turn["content"].strip() and not turn.get("tool_calls"):
            raise RowProblem(f"'{field}' has an empty assistant turn", "write the reply or remove this row",
                             f"{field}[{i}]", code="empty_assistant")
        out.append(turn)
    return out


def _prompt_turns(record: dict, colmap: dict, warn: Warn) -> tuple[list[dict], list | None]:
    """The prompt side as turns (text, turns, or OpenAI's {"messages", "tools"} input) and its tools."""
    if "prompt" not in colmap:
        return [], None
    field = colmap["prompt"]
    value = _json_cell(record.get(field), field)
    tools = None
    if isinstance(value, dict) and "messages" in value:
        tools = tools_schema(value.get("tools"), f"{field}.tools")
        value = value["messages"]
    if isinstance(value, list):
        keys = ("from", "value") if value and isinstance(value[0], dict) and "from" in value[0] else ("role", "content")
        turns = [_turn(m, i, field, keys, colmap.get("roles") or ROLES, warn) for i, m in enumerate(value)]
    else:
        user = _text(value, field, what=f"'{field}'")
        extra = (_text(record.get(colmap["input"]), colmap["input"], required=False)
                 if colmap.get("input", field) != field else "")
        turns = [{"role": "user", "content": f"{user}\n\n{extra}" if extra.strip() else user}]
    if "system" in colmap and isinstance(record.get(colmap["system"]), str) and record[colmap["system"]].strip() \
            and (not turns or turns[0]["role"] != "system"):
        turns.insert(0, {"role": "system", "content": record[colmap["system"]]})
    return turns, tools


def _preference(record: dict, colmap: dict, warn: Warn) -> dict:
    """A chosen/rejected pair (or a ranked list): the chosen conversation is the SFT example.

    The example keeps ``rejected`` (a list of alternative endings, each a list of turns, to follow
    ``messages[:prompt_len]``) for a preference objective; SFT trains ``messages`` only.
    """
    roles = colmap.get("roles")
    prompt, tools = _prompt_turns(record, colmap, warn)
    chosen_field = colmap["chosen"]
    raw_chosen = _json_cell(_get(record, colmap, "chosen"), chosen_field)
    if "rejected" in colmap:
        chosen_value, rejected_values = raw_chosen, [_get(record, colmap, "rejected")]
    else:  # a ranking: the output list, best first
        if not (isinstance(raw_chosen, list) and len(raw_chosen) >= 2):
            raise RowProblem(f"'{chosen_field}' is not a ranked list of at least two answers",
                             "write it as [\"best answer\", \"worse answer\", ...]", chosen_field, code="preference")
        chosen_value, rejected_values = raw_chosen[0], raw_chosen[1:]
    rejected_field = colmap.get("rejected", chosen_field)
    chosen = _hh_turns(chosen_value) if not prompt and isinstance(chosen_value, str) else None
    if chosen:
        rejected = [(isinstance(r, str) and _hh_turns(r)) or _side(r, rejected_field, warn, roles)
                    for r in rejected_values]
    else:
        chosen = _side(chosen_value, chosen_field, warn, roles)
        rejected = [_side(r, rejected_field, warn, roles) for r in rejected_values]
    if prompt and any(m["role"] == "user" for m in chosen):
        prompt = []  # both sides are whole conversations (UltraFeedback style): the prompt column repeats them
    if not prompt:  # implicit prompt: the turns both sides share
        n = 0
        while all(len(r) > n + 1 and n + 1 < len(chosen) and r[n] == chosen[n] for r in rejected):
            n += 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], [r[n:] for r in rejected]
        if not prompt:
            raise RowProblem("the pair has no prompt", "add a 'prompt' column (or map one with --columns "
                             "prompt=NAME)", chosen_field, code="preference")
    msgs = prompt + chosen
    if msgs[-1]["role"] != "assistant":
        _not_ending_with_assistant(msgs, chosen_field)
    if not any(m["role"] == "user" for m in prompt):
        raise RowProblem("the prompt has no user turn", "give the pair a prompt with a user turn",
                         colmap.get("prompt", chosen_field), code="preference")
    if not tools and "tools" in colmap:
        tools = tools_schema(record.get(colmap["tools"]), colmap["tools"])
    example = {"messages": msgs, "rejected": rejected, "prompt_len": len(prompt)}
    if tools:
        example["tools"] = tools
    return example


def _preference_fits(record: dict, colmap: dict, columns: dict) -> bool:
    if "rejected" in colmap:
        return True
    ranked = record.get(colmap["chosen"])
    return isinstance(ranked, list) and len(ranked) >= 2 and all(isinstance(x, str) for x in ranked)


def _alpaca_fits(record: dict, colmap: dict, columns: dict) -> bool:
    """Not a ranking (an output list): that is preference data."""
    return not isinstance(record.get(colmap["output"]), list)


SYSTEM = Field("system", ("system", "system_prompt", "instructions_system"), required=False)
TOOLS = Field("tools", ("tools", "functions"), required=False)
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("messages", "OpenAI chat: a 'messages' list of {role, content} (system/user/assistant/tool), "
                       "optional 'tools'",
           (Field("messages", ("messages", "conversation", "conversations", "chat", "dialog", "dialogue")), SYSTEM,
            TOOLS),
           _messages, probe=lambda r, m, cols: _is_turns(r.get(m["messages"]), ("role", "content"), cols)),
    Format("sharegpt", "ShareGPT: a 'conversations' list of {from, value} (human/gpt/function_call/observation)",
           (Field("conversations", ("conversations", "conversation", "messages", "items")), SYSTEM, TOOLS),
           _sharegpt, probe=lambda r, m, cols: _is_turns(r.get(m["conversations"]), ("from", "value"), cols)),
    Format("alpaca", "Alpaca: instruction, optional input, output, optional history",
           (Field("instruction", ("instruction", "instructions")), Field("input", ("input", "context"), False),
            Field("output", ("output", "response")), Field("history", ("history",), False), SYSTEM), _alpaca,
           probe=_alpaca_fits),
    Format("prompt_completion", "Prompt and completion columns",
           (Field("prompt", ("prompt",)), Field("completion", ("completion", "response", "chosen")), SYSTEM, TOOLS),
           _prompt_completion),
    Format("question_answer", "Question and answer columns (optional context)",
           (Field("question", ("question", "query", "q")), Field("answer", ("answer", "answers", "a", "response")),
            Field("context", ("context",), False), SYSTEM), _question_answer),
    Format("preference", "Preference pairs: prompt (or conversations, or input) with chosen and rejected answers, "
                         "or a ranked 'output' list; SFT trains the chosen answers",
           (Field("chosen", ("chosen", "preferred_output", "chosen_response", "response_chosen", "response_j",
                             "output")),
            Field("rejected", ("rejected", "non_preferred_output", "rejected_response", "response_rejected",
                               "response_k"), False),
            Field("prompt", ("prompt", "conversations", "messages", "instruction", "question", "query", "input"),
                  False),
            Field("input", ("input",), False), SYSTEM, TOOLS),
           _preference, probe=_preference_fits),
    Format("prompts", "Prompts alone, for train.objective 'grpo' (it samples the answers and learns from their "
                      "rewards); other columns (answer, pattern, ...) reach the rewards",
           (Field("prompt", ("prompt", "problem", "instruction", "query")), Field("input", ("input", "context"), False),
            SYSTEM), _prompts, probe=_prompts_fit),
    Format("image_text", "An image with its caption or answer: an image column (image/images/image_path), "
                         "'caption'/'text'/'description', optional 'prompt'/'question'",
           (Field("images", IMAGE_COLUMNS), Field("answer", ("caption", "text", "description", "captions")),
            Field("prompt", ("prompt", "question", "instruction", "query"), False), SYSTEM),
           _image_text, probe=lambda r, m, cols: r.get(m["images"]) not in (None, "", [], {})),
    Format("text", "Plain text for continued pre-training (a 'text' column or a .txt file)",
           (Field("text", ("text", "content", "document", "body", "passage")),), _text_format,
           probe=lambda r, m, cols: not _has_image(r)),  # text beside an image is its caption (image_text)
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
