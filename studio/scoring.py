"""Held-out scoring: does each answer follow the expected format?

A held-out file is chat JSONL where every row carries its prompt (``messages`` ending with a user
turn) and, optionally, ``pattern``: the regular expression an answer must match. Only rows that carry
a pattern are scored (``evaluate``, the eval report, ``compare``); the others are answered as samples to
read. A row may carry images as a dataset row does (``{"type": "image", "image": PATH}`` content parts, or an
``images`` column beside ``<image>`` markers; read by studio.data, paths relative to the file): each message then
has its own ``images`` and a vision-language model answers with them. ``matches`` with no pattern tests ``FORMAT_PATTERN``, the demo's "answer card". Generation (torch) is imported
only inside the functions that need it, so the UI and CLI can import this module cheaply.

Patterns are the user's, and answers are a model's: a pattern that backtracks catastrophically
(``^(a|a)*$`` against a long answer) would spin for ever, so every match runs under
``MATCH_TIMEOUT_S`` (the ``regex`` package's ``timeout=``) and a match that runs out of time is
reported as timed out, never as a pass or a fail. The prompts file is read only when it is a
regular file of at most ``MAX_PROMPTS_BYTES`` and ``MAX_PROMPTS`` rows (a FIFO, a device or a
folder is refused before it is opened).
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, TypedDict

import regex as re

from studio.data.template import TemplateError, render

# The demo's "answer card": one "Answer:" line, "Key points:" with 2 or 3 "- " bullets, then
# "Confidence: high|medium|low". Leading/trailing whitespace and a final period are tolerated;
# anything else (prose before "Answer:", a missing section, extra lines) is not.
FORMAT_REGEX = (
    r"\A\s*Answer: \S[^\n]*\n"
    r"Key points:\n"
    r"(?:- \S[^\n]*\n){2,3}"
    r"Confidence: (?:high|medium|low)\.?\s*\Z"
)
FORMAT_PATTERN = re.compile(FORMAT_REGEX)

ROLES = ("system", "user", "assistant")
MATCH_TIMEOUT_S = 2.0  # one answer against one pattern; an honest pattern takes microseconds
MAX_PROMPTS_BYTES = 64 << 20  # a held-out file is read whole; 64 MiB is far beyond any evaluation
MAX_PROMPTS = 10_000  # every prompt is answered (twice by eval and compare): more is hours of CPU
MAX_PATTERN = 4096  # characters of one 'pattern' (an honest one is a line); compiling is not under the timeout
MAX_EXPANSION = 100_000  # the regex package compiles a{1000}{1000} as a million copies (274 MiB, ~1 s)
_COUNTED = re.compile(r"\{(\d*)(?:,(\d*))?\}")
MAX_ROW_BYTES = 1 << 20  # one row is sent to the chat worker as one command line (studio.events.MAX_LINE_BYTES)


class PromptFileError(ValueError):
    """A held-out file cannot be read; the message names the file, the line and the fix."""


class PatternTimeout(Exception):
    """A pattern ran longer than MATCH_TIMEOUT_S against an answer (catastrophic backtracking)."""


@dataclass
class EvalResult:
    """Answers to held-out prompts and which of them matched their pattern."""

    prompts: list[str]
    answers: list[str]
    matched: list[bool] = field(default_factory=list)
    timed_out: list[int] = field(default_factory=list)  # 1-based rows whose pattern ran out of time
    unscored: list[int] = field(default_factory=list)  # 1-based rows without a pattern: answered, not scored

    @property
    def score(self) -> float:
        """Fraction of the answers that could be scored that matched (0.0 for an empty set);
        a row whose pattern timed out is neither a pass nor a fail, and a row without a pattern is a
        sample to read, so neither is counted."""
        counted = len(self.matched) - len(self.timed_out) - len(self.unscored)
        return sum(self.matched) / counted if counted > 0 else 0.0


def matches(answer: str, pattern: str | re.Pattern | None = None) -> bool:
    """Whether one answer matches its pattern (the answer card when ``pattern`` is None).

    Raises PatternTimeout when the match runs longer than MATCH_TIMEOUT_S.
    """
    if pattern is None:
        rx = FORMAT_PATTERN
    elif isinstance(pattern, re.Pattern):
        rx = pattern
    else:
        rx = re.compile(pattern)
    try:
        return rx.search(answer, timeout=MATCH_TIMEOUT_S) is not None
    except TimeoutError:
        raise PatternTimeout(f"the pattern {rx.pattern[:80]!r} ran longer than {MATCH_TIMEOUT_S:g} s against a "
                             f"{len(answer)}-character answer (it backtracks catastrophically)") from None


def match_or_timeout(answer: str, pattern: str | re.Pattern | None = None) -> bool | None:
    """``matches``, with None for a pattern that ran out of time (report it as such, not as a fail)."""
    try:
        return matches(answer, pattern)
    except PatternTimeout:
        return None


TIMEOUT_HINT = ("simplify the pattern: no nested or overlapping repetition such as ([\\w\\s]|[\\w\\s])* or (a+)+; "
                "the row is reported as timed out, not scored")


def score_answers(answers: Sequence[str], patterns: Sequence[str | None]) -> float:
    """Fraction of answers that match their pattern; ``None`` means ``FORMAT_PATTERN``."""
    if len(answers) != len(patterns):
        raise ValueError(f"{len(answers)} answers but {len(patterns)} patterns: pass one pattern "
                         f"(or None) per answer")
    if not answers:
        return 0.0
    found = [match_or_timeout(a, p) for a, p in zip(answers, patterns)]
    counted = [f for f in found if f is not None]
    return sum(counted) / len(counted) if counted else 0.0


def _check_messages(messages: Any, where: str) -> list[dict[str, Any]]:
    """``messages``, checked: raise PromptFileError unless it is a non-empty list of role/content objects."""
    if not isinstance(messages, list) or not messages:
        raise PromptFileError(f"{where}: 'messages' must be a non-empty list of "
                              f'{{"role": ..., "content": ...}} objects')
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES \
                or not isinstance(msg.get("content"), str):
            raise PromptFileError(f"{where}: message {i} must be an object with 'role' (one of "
                                  f"{', '.join(ROLES)}) and a string 'content'")
    return messages


def row_images(row: dict[str, Any]) -> list[str]:
    """The image paths a prompt row's messages carry, in order (none for a text prompt)."""
    return [p for m in row.get("messages") or () for p in m.get("images") or ()]


