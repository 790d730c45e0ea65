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
- every filter goes through one guard (``_guard_filter``) that checks its result and first
  estimates the known expanders (``_FILTER_SIZES``; ``_METHOD_SIZES`` for str methods); single C
  calls the deadline cannot interrupt (sort, sum, strftime) are bounded before they start; nothing
  runs while compiling (no optimizer, no constant folding), and compiling is under the deadline;
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
import itertools
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
MAX_SORT_WORK = 1 << 26  # items x log2(items) x longest item: what one sort may compare (about a second of C)
MAX_STRFTIME = 1 << 10  # characters of a strftime_now format (a real one is "%d %b %Y")
_DIGITS = re.compile(r"\d+")  # every number in a format string may be a width
_NAMESPACE: Any = None  # jinja2's Namespace class, once the environment is built


class TemplateError(ValueError):
    """The chat template refuses this conversation or cannot render it (a problem of one row)."""


class TemplateRunaway(DataError):
    """The chat template did not finish in time or grew past the size limit: the template is at fault."""


class _Expired(BaseException):
    """Raised inside the rendering thread by the watchdog; BaseException so no template-side handler eats it."""


class _TooBig(Exception):
    """An operation or the output of a template went past MAX_TEXT (or another limit: then its words)."""


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


# ------------------------------------------------------------------ sizes

_END = object()


def _check_len(value: Any) -> Any:
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_TEXT:
        raise _TooBig
    return value


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else 0


def _scalar_len(item: Any) -> int:
    """Characters ``str``/``repr``/JSON give one item, containers not counting what they hold."""
    if isinstance(item, str):
        return len(item)
    if isinstance(item, bool) or item is None:
        return 5
    if isinstance(item, int):
        return item.bit_length() // 3 + 2
    if isinstance(item, (float, dict, list, tuple, set, frozenset)):
        return 24
    return 64  # a macro, a loop, an undefined: a short repr


def _measure(value: Any) -> tuple[int, int, int]:
    """(characters ``str(value)`` or its JSON may take before escaping, items in it, how deep it nests).

    Walked in Python (the deadline can stop it) and only until the characters pass MAX_TEXT, so a
    list that holds one huge string a thousand times costs a thousand steps, not its text.
    """
    chars = nodes = depth = 0
    stack = [iter((value,))]
    while stack and chars <= MAX_TEXT:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
            continue
        nodes += 1
        depth = max(depth, len(stack))
        chars += _scalar_len(item) + 2
        if isinstance(item, dict):
            stack.append(itertools.chain.from_iterable(item.items()))
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.append(iter(item))
        elif _NAMESPACE is not None and isinstance(item, _NAMESPACE):  # its repr shows what it holds
            stack.append(iter(object.__getattribute__(item, "_Namespace__attrs").values()))
    return chars, nodes, depth


def _text_len(value: Any) -> int:
    """At most how many characters ``str(value)`` takes (a repr escapes a character in at most 4)."""
    return len(value) if isinstance(value, str) else 4 * _measure(value)[0]


def _bounded_list(value: Any) -> list | tuple | str:
    """``value`` as a sequence, read item by item (an iterator could go on for ever) up to MAX_TEXT items."""
    if isinstance(value, (list, tuple, str)):
        return value
    if isinstance(value, dict):
        value = iter(value)
    out = []
    for item in value:
        out.append(item)
        if len(out) > MAX_TEXT:
            raise _TooBig
    return out


def _printf_size(fmt: Any, args: tuple, kwargs: dict) -> int:
    """``fmt % values`` or ``fmt.format(...)``: every field may be the longest value, at every width written."""
    fmt = str(fmt)
    values = list(args) + list(kwargs.values())
    if len(values) == 1 and isinstance(values[0], (tuple, dict)):
        values = list(values[0].values() if isinstance(values[0], dict) else values[0])
    longest = max((_text_len(v) for v in values), default=0)
    widths = 0
    for digits in _DIGITS.findall(fmt):
        if len(digits) > 9:
            raise _TooBig
        widths += int(digits)
    return len(fmt) + widths + (fmt.count("%") + fmt.count("{")) * longest


