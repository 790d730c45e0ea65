"""What the Data page says about a dataset report, without Qt: the summary line, the problem list,
the preview table's rows and columns, the token-length line, the lengths against the longest context the
plan's device holds, the example with its trained tokens,
and the ``data inspect`` command line that computes the token statistics.

Everything takes the plain dicts of ``DatasetReport.to_dict()`` and of the ``data inspect --events``
answer, so a test reads the words without a window.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from studio.data.formats import ROLE_TARGETS

RED = "#CF222E"


def preview_table(preview: list, columns: list) -> tuple[list, list, list | None]:
    """Rows, column names and row numbers for the preview: chat turns become one column per role."""
    if not preview or not isinstance(preview[0], dict):
        return preview, list(columns), None
    numbers = [r.get("row", i + 1) for i, r in enumerate(preview)] if "row" in preview[0] else None
    if "messages" in preview[0]:
        rows = [_turns(r.get("messages") or []) for r in preview]
        for row, r in zip(rows, preview):
            if r.get("images"):  # the paths, shown as thumbnails on the Data page; <image> marks where in the turn
                row["images"] = list(r["images"])
        roles = [role for role in ("system", "user", "assistant") if any(r.get(role) for r in rows)]
        extra = sorted({k for r in rows for k in r} - {"system", "user", "assistant", "turns", "images"})
        images = ["images"] if any(r.get("images") for r in rows) else []
        return rows, ["turns", *images, *extra, *roles], numbers  # the assistant's answer last: the spare width
    cols = [c for c in (list(columns) or list(preview[0])) if c != "row"]
    cols += [k for k in preview[0] if k not in cols and k != "row"]
    return preview, cols, numbers


def _turns(messages: list) -> dict:
    """The first message of each role (what a reader wants to see) and the number of turns."""
    out: dict = {"turns": len(messages)}
    for m in messages:
        if isinstance(m, dict) and m.get("role") and m["role"] not in out:
            out[str(m["role"])] = m.get("content", "")
    return out


def roles_from_text(text: str) -> dict[str, str]:
    """The role field's ``bing=assistant, human=user`` -> a mapping; raises ValueError naming the bad part.

    Laxer than the CLI's ``--roles`` (``;`` separates too, targets in any case), with the field's own words.
    """
    out = {}
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or value.strip().lower() not in ROLE_TARGETS:
            raise ValueError(f"'{part}': write ROLE={'|'.join(ROLE_TARGETS)}, e.g. bing=assistant")
        out[key.strip()] = value.strip().lower()
    return out


def red(text: str) -> str:
    return f"<span style='color:{RED}'>{html.escape(text)}</span>"


def summary_html(d: dict) -> str:
    """Format, reader, rows, usable, skipped, duplicates, left out: one line of rich text."""
    if d.get("format") == "documents" and isinstance(d.get("documents"), int):
        return documents_summary_html(d)
    fmt, conf = d.get("format") or "?", d.get("confidence")
    rows, usable, skipped = d.get("rows", 0), d.get("usable", 0), d.get("skipped", 0)
    parts = [f"<b>{html.escape(str(fmt))}</b>" + (f" ({float(conf):.0%} sure)" if conf else ""),
             f"{d.get('reader', '')} file", f"{rows:,} rows", f"<b>{usable:,}</b> usable"]
    if d.get("images"):
        parts.append(f"{d['images']:,} images")
    if skipped:
        parts.append(f"<span style='color:{RED}'>{skipped:,} skipped</span>")
    if d.get("duplicates"):
        parts.append(f"{d['duplicates']:,} duplicates")
    if d.get("filtered"):
        parts.append(f"{d['filtered']:,} marked bad (left out)")
    return " · ".join(parts)


def notes_html(notes: list) -> str:
    return "<br>".join(html.escape(str(n)) for n in notes)


def problem_lines(d: dict) -> list[tuple[str, bool]]:
    """The Problems tab: (text, is a group header) per line; a clean file says so in one line."""
    if d.get("format") == "documents" and isinstance(d.get("skipped_files"), list) and d["skipped_files"]:
        skipped = d["skipped_files"]  # a folder: one line per file not used, with its reason
        return [(f"{len(skipped):,} file(s) skipped; the others are read. Fix or convert a file to use it", True)] + [
            (f"{s['file']}: {s['reason']}", False) for s in skipped]
    out = [(f"{g['count']:,} × {g.get('field') or 'row'}: {g['example']}" + (f"  →  {g['hint']}" if g.get("hint") else ""),
            True) for g in d.get("problem_groups") or []]
    for p in d.get("problems") or []:
        where = (f"line {p['line']}" if p.get("line") is not None else
                 f"row {p.get('row')}" if p.get("row") is not None else "file")
        text = f"{where}: " + (f"{p['field']}: " if p.get("field") else "") + str(p.get("message", ""))
        out.append((text + (f"  →  {p['hint']}" if p.get("hint") else ""), False))
    return out


def problems_total(d: dict) -> int:
    return d.get("problems_total", len(d.get("problems") or []))


def token_summary(tokens: dict, hist: dict, seq_len: int) -> str:
    """One line: lengths, and how many examples the run's sequence length would cut."""
    text = (f"{tokens.get('count', 0):,} examples · median {tokens.get('p50')} · 95th percentile "
            f"{tokens.get('p95')} · longest {tokens.get('max')} tokens")
    if (tokens.get("max") or 0) <= seq_len:
        return text + f" · all fit in the planned sequence length of {seq_len}"
    over, exact = longer_than({**tokens, "histogram": hist}, seq_len)
    return text + f" · {'' if exact else 'about '}{over:,} longer than the planned {seq_len} (they are truncated)"