def _may_hold_images(row: dict) -> bool:
    """The row names images the way a dataset row does: content parts, an image column, an <image> marker."""
    from studio.data.images import IMAGE, IMAGE_COLUMNS

    msgs = row.get("messages")
    if any(str(k).strip().lower() in IMAGE_COLUMNS for k in row):
        return True
    return isinstance(msgs, list) and any(isinstance(m, dict) and (
        isinstance(m.get("content"), (list, dict)) or IMAGE in str(m.get("content") or "")) for m in msgs)


def _image_messages(row: dict, base: Path | None, where: str) -> Any:
    """A prompt row's messages with images read as the data import reads a dataset row (studio.data): image
    content parts (``{"type": "image", "image": PATH}``) or an image column beside ``<image>`` markers, paths
    relative to the prompt file's folder, each image opened and checked; the row errors are the import's. Each
    message then carries the images of its own markers (``images``), as a chat turn does."""
    import studio.data.images as imgs
    from studio.data.formats import _content
    from studio.data.report import RowProblem
    from studio.data.scan import RowWarnings

    raw = row.get("messages")
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        return raw  # _check_messages names what is wrong
    collected = RowWarnings()  # collects what each image content part names, in order
    try:
        msgs = [{**m, "content": _content(m.get("content"), f"messages[{i}].content", collected)}
                for i, m in enumerate(raw)]
        if not all(isinstance(m["content"], str) for m in msgs):
            return msgs
        column = next((k for k in row if str(k).strip().lower() in imgs.IMAGE_COLUMNS), None)
        example: dict[str, Any] = {"messages": msgs}
        imgs.attach(example, collected.images, row.get(column) if column is not None else None, column, base)
    except RowProblem as e:
        hint = f"; {e.problem.hint}" if e.problem.hint else ""
        raise PromptFileError(f"{where}: {e.problem.message}{hint}") from None
    return imgs.per_message(example["messages"], example.get("images") or [])