def _replace_size(s: Any, old: Any = "", new: Any = "", count: Any = None, *_: Any) -> int:
    s, old, new = str(s), str(old), str(new)
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(0, len(new) - len(old))


def _join_size(items: Any, sep: Any = "", attribute: Any = None) -> int:
    if attribute is not None:
        return 0  # items picked by attribute: the result is checked after the join
    total = 0
    for item in items:
        total += _text_len(item) + len(str(sep))
        if total > MAX_TEXT:
            break
    return total


def _wordwrap_size(s: Any, width: Any = 79, break_long: Any = True, wrapstring: Any = None, *_: Any,
                   **kw: Any) -> int:
    wrap = kw.get("wrapstring", wrapstring)
    s = str(s)
    return len(s) + (len(s) + 1) * len(str(wrap) if wrap is not None else "\n")


def _json_size(value: Any, *args: Any, indent: Any = None, **_: Any) -> int:
    indent = args[0] if args and indent is None else indent
    chars, nodes, depth = _measure(value)
    step = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    return 6 * chars + nodes * (1 + max(0, step) * depth)  # \uXXXX for a character at worst


def _pprint_size(value: Any, *_: Any, **__: Any) -> int:
    chars, nodes, depth = _measure(value)
    return 4 * chars + nodes * (depth + 1)


def _sort_size(value: Any, *_: Any, **__: Any) -> int:
    """Sorting is one C call the deadline cannot stop: refuse one whose comparisons could take seconds."""
    items = list(value) if isinstance(value, dict) else value  # dictsort compares the keys
    n = len(items)
    longest = max((len(x) for x in items if isinstance(x, (str, list, tuple))), default=1) or 1
    if n * max(1, n.bit_length()) * longest > MAX_SORT_WORK:
        raise _TooBig(f"sorts {n:,} items of up to {longest:,} characters each (one uninterruptible call; at "
                      f"most {MAX_SORT_WORK:,} comparisons of items or characters)")
    return n


def _sum_size(items: Any, attribute: Any = None, start: Any = 0) -> int:
    return _sized(start) + sum(_sized(item) for item in items) if attribute is None else 0


def _case_size(s: Any, *_: Any) -> int:
    s = str(s)
    return len(s) if s.isascii() else 3 * len(s)  # 'ﬃ'.upper() is 'FFI'


def _width_size(s: Any, width: Any = 0, *_: Any, **__: Any) -> int:
    return max(len(str(s)), width if isinstance(width, int) else 0)


def _indent_size(s: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    s = str(s)
    step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    return len(s) + step * (s.count("\n") + 1)


def _tabs_size(s: Any, tabsize: Any = 8, *_: Any) -> int:
    s = str(s)
    return len(s) + s.count("\t") * (tabsize if isinstance(tabsize, int) else 8)


def _translate_size(s: Any, table: Any = None, *_: Any) -> int:
    longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1) if isinstance(table, dict) else 1
    return len(str(s)) * max(1, longest)


def _times(factor: int) -> Callable[..., int]:
    return lambda s, *_, **__: factor * _text_len(s)


def _lipsum_size(n: Any = 5, html: Any = True, low: Any = 20, high: Any = 100, **kw: Any) -> int:
    high = kw.get("max", high)
    return (n if isinstance(n, int) else 0) * (high if isinstance(high, int) else 0) * 16


def _strftime_size(fmt: Any, *_: Any) -> int:
    if len(str(fmt)) > MAX_STRFTIME:
        raise _TooBig(f"passes strftime_now a format of {len(str(fmt)):,} characters (at most {MAX_STRFTIME:,}: "
                      "the date is formatted in one call the deadline cannot stop)")
    return 0


