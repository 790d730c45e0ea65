"""One streaming pass over a dataset: detect the format, normalise and check every record, fill a report.

``iter_examples`` is the single path both inspection and training take, so what was inspected is
what gets trained. It keeps only what the report needs (a preview, problem details up to a cap,
one 16-byte digest per example for duplicates), so memory stays bounded for big files.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import studio.data.images as imgs
from studio.data.formats import FORMATS, ROLE_TARGETS, ROLES, Format, canonical, kind_of, media_problem
from studio.data.report import WARNING, DatasetReport, Problem, RowProblem
from studio.data.sources import DataError, Record, Records, Source, arrow_columns, open_source, records

SAMPLE = 200  # readable records read ahead to detect the format
SAMPLE_MAX = 5000  # records read ahead at most, however many are broken
FINGERPRINT_SEED = b"lora-studio-data-v1"  # change it when the digest changes, so old fingerprints differ


@dataclass
class Detection:
    format: str
    confidence: float
    scores: dict
    colmap: dict


def detect(sample: list, fmt: str = "auto", columns: dict | None = None, path: Any = "") -> Detection:
    """Pick the format most sampled records fit (ties go to the format with more matched fields)."""
    columns = dict(columns or {})
    fmt = canonical(fmt or "auto")
    values = [r.value for r in sample if r.value is not None]
    if values and all(isinstance(v, str) for v in values):
        if fmt not in ("auto", "text"):
            raise DataError(f"{path}: a plain text file can only be read as format 'text', not '{fmt}'")
        return Detection("text", 1.0, {"text": 1.0}, {})
    dicts = [v for v in values if isinstance(v, dict)]
    if not sample:
        raise DataError(f"{path}: the file holds no records; add some examples to it")
    if not dicts and values:
        kinds = sorted({kind_of(v) for v in values})
        raise DataError(f"{path}: the records are {' or '.join(kinds)}, not objects with named columns; write each "
                        "record as an object such as {\"prompt\": ..., \"completion\": ...}")
    if not dicts:
        first = next((r.problem for r in sample if r.problem), None)
        why = f"; {first.where()}: {first.message}" if first else ""
        raise DataError(f"{path}: no record could be read{why}")
    if fmt != "auto":
        return _forced(fmt, dicts, columns, path)
    scores, maps = _scores(dicts, columns)
    ranked = sorted(scores, key=lambda n: (scores[n], len(maps.get(n) or {})), reverse=True)
    best = ranked[0]
    if scores[best] == 0:
        return _single_column(dicts, path)
    confidence = scores[best] * (0.9 if len(ranked) > 1 and scores[ranked[1]] == scores[best] else 1.0)
    return Detection(best, confidence, {n: round(s, 3) for n, s in scores.items() if s}, maps[best])


def _scores(dicts: list[dict], columns: dict) -> tuple[dict, dict]:
    scores, maps = {}, {}
    for name, f in FORMATS.items():
        fits = [m for m in (f.fits(d, columns) for d in dicts) if m is not None]
        scores[name] = len(fits) / len(dicts)
        if fits:
            best = dict(Counter(tuple(sorted(m.items())) for m in fits).most_common(1)[0][0])
            for m in fits:  # optional columns only some records have (a system prompt on a few rows)
                for k, v in m.items():
                    best.setdefault(k, v)
            maps[name] = best
    return scores, maps


def _forced(fmt: str, dicts: list[dict], columns: dict, path: Any) -> Detection:
    """An explicit --format: map its columns (from --columns or the usual names) or say which are missing."""
    f = FORMATS.get(fmt)
    if f is None:
        raise DataError(f"unknown format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    keys = {str(k).strip().lower(): k for d in dicts for k in d}
    colmap = f.resolve(keys, columns)
    if colmap is None:
        need = [x.name for x in f.fields if x.required and _absent(x, keys, columns)]
        have = ", ".join(map(str, dict.fromkeys(k for d in dicts for k in d)))
        raise DataError(f"{path}: format '{fmt}' needs column(s) {', '.join(need)} but the file has: {have}; "
                        f"map them with --columns, e.g. {need[0]}=YOUR_COLUMN")
    share = sum(1 for d in dicts if f.fits(d, columns) is not None) / len(dicts)
    return Detection(fmt, share, {fmt: round(share, 3)}, colmap)


def _absent(field: Any, keys: dict, columns: dict) -> bool:
    """The file has no column for this field (under the mapped name, or any usual name)."""
    if field.name in columns:
        return str(columns[field.name]).strip().lower() not in keys
    return not any(a in keys for a in field.aliases)


def _single_column(dicts: list[dict], path: Any) -> Detection:
    """No known columns: one text column is read as plain text; otherwise ask for a mapping.

    ``open_and_detect`` adds a mapping that was tried on the sample and works, when one exists.
    """
    names = list(dict.fromkeys(k for d in dicts for k in d))
    texty = [k for k in names if all(isinstance(d.get(k), (str, type(None))) for d in dicts)]
    if len(names) == 1 and texty:
        return Detection("text", 0.5, {"text": 0.5}, {"text": names[0]})
    turns = _turn_keys(dicts)
    if turns:
        col, keys = turns
        raise DataError(f"{path}: the '{col}' turns have keys {', '.join(keys)}, not role/content; map them with "
                        f"--format messages --columns messages={col},role=KEY,content=KEY")
    raise DataError(f"{path}: no known format: the columns are {', '.join(map(str, names[:12]))}; name the format "
                    "with --format (messages, sharegpt, alpaca, prompt_completion, question_answer, preference, "
                    "prompts, image_text, text) and map its fields to your columns with --columns FIELD=COLUMN,…")


def _turn_keys(dicts: list[dict]) -> tuple[str, list[str]] | None:
    """A column holding lists of objects (turns with keys nobody told us about): its name and their keys."""
    for d in dicts:
        for col, value in d.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                return str(col), [str(k) for k in value[0]]
    return None


def _sample(stream: Iterator[Record]) -> list[Record]:
    """The first SAMPLE readable records (reading on past broken ones, up to SAMPLE_MAX records)."""
    sample, readable = [], 0
    for rec in stream:
        sample.append(rec)
        readable += rec.value is not None
        if readable >= SAMPLE or len(sample) >= SAMPLE_MAX:
            break
    return sample


def digest(example: dict) -> bytes:
    """16 bytes identifying a normalised example's content (roles and text, nothing else)."""
    if "messages" in example:
        body = "\x1e".join(m["role"] + "\x1f" + m["content"] + (_extra(m) if len(m) > 2 else "")
                           for m in example["messages"])
        if "tools" in example:
            body += "\x1dtools\x1f" + json.dumps(example["tools"], sort_keys=True, ensure_ascii=False)
    else:
        body = "\x1dtext\x1f" + example["text"]
    if "images" in example:  # the same question about another picture is another example
        body += "\x1dimages\x1f" + "\x1f".join(example["images"])
    return hashlib.blake2b(body.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _extra(message: dict) -> str:
    """Tool calls (and a tool result's name) of a turn, for the digest."""
    rest = {k: v for k, v in message.items() if k not in ("role", "content")}
    return "\x1c" + json.dumps(rest, sort_keys=True, ensure_ascii=False, default=str)


def duplicate_problem(first: int, row: int, line: int | None) -> Problem:
    return Problem(f"exact duplicate of row {first}", "remove it, or it is trained on twice", None,
                   row=row, line=line, severity=WARNING, code="duplicate")


class Sink:
    """Receives rows as they are judged: counts, problems, duplicates, fingerprint, preview."""

    def __init__(self, report: DatasetReport, preview_rows: int, dedupe: bool, colmap: dict | None = None):
        self.report, self.preview_rows = report, preview_rows
        self.seen: dict[bytes, int] | None = {} if dedupe else None
        self.hash = hashlib.sha256(FINGERPRINT_SEED)
        colmap = colmap or {}
        self.label: str | None = colmap.get("label")
        self.media: dict = colmap.get("media") or {}
        self.image_column: str | None = colmap.get("images")
        self.base: Path | None = colmap.get("base")
        self.images = imgs.ImageTally()
        self.used = frozenset(used_columns(colmap))
        self.unused: Counter = Counter()
        self.pairs = self.tool_rows = 0

    def filtered(self) -> None:
        self.report.filtered += 1

    def count(self, example: dict) -> None:
        """Per-example tallies the report states: preference pairs and conversations with tools."""
        if len(example) > 1:
            if "image_sizes" in example:
                self.images.add(example["image_sizes"])
            if "rejected" in example:
                self.pairs += len(example["rejected"])
            if "tools" in example:
                self.tool_rows += 1
                return
        msgs = example.get("messages")
        if msgs is not None and getattr(msgs, "special", True) and any(len(m) > 2 or m["role"] == "tool"
                                                                         for m in msgs):
            self.tool_rows += 1

    def bad(self, problem: Problem, row: int, line: int | None) -> None:
        problem.row, problem.line = row, line
        self.report.add(problem)
        self.report.skipped += 1

    def good(self, example: dict, row: int, line: int | None) -> None:
        rep = self.report
        rep.usable += 1
        self.count(example)
        d = digest(example)
        self.hash.update(d)
        if self.seen is not None:
            first = self.seen.setdefault(d, row)
            if first != row:
                rep.duplicates += 1
                rep.add(duplicate_problem(first, row, line))
        if len(rep.preview) < self.preview_rows:
            rep.preview.append({"row": row, **example})


def open_and_detect(path: str | Path, fmt: str | None, columns: dict | None, report: DatasetReport,
                    roles: dict | None = None, label_filter: bool = True
                    ) -> tuple[Source, Detection, list[Record], Records]:
    """Open the file, read ahead to detect the format and describe both in ``report``.

    ``det.colmap`` also carries what every row needs besides the format's columns: ``roles`` (the
    role names with the --roles mapping), ``label`` (a good/bad column to filter on), ``media``
    (audio/video columns, reported as unused), ``images`` (the column holding a row's images) and
    ``base`` (the folder relative image paths are read from: the file's, or a datasets folder itself).
    """
    role_map = role_mapping(roles)
    src = open_source(path)
    base = Path(os.path.abspath(src.path if src.path.is_dir() else src.path.parent))
    stream = records(src)
    sample = _sample(stream)
    try:
        det = detect(sample, fmt or "auto", columns, src.path)
    except DataError as e:
        dicts = [r.value for r in sample if isinstance(r.value, dict)]
        e.columns = list(dict.fromkeys(str(k) for d in dicts for k in d))  # the window's column menus offer them
        found = suggestions(dicts, role_map, base=base)
        if found and not getattr(e, "suggestions", None):
            e.suggestions = found
            e.args = (f"{e.args[0]}; this works: {as_flags(found[0])}",)
        raise
    dicts = [r.value for r in sample if isinstance(r.value, dict)]
    det.colmap = {**det.colmap, **_row_options(det, dicts, role_map, label_filter, report, base)}
    _describe(report, src, det, sample)
    return src, det, sample, stream


ROW_KEY = "_row"  # iter_examples(keep_row=True): the record's own columns


def iter_examples(path: str | Path, fmt: str = "auto", columns: dict | None = None,
                  report: DatasetReport | None = None, preview_rows: int = 0, dedupe: bool = True,
                  roles: dict | None = None, label_filter: bool = True,
                  keep_row: bool = False) -> Iterator[tuple[int, int | None, dict]]:
    """Yield ``(row, line, example)`` for every usable record while ``report`` collects the rest.

    ``keep_row``: each example also carries its record's columns under ``ROW_KEY`` (grpo's rewards read a
    row's ``pattern``, ``answer`` and whatever a reward file asks for)."""
    report = report if report is not None else DatasetReport()
    src, det, sample, stream = open_and_detect(path, fmt, columns, report, roles, label_filter)
    f, colmap = FORMATS[det.format], det.colmap
    sink = Sink(report, preview_rows, dedupe, colmap)
    for rec in itertools.chain(sample, stream):
        example = judge(rec, f, colmap, sink)
        if example is not None:
            if keep_row and isinstance(rec.value, dict):
                example[ROW_KEY] = rec.value
            yield rec.row, rec.line, example
    report.fingerprint = sink.hash.hexdigest()
    report.notes.extend(n for n in src.notes if n not in report.notes)
    finish(report, sink.unused, sink.pairs, sink.tool_rows, sink.images)
    suggest_if_mostly_unusable(report, sample, colmap)


def suggest_if_mostly_unusable(report: DatasetReport, sample: list[Record], colmap: dict) -> None:
    """When most rows cannot be used as read, offer the mappings that work on the sample (tried first)."""
    if report.usable * 2 >= report.rows - report.filtered:
        return
    dicts = [r.value for r in sample if isinstance(r.value, dict)]
    current = {k: v for k, v in colmap.items() if isinstance(v, str) and k != "images"}
    report.suggestions = [c for c in suggestions(dicts, colmap.get("roles") or ROLES, base=colmap.get("base"))
                          if not (c["format"] == report.format and c["columns"] == current and not c.get("roles"))]
    if report.suggestions:
        report.notes.append(f"most rows are unusable as read; this works on the first rows: "
                            f"{as_flags(report.suggestions[0])}")


def judge(rec: Record, f: Format, colmap: dict, sink: Sink) -> dict | None:
    """Normalise one record, or report why it cannot be used."""
    if rec.problem is not None and rec.value is None:
        sink.bad(rec.problem, rec.row, rec.line)
        return None
    if rec.problem is not None:  # a warning from the reader (e.g. a trailing comma)
        sink.report.add(rec.problem)
    value = rec.value
    if not isinstance(value, (dict, str)) or (isinstance(value, str) and f.name != "text"):
        sink.bad(Problem(f"the record is {kind_of(value)}, not an object with columns",
                         "write each record as an object, e.g. {\"messages\": [...]}", code="not_object"),
                 rec.row, rec.line)
        return None
    if type(value) is dict:
        extra = value.keys() - sink.used
        if extra:
            sink.unused.update(extra)
        if sink.label is not None:
            verdict = label_verdict(value.get(sink.label))
            if verdict is False:
                sink.filtered()
                return None
            if verdict is None:
                sink.bad(Problem(f"'{sink.label}' holds {_short(value.get(sink.label))}, neither good nor bad",
                                 "write true/false (or good/bad), or keep every row with --label-filter off",
                                 str(sink.label), code="label"), rec.row, rec.line)
                return None
    warnings = RowWarnings()
    try:
        example = f.normalise(value, colmap, warnings)
        msgs = example.get("messages")
        if msgs is not None:
            special = getattr(msgs, "special", True)
            if sink.media or (special and _has_marker(msgs)):
                _media(msgs, value, sink.media, warnings)
            column = sink.image_column
            if warnings.images or (column is not None and type(value) is dict and value.get(column) is not None) \
                    or (special and _has_image(msgs)):
                sink.images.placed += imgs.attach(example, warnings.images,
                                                  value.get(column) if column is not None else None, column,
                                                  sink.base)
    except RowProblem as e:
        sink.bad(e.problem, rec.row, rec.line)
        return None
    seen = set()
    for w in warnings:
        if w.code.startswith("media_") or w.code == "unused_key":  # once per row and kind
            if w.code in seen:
                continue
            seen.add(w.code)
        w.row, w.line = rec.row, rec.line
        sink.report.add(w)
    sink.good(example, rec.row, rec.line)
    return example


class RowWarnings(list):
    """A row's warnings, called like ``list.append`` by the normalisers, and the images its content parts
    name, in order: ``formats._content`` appends ``(what the part names, field)``, what being None for a
    part that only marks the image's place."""

    __slots__ = ("images",)

    def __init__(self) -> None:
        super().__init__()
        self.images: list = []

    def __call__(self, problem: Problem) -> None:
        self.append(problem)


# ------------------------------------------------------------------ labels, media, unused fields

LABEL_COLUMNS = ("label", "kto_label", "kto_tag", "tag", "is_good", "desirable", "good", "thumbs_up")
GOOD = frozenset({"true", "1", "yes", "good", "positive", "pos", "desirable", "chosen", "accept", "accepted",
                  "correct", "thumbs_up", "up", "+1"})
BAD = frozenset({"false", "0", "no", "bad", "negative", "neg", "undesirable", "rejected", "reject", "incorrect",
                 "wrong", "thumbs_down", "down", "-1"})
# Columns of media a row carries that no training here reads (images are read: studio.data.images).
MEDIA_COLUMNS = {"videos": "video", "video": "video", "audios": "audio", "audio": "audio"}
_MARKER = re.compile(r"<(video|audio)>\n?")
_MARKER_GROUP = {"video": "video", "audio": "audio"}


def label_verdict(value: Any) -> bool | None:
    """True for a row marked good, False for bad, None when the value says neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        key = value.strip().lower()
        return True if key in GOOD else False if key in BAD else None
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 40 else text[:39] + "…"


def _has_marker(messages: list[dict]) -> bool:
    return any("<" in m["content"] and _MARKER.search(m["content"]) for m in messages)


def _has_image(messages: list[dict]) -> bool:
    return any(imgs.IMAGE in m["content"] for m in messages)


def _media(messages: list[dict], record: Any, media_cols: dict, warn: Any) -> None:
    """Audio and video, which no training here uses: named per row; their <video>/<audio> markers taken out of
    the text (``<image>`` markers stay: the images are kept)."""
    groups: dict[str, str] = {}
    if type(record) is dict:
        for col, group in media_cols.items():
            if record.get(col) not in (None, "", [], {}):
                groups.setdefault(group, str(col))
    for i, m in enumerate(messages):
        content = m["content"]
        if "<" not in content or not _MARKER.search(content):
            continue
        for kind in _MARKER.findall(content):
            groups.setdefault(_MARKER_GROUP[kind], "content")
        m["content"] = _MARKER.sub("", content).strip()
        if not m["content"] and not m.get("tool_calls") and m["role"] in ("user", "assistant"):
            found = " ".join(sorted({f"<{k}>" for k in _MARKER.findall(content)}))
            raise RowProblem(f"{m['role']} turn {i + 1} holds only {found} markers; audio and video are not "
                             "used", "remove this row, or write out in text what the answer relies on",
                             f"turn {i + 1}", code="only_media")
    for group, field in groups.items():
        warn(media_problem(group, field))


def used_columns(colmap: dict) -> set:
    """The columns of a record that are read: the format's, plus the label, image and media columns."""
    used = {v for k, v in colmap.items() if isinstance(v, str) and k not in ("role", "content")}
    return used | set(colmap.get("media") or {})


def role_mapping(roles: dict | None) -> dict:
    """The role names rows are read with: the usual ones plus ``--roles`` (value -> system/user/assistant/tool)."""
    if not roles:
        return ROLES
    out = dict(ROLES)
    for raw, target in roles.items():
        key, goal = str(raw).strip(), str(target).strip().lower()
        if goal not in ROLE_TARGETS:
            raise DataError(f"--roles {raw}={target}: map a role to one of {', '.join(ROLE_TARGETS)}")
        out[key] = out[key.lower()] = goal
    return out


def _row_options(det: Detection, dicts: list[dict], roles: dict, label_filter: bool,
                 report: DatasetReport, base: Path | None = None) -> dict:
    """The label column (when its values all say good or bad), the image column and media columns found in the
    sample, and the folder image paths are read from."""
    opts: dict = {"roles": roles} if roles is not ROLES else {}
    if base is not None:
        opts["base"] = base
    report.roles = {k: v for k, v in roles.items() if ROLES.get(k) != v} if roles is not ROLES else {}
    used = {v for v in det.colmap.values() if isinstance(v, str)}
    names = list(dict.fromkeys(k for d in dicts for k in d if k not in used))
    if det.format != "text":
        for name in names:
            if str(name).strip().lower() in LABEL_COLUMNS:
                values = [d[name] for d in dicts if name in d]
                if values and all(label_verdict(v) is not None for v in values):
                    report.label_column, report.label_filter = str(name), bool(label_filter)
                    if label_filter:
                        opts["label"] = name
                    break
    if det.format != "text" and "images" not in det.colmap:
        lower = {str(name).strip().lower(): name for name in names}
        column = next((lower[c] for c in imgs.IMAGE_COLUMNS if c in lower), None)
        if column is not None:
            opts["images"] = column
    media = {name: MEDIA_COLUMNS[str(name).strip().lower()] for name in names
             if str(name).strip().lower() in MEDIA_COLUMNS and det.format != "text"}
    if media:
        opts["media"] = media
        report.media_columns = {str(k): v for k, v in media.items()}
    return opts


def finish(report: DatasetReport, unused: Counter, pairs: int, tool_rows: int,
           images: imgs.ImageTally | None = None) -> None:
    """Counts and file-level notes: nothing the file carries goes unnamed."""
    report.rows = report.usable + report.skipped + report.filtered
    report.tool_rows = tool_rows
    if images is not None:
        report.images, report.image_sizes = images.images, images.summary()
        report.notes.extend(images.notes())
    if report.roles:
        report.notes.append("roles mapped: " + ", ".join(f"{k}={v}" for k, v in report.roles.items()))
    if report.label_column:
        if report.label_filter:
            report.notes.append(f"column '{report.label_column}' marks rows good or bad: {report.filtered} row(s) "
                                "marked bad are left out and only rows marked good are trained "
                                "(--label-filter off trains them all)")
        else:
            report.notes.append(f"column '{report.label_column}' marks rows good or bad, but the label filter is "
                                "off: rows marked bad are trained too")
    for (code, _sev, _field), n in sorted(report.problem_counts.items(), key=lambda kv: kv[0][0]):
        if code.startswith("media_"):
            group = code[len("media_"):]
            report.notes.append(f"{n} row(s) carry {group}; the {group} are not used (training reads text and "
                                "images only)")
    if tool_rows:
        report.notes.append(f"{tool_rows} conversation(s) use tools: assistant tool calls are trained like any "
                            "assistant turn, tool results are not; both are written with the model's chat template "
                            "(its tools support is checked when a model is chosen)")
    if report.format == "preference":
        layout = report.preference["layout"] if report.preference else "chosen/rejected"
        report.preference = {"layout": layout, "pairs": pairs}
        report.notes.append(f"preference data ({layout}): {pairs} pair(s) in {report.usable} row(s). SFT trains "
                            "on the chosen answers; train.objective 'dpo' or 'orpo' (--objective) trains on the "
                            "chosen/rejected pairs")
    label = {report.label_column} if report.label_column else set()
    order = {c: i for i, c in enumerate(report.columns)}
    ranked = sorted(unused.items(), key=lambda kv: (-kv[1], order.get(str(kv[0]), len(order)), str(kv[0])))
    report.unused_columns = {str(k): n for k, n in ranked if str(k) not in label}
    if report.unused_columns:
        listed = ", ".join(f"{k} ({n} row(s))" for k, n in report.unused_columns.items())
        if report.format == "prompts":  # prompts alone are grpo's, and its rewards read every column
            report.notes.append(f"prompts alone, for train.objective 'grpo': its rewards read the other column(s): "
                                f"{listed}")
        else:
            report.notes.append("column(s) not used: " + listed)


def _describe(report: DatasetReport, src: Source, det: Detection, sample: list[Record]) -> None:
    report.path, report.reader, report.encoding = str(src.path), src.kind, src.encoding
    report.compression = src.compression
    report.format, report.confidence, report.detection = det.format, det.confidence, det.scores
    report.column_map = {k: str(v) for k, v in det.colmap.items() if isinstance(v, str) and k != "label"}
    if det.format == "preference":
        report.preference = {"layout": preference_layout(det.colmap), "pairs": 0}
    cols = arrow_columns(src) or list(dict.fromkeys(
        str(k) for r in sample if isinstance(r.value, dict) for k in r.value))
    report.columns = cols
    report.notes.extend(src.notes)


def preference_layout(colmap: dict) -> str:
    """The pair layout in the file's own column names."""
    chosen, rejected, prompt = colmap.get("chosen"), colmap.get("rejected"), colmap.get("prompt")
    if rejected is None:
        return f"a ranked '{chosen}' list, best first" + (f", after '{prompt}'" if prompt else "")
    if str(chosen).lower() == "preferred_output":
        return f"preferred/non-preferred outputs after '{prompt}'" if prompt else "preferred/non-preferred outputs"
    return f"{prompt} + {chosen} + {rejected}" if prompt else f"{chosen} + {rejected} conversations (shared prompt)"


# ------------------------------------------------------------------ suggestions that were tried

PROMPTISH = ("prompt", "instruction", "question", "query", "input", "source", "src", "request", "problem", "post",
             "human", "user", "ask")
ANSWERISH = ("completion", "output", "response", "answer", "target", "tgt", "reply", "solution", "summary",
             "assistant", "bot", "gpt")
TEXTISH = ("text", "content", "document", "body", "article", "passage", "story", "markdown")


def as_flags(suggestion: dict) -> str:
    """A suggestion as the command-line options that apply it."""
    out = f"--format {suggestion['format']}"
    if suggestion["columns"]:
        out += " --columns " + ",".join(f"{k}={v}" for k, v in suggestion["columns"].items())
    if suggestion.get("roles"):
        out += " --roles " + ",".join(f"{k}={v}" for k, v in suggestion["roles"].items())
    return out


def suggestions(dicts: list[dict], roles: dict | None = None, limit: int = 3, base: Path | None = None) -> list[dict]:
    """Mappings (format, columns, roles) that make most sampled records usable, each tried before it is offered
    (``base``: the folder the file's relative image paths are read from)."""
    roles = roles or ROLES
    out = []
    for cand in _candidates(dicts, roles):
        if cand not in out and _works(cand, dicts, roles, base):
            out.append(cand)
            if len(out) >= limit:
                break
    return out


def _named(name: Any, words: tuple) -> bool:
    key = re.sub(r"[^a-z]+", " ", str(name).lower()).split()
    return any(w in key for w in words)


def _candidates(dicts: list[dict], roles: dict) -> Iterator[dict]:
    names = list(dict.fromkeys(k for d in dicts for k in d))
    for name, f in FORMATS.items():  # a known layout whose role names need mapping
        colmap = next((m for d in dicts if (m := f.fits(d, {}))), None) if name in ("messages", "sharegpt") else None
        if colmap:  # the first record that fits says which column holds the turns
            col, key = colmap[f.fields[0].name], ("role" if name == "messages" else "from")
            guess = _guess_roles(dicts, col, key, roles)
            if guess:
                yield {"format": name, "columns": {}, "roles": guess}
    for col in names:
        turns = [t for d in dicts if isinstance(d.get(col), list) for t in d[col] if isinstance(t, dict)][:500]
        if not turns:
            continue
        keys = list(dict.fromkeys(k for t in turns for k in t))
        strkeys = [k for k in keys if all(isinstance(t.get(k), (str, list, type(None))) for t in turns)]
        small = [k for k in strkeys if _role_like({t[k] for t in turns if isinstance(t.get(k), str)})]
        for r in small:
            for c in strkeys:
                if c != r:
                    columns = {"messages": str(col), "role": str(r), "content": str(c)}
                    yield {"format": "messages", "columns": columns}
                    guess = _guess_roles(dicts, col, r, roles)
                    if guess:
                        yield {"format": "messages", "columns": columns, "roles": guess}
    strcols = [k for k in names if all(isinstance(d.get(k), (str, type(None))) for d in dicts)]
    for a in strcols:
        for b in strcols:
            if a != b and _named(a, PROMPTISH) and _named(b, ANSWERISH):
                yield {"format": "prompt_completion", "columns": {"prompt": str(a), "completion": str(b)}}
    for a in strcols:
        if _named(a, TEXTISH):
            yield {"format": "text", "columns": {"text": str(a)}}


_ROLE_WORD = re.compile(r"^[\w\-]{1,24}$")


def _role_like(values: set) -> bool:
    """A few short single-word values: what a role key holds (never the text of the turns)."""
    return 0 < len(values) <= 8 and all(_ROLE_WORD.match(v) for v in values)


def _guess_roles(dicts: list[dict], col: Any, role_key: Any, roles: dict) -> dict:
    """Unknown role values by where they stand: the one that ends conversations is the assistant's."""
    last: set[str] = set()
    first: set[str] = set()
    for d in dicts:
        value = d.get(col)
        said = [t.get(role_key) for t in value if isinstance(t, dict)] if isinstance(value, list) else []
        turns = [t for t in said if isinstance(t, str)]
        if len(turns) >= 2:
            last.add(turns[-1])
            first.add(next((t for t in turns if roles.get(t) != "system"), turns[0]))
    if not _role_like(last | first):
        return {}
    guess = {v: "assistant" for v in sorted(last) if v not in roles and v.lower() not in roles}
    guess.update({v: "user" for v in sorted(first) if v not in roles and v.lower() not in roles and v not in guess})
    return guess


def _works(cand: dict, dicts: list[dict], roles: dict, base: Path | None = None) -> bool:
    """At least half the sampled records become usable examples with this mapping."""
    try:
        det = _forced(cand["format"], dicts, cand["columns"], "")
        role_map = role_mapping(cand.get("roles")) if cand.get("roles") else roles
    except DataError:
        return False
    trial = DatasetReport()
    colmap = {**det.colmap, **_row_options(det, dicts, role_map, True, trial, base)}
    sink = Sink(trial, 0, False, colmap)
    for i, d in enumerate(dicts):  # exactly the per-row checks a run makes
        judge(Record(i + 1, None, d, None), FORMATS[cand["format"]], colmap, sink)
    return trial.usable > 0 and trial.usable * 2 >= len(dicts) - trial.filtered