def _parse_row(line: str, where: str, base: Path | None = None) -> dict[str, Any]:
    """One held-out row: messages up to the last user turn, its pattern, any reference answer. A row may carry
    images as a dataset row does (``_image_messages``; ``base``: the folder relative paths are read from)."""
    if len(line) > MAX_ROW_BYTES:
        raise PromptFileError(f"{where}: the row is over {MAX_ROW_BYTES >> 20} MiB; a prompt row may be at most "
                              f"{MAX_ROW_BYTES >> 20} MiB (far beyond any model's context): shorten it")
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PromptFileError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); "
                              f"each line must be one JSON object") from None
    except RecursionError:  # [[[[... thousands deep: valid JSON the parser cannot hold
        raise PromptFileError(f"{where}: the JSON is nested too deep to read; each line must be one flat "
                              f'{{"messages": [...]}} object') from None
    if not isinstance(row, dict):
        raise PromptFileError(f"{where}: expected a JSON object with 'messages', "
                              f"got {type(row).__name__}")
    messages = _check_messages(_image_messages(row, base, where) if _may_hold_images(row) else row.get("messages"),
                               where)
    reference = None
    if messages[-1]["role"] == "assistant":  # a training-style row: keep its answer as reference
        reference = messages[-1]["content"]
        if messages[-1].get("images"):
            raise PromptFileError(f"{where}: the reference answer (the last, assistant turn) holds an image; "
                                  "images may stand in the prompt only")
        messages = messages[:-1]
    if not messages or messages[-1]["role"] != "user":
        raise PromptFileError(f"{where}: the conversation must end with a user message "
                              f"(the prompt to answer)")
    if len(json.dumps(messages)) > MAX_ROW_BYTES - (64 << 10):  # as the chat worker's command will carry it
        raise PromptFileError(f"{where}: the conversation is over {MAX_ROW_BYTES >> 20} MiB as a command to the "
                              "model (far beyond any model's context): shorten it")
    pattern = row.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise PromptFileError(f"{where}: 'pattern' must be a string (a regular expression)")
        _check_pattern(pattern, where)
    return {"messages": messages, "pattern": pattern, "reference": reference}


def _check_pattern(pattern: str, where: str) -> None:
    """Compile a row's pattern once, bounded first: compiling is one call the match timeout does not
    cover, and a pattern 5,000 groups deep, a 100,000-way alternation or nested counted repeats
    take the stack, seconds or gigabytes there."""
    if len(pattern) > MAX_PATTERN:
        raise PromptFileError(f"{where}: 'pattern' is {len(pattern):,} characters long; a pattern may be at most "
                              f"{MAX_PATTERN:,} characters: shorten it")
    if _expansion(pattern) > MAX_EXPANSION:
        raise PromptFileError(f"{where}: 'pattern' repeats too much (counted repeats such as (a{{1000}}){{1000}} "
                              f"expand to over {MAX_EXPANSION:,} items when compiled): use + or * instead")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise PromptFileError(f"{where}: 'pattern' is not a valid regular expression "
                              f"({exc}); fix or remove it") from None
    except (RecursionError, OverflowError, MemoryError) as exc:
        raise PromptFileError(f"{where}: 'pattern' cannot be compiled ({type(exc).__name__}: it nests or repeats "
                              "too much); simplify it") from None


