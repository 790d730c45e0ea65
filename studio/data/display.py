"""What the Data page says about a dataset report, without Qt: the summary line, the problem list,
the preview table's rows and columns, the token-length line, the example with its trained tokens,
and the ``data inspect`` command line that computes the token statistics.

Everything takes the plain dicts of ``DatasetReport.to_dict()`` and of the ``data inspect --events``
answer, so a test reads the words without a window.
"""
from __future__ import annotations

import html
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
        roles = [role for role in ("system", "user", "assistant") if any(r.get(role) for r in rows)]
        extra = sorted({k for r in rows for k in r} - {"system", "user", "assistant", "turns"})
        return rows, ["turns", *extra, *roles], numbers  # the assistant's answer last: it gets the spare width
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
    fmt, conf = d.get("format") or "?", d.get("confidence")
    rows, usable, skipped = d.get("rows", 0), d.get("usable", 0), d.get("skipped", 0)
    parts = [f"<b>{html.escape(str(fmt))}</b>" + (f" ({float(conf):.0%} sure)" if conf else ""),
             f"{d.get('reader', '')} file", f"{rows:,} rows", f"<b>{usable:,}</b> usable"]
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
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    over = sum(c for lo, c in zip(edges, counts) if lo >= seq_len)
    return text + f" · about {over:,} longer than the planned {seq_len} (they are truncated)"


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
                 packing_micro_batch: int | None) -> list[str]:
    """``lora-studio data inspect`` arguments for the token statistics of ``path`` as the recipe would train it."""
    extra = ["--roles", ",".join(f"{k}={v}" for k, v in roles.items())] if roles else []
    extra += [] if label_filter else ["--label-filter", "off"]
    extra += ["--packing", str(packing_micro_batch)] if packing_micro_batch else []  # the mask view as packed
    return ["data", "inspect", str(path), "--model", model, "--seq-len", str(seq_len), *extra]
