"""The one place the studio renders a chat template: a sandbox with size limits and a deadline.

A chat template is code that comes with a model folder. Rendering it is part of training, ``data
inspect``, chat, evaluation and every export, so a template that never ends (nested loops over
``range(100000)``) would hang all of them without a word, and one that builds a string of ten
gigabytes would take the machine's memory. Every render therefore goes through ``render_chat``:

- jinja2's ``ImmutableSandboxedEnvironment`` (no ``__class__``/``__globals__``, no mutation of the
  caller's lists and dicts), set up as the Hugging Face chat-template documentation promises a
  template author: ``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, a ``tojson`` that keeps
  non-ASCII text, ``raise_exception``, ``strftime_now``, ``{% generation %}`` blocks;
- ``*``, ``**``, ``+``, ``%`` and ``~`` refuse results longer than ``MAX_TEXT`` items before they
  are built, and the rendered text stops growing past ``MAX_TEXT`` characters;
- a deadline: a pure-Python loop cannot be interrupted from outside by a thread join or a timeout
  on a future (the loop keeps the GIL and keeps spinning); it can by an exception raised in its own
  thread at the next bytecode, which a watchdog thread asks CPython for when the render is late
  (``PyThreadState_SetAsyncExc``). The render then stops where it was, in any thread.

Two kinds of failure: ``TemplateError`` for a conversation the template refuses or cannot render
(a row-level problem: training skips the row and says so), and ``TemplateRunaway`` for a template
that does not finish or grows without bound, which stops whatever asked for the render.
"""
from __future__ import annotations

import ctypes
import datetime as _dt
import json
import os
import re
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from studio.data.sources import DataError

SECONDS_ENV = "LORA_STUDIO_TEMPLATE_SECONDS"
DEFAULT_SECONDS = 10.0  # a real template renders a conversation in well under a millisecond
MAX_TEXT = 1 << 26  # characters (or list items) one operation, or the whole rendered text, may reach
MAX_SOURCE = 1 << 22  # characters of template text (real ones are a few KB; jinja needs ~0.5 s per MB to compile)
SPECIALS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")
_WIDTH = re.compile(r"[%:][^%:a-zA-Z]*?(\d{7,})")  # a format width of a million characters or more


class TemplateError(ValueError):
    """The chat template refuses this conversation or cannot render it (a problem of one row)."""


class TemplateRunaway(DataError):
    """The chat template did not finish in time or grew past the size limit: the template is at fault."""


class _Expired(BaseException):
    """Raised inside the rendering thread by the watchdog; BaseException so no template-side handler eats it."""


class _TooBig(Exception):
    """An operation or the output of a template went past MAX_TEXT."""


def time_limit() -> float:
    """Seconds one render may take (``LORA_STUDIO_TEMPLATE_SECONDS``, default 10)."""
    try:
        value = float(os.environ.get(SECONDS_ENV, DEFAULT_SECONDS))
    except ValueError:
        return DEFAULT_SECONDS
    return value if value > 0 else DEFAULT_SECONDS


# ------------------------------------------------------------------ deadline

class _Watchdog:
    """One daemon thread for the whole process that interrupts renders past their deadline.

    ``arm`` and ``disarm`` cost a lock and a dict entry (a thread per render would cost more than
    the render). A fired entry is remembered until ``disarm`` so that an exception CPython has not
    delivered yet is withdrawn instead of landing in the caller's code after the render returned.
    """

    TICK = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[int, float]] = {}  # token -> (thread id, monotonic deadline)
        self._fired: set[int] = set()
        self._next = 0
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        with self._lock:
            self._next += 1
            self._armed[self._next] = (threading.get_ident(), time.monotonic() + seconds)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="template-deadline", daemon=True)
                self._thread.start()
            return self._next

    def disarm(self, token: int) -> None:
        with self._lock:
            if self._armed.pop(token, None) is None and token in self._fired:
                self._fired.discard(token)
                _set_async_exc(threading.get_ident(), None)  # not delivered yet: withdraw it

    def delivered(self, token: int) -> None:
        with self._lock:
            self._fired.discard(token)

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            with self._lock:
                now = time.monotonic()
                for token, (tid, deadline) in list(self._armed.items()):
                    if now >= deadline:
                        del self._armed[token]
                        self._fired.add(token)
                        _set_async_exc(tid, _Expired)
                if not self._armed:
                    self._thread = None
                    return