def _expansion(pattern: str) -> int:
    """An upper bound of the items a pattern compiles to: counted repeats multiply what they repeat,
    everything else adds (alternatives included). Escapes and character classes count as one item."""
    stack = [[0, 0]]  # per open group: [items so far, items of the last atom]
    i, n = 0, len(pattern)
    while i < n:
        c, size = pattern[i], 1
        if c == "\\":
            i += 2
            if i < n and pattern[i - 1] in "pPNxgkuU" and pattern[i] == "{":  # \p{L}, \x{263a}, \g{name}
                i = (pattern.find("}", i) + 1) or n
        elif c == "[":
            i += 2 if pattern.startswith("[^", i) else 1
            i += pattern.startswith("]", i)  # a ']' first is a literal
            while i < n and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
            i += 1
        elif c == "(":
            stack.append([0, 0])
            i += 1
            continue
        elif c == ")" and len(stack) > 1:
            group = stack.pop()
            size, i = max(1, group[0]), i + 1
        elif c == "{" and (m := _COUNTED.match(pattern, i)) and (m.group(1) or m.group(2)):
            digits = max(m.group(1) or "0", m.group(2) or "0", key=lambda d: (len(d.lstrip("0")), d.lstrip("0")))
            count = int(digits) if len(digits.lstrip("0")) <= 9 else MAX_EXPANSION + 1
            top = stack[-1]
            top[0] += top[1] * (max(count, 1) - 1)
            top[1] *= max(count, 1)
            i = m.end()
            if top[0] > MAX_EXPANSION:
                return top[0]
            continue
        else:
            i += 1
        stack[-1][0] += size
        stack[-1][1] = size
    return sum(group[0] for group in stack)


def _read_text(path: Path) -> str:
    """The file's text: a regular file (checked before opening: a FIFO would block), bounded in size."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise PromptFileError(f"{path}: file not found; pass a JSONL file of prompts") from None
    except OSError as exc:  # a symbolic link loop, a permission problem
        raise PromptFileError(f"{path}: cannot be read ({exc.strerror or exc}); pass a JSONL file of prompts") from None
    if stat.S_ISDIR(mode):
        raise PromptFileError(f"{path}: a folder, not a file; pass a JSONL file of prompts")
    if not stat.S_ISREG(mode):
        raise PromptFileError(f"{path}: not a regular file (a pipe, device or socket); pass a JSONL file of prompts")
    try:
        with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NONBLOCK)) as fh:
            data = fh.read(MAX_PROMPTS_BYTES + 1)
    except OSError as exc:
        raise PromptFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_PROMPTS_BYTES:
        raise PromptFileError(f"{path}: larger than {MAX_PROMPTS_BYTES >> 20} MiB; a held-out file holds at most "
                              f"{MAX_PROMPTS:,} prompts: split it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise PromptFileError(f"{path}:{line}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None


def load_prompts(path: str | Path) -> list[dict[str, Any]]:
    """Read a held-out JSONL file into rows of ``messages``, ``pattern`` and ``reference``."""
    path = Path(path)
    text = _read_text(path)
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            if len(rows) == MAX_PROMPTS:
                raise PromptFileError(f"{path}:{n}: more than {MAX_PROMPTS:,} prompts; every prompt is answered by "
                                      "the model, so split the file")
            rows.append(_parse_row(line, f"{path}:{n}", Path(os.path.abspath(path)).parent))
    if not rows:
        raise PromptFileError(f"{path}: no prompts found; add one JSON object per line")
    return rows


def evaluate(answers: Sequence[str], rows: Sequence[dict[str, Any]]) -> EvalResult:
    """Score answers against the rows they answer (as returned by ``load_prompts``)."""
    if len(answers) != len(rows):
        raise ValueError(f"{len(answers)} answers for {len(rows)} prompts")
    patterned = [bool(r.get("pattern")) for r in rows]  # only a row's own pattern scores it
    found = [match_or_timeout(a, r["pattern"]) if p else False for a, r, p in zip(answers, rows, patterned)]
    return EvalResult(prompts=[r["messages"][-1]["content"] for r in rows],
                      answers=list(answers), matched=[bool(f) for f in found],
                      timed_out=[i for i, f in enumerate(found, start=1) if f is None],
                      unscored=[i for i, p in enumerate(patterned, start=1) if not p])


# Sample generation is greedy, so before/after comparisons are reproducible; the Ollama Modelfile
# records the same parameters.
class SampleParams(TypedDict):
    temperature: float
    max_new_tokens: int
    do_sample: bool


SAMPLE_PARAMS: SampleParams = {"temperature": 0.0, "max_new_tokens": 96, "do_sample": False}


def end_of_turn_ids(tokenizer: Any, processor: Any = None) -> list[int]:
    """The token ids that end an answer: end-of-sequence and the chat template's end-of-turn marker
    (``<|im_end|>``, ``<|eot_id|>``), when that is a token of its own (``processor``: a vision-language model's,
    whose chat template renders the turns)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\u00a7"}]
    try:
        if processor is not None:
            from studio import vision

            text = vision.render(processor, vision.part_messages(turns))
        else:
            text = render(tokenizer, turns)
    except TemplateError:  # a template that refuses this tiny conversation: end-of-sequence only
        return ids
    marker = text.rsplit("\u00a7", 1)[-1].strip()
    token = tokenizer.convert_tokens_to_ids(marker) if marker else None
    if isinstance(token, int) and token != tokenizer.unk_token_id and token not in ids:
        ids.append(token)
    return ids


