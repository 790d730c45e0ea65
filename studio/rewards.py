"""Rewards for the grpo objective: the presets, their mix, and a user's own reward file.

Torch-free. Each preset scores one completion against its dataset row and returns a float in [0, 1]:

- ``pattern``: 1 when the completion (outside ``<think>`` sections) matches the row's ``pattern`` (or
  ``train.grpo_pattern``); otherwise partial credit: half its whole lines that can still grow into a
  match (the ``regex`` package's ``partial=True``), measured against the furthest any completion of the
  step got, so a model that gets the format half right learns from it, and neither stopping early nor
  rambling until the length limit pays (a completion cut at ``grpo_completion_len`` counts half its lines). Every match runs under ``scoring.MATCH_TIMEOUT_S``: a pattern that backtracks for ever
  scores 0 for that completion and is counted, never hangs the run.
- ``answer``: the row's ``answer`` in the final answer (``\\boxed{..}``, an ``Answer:`` line, or the text
  after ``</think>``): ``exact``, ``contains`` or ``numeric`` (within ``train.grpo_tolerance``, relative).
- ``json``: the completion is a JSON value (a Markdown code fence around it is allowed); with
  ``train.grpo_schema`` it must also validate against that JSON Schema (valid JSON that does not: 0.5).
- ``length``: 1 inside ``[train.grpo_min_tokens, train.grpo_max_tokens]`` completion tokens, falling off
  linearly outside.
- ``file``: ``reward(prompt, completion, **row) -> float`` from ``train.grpo_reward_file``, run only when
  ``train.grpo_reward_sha256`` holds that file's sha256 (the opt-in, bound to the file's exact bytes).

``train.grpo_rewards`` mixes them: ``"pattern"`` or ``"pattern:1,length:0.25"``; TRL's GRPOTrainer sums
them with those weights.
"""
from __future__ import annotations

import hashlib
import json
import math
import re as stdre
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from studio.errors import Fault

PRESETS = ("pattern", "answer", "json", "length", "file")
ANSWER_MODES = ("exact", "contains", "numeric")
MAX_REWARD_FILE_BYTES = 1 << 20  # a reward function is a page of Python
MAX_SCHEMA_BYTES = 1 << 20
_THINK = stdre.compile(r"<think>.*?(?:</think>|\Z)", stdre.S)
_BOXED = stdre.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_ANSWER_LINE = stdre.compile(r"(?im)^\s*(?:final\s+)?answer\s*[:\-]\s*(.+?)\s*$")
_NUMBER = stdre.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_FENCE = stdre.compile(r"\A\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*\Z", stdre.S)


class RewardError(ValueError):
    """The reward settings cannot work (a name, a weight, a file); the message says which and how to fix it."""


class RewardFault(Fault):
    """A reward stopped the run: the user's function raised or returned a non-finite value."""

    kind = "config"


def parse_mix(text: str) -> list[tuple[str, float]]:
    """``"pattern:1,length:0.25"`` -> [("pattern", 1.0), ("length", 0.25)]; a name alone weighs 1."""
    out: list[tuple[str, float]] = []
    for part in (p.strip() for p in str(text or "").split(",")):
        if not part:
            continue
        name, _, weight = part.partition(":")
        name = name.strip().lower()
        if name not in PRESETS:
            raise RewardError(f"train.grpo_rewards: unknown reward {name!r}; choose from {', '.join(PRESETS)} "
                              "(for example 'pattern' or 'answer:1,length:0.2')")
        try:
            w = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise RewardError(f"train.grpo_rewards: the weight of {name!r} is {weight!r}, not a number") from None
        if not math.isfinite(w) or w < 0 or w > 100:
            raise RewardError(f"train.grpo_rewards: the weight of {name!r} must be between 0 and 100, not {weight}")
        if any(n == name for n, _ in out):
            raise RewardError(f"train.grpo_rewards names {name!r} twice")
        out.append((name, w))
    if not out:
        raise RewardError("train.grpo_rewards is empty: name at least one reward (pattern, answer, json, length "
                          "or file)")
    if not any(w > 0 for _, w in out):
        raise RewardError("train.grpo_rewards: every weight is 0, so nothing would be learned")
    return out