def longer_than(tokens: dict, limit: int) -> tuple[int, bool]:
    """How many examples are longer than ``limit`` tokens, and whether that count is exact.

    Exact at the length the statistics were computed for (``truncated`` at ``seq_len``) and outside the
    lengths seen; in between it is read from the histogram, the bin that holds ``limit`` shared in proportion.
    """
    if tokens.get("seq_len") == limit:
        return int(tokens.get("truncated") or 0), True
    if (tokens.get("max") or 0) <= limit:
        return 0, True
    if (tokens.get("min") or 0) > limit:
        return int(tokens.get("count") or 0), True
    hist = tokens.get("histogram") or {}
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    over, exact = 0.0, True
    for lo, hi, c in zip(edges, edges[1:], counts):  # a bin holds the lengths lo .. hi - 1
        if lo > limit:
            over += c
        elif hi - 1 > limit and c:
            over, exact = over + c * (hi - 1 - limit) / (hi - lo), False
    return round(over), exact


def context_line(tokens: dict, longest: int | None, seq_len: int, where: str = "this card") -> str:
    """The examples against the longest context ``where`` holds with the plan's settings, and what the
    plan's shorter sequence length cuts beyond that; empty without token statistics or a longest context."""
    total = int(tokens.get("count") or 0)
    if not total or not longest:
        return ""
    n, exact = longer_than(tokens, longest)
    if not n:
        text = f"{'All' if exact else 'Nearly all'} {total:,} examples fit in the {longest:,} tokens {where} holds with these settings."
    else:
        share = _share(n, exact, total)
        text = (f"{share[:1].upper()}{share[1:]} are longer than the {longest:,} tokens {where} holds with these "
                "settings; they would be truncated.")
    if seq_len < longest:
        cut, cut_exact = longer_than(tokens, seq_len)
        if cut > n:
            text += (f" The plan's sequence length of {seq_len:,} cuts {_share(cut, cut_exact, total)}; "
                     f"a longer one, up to {longest:,}, fits {where}.")
    return text


def _share(n: int, exact: bool, total: int) -> str:
    return f"{'' if exact else 'about '}{n:,} of {total:,} examples ({n / total:.1%})"


def bars(hist: dict) -> tuple[list[float], list[int], list[float]] | None:
    """(centres, heights, widths) of the length histogram's bars, or None when it has none."""
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if not counts or len(edges) != len(counts) + 1:
        return None
    pairs = list(zip(edges, edges[1:]))
    return [(a + b) / 2 for a, b in pairs], list(counts), [(b - a) * 0.9 for a, b in pairs]


def mask_html(mask_view: list | None, dark: bool) -> str:
    """One example as the model sees it, the tokens that carry the loss highlighted."""
    if not mask_view:
        return "<i>No example available.</i>"
    mark = "background-color:#5C4B00; color:#FFF3C4" if dark else "background-color:#FFE58F; color:#3D2E00"
    spans = []
    for text, trained in mask_view:
        t = html.escape(str(text)).replace("\n", "↵<br>")
        spans.append(f"<span style='{mark}'>{t}</span>" if trained else f"<span>{t}</span>")
    return ("<p><b>Example as the model sees it</b> — highlighted tokens carry the loss.</p>"
            f"<pre style='white-space:pre-wrap; font-family:monospace'>{''.join(spans)}</pre>")


def inspect_args(path: Path, model: str, seq_len: int, roles: dict, label_filter: bool,
                 packing_micro_batch: int | None, fmt: str = "auto", columns: dict | None = None) -> list[str]:
    """``lora-studio data inspect`` arguments for the token statistics of ``path`` as the recipe would train it
    (its format and column mapping too, when the user chose them)."""
    extra = ["--format", fmt] if fmt and fmt != "auto" else []
    extra += ["--columns", json.dumps(columns)] if columns else []  # JSON: a column name may hold a comma
    extra += ["--roles", ",".join(f"{k}={v}" for k, v in roles.items())] if roles else []
    extra += [] if label_filter else ["--label-filter", "off"]
    extra += ["--packing", str(packing_micro_batch)] if packing_micro_batch else []  # the mask view as packed
    return ["data", "inspect", str(path), "--model", model, "--seq-len", str(seq_len), *extra]


