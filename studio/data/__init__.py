"""Dataset import: read, detect, validate, normalise to chat messages (or text), tokenise.

Training-facing API (the worker uses exactly this path, so what was inspected is what is trained):
``load_examples(path, fmt, columns) -> (examples, report)``, ``split_examples(examples, fraction, seed)``
and ``template.encode_example(tokenizer, example, seq_len, train_on)``. An example that carries images has
``images`` (absolute paths) and ``image_sizes`` and an ``<image>`` marker at each image's place in its turns
(``studio.data.images``); ``strip_images(example)`` gives an example's text-only copy (a run on a text model refuses image rows). The GUI and the CLI use
``inspect(...) -> DatasetReport`` and ``formats()``.

This package imports neither torch, transformers nor datasets at module level: readers and
tokenisation import them when they run.
"""
from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path
from typing import Any, Callable

from studio.data import documents as docs
from studio.data import parallel
from studio.data.chat_render import TemplateRunaway
from studio.data.formats import FORMATS, describe
from studio.data.images import strip_images
from studio.data.report import ERROR, DatasetReport, Problem, TokenStats
from studio.data.scan import detect, iter_examples
from studio.data.sources import READERS, DataError, open_source
from studio.data.template import FALLBACK_NOTE, tool_support
from studio.data.tokens import LengthCollector, load_tokenizer, mask_view, packed_view, padding, stats
from studio.image_tokens import DEFAULT_MAX_PIXELS

PROGRESS_EVERY = 10_000

__all__ = ["DataError", "DatasetReport", "Problem", "TokenStats", "load_examples", "split_examples",
           "note_tool_support", "strip_images",
           "inspect", "formats", "readers", "iter_examples", "detect", "FORMATS"]


def formats() -> dict[str, str]:
    """Format name -> description (the GUI's format menu; 'auto' is offered on top of these)."""
    return describe()


def readers() -> list[str]:
    """File containers that can be read (jsonl, json, csv, tsv, parquet, text, arrow)."""
    return list(READERS)


def load_examples(path: str | Path, fmt: str = "auto", columns: dict | None = None, roles: dict | None = None,
                  label_filter: bool = True, where: dict | None = None,
                  keep_row: bool = False) -> tuple[list[dict], DatasetReport]:
    """Normalised examples (``{"messages": [...]}`` or ``{"text": ...}``) and the import report.

    ``roles`` maps role values to system/user/assistant/tool (``{"bing": "assistant"}``);
    ``label_filter`` leaves out rows a good/bad label column marks bad (when the file has one);
    ``where``, when given, is filled with ``id(example) -> "line N"`` (or ``"row N"``) for messages about a row;
    ``keep_row``: each example keeps its record's columns (``scan.ROW_KEY``) for grpo's rewards.
    """
    if docs.is_documents(path):
        report, examples = documents_report(path, fmt, None, None)
        if not report.usable:
            skipped = report.documents["skipped_files"] if report.documents else []
            why = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3]) or "the folder has no files"
            raise DataError(f"{report.path}: no document with text in it ({len(skipped)} file(s) skipped: {why})")
        return examples, report
    report = DatasetReport()
    examples = []
    for row, line, ex in iter_examples(path, fmt or "auto", columns or None, report, roles=roles,
                                       label_filter=label_filter, keep_row=keep_row):
        examples.append(ex)
        if where is not None:
            where[id(ex)] = f"line {line}" if line is not None else f"row {row}"
    if not examples:
        raise DataError(_none_usable(report))
    return examples, report


def _none_usable(report: DatasetReport) -> str:
    if report.filtered and not report.skipped:
        return (f"{report.path}: all {report.filtered} rows are marked bad by the '{report.label_column}' column, so "
                "none is left to train; turn the label filter off (--label-filter off, or data.label_filter: false) "
                "to train them anyway")
    groups = report.groups()
    why = f"; most common problem: {groups[0]['example']} ({groups[0]['count']}x)" if groups else ""
    return f"{report.path}: no usable rows out of {report.rows}{why}. Run 'lora-studio data inspect' for every problem"