def strip_thinking(text: str) -> str:
    """The completion without its ``<think>..</think>`` sections (an unclosed one runs to the end)."""
    return _THINK.sub("", text).strip()


def final_answer(text: str) -> str:
    """The answer a completion gives: the last ``\\boxed{..}``, else the last ``Answer:`` line, else the text
    after any thinking."""
    rest = strip_thinking(text)
    boxed = _BOXED.findall(rest)
    if boxed:
        return boxed[-1].strip()
    lines = _ANSWER_LINE.findall(rest)
    if lines:
        return lines[-1].strip()
    return rest


def _norm(text: str) -> str:
    return " ".join(str(text).casefold().split()).strip(" .!?;:")


def _number(text: str) -> float | None:
    found = _NUMBER.findall(str(text))
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


# -- the presets, one completion each -----------------------------------------------------------------
@dataclass
class Progress:
    """How far one completion got into a pattern: matched, or the length of its longest prefix that can still
    grow into a match (``viable``) out of ``length`` characters (thinking removed)."""

    matched: bool
    viable: int
    length: int
    timed_out: bool = False
    lines: int = 0  # the viable prefix up to its last line break: the whole lines that still fit



def pattern_progress(completion: str, pattern: Any) -> Progress:
    """A completion against a compiled ``regex`` pattern, each match under the held-out time limit."""
    from studio.scoring import MATCH_TIMEOUT_S

    text = _THINK.sub("", completion).lstrip().rstrip(" \t")  # a last line break is a whole line's end
    try:
        if pattern.search(text, timeout=MATCH_TIMEOUT_S) is not None:
            return Progress(True, len(text), len(text))
        lo, hi = 0, len(text)  # the longest prefix that can still grow into a match (viability is monotone)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if pattern.fullmatch(text[:mid], partial=True, timeout=MATCH_TIMEOUT_S) is not None:
                lo = mid
            else:
                hi = mid - 1
        return Progress(False, lo, len(text), lines=text.rfind("\n", 0, lo) + 1)
    except TimeoutError:
        return Progress(False, 0, len(text), timed_out=True)


def pattern_rewards(progress: list[Progress]) -> list[float]:
    """1 for a match; otherwise half the completion's complete lines that still fit the pattern, measured
    against the longer of the completion itself and the furthest any completion of the same step got (a match
    counts whole). Only whole lines count: a first line that rambles on until the length limit cut it earns
    nothing, and a completion that stops after a correct start ("Answer: Rome.") earns little beside one that
    wrote more of the format. A pattern of one line therefore gives no partial credit, only matches."""
    furthest = max((p.viable if p.matched else p.lines for p in progress), default=0)
    return [1.0 if p.matched else 0.0 if not p.lines else 0.5 * p.lines / max(p.length, furthest, 1)
            for p in progress]


def answer_reward(completion: str, answer: Any, mode: str, tolerance: float) -> float:
    got = final_answer(completion)
    if mode == "numeric":
        want, have = _number(answer), _number(got)
        if want is None or have is None:
            return 0.0
        return 1.0 if abs(have - want) <= tolerance * max(1.0, abs(want)) else 0.0
    if mode == "exact":
        return 1.0 if _norm(got) == _norm(answer) else 0.0
    target = _norm(answer)
    return 1.0 if target and target in _norm(strip_thinking(completion)) else 0.0


def json_reward(completion: str, validator: Any | None) -> float:
    text = strip_thinking(completion)
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return 0.0
    if validator is None:
        return 1.0
    try:
        return 1.0 if validator.is_valid(value) else 0.5
    except RecursionError:
        return 0.5


