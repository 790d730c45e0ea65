"""What an import found: problems with their rows, counts, columns, a preview and token statistics.

Plain dataclasses with ``to_dict()`` so the CLI (``--json``), the GUI and the run folder
(``data_report.json``) all read the same object. No heavy imports here.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

ERROR, WARNING = "error", "warning"
MAX_PROBLEMS = 1000  # detailed problems kept; counts per group are always complete
_INDEX = re.compile(r"\[\d+\]")  # messages[3].content and messages[1].content are one group


@dataclass
class Problem:
    """One thing wrong with one record: where (row, line, field), what, and how to fix it."""

    message: str
    hint: str = ""
    field: str | None = None
    row: int | None = None
    line: int | None = None
    severity: str = ERROR  # error: the row is skipped; warning: the row is kept
    code: str = "invalid"  # groups problems of the same kind

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"row": self.row}
        if self.line is not None:
            d["line"] = self.line
        d.update(field=self.field, message=self.message, hint=self.hint, severity=self.severity, code=self.code)
        return d

    def where(self) -> str:
        """``line 12`` / ``row 12`` / ``file``: the location as a reader would say it."""
        if self.line is not None:
            return f"line {self.line}"
        return f"row {self.row}" if self.row is not None else "file"


class RowProblem(Exception):
    """Raised by a normaliser for a record it cannot use; carries the problem."""

    def __init__(self, message: str, hint: str = "", field: str | None = None, code: str = "invalid"):
        super().__init__(message)
        self.problem = Problem(message=message, hint=hint, field=field, code=code)


@dataclass
class TokenStats:
    """Token lengths of the usable examples as the model's chat template renders them."""

    count: int = 0
    min: int = 0
    p50: int = 0
    p95: int = 0
    max: int = 0
    mean: float = 0.0
    seq_len: int | None = None
    truncated: int = 0  # examples longer than seq_len
    histogram: dict = field(default_factory=lambda: {"edges": [], "counts": []})
    template: str = "model"  # "model" or "default (ChatML)" when the tokenizer has none
    tokenizer: str = ""
    total: int = 0  # all examples' tokens together
    estimated: bool = False  # documents without a model: lengths from characters (documents.CHARS_PER_TOKEN)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class DatasetReport:
    """Everything an import found; ``usable``/``skipped``/``format``/``fingerprint`` feed training."""

    path: str = ""
    reader: str = ""  # container: jsonl, json, csv, tsv, parquet, text, arrow
    encoding: str = ""
    compression: str | None = None
    format: str = ""
    confidence: float = 0.0
    detection: dict = field(default_factory=dict)  # format -> share of sampled records it fits
    column_map: dict = field(default_factory=dict)  # canonical field -> column in the file
    rows: int = 0  # usable + skipped + filtered
    usable: int = 0
    skipped: int = 0
    filtered: int = 0  # rows left out on purpose: marked bad by the label column
    duplicates: int = 0
    columns: list = field(default_factory=list)
    unused_columns: dict = field(default_factory=dict)  # column -> rows carrying it; not read by the format
    roles: dict = field(default_factory=dict)  # --roles mapping applied (role value -> role)
    label_column: str | None = None  # a good/bad column (KTO label, tag) found in the file
    label_filter: bool = True  # rows marked bad are left out when a label column is found
    media_columns: dict = field(default_factory=dict)  # column -> audio/video (not used in training)
    images: int = 0  # images the usable rows carry (studio.data.images: each checked, kept in the examples)
    image_sizes: dict | None = None  # count, rows, min/median/max width and height of those images
    # with a model: the tokens each row's images become with its processor (rows, min, p50, max, total); counted in
    # the row lengths of ``tokens`` (studio.image_tokens)
    image_tokens: dict | None = None
    tool_rows: int = 0  # usable conversations with tool calls, tool results or a tools schema
    preference: dict | None = None  # {"layout": ..., "pairs": N} for chosen/rejected data
    suggestions: list = field(default_factory=list)  # [{"format", "columns", "roles"}], each checked to work
    problems: list = field(default_factory=list)
    problem_counts: Counter = field(default_factory=Counter)  # (code, severity, field) -> count
    problem_examples: dict = field(default_factory=dict)  # same key -> first message and hint
    notes: list = field(default_factory=list)  # file-level remarks (encoding fallback, dropped turns…)
    preview: list = field(default_factory=list)
    fingerprint: str = ""
    tokens: TokenStats | None = None
    mask_view: list | None = None  # [(token text, trained)] for one example
    packing: dict | None = None  # train.packing: padding with and without it (data inspect --packing)
    documents: dict | None = None  # a folder of documents (studio.data.documents): files, skipped, chunks

    DOCUMENT_KEYS = ("documents", "pages", "characters", "chunks", "chunk_tokens", "exact_duplicates",
                     "near_duplicates", "files", "skipped_files", "chunk_preview")

    def add(self, problem: Problem) -> None:
        """Record a problem: always counted, kept in detail up to MAX_PROBLEMS."""
        key = (problem.code, problem.severity, _INDEX.sub("[]", problem.field) if problem.field else None)
        self.problem_counts[key] += 1
        self.problem_examples.setdefault(key, (problem.message, problem.hint))
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    @property
    def problems_total(self) -> int:
        return sum(self.problem_counts.values())

    @property
    def warnings(self) -> int:
        return sum(n for (_, sev, _), n in self.problem_counts.items() if sev == WARNING)

    def groups(self) -> list[dict]:
        """Problems grouped by kind, largest first: what the summary line and the GUI list show."""
        out = []
        ordered = sorted(self.problem_counts.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1], kv[0][2] or ""))
        for (code, sev, fld), n in ordered:
            message, hint = self.problem_examples[(code, sev, fld)]
            out.append({"code": code, "severity": sev, "field": fld, "count": n, "example": message, "hint": hint})
        return out

    def to_dict(self) -> dict:
        """JSON-ready view (the CLI ``--json`` object and ``data_report.json``)."""
        d = {k: getattr(self, k) for k in (
            "path", "reader", "encoding", "compression", "format", "confidence", "detection", "column_map",
            "rows", "usable", "skipped", "filtered", "duplicates", "columns", "unused_columns", "roles",
            "label_column", "label_filter", "media_columns", "images", "image_sizes", "image_tokens", "tool_rows", "preference",
            "suggestions", "notes", "fingerprint")}
        d["confidence"] = round(self.confidence, 3)
        d["warnings"] = self.warnings
        d["problems"] = [p.to_dict() for p in self.problems]
        d["problems_total"] = self.problems_total
        d["problems_truncated"] = max(0, self.problems_total - len(self.problems))
        d["problem_groups"] = self.groups()
        d["preview"] = self.preview
        d["tokens"] = self.tokens.to_dict() if self.tokens else None
        d["mask_view"] = [[t, bool(m)] for t, m in self.mask_view] if self.mask_view is not None else None
        d["packing"] = self.packing
        if self.documents is not None:  # a documents dataset: its counts at the top, as `data inspect` says them
            d.update({k: self.documents.get(k) for k in self.DOCUMENT_KEYS})
        return d

    # Mapping-style access keeps callers written against the first, dict-shaped report working.
    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)