def _set_async_exc(thread_id: int, exc: type | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc) if exc is not None else None)


_WATCHDOG = _Watchdog()


# ------------------------------------------------------------------ environment

def _check_len(value: Any) -> Any:
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_TEXT:
        raise _TooBig
    return value


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else 0


def _checked_binop(op: str, left: Any, right: Any) -> Any:
    """``*``, ``**``, ``+`` and ``%`` with their result size checked before it is built."""
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if _sized(seq) and isinstance(n, int) and _sized(seq) * n > MAX_TEXT:
                raise _TooBig
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > 1 << 16:
            raise _TooBig
        return left * right
    if op == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right * left.bit_length() > 1 << 16:
            raise _TooBig
        return left ** right
    if op == "+":
        if _sized(left) + _sized(right) > MAX_TEXT:
            raise _TooBig
        return left + right
    if op == "%":
        if isinstance(left, str) and any(int(w) > MAX_TEXT for w in _WIDTH.findall(left)):
            raise _TooBig
        return _check_len(left % right)
    raise AssertionError(op)


@lru_cache(maxsize=1)
def environment() -> Any:
    """The sandboxed jinja2 environment every chat template is compiled in."""
    from jinja2 import nodes
    from jinja2.compiler import CodeGenerator
    from jinja2.exceptions import TemplateError as JinjaError
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """``{% generation %}…{% endgeneration %}`` marks what the assistant writes; here it renders as is."""

        tags = {"generation"}

        def parse(self, parser):  # noqa: ANN001, ANN201 - jinja2's extension API
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    class Generator(CodeGenerator):
        """``a ~ b`` through a join that checks the length (jinja2 compiles it to a plain ``str.join``)."""

        def visit_Concat(self, node, frame):  # noqa: ANN001, ANN201 - jinja2's code generator API
            self.write("environment.checked_join((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    class Guarded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**", "+", "%"])
        code_generator_class = Generator

        def call_binop(self, context, operator, left, right):  # noqa: ANN001, ANN201 - jinja2's API
            return _checked_binop(operator, left, right)

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: ANN001, ANN201, N805 - jinja2's API
            if isinstance(getattr(__obj, "__self__", None), str) and any(
                    isinstance(a, int) and a > MAX_TEXT for a in (*args, *kwargs.values())):
                raise _TooBig  # 'a'.center(10**10), 'a'.ljust(...), '{:>9999999999}'.format(...)
            return _check_len(super().call(__context, __obj, *args, **kwargs))

        def wrap_str_format(self, value):  # noqa: ANN001, ANN201 - jinja2's API
            """``'{:>9999999999}'.format(x)``: a width past MAX_TEXT is refused before the text is built."""
            wrapped = super().wrap_str_format(value)
            if wrapped is not None and any(int(w) > MAX_TEXT for w in _WIDTH.findall(str(value.__self__))):
                raise _TooBig
            return wrapped

        @staticmethod
        def checked_join(parts: tuple) -> str:
            if sum(len(str(p)) for p in parts) > MAX_TEXT:
                raise _TooBig
            return "".join(str(p) for p in parts)

    def raise_exception(message: str) -> None:
        raise Refused(str(message))

    class Refused(JinjaError):
        """``raise_exception()`` inside the template: it refuses this conversation on purpose."""

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def center(value: str, width: int = 80) -> str:
        return str(value).center(_check_len_arg(width))

    def indent(value: str, width: Any = 4, first: bool = False, blank: bool = False) -> str:
        if isinstance(width, int) and width * (str(value).count("\n") + 1) > MAX_TEXT:
            raise _TooBig
        return base_indent(value, width, first, blank)

    env = Guarded(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols", Generation])
    base_indent = env.filters["indent"]
    env.filters.update(tojson=tojson, center=center, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: _dt.datetime.now().strftime(fmt)
    env.refused_class = Refused
    return env


def _check_len_arg(n: Any) -> Any:
    if isinstance(n, int) and n > MAX_TEXT:
        raise _TooBig
    return n


@lru_cache(maxsize=32)
def _compiled(source: str) -> Any:
    return environment().from_string(source)


# ------------------------------------------------------------------ rendering

def template_origin(tokenizer: Any) -> str:
    """Where a tokenizer's chat template was read from, as a user would look for it."""
    folder = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    if str(folder) and folder.is_dir():
        for name in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"):
            if (folder / name).is_file():
                return str(folder / name)
        return f"the chat template of {folder}"
    return "the model's chat template"


def specials(tokenizer: Any) -> dict:
    """The special tokens a template sees as variables (``bos_token``…), as transformers passes them."""
    found = getattr(tokenizer, "special_tokens_map", None)
    if isinstance(found, dict):
        return dict(found)
    return {name: getattr(tokenizer, name) for name in SPECIALS if getattr(tokenizer, name, None)}


def render_source(source: str, where: Callable[[], str], **variables: Any) -> str:
    """``source`` rendered with ``variables`` under the sandbox, the size limits and the deadline;
    ``where()`` names the template's file in an error (only worked out when there is one)."""
    from jinja2.exceptions import TemplateSyntaxError

    seconds = time_limit()
    if len(source) > MAX_SOURCE:
        raise TemplateRunaway(f"the chat template ({where()}) is {len(source):,} characters long; chat templates "
                              "are a few kilobytes, so this file is not one. Replace it with the model's own")
    try:
        template = _compiled(source)
    except TemplateSyntaxError as e:
        raise TemplateError(f"the chat template in {where()} is not valid jinja (line {e.lineno}: {e.message})") from None
    except (RecursionError, MemoryError) as e:
        raise TemplateError(f"the chat template in {where()} cannot be compiled ({type(e).__name__})") from None
    token = _WATCHDOG.arm(seconds)
    try:
        try:
            parts, size = [], 0
            for chunk in template.generate(**variables):
                size += len(chunk)
                if size > MAX_TEXT:
                    raise _TooBig
                parts.append(chunk)
        finally:
            _WATCHDOG.disarm(token)
    except _Expired:
        _WATCHDOG.delivered(token)
        raise TemplateRunaway(f"the chat template did not finish in {seconds:g} s ({where()}): it loops without end "
                              "or nearly so. Fix the template in that file, or pick a model with a working one "
                              f"({SECONDS_ENV} sets the limit)") from None
    except (_TooBig, MemoryError):
        raise TemplateRunaway(f"the chat template ({where()}) builds a text or list of more than {MAX_TEXT:,} "
                              "characters; fix the template in that file, or pick a model with a working one") from None
    except Exception as e:  # jinja's own errors, raise_exception() calls, errors of the template's own logic
        first = (str(e).splitlines() or [type(e).__name__])[0][:500]
        if isinstance(e, environment().refused_class):
            raise TemplateError(f"the chat template refused this conversation: {first}") from None
        raise TemplateError(f"the chat template cannot render this conversation ({type(e).__name__}: {first})") from None
    return "".join(parts)


def render_chat(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = False,
                tools: list | None = None, chat_template: str | None = None, **extra: Any) -> str:
    """A conversation rendered by ``chat_template`` (default: the tokenizer's own) as transformers would."""
    source = chat_template or getattr(tokenizer, "chat_template", None)
    if not source:
        raise TemplateError("this tokenizer has no chat template")
    variables = {**specials(tokenizer), **extra, "messages": messages, "tools": tools,
                 "add_generation_prompt": add_generation_prompt}
    variables.setdefault("documents", None)
    own = source == getattr(tokenizer, "chat_template", None)
    return render_source(source, lambda: template_origin(tokenizer) if own else "the default ChatML template",
                         **variables)
