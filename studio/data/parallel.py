"""Inspect a big UTF-8 JSONL file on all cores: byte ranges split at line starts, merged in file order.

Each worker process judges the records of its range exactly as the serial pass does
(``scan.judge``) and returns counts, problems, a preview and one 16-byte digest per usable row.
The parent numbers rows and lines across ranges, finds duplicates and computes the fingerprint,
so the report is identical to the serial one (a test checks it). Only ``inspect`` without a
tokenizer takes this path; training and token statistics stream serially.
"""
from __future__ import annotations

import hashlib
import os
import sys
from array import array
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from studio.data.formats import FORMATS
from studio.data.images import ImageTally
from studio.data.report import MAX_PROBLEMS, DatasetReport, Problem
from studio.data.scan import (
    FINGERPRINT_SEED,
    Sink,
    digest,
    duplicate_problem,
    finish,
    judge,
    open_and_detect,
    suggest_if_mostly_unusable,
)
from studio.data.sources import Record, Source, TooLong, _parse_json_line, bounded_line

MIN_BYTES = 64 << 20  # smaller files are done before worker processes would have started


def eligible(src: Source, tokenizer: Any) -> bool:
    """Plain (uncompressed, byte-oriented) JSONL, big enough, on a machine with more than one core.

    Never in a frozen (PyInstaller) app: spawning a worker there would start the app again.
    """
    return (tokenizer is None and not getattr(sys, "frozen", False) and src.kind == "jsonl" and src.compression is None and not src.cr_only
            and src.encoding in ("utf-8", "utf-8-sig") and (os.cpu_count() or 1) > 1
            and src.path.stat().st_size >= MIN_BYTES)


def ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    """``parts`` byte ranges whose boundaries fall at line starts."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as fh:
        for k in range(1, parts):
            fh.seek(max(size * k // parts, cuts[-1]))
            bounded_line(fh)  # move to the start of the next line (memory bounded on a huge one)
            cuts.append(min(fh.tell(), size))
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


class _RangeSink(Sink):
    """Keeps digests, rows and lines of usable examples for the parent instead of deduplicating."""

    def __init__(self, report: DatasetReport, preview_rows: int, colmap: dict):
        super().__init__(report, preview_rows, dedupe=False, colmap=colmap)
        self.digests, self.rows, self.lines = bytearray(), array("I"), array("I")

    def good(self, example: dict, row: int, line: int | None) -> None:
        self.report.usable += 1
        self.count(example)
        self.digests += digest(example)
        self.rows.append(row)
        self.lines.append(line or 0)
        if len(self.report.preview) < self.preview_rows:
            self.report.preview.append({"row": row, **example})


def scan_range(path: str, start: int, end: int, fmt: str, colmap: dict, preview_rows: int) -> dict:
    """Worker: judge every record in [start, end); rows and lines are numbered from 1 within the range."""
    f, report = FORMATS[fmt], DatasetReport()
    sink = _RangeSink(report, preview_rows, colmap)
    row = line = 0
    with open(path, "rb") as fh:
        fh.seek(start)
        pos = start
        while pos < end:
            raw = bounded_line(fh)
            if not raw:
                break
            pos += raw.size if isinstance(raw, TooLong) else len(raw)
            line += 1
            if isinstance(raw, TooLong):
                row += 1
                judge(Record(row, line, None, raw.problem(row, line)), f, colmap, sink)
            elif raw.strip():
                row += 1
                judge(_parse_json_line(raw, row, line), f, colmap, sink)
    return {"records": row, "lines": line, "usable": report.usable, "skipped": report.skipped,
            "filtered": report.filtered, "unused": sink.unused, "pairs": sink.pairs, "tool_rows": sink.tool_rows,
            "images": sink.images, "counts": report.problem_counts, "examples": report.problem_examples, "problems": report.problems,
            "preview": report.preview, "digests": bytes(sink.digests), "rows": sink.rows, "row_lines": sink.lines}


def inspect_parallel(path: str | Path, fmt: str, columns: dict | None, preview_rows: int,
                     workers: int | None = None, roles: dict | None = None,
                     label_filter: bool = True) -> DatasetReport:
    """The serial ``inspect`` report, computed on ``workers`` processes (default: all cores)."""
    report = DatasetReport()
    src, det, sample, stream = open_and_detect(path, fmt, columns, report, roles, label_filter)
    stream.close()
    parts = ranges(src.path, workers or os.cpu_count() or 2)
    with ProcessPoolExecutor(len(parts), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(scan_range, str(src.path), a, b, det.format, det.colmap, preview_rows)
                   for a, b in parts]
        results = [fut.result() for fut in futures]
    _merge(report, results, preview_rows)
    unused: Counter = Counter()  # column -> rows where it went unused
    images = ImageTally()
    for res in results:
        unused.update(res["unused"])
        images.merge(res["images"])
    finish(report, unused, sum(r["pairs"] for r in results), sum(r["tool_rows"] for r in results), images)
    suggest_if_mostly_unusable(report, sample, det.colmap)
    return report


def _merge(report: DatasetReport, results: list[dict], preview_rows: int) -> None:
    """Renumber and combine range results in file order; duplicates and fingerprint over the whole file."""
    seen: dict[bytes, int] = {}
    fingerprint = hashlib.sha256(FINGERPRINT_SEED)
    problems, row_off, line_off = [], 0, 0
    for res in results:
        report.usable += res["usable"]
        report.skipped += res["skipped"]
        report.filtered += res["filtered"]
        report.problem_counts.update(res["counts"])
        for key, value in res["examples"].items():
            report.problem_examples.setdefault(key, value)
        for p in res["problems"]:
            p.row, p.line = p.row + row_off, p.line + line_off
            problems.append(p)
        problems += _duplicates(report, res, seen, row_off, line_off)
        fingerprint.update(res["digests"])
        report.preview += [{"row": item["row"] + row_off, **{k: v for k, v in item.items() if k != "row"}}
                           for item in res["preview"]]
        row_off, line_off = row_off + res["records"], line_off + res["lines"]
    report.preview = report.preview[:preview_rows]
    problems.sort(key=lambda p: p.row)  # stable: a row's own problems stay before its duplicate warning
    report.problems = problems[:MAX_PROBLEMS]
    report.rows = report.usable + report.skipped + report.filtered
    report.fingerprint = fingerprint.hexdigest()


def _duplicates(report: DatasetReport, res: dict, seen: dict, row_off: int, line_off: int) -> list[Problem]:
    found: list[Problem] = []
    blob = res["digests"]
    for i, (row, line) in enumerate(zip(res["rows"], res["row_lines"])):
        row += row_off
        first = seen.setdefault(blob[16 * i:16 * i + 16], row)
        if first != row:
            report.duplicates += 1
            problem = duplicate_problem(first, row, line + line_off)
            key = (problem.code, problem.severity, problem.field)
            report.problem_counts[key] += 1
            report.problem_examples.setdefault(key, (problem.message, problem.hint))
            if len(found) < MAX_PROBLEMS:
                found.append(problem)
    return found
