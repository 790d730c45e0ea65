"""One streaming pass over a dataset: detect the format, normalise and check every record, fill a report.

``iter_examples`` is the single path both inspection and training take, so what was inspected is
what gets trained. It keeps only what the report needs (a preview, problem details up to a cap,
one 16-byte digest per example for duplicates), so memory stays bounded for big files.
"""
from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from studio.data.formats import FORMATS, Format, canonical, kind_of
from studio.data.report import WARNING, DatasetReport, Problem, RowProblem
from studio.data.sources import DataError, Record, Source, arrow_columns, open_source, records

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
            maps[name] = Counter(tuple(sorted(m.items())) for m in fits).most_common(1)[0][0]
            maps[name] = dict(maps[name])
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
    """No known columns: one text column is read as plain text; otherwise ask for a mapping."""
    names = list(dict.fromkeys(k for d in dicts for k in d))
    texty = [k for k in names if all(isinstance(d.get(k), (str, type(None))) for d in dicts)]
    if len(names) == 1 and texty:
        return Detection("text", 0.5, {"text": 0.5}, {"text": names[0]})
    turns = _turn_keys(dicts)
    if turns:
        col, keys = turns
        raise DataError(f"{path}: the '{col}' turns have keys {', '.join(keys)}, not role/content; map them, e.g. "
                        f"--format messages --columns messages={col},role={keys[0]},content={keys[-1]}")
    raise DataError(f"{path}: no known format: the columns are {', '.join(map(str, names[:12]))}; name the format "
                    "with --format (messages, sharegpt, alpaca, prompt_completion, question_answer, text) and map "
                    "columns with --columns, e.g. prompt=question,completion=answer")


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
        body = "\x1e".join(m["role"] + "\x1f" + m["content"] for m in example["messages"])
    else:
        body = "\x1dtext\x1f" + example["text"]
    return hashlib.blake2b(body.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def duplicate_problem(first: int, row: int, line: int | None) -> Problem:
    return Problem(f"exact duplicate of row {first}", "remove it, or it is trained on twice", None,
                   row=row, line=line, severity=WARNING, code="duplicate")


class Sink:
    """Receives rows as they are judged: counts, problems, duplicates, fingerprint, preview."""

    def __init__(self, report: DatasetReport, preview_rows: int, dedupe: bool):
        self.report, self.preview_rows = report, preview_rows
        self.seen: dict[bytes, int] | None = {} if dedupe else None
        self.hash = hashlib.sha256(FINGERPRINT_SEED)

    def bad(self, problem: Problem, row: int, line: int | None) -> None:
        problem.row, problem.line = row, line
        self.report.add(problem)
        self.report.skipped += 1

    def good(self, example: dict, row: int, line: int | None) -> None:
        rep = self.report
        rep.usable += 1
        d = digest(example)
        self.hash.update(d)
        if self.seen is not None:
            first = self.seen.setdefault(d, row)
            if first != row:
                rep.duplicates += 1
                rep.add(duplicate_problem(first, row, line))
        if len(rep.preview) < self.preview_rows:
            rep.preview.append({"row": row, **example})


def open_and_detect(path: str | Path, fmt: str | None, columns: dict | None,
                    report: DatasetReport) -> tuple[Source, Detection, list[Record], Iterator[Record]]:
    """Open the file, read ahead to detect the format and describe both in ``report``."""
    src = open_source(path)
    stream = records(src)
    sample = _sample(stream)
    det = detect(sample, fmt or "auto", columns, src.path)
    _describe(report, src, det, sample)
    return src, det, sample, stream


def iter_examples(path: str | Path, fmt: str = "auto", columns: dict | None = None,
                  report: DatasetReport | None = None, preview_rows: int = 0,
                  dedupe: bool = True) -> Iterator[tuple[int, int | None, dict]]:
    """Yield ``(row, line, example)`` for every usable record while ``report`` collects the rest."""
    report = report if report is not None else DatasetReport()
    src, det, sample, stream = open_and_detect(path, fmt, columns, report)
    f, colmap, sink = FORMATS[det.format], det.colmap, Sink(report, preview_rows, dedupe)
    for rec in itertools.chain(sample, stream):
        example = judge(rec, f, colmap, sink)
        if example is not None:
            yield rec.row, rec.line, example
    report.rows = report.usable + report.skipped
    report.fingerprint = sink.hash.hexdigest()
    report.notes.extend(n for n in src.notes if n not in report.notes)


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
    warnings: list[Problem] = []
    try:
        example = f.normalise(value, colmap, warnings.append)
    except RowProblem as e:
        sink.bad(e.problem, rec.row, rec.line)
        return None
    for w in warnings:
        w.row, w.line = rec.row, rec.line
        sink.report.add(w)
    sink.good(example, rec.row, rec.line)
    return example


def _describe(report: DatasetReport, src: Source, det: Detection, sample: list[Record]) -> None:
    report.path, report.reader, report.encoding = str(src.path), src.kind, src.encoding
    report.compression = src.compression
    report.format, report.confidence, report.detection = det.format, det.confidence, det.scores
    report.column_map = {k: str(v) for k, v in det.colmap.items()}
    cols = arrow_columns(src) or list(dict.fromkeys(
        str(k) for r in sample if isinstance(r.value, dict) for k in r.value))
    report.columns = cols
    report.notes.extend(src.notes)