# What each expander may build at most, worked out from its arguments before it runs: the result
# check after the call comes too late for them (the memory is taken) and cannot stop a C call.
# The filter's value comes first, as jinja passes it.
_FILTER_SIZES: dict[str, Callable[..., int]] = {
    "replace": _replace_size, "join": _join_size, "wordwrap": _wordwrap_size, "format": lambda f, *a, **k:
    _printf_size(f, a, k), "tojson": _json_size, "pprint": _pprint_size, "string": _text_len,
    "batch": lambda v, n=1, fill=None, **k: n if (fill if "fill_with" not in k else k["fill_with"]) is not None else 0,
    "slice": lambda v, n=1, *a, **k: n, "center": _width_size, "indent": _indent_size,
    "escape": _times(5), "e": _times(5), "forceescape": _times(5), "urlencode": _times(12),
    "upper": _case_size, "lower": _case_size, "title": _case_size, "capitalize": _case_size,
    "sort": _sort_size, "dictsort": _sort_size, "groupby": _sort_size, "sum": _sum_size,
    "list": _sized, "unique": _sized, "reverse": _sized,
}
# Filters that read their whole value anyway: an iterator is read into a list first (bounded), so
# the estimate can look at it and the filter still gets every item.
_CONSUMES = frozenset(("join", "sort", "dictsort", "groupby", "sum", "list", "unique", "reverse"))
# The same for str methods, with the string itself first (``sep.join(items)`` is the odd one out).
_METHOD_SIZES: dict[str, Callable[..., int]] = {
    "replace": _replace_size, "join": lambda sep, items=(), *_: _join_size(items, sep), "expandtabs": _tabs_size,
    "center": _width_size, "ljust": _width_size, "rjust": _width_size, "zfill": _width_size,
    "upper": _case_size, "lower": _case_size, "title": _case_size, "capitalize": _case_size,
    "swapcase": _case_size, "casefold": _case_size, "translate": _translate_size, "encode": _times(4),
}
_GLOBAL_SIZES: dict[str, Callable[..., int]] = {"strftime_now": _strftime_size, "lipsum": _lipsum_size}


def _check_estimate(size: int) -> None:
    if size > MAX_TEXT:
        raise _TooBig


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its result size checked, and estimated first when it is a known expander.

    The guard takes jinja's context, which has a second effect: jinja never runs such a filter
    while compiling (constant folding), where no deadline and no size limit would apply.
    """
    from jinja2.utils import _PassArg, pass_context

    estimate = _FILTER_SIZES.get(name)
    pass_arg = _PassArg.from_obj(func)

    @pass_context
    def guarded(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        if name in _CONSUMES:
            value = _bounded_list(value)
        if estimate is not None:
            _check_estimate(estimate(value, *args, **kwargs))
        first = {_PassArg.context: (context,), _PassArg.eval_context: (context.eval_ctx,),
                 _PassArg.environment: (context.environment,)}.get(pass_arg, ())
        return _check_len(func(*first, value, *args, **kwargs))

    guarded.__name__ = guarded.__qualname__ = name
    return guarded


def _guard_global(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    estimate = _GLOBAL_SIZES[name]

    def guarded(*args: Any, **kwargs: Any) -> Any:
        _check_estimate(estimate(*args, **kwargs))
        return _check_len(func(*args, **kwargs))

    guarded.__name__ = guarded.__qualname__ = name
    return guarded


def _method_call(method: Any, args: tuple, kwargs: dict) -> tuple:
    """The arguments of a str method call, after its estimate: an int argument past MAX_TEXT
    ('a'.ljust(10**10)) or a known expander's result past it is refused before the call."""
    if any(isinstance(a, int) and a > MAX_TEXT for a in (*args, *kwargs.values())):
        raise _TooBig
    estimate = _METHOD_SIZES.get(getattr(method, "__name__", ""))
    if estimate is None:
        return args
    if method.__name__ == "join" and args:
        args = (_bounded_list(args[0]), *args[1:])
    _check_estimate(estimate(method.__self__, *args, **kwargs))
    return args