def split_examples(examples: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """A seeded, reproducible train/validation split (validation never empty when asked for)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = int(round(len(examples) * val_fraction)) if val_fraction > 0 else 0
    if val_fraction > 0 and len(examples) >= 10:
        n_val = max(1, n_val)
    val = sorted(order[:n_val])
    val_set = set(val)
    return [examples[i] for i in range(len(examples)) if i not in val_set], [examples[i] for i in val]


def inspect(path: str | Path, fmt: str = "auto", columns: dict | None = None, tokenizer: Any = None,
            seq_len: int | None = None, preview_rows: int = 50, train_on: str = "assistant",
            progress: Callable[[DatasetReport], None] | None = None, workers: int | None = None,
            roles: dict | None = None, label_filter: bool = True, packing: int = 0,
            files_progress: Callable[[int, int, str], None] | None = None) -> DatasetReport:
    """Read and check the whole file; with a tokenizer (or a model name) add token statistics.

    ``packing``: the micro-batch of a packed SFT run (train.packing); the mask view then shows the
    first micro-batch as one sequence, and the report the padding that packing removes.

    ``progress(report)`` is called every 10,000 usable rows (the GUI shows counts and may raise to cancel).
    A big plain JSONL file without a tokenizer is read on all cores (``workers=1`` forces one).
    A folder of documents (or one PDF, DOCX, ODT, EPUB or HTML file) is read by ``studio.data.documents``;
    ``files_progress(i, n, name)`` is called before each file (it may raise to cancel; the reader ends).
    """
    if docs.is_documents(path):
        if isinstance(tokenizer, (str, Path)):
            tokenizer = load_tokenizer(tokenizer)
        return documents_report(path, fmt, tokenizer, seq_len, preview_rows, files_progress)[0]
    if tokenizer is None and progress is None and workers != 1:
        if parallel.eligible(open_source(path), tokenizer):
            try:
                return parallel.inspect_parallel(path, fmt or "auto", columns or None, preview_rows, workers,
                                                 roles, label_filter)
            except DataError:
                raise
            except Exception as e:  # a worker that could not start or died: the serial pass still works
                print(f"note: reading on one core ({type(e).__name__}: {e})", file=sys.stderr)
    report = DatasetReport()
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    collector = _collector(tokenizer, report) if tokenizer is not None else None
    for row, line, example in iter_examples(path, fmt or "auto", columns or None, report, preview_rows,
                                            roles=roles, label_filter=label_filter):
        if collector is not None:
            collector.add(example, row, line)
        if progress is not None and report.usable % PROGRESS_EVERY == 0:
            progress(report)
    if collector is not None:
        _token_report(report, collector, tokenizer, seq_len, train_on)
        if packing:
            _packing_report(report, collector, tokenizer, seq_len, train_on, packing)
    return report


def documents_report(path: str | Path, fmt: str | None, tokenizer: Any, seq_len: int | None,
                     preview_rows: int = 3, files_progress: Callable[[int, int, str], None] | None = None
                     ) -> tuple[DatasetReport, list[dict]]:
    """Read a folder of documents: the report (format 'documents') and the examples, one per document with
    its whole cleaned text (``{"text", "source"}``), which training chunks with the model's tokenizer."""
    col = docs.read(path, files_progress or docs.progress_printer())
    report = DatasetReport(path=str(Path(path).expanduser()), reader="documents", encoding="text layer",
                           format=docs.FORMAT, confidence=1.0)
    if fmt and fmt not in ("auto", docs.FORMAT):
        report.notes.append(f"format '{fmt}' does not apply to a folder of documents: read as documents")
    lengths, chunk_preview = docs.count(tokenizer, col, seq_len)
    if tokenizer is not None:
        report.tokens = stats(lengths, seq_len, tokenizer)
    elif lengths:
        report.tokens = stats(lengths, seq_len)
        report.tokens.estimated = True
        report.tokens.tokenizer = f"estimate: {docs.CHARS_PER_TOKEN:g} characters per token (give a model to count)"
    files = col.documents
    report.rows = len(files) + len(col.skipped)
    report.usable, report.skipped = len(files), len(col.skipped)
    report.duplicates = col.exact_duplicates + col.near_duplicates
    report.notes.extend(col.notes)
    for s in col.skipped:
        report.add(Problem(s["reason"], "the other files are read; fix or convert this one to use it",
                           field=s["file"], severity=ERROR, code="document"))
    report.preview = [{"row": i, "text": d.text[:docs.PREVIEW_CHARS], "source": d.source}
                      for i, d in enumerate(files[:preview_rows])]
    digest = hashlib.sha256()
    for d in files:
        digest.update(d.source.encode() + b"\0" + d.text.encode() + b"\0")
    report.fingerprint = digest.hexdigest()
    limit = docs.chunk_limit(seq_len or 1024)
    report.documents = {
        "documents": len(files), "pages": sum(d.pages for d in files), "characters": sum(d.chars for d in files),
        "chunks": len(lengths), "chunk_tokens": limit, "exact_duplicates": col.exact_duplicates,
        "near_duplicates": col.near_duplicates, "files": [d.to_dict() for d in files],
        "skipped_files": col.skipped, "chunk_preview": chunk_preview}
    return report, [{"text": d.text, "source": d.source} for d in files]


def _packing_report(report: DatasetReport, collector: Any, tokenizer: Any, seq_len: int | None, train_on: str,
                    micro_batch: int) -> None:
    report.packing = padding(collector.lengths, micro_batch, seq_len)
    examples = [{k: v for k, v in item.items() if k != "row"} for item in report.preview[:micro_batch]]
    try:
        report.mask_view = packed_view(tokenizer, examples, seq_len, train_on)
    except TemplateRunaway:
        raise
    except Exception:  # an example the template refuses (already reported): keep the single-example view
        pass


def _collector(tokenizer: Any, report: DatasetReport):
    def on_error(exc: Exception, row: int, line: int | None) -> None:
        if isinstance(exc, TemplateRunaway):  # the template itself is broken: stop, do not blame every row
            raise exc
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        report.add(Problem(first,
                           "change the turns (e.g. make user and assistant alternate) or remove this row",
                           None, row=row, line=line, severity=ERROR, code="template"))
        report.usable -= 1
        report.skipped += 1

    return LengthCollector(tokenizer, on_error, DEFAULT_MAX_PIXELS)


def note_tool_support(report: DatasetReport, tokenizer: Any) -> None:
    """Say how tool calls are rendered when the file has them and the model's template cannot write them."""

    if report.tool_rows and not tool_support(tokenizer) and FALLBACK_NOTE not in report.notes:
        report.notes.append(FALLBACK_NOTE)


def _token_report(report: DatasetReport, collector: Any, tokenizer: Any, seq_len: int | None, train_on: str) -> None:
    collector.flush()
    report.tokens = stats(collector.lengths, seq_len, tokenizer)
    if collector.image_tokens:
        it = stats(collector.image_tokens, None)
        report.image_tokens = {"rows": it.count, "min": it.min, "p50": it.p50, "max": it.max, "total": it.total}
    if collector.image_note:
        report.notes.append(collector.image_note)
    if report.tokens.template != "model":
        report.notes.append("the model has no chat template; conversations are rendered as ChatML")
    note_tool_support(report, tokenizer)
    for item in report.preview:
        example = {k: v for k, v in item.items() if k != "row"}
        try:
            report.mask_view = mask_view(tokenizer, example, seq_len, train_on)
            break
        except TemplateRunaway:
            raise
        except Exception:  # this example fails the template (already reported); try the next
            continue