# -- the format menu, the column mapping and the suggestions (the CLI's --format, --columns, --roles) -----------
def format_choices(d: dict | None) -> list[tuple[str, str]]:
    """(label, value) for the format menu: detection first, saying what it found and how sure it is."""
    from studio.data.formats import FORMATS

    found = (d or {}).get("format")
    conf = (d or {}).get("confidence")
    detected = "Detect automatically" + (f" (found {found}" + (f", {float(conf):.0%} sure" if conf else "") + ")"
                                         if found else "")
    return [(detected, "auto"), *((f"{name}: {f.description}", name) for name, f in FORMATS.items())]


def mapping_fields(fmt: str) -> list[tuple[str, bool]]:
    """The fields a format reads from a row's columns, (name, required), in the format's order; none for 'auto'."""
    from studio.data.formats import FORMATS

    f = FORMATS.get(fmt)
    return [(fld.name, fld.required) for fld in f.fields] if f is not None else []


def column_choices(d: dict | None, field: str, current: str | None = None) -> list[tuple[str, str]]:
    """(label, value) for one field's column menu: what detection took, or none (the empty value), then each
    column."""
    taken = ((d or {}).get("column_map") or {}).get(field)
    cols = [str(c) for c in (d or {}).get("columns") or []]
    if current and current not in cols:
        cols.append(current)  # a mapping the user typed earlier stays visible even if the column is gone
    return [(f"(detected: {taken})" if taken else "(none)", ""), *((c, c) for c in cols)]


def suggestion_label(s: dict) -> str:
    """A suggestion the import tried on the first rows, in words for its button."""
    parts = [f"Use {s['format']}"]
    if s.get("columns"):
        parts.append(", ".join(f"{k} from {v}" for k, v in s["columns"].items()))
    if s.get("roles"):
        parts.append("roles " + ", ".join(f"{k} \u2192 {v}" for k, v in s["roles"].items()))
    return ": ".join(parts[:1] + ["; ".join(parts[1:])]) if len(parts) > 1 else parts[0]


def roles_text(roles: dict | None) -> str:
    """The role field's text for a mapping (the inverse of ``roles_from_text``)."""
    return ", ".join(f"{k}={v}" for k, v in (roles or {}).items())


# ------------------------------------------------------------------ a folder of documents

def _tokens_total(d: dict) -> str:
    t = d.get("tokens") or {}
    if not t.get("total"):
        return ""
    return f"about {t['total']:,} tokens (estimated)" if t.get("estimated") else f"{t['total']:,} tokens"


def documents_summary_html(d: dict) -> str:
    """Documents read and skipped, pages, characters, tokens and chunks: one line of rich text."""
    skipped = len(d.get("skipped_files") or [])
    parts = ["<b>documents</b> (continued pre-training: every token trained)", f"<b>{d['documents']:,}</b> read"]
    if skipped:
        parts.append(f"<span style='color:{RED}'>{skipped:,} skipped</span>")
    parts += [f"{d.get('pages') or 0:,} pages", f"{d.get('characters') or 0:,} characters"]
    if _tokens_total(d):
        parts.append(_tokens_total(d))
    parts.append(f"{d.get('chunks') or 0:,} chunks of up to {d.get('chunk_tokens') or 0:,} tokens")
    dups = (d.get("exact_duplicates") or 0) + (d.get("near_duplicates") or 0)
    if dups:
        parts.append(f"{dups:,} repeated passages dropped")
    return " · ".join(parts)


def document_items(d: dict) -> list[tuple[str, str]]:
    """The Documents tab's list: (the file and its counts, its extracted text), then each skipped file and why."""
    out = []
    for f in d.get("files") or []:
        counts = [f"{f.get('pages') or 0} page(s)", f"{f.get('characters') or 0:,} characters"]
        if f.get("tokens") is not None:
            counts.append(f"{f['tokens']:,} tokens, {f.get('chunks') or 0} chunk(s)")
        if f.get("tables"):
            counts.append(f"{f['tables']} table(s)")
        if f.get("header_footer_lines_removed"):
            counts.append(f"{f['header_footer_lines_removed']} header/footer line(s) removed")
        text = str(f.get("text") or "")
        if f.get("text_truncated"):
            text += "\n\n[… the first characters only; training reads it all]"
        out.append((f"{f['file']}  ·  {f.get('kind', '')} · " + ", ".join(counts), text))
    for s in d.get("skipped_files") or []:
        out.append((f"{s['file']}  ·  skipped", f"Skipped: {s['reason']}"))
    return out


def chunk_items(d: dict) -> list[tuple[str, str]]:
    """The first chunks training will read: (file and token count, text); empty until a model counted them."""
    out = [(f"{c['file']}  ·  {c['tokens']:,} tokens", str(c.get("text") or "")) for c in d.get("chunk_preview") or []]
    more = (d.get("chunks") or 0) - len(out)
    if out and more > 0:
        out.append((f"… and {more:,} more chunk(s)", "The preview shows the first chunks of the first documents; "
                                                    "training reads them all."))
    return out


def reading_text(i: int, n: int, name: str) -> str:
    """The Data page's line while a folder of documents is read, file by file."""
    return f"Reading documents: {i + 1:,} of {n:,} ({html.escape(name)})…"