def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """jinja's ``sum``, but lists and tuples are joined in one pass: ``sum(lists, start=[])`` copies
    the growing list at every step inside one C call (quadratic, and the deadline cannot stop it)."""
    from jinja2.filters import make_attrgetter

    items = _bounded_list(map(make_attrgetter(environment, attribute), iterable) if attribute is not None
                          else iterable)
    if isinstance(start, (list, tuple)) and all(type(item) is type(start) for item in items):
        _check_estimate(_sum_size(items, None, start))
        joined = list(itertools.chain(start, *items))
        return joined if isinstance(start, list) else tuple(joined)
    if not isinstance(start, (int, float)):
        _check_estimate(_sum_size(items, None, start))
        total = start
        for item in items:  # one Python step per item: the deadline can stop it
            total = total + item
        return total
    return sum(items, start)


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
        if isinstance(left, str):
            _check_estimate(_printf_size(left, (right,), {}))
        return _check_len(left % right)
    raise AssertionError(op)


# ------------------------------------------------------------------ environment

@lru_cache(maxsize=1)
def environment() -> Any:
    """The sandboxed jinja2 environment every chat template is compiled in."""
    global _NAMESPACE
    from jinja2 import nodes
    from jinja2.compiler import CodeGenerator
    from jinja2.exceptions import TemplateError as JinjaError
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.utils import Namespace, pass_environment

    _NAMESPACE = Namespace

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
            if isinstance(getattr(__obj, "__self__", None), str):
                args = _method_call(__obj, args, kwargs)
            return _check_len(super().call(__context, __obj, *args, **kwargs))

        def wrap_str_format(self, value):  # noqa: ANN001, ANN201 - jinja2's API
            """``str.format``/``format_map`` (however it is reached): the result is estimated first."""
            wrapped = super().wrap_str_format(value)
            if wrapped is None:
                return None

            def checked(*args: Any, **kwargs: Any) -> str:
                _check_estimate(_printf_size(value.__self__, args, kwargs))
                return _check_len(wrapped(*args, **kwargs))

            return checked

        @staticmethod
        def checked_join(parts: tuple) -> str:
            _check_estimate(sum(_text_len(p) for p in parts))
            return "".join(str(p) for p in parts)

    def raise_exception(message: str) -> None:
        raise Refused(str(message))

    class Refused(JinjaError):
        """``raise_exception()`` inside the template: it refuses this conversation on purpose."""

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def finalize(value: Any) -> Any:
        """What ``{{ x }}`` prints: a list of long strings is refused before ``str`` builds its text."""
        if not isinstance(value, str):
            _check_estimate(_text_len(value))
        return value

    # optimized=False: jinja's optimizer runs filters with constant arguments while compiling
    env = Guarded(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols", Generation],
                  finalize=finalize, optimized=False)
    env.filters.update(tojson=tojson, sum=pass_environment(_sum))
    env.filters.update({name: _guard_filter(name, func) for name, func in env.filters.items()})
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = _guard_global("strftime_now", lambda fmt: _dt.datetime.now().strftime(fmt))
    env.globals["lipsum"] = _guard_global("lipsum", env.globals["lipsum"])
    env.refused_class = Refused
    return env


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
    token = _WATCHDOG.arm(seconds)  # compiling too: a long template takes its time there
    try:
        try:
            try:
                template = _compiled(source)
            except TemplateSyntaxError as e:
                raise TemplateError(f"the chat template in {where()} is not valid jinja (line {e.lineno}: "
                                    f"{e.message})") from None
            except (RecursionError, MemoryError) as e:
                raise TemplateError(f"the chat template in {where()} cannot be compiled ({type(e).__name__})") from None
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
    except (_TooBig, MemoryError) as e:
        what = e.args[0] if isinstance(e, _TooBig) and e.args else f"builds a text or list of more than {MAX_TEXT:,} characters"
        raise TemplateRunaway(f"the chat template ({where()}) {what}; fix the template in that file, or pick a "
                              "model with a working one") from None
    except TemplateError:
        raise
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