def prompt_length(tokenizer: Any, messages: list[dict], processor: Any = None) -> int:
    """Tokens of a prompt as ``generate_answers`` feeds it (chat template applied, generation prompt added; with
    a vision-language model's ``processor`` its images count as the tokens the processor makes of them)."""
    if processor is not None:
        from studio import vision

        return int(vision.prompt_inputs(processor, messages)["input_ids"].shape[-1])
    return len(tokenizer(render(tokenizer, messages, add_generation_prompt=True), add_special_tokens=False)["input_ids"])


def generate_answers(model: Any, tokenizer: Any, rows: Iterable[dict[str, Any]],
                     max_new_tokens: int = SAMPLE_PARAMS["max_new_tokens"], batch_size: int = 1,
                     on_batch: Any = None, on_progress: Any = None, should_stop: Any = None,
                     processor: Any = None) -> list[str]:
    """Greedy answers from a loaded causal LM (chat template applied, generation prompt added).

    ``processor``: the model is a whole vision-language model and the rows' messages may carry ``images``
    (``load_prompts``): each prompt is rendered by the processor with its images and answered on its own
    (batch size 1: the images' tensors are per prompt).

    ``batch_size`` > 1 left-pads prompts and decodes them together: much faster on a CPU, with
    answers that can differ from one-at-a-time decoding only by floating-point rounding.
    ``on_batch(n_done)`` is called after each batch. ``on_progress(n_done, total, eta_s)`` is
    called whenever a prompt's answer is complete, also inside a batch (a row is complete when it
    emits the end-of-text token), with an ETA from the measured time per decoding step (an upper
    bound: the rest of the batch may finish early). ``should_stop()`` true ends the answers at
    the next token; the prompts not reached get an empty answer.
    """
    import time

    import torch  # deferred: importing this module must stay cheap
    from transformers import StoppingCriteria, StoppingCriteriaList

    rows = list(rows)
    total = len(rows)
    t_start = time.perf_counter()
    steps_done = [0]  # decoding steps over all batches, for the ETA

    class _Watch(StoppingCriteria):
        """Counts finished rows after every decoding step; ends the batch on a stop request."""

        def __init__(self, first: int, size: int, width: int) -> None:
            self.first, self.width, self.finished = first, width, [False] * size
            self.reported = 0

        def __call__(self, input_ids, scores, **kw):
            steps_done[0] += 1
            for i, tok in enumerate(input_ids[:, -1].tolist()):
                self.finished[i] = self.finished[i] or tok in stop_ids
            done_now = sum(self.finished)
            if on_progress and done_now > self.reported:
                self.reported = done_now
                on_progress(self.first + done_now, total,
                            _eta(self.first + len(self.finished), input_ids.shape[1] - self.width))
            stop = bool(should_stop and should_stop())
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    def _eta(batch_end: int, step_in_batch: int) -> float | None:
        """Seconds left: the rest of this batch's steps and every later batch at max_new_tokens."""
        if steps_done[0] == 0:
            return None
        per_step = (time.perf_counter() - t_start) / steps_done[0]
        size = max(1, batch_size)
        later = -(-(total - batch_end) // size)
        return round(per_step * (max(0, max_new_tokens - step_in_batch) + later * max_new_tokens), 1)

    device = next(model.parameters()).device
    if processor is not None:
        tokenizer, batch_size = processor.tokenizer, 1
    stop_ids = end_of_turn_ids(tokenizer, processor)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        for start in range(0, len(rows), max(1, batch_size)):
            extra: dict[str, Any] = {}
            if processor is not None:
                from studio import vision

                extra = vision.prompt_inputs(processor, rows[start]["messages"])
                chunk = [extra.pop("input_ids")[0].tolist()]
                extra = {k: v.to(device) if hasattr(v, "to") else v for k, v in extra.items()}
            else:
                chunk = [tokenizer(render(tokenizer, r["messages"], add_generation_prompt=True),
                                   add_special_tokens=False)["input_ids"]
                         for r in rows[start:start + max(1, batch_size)]]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.tensor([[pad_id] * (width - len(ids)) + list(ids) for ids in chunk])
            mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in chunk])
            if should_stop and should_stop():
                answers += [""] * (total - len(answers))
                break
            watch = _Watch(len(answers), len(chunk), width)
            with torch.no_grad():
                out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                     max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                     eos_token_id=stop_ids, use_cache=True,
                                     stopping_criteria=StoppingCriteriaList([watch]), **extra)
            answers += [tokenizer.decode(seq[width:], skip_special_tokens=True) for seq in out]
            if on_progress and watch.reported < len(chunk):  # rows that ran to max_new_tokens
                on_progress(len(answers), total, _eta(len(answers), max_new_tokens))
            if on_batch:
                on_batch(len(answers))
    finally:
        model.train(was_training)
    return answers


def _pct(score: float, n: int | None) -> str:
    """'7/20 (35%)' when the count is known, else '35%'."""
    if n is None:
        return f"{score:.0%}"
    return f"{round(score * n)}/{n} ({score:.0%})"


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in (text.strip() or "(empty)").splitlines())


def format_report(before: EvalResult | float, after: EvalResult | float) -> str:
    """Human-readable before/after summary: the scores and one sample answer before and after."""
    n = len(after.matched) if isinstance(after, EvalResult) else None
    b = before.score if isinstance(before, EvalResult) else float(before)
    a = after.score if isinstance(after, EvalResult) else float(after)
    lines = [f"Held-out format score: {_pct(b, n)} before -> {_pct(a, n)} after"]
    if isinstance(before, EvalResult) and isinstance(after, EvalResult) and after.answers:
        # Prefer a prompt the training fixed; else the first one.
        pick = next((i for i, (x, y) in enumerate(zip(before.matched, after.matched))
                     if y and not x), 0)
        lines += [f"Sample prompt: {after.prompts[pick]}",
                  "  Before:", _indent(before.answers[pick]),
                  "  After:", _indent(after.answers[pick])]
    return "\n".join(lines)
