"""`lora-studio data inspect FILE`: what a dataset file holds and what is wrong with it, before training.

Exit codes: 0 when the file has usable rows; 2 when it has none or cannot be read (one line on
stderr, no traceback). ``--json`` prints one object (``DatasetReport.to_dict()``); ``--events`` sends
the same object as the ``report`` of a ``done`` event (the window).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from studio import events
from studio.commands import add_events_flag
from studio.data import DataError, inspect
from studio.data.formats import FORMATS, ROLE_TARGETS, canonical
from studio.errors import UserError
from studio.recipe import TrainSpec
from studio.termtext import json_text, printable

SHOWN_PROBLEMS = 20


def register(subparsers: Any) -> None:
    """Add `data` with its `inspect` action."""

    parser = subparsers.add_parser("data", help="check a dataset file before training",
                                   description="Inspect dataset files: format, problems by row, token lengths.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    p = actions.add_parser("inspect", help="read a dataset and report its format, problems and token statistics",
                           description="Read FILE (JSONL, JSON, CSV, TSV, Parquet, text, a datasets folder; "
                                       "gzip and UTF-16 too) or a folder of documents (PDF, DOCX, ODT, EPUB, "
                                       "HTML, Markdown, text: docs/documents.md) and report what training "
                                       "would see.")
    p.add_argument("file", metavar="FILE", help="dataset file, datasets.save_to_disk folder, or a folder of "
                                                "documents (or one PDF/DOCX/ODT/EPUB/HTML file)")
    p.add_argument("--model", help="model whose tokenizer and chat template count tokens ('demo', a folder, an id)")
    p.add_argument("--seq-len", type=int, default=None, metavar="S",
                   help="sequence length to count truncated examples against, and documents' chunk length "
                        "(default: the recipe's 1024)")
    p.add_argument("--format", default="auto", type=canonical, choices=["auto", *FORMATS],
                   help="format override (default: detect)")
    p.add_argument("--columns", default=None, metavar="MAP",
                   help="column mapping, e.g. prompt=question,completion=answer or a JSON object")
    p.add_argument("--roles", default=None, metavar="MAP",
                   help="map role values to system/user/assistant/tool, e.g. bing=assistant,human=user")
    p.add_argument("--label-filter", default="on", choices=["on", "off"],
                   help="with a good/bad label column (KTO label, tag): on = train only rows marked good "
                        "(default), off = keep every row")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the readable report")
    add_events_flag(p)
    p.add_argument("--preview", type=int, default=3, metavar="N", help="example rows to show (default 3)")
    p.add_argument("--train-on", default="assistant", choices=["assistant", "all"],
                   help="which tokens the loss-mask view marks as trained")
    p.add_argument("--packing", type=int, default=0, metavar="BATCH",
                   help="with --model: show the first BATCH examples packed into one sequence (train.packing with "
                        "micro-batch BATCH) and the padding packing removes")
    p.set_defaults(func=run)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def parse_columns(text: str | None, option: str = "--columns",
                  example: str = "prompt=question,completion=answer", what: str = "FIELD=COLUMN") -> dict:
    """``a=b,c=d`` or a JSON object -> ``{"a": "b", "c": "d"}``."""
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as e:
            raise UserError(f"{option} is not valid JSON ({e}); write it as {example}") from None
        if not isinstance(value, dict):
            raise UserError(f"{option} must be a JSON object or {what} pairs; write it as {example}")
        return {str(k): str(v) for k, v in value.items()}
    pairs = [p for p in text.split(",") if p.strip()]
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise UserError(f"{option}: '{bad[0]}' is not {what}; write it as {example}")
    return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}


def parse_roles(text: str | None) -> dict:
    """``bing=assistant,human=user`` -> ``{"bing": "assistant", "human": "user"}`` (targets checked)."""

    roles = parse_columns(text, "--roles", "bing=assistant,human=user", "ROLE=system|user|assistant|tool")
    for k, v in roles.items():
        if v.lower() not in ROLE_TARGETS:
            raise UserError(f"--roles {k}={v}: map a role to one of {', '.join(ROLE_TARGETS)}")
    return roles


def run(args: argparse.Namespace) -> int:
    """Inspect the file and print the report; exit 2 when nothing in it is usable."""

    seq_len = args.seq_len
    if args.model and seq_len is None:
        seq_len = TrainSpec().seq_len
    if seq_len is not None and seq_len < 1:
        raise UserError(f"--seq-len must be a positive number of tokens, not {seq_len}")
    try:
        report = inspect(args.file, args.format, parse_columns(args.columns), tokenizer=args.model,
                         seq_len=seq_len, preview_rows=max(args.preview, 1, args.packing or 0), train_on=args.train_on,
                         roles=parse_roles(args.roles), label_filter=args.label_filter == "on",
                         packing=max(0, args.packing or 0))
    except (DataError, UnicodeError, OSError) as e:
        raise UserError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    _emit(report, args)
    if report.usable == 0:
        print(f"lora-studio data: {printable(report.path)}: no usable rows out of {report.rows}; fix the problems listed",
              file=sys.stderr)
        return 2
    return 0


def _emit(report: Any, args: argparse.Namespace) -> None:
    """Print the report; a reader that stops early (``| head``) is not an error."""
    if args.json or args.emitter:
        d = report.to_dict()
        d["preview"] = d["preview"][: args.preview]
        if args.emitter:
            args.emitter.emit(events.DONE, report=d)
            return
        text = json_text(d, indent=None)
    else:
        text = render(report, args.preview)
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


# ------------------------------------------------------------------ readable report

def render(report: Any, preview: int = 3) -> str:
    """The human report: summary, grouped problems, the first problems by line, tokens, mask, preview."""
    parts = [_summary(report), _groups(report), _first_problems(report), _tokens(report), _mask(report),
             _preview(report, preview)]
    return "\n\n".join(p for p in parts if p)


def _summary(r: Any) -> str:
    if r.documents is not None:
        return _documents(r)
    comp = f", {r.compression}" if r.compression else ""
    lines = [printable(r.path), f"  read as    {r.reader} ({r.encoding}{comp})",
             f"  format     {r.format} (confidence {r.confidence:.2f})",
             printable(f"  columns    {', '.join(map(str, r.columns)) or '-'}" +
                       (f"  (mapped: {', '.join(f'{k}={v}' for k, v in r.column_map.items())})" if r.column_map else "")),
             f"  rows       {r.rows}: {r.usable} usable, {r.skipped} skipped, " +
             (f"{r.filtered} marked bad (left out), " if r.filtered else "") +
             f"{r.duplicates} duplicate(s), {r.warnings} warning(s)"]
    if r.images:
        sizes = r.image_sizes or {}
        lines.append(f"  images     {r.images} in {sizes.get('rows', '?')} row(s), checked; largest "
                     f"{sizes.get('max_width')}x{sizes.get('max_height')}, median "
                     f"{sizes.get('median_width')}x{sizes.get('median_height')}")
        if r.image_tokens:
            it = r.image_tokens
            lines.append(f"  image tokens per row {it['min']}-{it['max']} (median {it['p50']}) with the model's processor, "
                         "counted in the row lengths")
    lines.append(f"  fingerprint {r.fingerprint[:16]}")
    lines += [f"  note: {printable(n)}" for n in r.notes]
    return "\n".join(lines)


def _documents(r: Any) -> str:
    """A folder of documents: what was read, what was skipped and why, what cleaning dropped."""
    d = r.documents
    t = r.tokens
    tokens = (f"about {t.total} tokens (estimated at 4 characters per token; --model counts them)"
              if t is not None and t.estimated else f"{t.total if t else 0} tokens")
    lines = [printable(r.path), f"  format     documents: {d['documents']} read, {len(d['skipped_files'])} skipped",
             f"  text       {d['pages']} page(s), {d['characters']} characters, {tokens}",
             f"  chunks     {d['chunks']} of up to {d['chunk_tokens']} tokens (overlapping a little; every token "
             "trained: continued pre-training)",
             f"  duplicates {d['exact_duplicates']} exact and {d['near_duplicates']} near-duplicate passage(s) dropped",
             f"  fingerprint {r.fingerprint[:16]}", "", "Documents:"]
    for f in d["files"]:
        extra = f", {f['tables']} table(s)" if f["tables"] else ""
        extra += f", {f['header_footer_lines_removed']} header/footer line(s) removed" if f[
            "header_footer_lines_removed"] else ""
        lines.append(printable(f"  {f['file']}  {f['kind']}, {f['pages']} page(s), {f['characters']} characters, "
                               f"{f['tokens']} tokens, {f['chunks']} chunk(s){extra}"))
    if d["skipped_files"]:
        lines += ["", "Skipped:"] + [printable(f"  {s['file']}: {s['reason']}") for s in d["skipped_files"]]
    lines += [f"  note: {printable(n)}" for n in r.notes]
    return "\n".join(lines)


def _groups(r: Any) -> str:
    if r.documents is not None:
        return ""  # the skipped files are listed with the documents
    groups = r.groups()
    if not groups:
        return "No problems found."
    lines = ["Problems by kind:"]
    for g in groups:
        where = f" [{g['field']}]" if g["field"] else ""
        lines.append(f"  {g['count']:>7}x {g['severity']:<7} {printable(g['example'])}{printable(where)}\n"
                     f"            fix: {printable(g['hint'])}")
    return "\n".join(lines)


def _first_problems(r: Any) -> str:
    if not r.problems or r.documents is not None:
        return ""
    lines = [f"First problems (of {r.problems_total}; --json lists up to 1000):"]
    for p in r.problems[:SHOWN_PROBLEMS]:
        field = f" {p.field}:" if p.field else ""
        lines.append(printable(f"  {r.path}:{p.where()}:{field} {p.severity}: {p.message}"))
    return "\n".join(lines)


def _tokens(r: Any) -> str:
    t = r.tokens
    if t is None:
        return ""
    if r.documents is not None:
        return "\n".join([f"Chunk lengths ({printable(t.tokenizer)}), {t.count} chunks:",
                          f"  min {t.min}  p50 {t.p50}  p95 {t.p95}  max {t.max}  mean {t.mean}"])
    if not t.count:
        return "Tokens: no example could be rendered with this model's chat template."
    lines = [f"Tokens ({printable(t.tokenizer)}, {t.template} chat template), {t.count} examples:",
             f"  min {t.min}  p50 {t.p50}  p95 {t.p95}  max {t.max}  mean {t.mean}",
             f"  {t.truncated} example(s) longer than seq-len {t.seq_len} would be truncated"]
    counts, edges = t.histogram["counts"], t.histogram["edges"]
    top = max(counts or [1]) or 1
    for i, c in enumerate(counts):
        if not c:
            continue  # empty bins say nothing in a text report (--json keeps them)
        lines.append(f"  {edges[i]:>7}-{edges[i + 1] - 1:<7} {'#' * max(1 if c else 0, round(30 * c / top))} {c}")
    return "\n".join(lines)


def _mask(r: Any) -> str:
    if not r.mask_view:
        return ""
    seq_len = r.tokens.seq_len if r.tokens else None
    view = r.mask_view
    text = "".join(f"[{t}]" if m else t for t, m in view[:seq_len])
    if seq_len and len(view) > seq_len:
        text += "  <-- cut here at seq-len; the rest is not trained: " + "".join(t for t, _ in view[seq_len:])
    trained = sum(1 for _, m in view if m)
    if r.packing:
        pk = r.packing
        text = "".join(f"[{t}]" if m else t for t, m in view)
        return (f"Packing (micro-batch {pk['micro_batch']}): {pk['padding_unpacked']:,} padding tokens without "
                f"packing, none with it ({pk['tokens']:,} tokens; longest packed sequence {pk['sequences_longest']:,})."
                f"\nLoss mask of the first micro-batch packed into one sequence ({trained} tokens trained, in "
                "[brackets]; attention stays within each example):\n" + "\n".join("  " + printable(line) for line in text.split("\n")))
    return (f"Loss mask of the first example ({trained} of {len(view)} tokens trained, shown in [brackets]):\n"
            + "\n".join("  " + printable(line) for line in text.split("\n")))


def _preview(r: Any, n: int) -> str:
    rows = r.preview[:n]
    if not rows:
        return ""
    lines = ["Preview:"]
    for item in rows:
        if "messages" in item:
            body = " | ".join(f"{m['role']}: {_short(_turn_text(m))}" for m in item["messages"])
        else:
            body = _short(item["text"])
        lines.append(f"  row {item['row']}: {printable(body)}")
    return "\n".join(lines)


def _turn_text(m: dict) -> str:
    """A turn's text, with its tool calls written as name(arguments)."""
    calls = [f"{c['function']['name']}({json.dumps(c['function']['arguments'], ensure_ascii=False)})"
             for c in m.get("tool_calls") or []]
    return " ".join([m["content"]] * bool(m["content"]) + [f"→ {c}" for c in calls])


def _short(text: str, width: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"
