"""A folder of documents as a dataset: read each file in a limited worker, clean, de-duplicate, chunk.

``data.path`` may be a folder holding PDF, DOCX, ODT, EPUB, HTML, Markdown or text files (any depth), or
one PDF/DOCX/ODT/EPUB/HTML file. What happens, in order (docs/documents.md says it for users):

1. **Read** (``Extractor``): every file goes to ``workers.extract_docs`` with a time limit
   (``TIME_LIMIT_S``) and a memory limit (``MEMORY_MB``); a file that passes either, or kills the reader,
   is skipped with that reason and the worker restarts for the next one. Other files in the folder are
   listed as skipped (their type), never read.
2. **Clean** (``clean``): lines repeated at the top or bottom of most pages (running headers, footers,
   page numbers) removed; words hyphenated across a line break joined; whitespace normalised; PDF lines
   rejoined into paragraphs. Tables come from the reader as one text line per row (``a | b | c``).
3. **De-duplicate** (``dedupe``): a passage (paragraph of at least ``MIN_DUP_WORDS`` words) that is
   exactly an earlier one, or the same words once case, digits, punctuation and spacing are ignored
   (a near duplicate), is dropped; both counts are said.
4. **Chunk** (``chunk``): with the model's tokenizer each document is cut into sequences of at most
   the run's length, on paragraph (else sentence, else word) boundaries, each next one starting a small
   overlap (``overlap_tokens``) before the last ended. Chunks are trained with the loss on every token
   (continued pre-training); only a document's last chunk ends with the end-of-sequence token.

Torch-free; the tokenizer is whatever ``studio.data.tokens.load_tokenizer`` or the run gave.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from studio.data import sources
from studio.data.extract import KINDS, kind_of

TIME_LIMIT_S = 120.0  # per file, reading only; a 1,000-page text PDF takes about 30 s on one core
START_LIMIT_S = 120.0  # the worker's own start (Python, pypdf, lxml): slow only on a cold Windows disk
MEMORY_MB = 2048
MIN_DUP_WORDS = 8
PREVIEW_CHARS = 4000  # of each document's cleaned text, in the report
CHARS_PER_TOKEN = 4.0  # the estimate `data inspect` gives without a model (said as an estimate)
SINGLE_FILE_KINDS = ("pdf", "docx", "odt", "epub", "html")  # one such file is a documents dataset by itself
FORMAT = "documents"


@dataclass
class Document:
    source: str  # the path under the folder, '/'-separated
    kind: str
    text: str = ""
    pages: int = 0
    scanned_pages: int = 0
    tables: int = 0
    removed_lines: int = 0  # running headers, footers and page numbers
    chars: int = 0
    tokens: int | None = None
    chunks: int | None = None

    def to_dict(self, preview: bool = True) -> dict:
        d = {"file": self.source, "kind": self.kind, "pages": self.pages, "characters": self.chars,
             "tokens": self.tokens, "chunks": self.chunks, "tables": self.tables,
             "scanned_pages": self.scanned_pages, "header_footer_lines_removed": self.removed_lines}
        if preview:
            d["text"] = self.text[:PREVIEW_CHARS]
            d["text_truncated"] = len(self.text) > PREVIEW_CHARS
        return d


@dataclass
class Collection:
    """What reading a folder gave: the documents with text, the files skipped and why, what cleaning did."""

    root: str
    documents: list = field(default_factory=list)  # Document
    skipped: list = field(default_factory=list)  # {"file", "reason"}
    exact_duplicates: int = 0
    near_duplicates: int = 0
    notes: list = field(default_factory=list)


# ------------------------------------------------------------------ which files

def is_documents(path: str | Path) -> bool:
    """A folder with at least one document file (and not a datasets folder), or one PDF/DOCX/ODT/EPUB/HTML."""
    path = Path(path).expanduser()
    if path.is_file():
        return kind_of(path) in SINGLE_FILE_KINDS
    if not path.is_dir() or sources.is_saved_dataset(path):
        return False
    files = list(_walk(path))
    rows = sources.row_file_suffixes()
    if any(p.name.lower().endswith(rows) for p in files):
        return False  # rows beside a README (a downloaded dataset): the file of rows is the dataset, not the README
    return any(kind_of(p) for p in files)


def _walk(root: Path, links: list | None = None):
    """The files under ``root`` in name order; links to folders are not followed (a loop cannot make the walk
    endless) but put in ``links``, to be named."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        linked = [d for d in dirs if (Path(folder) / d).is_symlink()]
        if links is not None:
            links += [Path(folder) / d for d in sorted(linked) if not d.startswith(".")]
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in linked)
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def gather(path: str | Path) -> tuple[Path, list[Path], list[dict]]:
    """The folder, its document files in a stable order, and the other files (skipped, with the reason)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path.parent, [path], []
    files: list[Path] = []
    skipped: list[dict] = []
    links: list[Path] = []
    for p in _walk(path, links):
        rel = p.relative_to(path).as_posix()
        if p.is_symlink() and not p.resolve().is_relative_to(path.resolve()):
            skipped.append({"file": rel, "reason": "a link to a file outside the folder; copy the file in instead"})
        elif not p.is_file():
            skipped.append({"file": rel, "reason": "not a regular file (a pipe, a device or a broken link)"})
        elif kind_of(p) is None:
            kinds = ", ".join(sorted(set(KINDS)))
            ext = p.suffix or "no extension"
            skipped.append({"file": rel, "reason": f"not a document type the studio reads ({ext}); it reads {kinds}"})
        else:
            files.append(p)
    skipped += [{"file": p.relative_to(path).as_posix(), "reason": "a link to a folder, not followed; copy the "
                 "folder in to read it"} for p in links]
    return path, files, skipped


# ------------------------------------------------------------------ reading, each file in a limited worker

class Extractor:
    """``workers.extract_docs`` with a time and a memory limit per file, restarted after a file that breaks it."""

    def __init__(self, time_limit: float = TIME_LIMIT_S, memory_mb: int = MEMORY_MB) -> None:
        self.time_limit, self.memory_mb = time_limit, memory_mb
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue = queue.Queue()
        self.log: Any = None

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start(self) -> None:
        from studio.procs import start_worker, worker_argv

        self.log = tempfile.TemporaryFile()
        self.proc = start_worker(worker_argv("workers.extract_docs", "--memory-mb", str(self.memory_mb)),
                                 stderr=self.log)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()
        first = self._answer(START_LIMIT_S)
        if not (isinstance(first, dict) and first.get("ready")):
            reason = first if isinstance(first, str) else "it answered something else"
            self.close()
            raise RuntimeError(f"the document reader did not start ({reason})")

    @staticmethod
    def _read(proc: subprocess.Popen, lines: queue.Queue) -> None:
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                lines.put(raw)
        except (OSError, ValueError):  # closed under it: the worker is being ended
            pass
        lines.put(None)

    def _answer(self, limit: float) -> dict | str:
        """The worker's next JSON line, or why none came: 'time', 'memory' or 'died'."""
        import psutil

        assert self.proc is not None
        deadline = time.monotonic() + limit
        try:
            watched = psutil.Process(self.proc.pid)
        except psutil.Error:
            watched = None
        while True:
            try:
                raw = self.lines.get(timeout=min(0.2, max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() > deadline:
                    return "time"
                try:
                    if watched is not None and watched.memory_info().rss > self.memory_mb * 1024 * 1024:
                        return "memory"
                except psutil.Error:
                    pass
                continue
            if raw is None:
                return "died"
            try:
                answer = json.loads(raw)
            except ValueError:
                continue
            if isinstance(answer, dict):
                return answer

    def read(self, path: Path) -> dict:
        """``extract.extract``'s answer for ``path``, or ``{"ok": False, "reason"}``; never raises for the file."""
        if self.proc is None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps({"path": str(path)}) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            pass  # it died at the last file's end: the answer below says so
        answer = self._answer(self.time_limit)
        if isinstance(answer, dict):
            if answer.get("restart"):  # the worker ends after a file that took it past the memory limit
                self.close()
            return answer
        tail = self._log_tail() if answer == "died" else ""
        self.close()
        reason = {"time": f"reading it took longer than {self.time_limit:.0f} s (a damaged or hostile file?); "
                          "skipped",
                  "memory": f"reading it needed more than {self.memory_mb} MB of memory (a zip bomb or a damaged "
                            "file?); skipped",
                  "died": "the reader crashed on it (a damaged or hostile file?); skipped" +
                          (f": {tail}" if tail else "")}[answer]
        return {"ok": False, "reason": reason}

    def _log_tail(self) -> str:
        try:
            self.log.seek(0)
            lines = [ln for ln in self.log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        return lines[-1][:200] if lines else ""

    def close(self) -> None:
        from studio.procs import kill_tree

        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                if proc.stdin:
                    proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                kill_tree(proc.pid)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            for stream in (proc.stdout,):
                try:
                    if stream:
                        stream.close()
                except OSError:
                    pass
        if self.log is not None:
            self.log.close()
            self.log = None


def read(path: str | Path, progress: Callable[[int, int, str], None] | None = None,
         time_limit: float = TIME_LIMIT_S, memory_mb: int = MEMORY_MB) -> Collection:
    """Every document under ``path`` read, cleaned and de-duplicated; skipped files with their reasons."""
    root, files, skipped = gather(path)
    col = Collection(str(Path(path).expanduser()), skipped=list(skipped))
    with Extractor(time_limit, memory_mb) as ex:
        for i, p in enumerate(files):
            rel = p.relative_to(root).as_posix()
            if progress is not None:
                progress(i, len(files), rel)
            answer = ex.read(p)
            if not answer.get("ok"):
                col.skipped.append({"file": rel, "reason": answer.get("reason") or "unreadable"})
                continue
            pages = [str(t) for t in answer.get("pages") or []]
            doc = Document(rel, str(answer.get("kind")), pages=len(pages),
                           scanned_pages=int(answer.get("scanned_pages") or 0), tables=int(answer.get("tables") or 0))
            doc.text, doc.removed_lines = clean(pages, doc.kind)
            if not doc.text.strip():
                reason = ("no text layer: it looks like a scan (pages of images); the studio does no OCR, run one "
                          "first (for example ocrmypdf) and add the result" if doc.kind == "pdf" and doc.scanned_pages
                          else "no text in it")
                col.skipped.append({"file": rel, "reason": reason})
                continue
            col.notes.extend(f"{rel}: {note}" for note in answer.get("notes") or [])
            if doc.scanned_pages:
                col.notes.append(f"{rel}: {doc.scanned_pages} of {doc.pages} page(s) have no text layer (scanned "
                                 "images); their content is not read (no OCR)")
            col.documents.append(doc)
    dedupe(col)
    kept = []
    for doc in col.documents:
        doc.chars = len(doc.text)
        if doc.text.strip():
            kept.append(doc)
        else:
            col.skipped.append({"file": doc.source, "reason": "every passage in it repeats one read before it"})
    col.documents = kept
    return col


# ------------------------------------------------------------------ cleaning

_LIGATURES = {chr(c): unicodedata.normalize("NFKC", chr(c)) for c in range(0xFB00, 0xFB07)}
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_DIGITS = re.compile(r"\d+")
_PAGE_NUMBER = re.compile(r"^(page\s*)?#(\s*(of|/)\s*#)?$|^[-\u2013\u2014]\s*#\s*[-\u2013\u2014]$|^[ivxlc]+$")
_HYPHEN = re.compile(r"(\w)[-\u00ad]\n(?=[a-z\u00e0-\u00ff])")
_LEADER = re.compile(r"(?:\s*\.){4,}\s*")  # a table of contents' dot leaders: ". . . . . . 12"
_END = ".!?:;\"\u201d)\u2019]"


def normalise(text: str) -> str:
    """Line ends, spaces, soft hyphens, ligatures and control characters made plain; lines trimmed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    text = "".join(_LIGATURES.get(ch, ch) for ch in text) if any(ch in _LIGATURES for ch in text) else text
    text = text.replace("\u00ad\n", "-\n").replace("\u00ad", "").replace("\u200b", "").replace("\ufeff", "")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    return "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))


def _edge_key(line: str) -> str:
    return _DIGITS.sub("#", line.strip().lower())


def strip_running_lines(pages: list[list[str]]) -> int:
    """Remove the lines that repeat at the top or bottom (two lines each) of most pages, and page numbers.

    A line counts as repeated when, with its digits read as one placeholder, it is among the first or last
    two lines of at least half the pages (and of three or more). Works in place; returns the lines removed.
    """
    if len(pages) < 3:
        return 0
    seen: dict[str, int] = {}
    for lines in pages:
        edges = {_edge_key(ln) for ln in _edges(lines)}
        for key in edges:
            seen[key] = seen.get(key, 0) + 1
    need = max(3, (len(pages) + 1) // 2)
    running = {k for k, n in seen.items() if n >= need and k}
    removed = 0
    for lines in pages:
        for pos in _edge_positions(lines):
            key = _edge_key(lines[pos])
            if key in running or (_PAGE_NUMBER.match(key) and seen.get(key, 0) >= 2):
                lines[pos] = ""
                removed += 1
    return removed


def _edge_positions(lines: list[str]) -> list[int]:
    filled = [i for i, ln in enumerate(lines) if ln.strip()]
    return sorted(set(filled[:2] + filled[-2:]))


def _edges(lines: list[str]) -> list[str]:
    return [lines[i] for i in _edge_positions(lines)]


def _pdf_paragraphs(lines: list[str]) -> list[str]:
    """PDF text has a line break at every visual line: rejoin lines into paragraphs.

    A paragraph ends at a blank line, or after a line that ends a sentence and is clearly shorter than the
    page's full lines (the last line of a paragraph), or before a line that starts a list item.
    """
    widths = sorted(len(ln) for ln in lines if ln.strip())
    full = widths[int(len(widths) * 0.8)] if widths else 0
    paras: list[list[str]] = []
    cur: list[str] = []
    for ln in lines:
        if not ln.strip():
            if cur:
                paras.append(cur)
                cur = []
            continue
        starts_item = re.match(r"^([-*\u2022\u25aa\u2013]|\d+[.)]|[a-z][.)])\s", ln)
        after_heading = cur and len(cur[-1]) < 0.5 * full and ln[:1].isupper()  # "1 Introduction", then text
        if cur and (starts_item or after_heading):
            paras.append(cur)
            cur = []
        cur.append(ln)
        if ln.rstrip()[-1:] in _END and len(ln) < 0.8 * full:
            paras.append(cur)
            cur = []
    if cur:
        paras.append(cur)
    return [_LEADER.sub(" \u2026 ", _HYPHEN.sub(r"\1", "\n".join(p)).replace("\n", " ")) for p in paras]


def clean(pages: list[str], kind: str) -> tuple[str, int]:
    """The document's text, cleaned (module docstring, step 2), and the running lines it removed."""
    split = [normalise(p).split("\n") for p in pages]
    removed = strip_running_lines(split) if kind == "pdf" else 0
    if kind == "pdf":
        paras: list[str] = []
        for lines in split:
            page = _pdf_paragraphs(lines)
            # a paragraph that runs over the page break: the page ends mid-sentence, the next starts lower-case
            if paras and page and paras[-1][-1:] not in _END and page[0][:1].islower():
                joined = paras[-1][:-1] + page[0] if paras[-1].endswith("-") else paras[-1] + " " + page[0]
                paras[-1] = joined
                page = page[1:]
            paras += page
    else:
        text = "\n".join("\n".join(lines) for lines in split)
        paras = [_HYPHEN.sub(r"\1", p) if kind == "text" else p for p in re.split(r"\n\s*\n", text)]
    paras = [p.strip("\n") for p in paras if p.strip()]
    return "\n\n".join(paras), removed


# ------------------------------------------------------------------ duplicates

def _near_key(paragraph: str) -> str:
    return " ".join(re.sub(r"[\W\d_]+", " ", paragraph.lower()).split())


def dedupe(col: Collection) -> None:
    """Drop passages repeated exactly or nearly (module docstring, step 3) across all documents, in order."""
    exact: set[bytes] = set()
    near: set[bytes] = set()
    for doc in col.documents:
        kept = []
        for para in doc.text.split("\n\n"):
            if len(para.split()) < MIN_DUP_WORDS:
                kept.append(para)
                continue
            key = _near_key(para)
            e = hashlib.blake2b(para.encode(), digest_size=16).digest()
            # a passage of figures has few words once digits go: only its exact repeat is a duplicate
            n = hashlib.blake2b(key.encode(), digest_size=16).digest() if len(key.split()) >= MIN_DUP_WORDS else e
            if e in exact:
                col.exact_duplicates += 1
            elif n in near and n != e:
                col.near_duplicates += 1
            else:
                kept.append(para)
            exact.add(e)
            near.add(n)
        doc.text = "\n\n".join(kept)
    if col.exact_duplicates or col.near_duplicates:
        col.notes.append(f"{col.exact_duplicates} passage(s) repeated exactly and {col.near_duplicates} nearly (the "
                         "same words once case, digits, punctuation and spacing are ignored) were dropped; the first "
                         f"of each is kept (passages of {MIN_DUP_WORDS} or more words are compared)")


# ------------------------------------------------------------------ chunks

def overlap_tokens(limit: int) -> int:
    """The overlap between consecutive chunks: an eighth of the length, at most 128 tokens."""
    return max(0, min(128, limit // 8))


def chunk_limit(seq_len: int) -> int:
    """Tokens of text per chunk: the run's length less room for the end-of-sequence token and a boundary token
    that re-tokenising a cut can add."""
    return max(8, seq_len - 2)


_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n")


def chunk(tokenizer: Any, text: str, limit: int, overlap: int | None = None) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` tokens on paragraph, else sentence, else word boundaries;
    each piece after the first starts about ``overlap`` tokens before the previous one ended."""
    return chunk_counted(tokenizer, text, limit, overlap)[0]


def chunk_counted(tokenizer: Any, text: str, limit: int, overlap: int | None = None) -> tuple[list[str], int]:
    """``chunk``, and how many tokens the whole text is (it is tokenised once for both)."""
    if limit < 1:
        raise ValueError(f"a chunk holds at least one token, not {limit}")
    overlap = overlap_tokens(limit) if overlap is None else overlap
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    n = len(offsets)
    if n <= limit:
        return ([text] if text.strip() else []), n
    ends = [o[1] for o in offsets]  # character end of each token

    def token_at(char: int) -> int:
        """The token holding the whitespace at ``char`` (byte-level BPE joins a space to the next word), so
        that a cut before it never splits a word."""
        return bisect.bisect_right(ends, char)

    paragraphs = [token_at(m.start()) for m in re.finditer(r"\n\n", text)]
    sentences = [token_at(m.start()) for m in _SENTENCE.finditer(text)]
    words = [token_at(m.start()) for m in re.finditer(r"\s+", text)]

    def boundary(cands: list[int], lo: int, hi: int) -> int | None:  # the last boundary in (lo, hi]
        i = bisect.bisect_right(cands, hi) - 1
        return cands[i] if i >= 0 and cands[i] > lo else None

    def first(cands: list[int], lo: int, hi: int) -> int | None:  # the first boundary in [lo, hi)
        i = bisect.bisect_left(cands, lo)
        return cands[i] if i < len(cands) and cands[i] < hi else None

    pieces, s = [], 0
    while s < n:
        e = s + limit
        if e >= n:
            e = n
        else:
            half = s + limit // 2
            e = boundary(paragraphs, half, e) or boundary(sentences, half, e) or boundary(words, half, e) or e
        piece = text[offsets[s][0]:offsets[e - 1][1]].strip()
        if piece:
            pieces.append(piece)
        if e >= n:
            break
        back = max(s + 1, e - overlap)  # the next start: the earliest boundary within the overlap
        nxt = first(paragraphs, back, e) or first(sentences, back, e) or first(words, back, e)
        s = nxt if nxt is not None and overlap else e
    return pieces, n


def chunk_examples(tokenizer: Any, documents: list[dict], seq_len: int) -> list[dict]:
    """Training examples (``{"text", "source", "eos"}``) from document examples; ``eos`` only on a last chunk."""
    limit = chunk_limit(seq_len)
    out = []
    for doc in documents:
        pieces = chunk(tokenizer, doc["text"], limit)
        for i, piece in enumerate(pieces):
            out.append({"text": piece, "source": doc.get("source", ""), "eos": i == len(pieces) - 1})
    return out


def count(tokenizer: Any, col: Collection, seq_len: int | None) -> tuple[list[int], list[dict]]:
    """Fill each document's tokens and chunks (exact with a tokenizer, else estimated at ``CHARS_PER_TOKEN``);
    the chunks' lengths as training sees them (the last of a document with its end-of-sequence token) and
    the first chunks, for the preview."""
    limit = chunk_limit(seq_len or 1024)
    lengths: list[int] = []
    previews: list[dict] = []
    for doc in col.documents:
        if tokenizer is None:
            doc.tokens = max(1, int(round(len(doc.text) / CHARS_PER_TOKEN)))
            step = max(1, limit - overlap_tokens(limit))
            doc.chunks = 1 if doc.tokens <= limit else 1 + -(-(doc.tokens - limit) // step)
            lengths += [limit] * (doc.chunks - 1) + [doc.tokens - (doc.chunks - 1) * step + 1]
            continue
        pieces, doc.tokens = chunk_counted(tokenizer, doc.text, limit)
        doc.chunks = len(pieces)
        sizes = [len(ids) for ids in tokenizer(pieces, add_special_tokens=False)["input_ids"]] if pieces else []
        if sizes:
            sizes[-1] += 1  # the document's end-of-sequence token
        lengths += sizes
        for piece, size in list(zip(pieces, sizes))[:3]:
            if len(previews) < 12:
                previews.append({"file": doc.source, "tokens": size, "text": piece[:PREVIEW_CHARS]})
    return lengths, previews


def progress_printer(stream: Any = None) -> Callable[[int, int, str], None]:
    """A progress line per file on stderr (the CLI's, when reading takes a while)."""
    out = stream or sys.stderr
    started = time.monotonic()

    def show(i: int, n: int, name: str) -> None:
        if time.monotonic() - started > 2 and n > 1:
            print(f"reading documents: {i + 1}/{n} {name}", file=out, flush=True)
    return show