def length_reward(tokens: int, low: int, high: int) -> float:
    if low <= tokens <= high:
        return 1.0
    if tokens < low:
        return tokens / low if low > 0 else 1.0
    return max(0.0, 1.0 - (tokens - high) / max(high, 1))


# -- loading what the presets need --------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(_read_small(Path(path), MAX_REWARD_FILE_BYTES, "train.grpo_reward_file")).hexdigest()


def _read_small(path: Path, limit: int, field: str) -> bytes:
    if not path.is_file():
        raise RewardError(f"{field}: {path} is not a file")
    size = path.stat().st_size
    if size > limit:
        raise RewardError(f"{field}: {path} is {size:,} bytes; at most {limit:,} are read")
    return path.read_bytes()


class PatternTimedOut(Exception):
    """A schema's regular expression ran out of time against a completion's string."""


def _search(pattern: str, text: str) -> bool:
    """The schema's regular expressions under the same time limit as the pattern reward."""
    import regex

    from studio.scoring import MATCH_TIMEOUT_S

    try:
        return regex.search(pattern, text, timeout=MATCH_TIMEOUT_S) is not None
    except TimeoutError:
        raise PatternTimedOut(pattern) from None


def _timed_keywords() -> dict:
    """jsonschema's three keywords that match regular expressions (with ``re``, which cannot be stopped),
    matched with ``regex`` and a time limit instead; everything else is jsonschema's own."""
    from jsonschema import ValidationError

    def pattern(validator: Any, patrn: str, instance: Any, schema: dict) -> Any:
        if validator.is_type(instance, "string") and not _search(patrn, instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(validator: Any, patterns: dict, instance: Any, schema: dict) -> Any:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for key, value in instance.items():
                if _search(patrn, key):
                    yield from validator.descend(value, subschema, path=key, schema_path=patrn)

    def additional_properties(validator: Any, extra: Any, instance: Any, schema: dict) -> Any:
        if not validator.is_type(instance, "object"):
            return
        known, patterns = schema.get("properties", {}), list(schema.get("patternProperties", {}))
        extras = [k for k in instance if k not in known and not any(_search(p, k) for p in patterns)]
        if validator.is_type(extra, "object"):
            for key in extras:
                yield from validator.descend(instance[key], extra, path=key)
        elif extra is False and extras:
            yield ValidationError(f"additional properties are not allowed ({', '.join(map(repr, sorted(extras)))})")

    return {"pattern": pattern, "patternProperties": pattern_properties, "additionalProperties": additional_properties}


class _Schema:
    """A schema validator whose regular expressions cannot hang a run (``is_valid``: False on a time-out)."""

    def __init__(self, validator: Any) -> None:
        self.validator = validator

    def is_valid(self, value: Any) -> bool:
        try:
            return self.validator.is_valid(value)
        except PatternTimedOut:
            return False


def load_schema(path: str | Path) -> Any:
    """A validator for the schema file (checked as a schema of its own draft), its regular expressions
    bounded like the held-out patterns and matched under a time limit."""
    import jsonschema

    from studio.scoring import PromptFileError, _check_pattern

    raw = _read_small(Path(path), MAX_SCHEMA_BYTES, "train.grpo_schema")
    try:
        schema = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise RewardError(f"train.grpo_schema: {path} is not JSON ({e})") from None
    cls = jsonschema.validators.validator_for(schema) if isinstance(schema, dict) else None
    if cls is None:
        raise RewardError(f"train.grpo_schema: {path} holds {type(schema).__name__}, not a JSON Schema object")
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise RewardError(f"train.grpo_schema: {path} is not a valid JSON Schema: {e.message}") from None
    for patrn in _schema_patterns(schema):
        try:
            _check_pattern(patrn, f"train.grpo_schema {path}")
        except PromptFileError as e:
            raise RewardError(str(e)) from None
    validator = jsonschema.validators.extend(cls, _timed_keywords())(schema)
    for ref in _schema_refs(schema):  # resolved now: an unknown or remote one would fail every completion mid-run
        try:
            validator._resolver.lookup(ref)
        except Exception as e:  # noqa: BLE001 - referencing's errors differ by kind (unresolvable, no such pointer)
            raise RewardError(f"train.grpo_schema: {path}: the $ref {ref!r} cannot be resolved within the schema "
                              f"({type(e).__name__}); refer only to the schema's own parts ('#/$defs/...')") from None
    return _Schema(validator)


def _schema_refs(schema: Any) -> list[str]:
    out, stack = [], [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in ("$ref", "$dynamicRef"):
                if isinstance(node.get(key), str):
                    out.append(node[key])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def _schema_patterns(schema: Any) -> list[str]:
    """Every regular expression a schema holds (``pattern`` values and ``patternProperties`` keys)."""
    out, stack = [], [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                out.append(node["pattern"])
            if isinstance(node.get("patternProperties"), dict):
                out.extend(str(k) for k in node["patternProperties"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


# The reward files this user agreed to run, by full path and sha256. Kept in the user's data folder, never in a
# recipe: a recipe (shared, queued, written by someone else) that names a file and its hash is not an agreement.
AGREEMENTS = "reward_files_agreed.json"
MAX_AGREEMENTS = 1000


def _agreements_path() -> Path:
    from studio import paths

    return paths.data_dir() / AGREEMENTS


def _agreements() -> list[dict]:
    from studio.fsutil import read_json

    found = read_json(_agreements_path(), default=[])
    return [a for a in found if isinstance(a, dict)] if isinstance(found, list) else []


def agree(path: str | Path, digest: str) -> None:
    """Record that this user agreed to run ``path`` with exactly these bytes (``digest``)."""
    from studio.fsutil import atomic_write_json

    entry = {"path": str(Path(path).expanduser().resolve()), "sha256": digest.strip().lower()}
    kept = [a for a in _agreements() if a != entry][-(MAX_AGREEMENTS - 1):]
    _agreements_path().parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(_agreements_path(), kept + [entry])


def agreed(path: str | Path, digest: str) -> bool:
    """Whether this user agreed to run ``path`` with these bytes."""
    entry = {"path": str(Path(path).expanduser().resolve()), "sha256": digest.strip().lower()}
    return entry in _agreements()


def load_user_reward(path: str | Path, trusted_sha256: str) -> tuple[Callable, str]:
    """``reward`` from the user's file, and the file's sha256; refused unless ``trusted_sha256`` (the recipe's:
    which version this run is for) matches the file and this user agreed to that file and hash (``agree``)."""
    path = Path(path)
    raw = _read_small(path, MAX_REWARD_FILE_BYTES, "train.grpo_reward_file")
    digest = hashlib.sha256(raw).hexdigest()
    if trusted_sha256 and digest != trusted_sha256.strip().lower():
        raise RewardError(f"train.grpo_reward_file: {path} changed since you agreed to run it (sha256 now {digest}, "
                          f"agreed {trusted_sha256}); read it again and agree to this version")
    if not trusted_sha256 or not agreed(path, digest):
        raise RewardError(f"train.grpo_reward_file: {path} is Python code and runs only after you agree to it on "
                          f"this computer: 'lora-studio train' asks (or pass --trust-reward-file), the window asks "
                          f"when you pick it; a recipe that names the file is not enough. Its sha256 is {digest}")
    try:
        code = compile(raw, str(path), "exec")
    except SyntaxError as e:
        raise RewardError(f"{path}:{e.lineno}: the reward file does not compile: {e.msg}") from None
    namespace: dict[str, Any] = {"__name__": "lora_studio_reward", "__file__": str(path)}
    try:
        exec(code, namespace)  # noqa: S102 - the user's own file, after their explicit opt-in for these bytes
    except Exception as e:  # noqa: BLE001 - whatever the file raises at import is named with its line
        raise RewardError(f"{_user_line(e, path)}: the reward file raised {type(e).__name__} while loading: "
                          f"{e}") from None
    fn = namespace.get("reward")
    if not callable(fn):
        raise RewardError(f"train.grpo_reward_file: {path} defines no function 'reward'; write "
                          "def reward(prompt, completion, **row) -> float")
    return fn, digest


def _user_line(exc: BaseException, path: Path) -> str:
    """``FILE:LINE`` of the innermost frame of the user's file in ``exc``'s traceback."""
    where = f"{path}"
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename) == path or frame.filename == str(path):
            where = f"{path}:{frame.lineno}"
    return where


# -- the reward functions TRL calls ----------------------------------------------------------------------
@dataclass
class RewardSettings:
    mix: list[tuple[str, float]]
    pattern: str = ""
    answer_mode: str = "contains"
    tolerance: float = 1e-6
    schema: str = ""
    min_tokens: int = 0
    max_tokens: int = 0
    reward_file: str = ""
    reward_sha256: str = ""
    completion_len: int = 1 << 30  # grpo_completion_len: a completion this long was cut, not finished


def settings_from(recipe: Any) -> RewardSettings:
    t = recipe.train
    return RewardSettings(parse_mix(t.grpo_rewards), t.grpo_pattern, t.grpo_answer_match, t.grpo_tolerance,
                          t.grpo_schema, t.grpo_min_tokens, t.grpo_max_tokens or t.grpo_completion_len,
                          t.grpo_reward_file, t.grpo_reward_sha256, t.grpo_completion_len)


def row_problems(settings: RewardSettings, row: dict) -> str:
    """Why one dataset row cannot be rewarded (a column the mix needs is missing), or ''."""
    names = {n for n, _ in settings.mix}
    if "pattern" in names and not (row.get("pattern") or settings.pattern):
        return "no 'pattern' column (and train.grpo_pattern is empty) for the pattern reward"
    if "answer" in names and (row.get("answer") is None or str(row.get("answer")).strip() == ""):
        return "no 'answer' column for the answer reward"
    if "pattern" in names and row.get("pattern") is not None and not isinstance(row.get("pattern"), str):
        return "its 'pattern' is not text"
    return ""


def completion_text(completion: Any) -> str:
    """A completion as text: TRL hands conversational ones as [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def last_user_text(prompt: Any) -> str:
    """A prompt as text: a conversation's last user turn (what the reward file and the samples panel show)."""
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return str(prompt)


class Rewards:
    """The reward functions for TRL's GRPOTrainer, built once per run (``functions()``, ``weights()``).

    Every function takes TRL's keyword arguments: ``completions``, ``completion_ids`` and the dataset's
    columns as lists; ``studio_row`` is the row as JSON and ``studio_where`` its line in the file.
    ``on_timeout(row_where)`` is called for a pattern that ran out of time."""

    def __init__(self, settings: RewardSettings, on_timeout: Callable[[str], None] | None = None) -> None:
        import regex

        self.s = settings
        self.on_timeout = on_timeout or (lambda where: None)
        self._compiled: dict[str, Any] = {}
        self._regex = regex
        self.validator = load_schema(settings.schema) if settings.schema and any(
            n == "json" for n, _ in settings.mix) else None
        self.user: Callable | None = None
        self.sha256 = ""
        if any(n == "file" for n, _ in settings.mix):
            if not settings.reward_file:
                raise RewardError("train.grpo_rewards names 'file' and train.grpo_reward_file is empty: give the "
                                  "Python file with def reward(prompt, completion, **row)")
            self.user, self.sha256 = load_user_reward(settings.reward_file, settings.reward_sha256)

    def weights(self) -> list[float]:
        return [w for _, w in self.s.mix]

    def functions(self) -> list[Callable]:
        return [self._function(name) for name, _ in self.s.mix]

    def _pattern(self, text: str) -> Any:
        rx = self._compiled.get(text)
        if rx is None:
            rx = self._compiled[text] = self._regex.compile(text)
        return rx

    def _function(self, name: str) -> Callable:
        def reward(completions: list, completion_ids: list | None = None, prompts: list | None = None,
                   studio_row: list | None = None, studio_where: list | None = None, **_: Any) -> list[float]:
            rows = [json.loads(r) for r in studio_row] if studio_row else [{} for _ in completions]
            where = studio_where or ["a row"] * len(completions)
            ids = completion_ids or [[] for _ in completions]
            if name == "pattern":  # graded against the step's furthest completion (pattern_rewards)
                return pattern_rewards([self.progress(completion_text(c), r, w, len(i) >= self.s.completion_len)
                                        for c, i, r, w in zip(completions, ids, rows, where)])
            prompts_ = prompts or [""] * len(completions)
            return [self.score(name, completion_text(c), len(i), p, r, w)
                    for c, i, p, r, w in zip(completions, ids, prompts_, rows, where)]

        reward.__name__ = name  # TRL names the metric rewards/<name>/mean after it
        return reward

    def progress(self, completion: str, row: dict, where: str, cut: bool = False) -> Progress:
        """How far ``completion`` got; one cut at grpo_completion_len counts half its lines (it never finished)."""
        found = pattern_progress(completion, self._pattern(row.get("pattern") or self.s.pattern))
        if found.timed_out:
            self.on_timeout(where)
        if cut and not found.matched:
            found.lines //= 2
        return found

    def score(self, name: str, completion: str, tokens: int, prompt: Any, row: dict, where: str) -> float:
        """One completion's reward by a preset other than ``pattern`` (which grades a step's completions together)."""
        s = self.s
        if name == "answer":
            return answer_reward(completion, row.get("answer"), s.answer_mode, s.tolerance)
        if name == "json":
            return json_reward(completion, self.validator)
        if name == "length":
            return length_reward(tokens, s.min_tokens, s.max_tokens)
        return self._user(completion, prompt, row, where)

    def _user(self, completion: str, prompt: Any, row: dict, where: str) -> float:
        path = Path(self.s.reward_file)
        # the row's own prompt and completion columns (a reference answer) as row_prompt and row_completion
        fields = {(f"row_{k}" if k in ("prompt", "completion") else k): v for k, v in row.items()}
        try:
            value = self.user(last_user_text(prompt), completion, **fields)  # type: ignore[misc]
        except Exception as e:  # noqa: BLE001 - the user's code: any failure stops the run, named
            raise RewardFault(f"{_user_line(e, path)}: reward() raised {type(e).__name__}: {e} (dataset {where})",
                              f"fix {path} (it ran on the completion shown in the run log) and start the run again",
                              file=str(path), row=where, completion=completion[:500]) from None
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise RewardFault(f"{path}: reward() returned {type(value).__name__} {str(value)[:80]!r}, not a number "
                              f"(dataset {where})", "return a float from reward()", file=str(path),
                              row=where) from None
        if not math.isfinite(value):
            raise RewardFault(f"{path}: reward() returned {value} for dataset {where}, not a finite number",
                              "return a finite float from reward() (clip it, or guard the division)",
                              file=str(path), row=where, completion=completion[:500])
        return value


def describe(settings: RewardSettings) -> str:
    """The mix in words, for the run log."""
    pattern = settings.pattern[:60] if settings.pattern else "each row's pattern"
    words = {"pattern": f"pattern ({pattern})",
             "answer": f"answer ({settings.answer_mode})",
             "json": "json" + (f" (schema {Path(settings.schema).name})" if settings.schema else ""),
             "length": f"length ({settings.min_tokens}-{settings.max_tokens} tokens)",
             "file": f"file ({settings.reward_file})"}
    return ", ".join(f"{words[n]} x{w:g}" for n, w in settings.mix)

