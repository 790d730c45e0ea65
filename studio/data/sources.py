"""Read records from a dataset file: find the container, the compression and the encoding, then stream.

Every reader yields ``Record(row, line, value, problem)`` in file order: ``row`` is the 1-based
record number, ``line`` the 1-based line where the record starts (None where lines mean nothing,
as in Parquet), ``value`` the parsed record (a dict, or a str for plain text) or None when the record
could not be parsed, in which case ``problem`` says why. Readers never stop at a bad record.
The user's file is only ever opened for reading.
"""
from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, NamedTuple

from studio.data.report import WARNING, Problem

SNIFF_BYTES = 1 << 16
# One record (a line of JSONL, text or CSV, one item of a JSON array) is at most this big: a
# training example is kilobytes, and a 1 GiB "record" would cost gigabytes to parse. Longer
# records are reported by line and skipped while streaming, so memory stays bounded by this.
MAX_RECORD_BYTES = 32 << 20
# A .json file is parsed as one document, so it is read whole; beyond this it should be JSONL.
MAX_JSON_DOCUMENT_BYTES = 512 << 20


class DataError(ValueError):
    """A dataset that cannot be used; the message names the file and what to do."""

    # Set by scan.inspect when a layout other than the one asked for works on the first records
    # ([{"format", "columns", "roles"}]); unset otherwise, so readers use getattr(e, "suggestions", None).
    suggestions: list[dict]
    # Set with them: the sampled records' column names (the window's column menus offer them).
    columns: list[str]


class Record(NamedTuple):
    row: int
    line: int | None
    value: Any
    problem: Problem | None


# What a reader returns: a generator, so a caller that stops early can close() it and so close the file.
Records = Generator[Record, None, None]


@dataclass
class Source:
    """A dataset file (or folder) and how to decode it."""

    path: Path
    kind: str  # a key of READERS
    encoding: str = "utf-8"
    compression: str | None = None
    notes: list = field(default_factory=list)
    cr_only: bool = False  # classic Mac line endings: lines end with CR alone

    def open_binary(self) -> gzip.GzipFile | io.BufferedReader:
        """The raw bytes, decompressed; read-only."""
        return gzip.open(self.path, "rb") if self.compression == "gzip" else open(self.path, "rb")

    def open_text(self, errors: str = "strict") -> io.TextIOBase:
        """Decoded text with universal newlines off (readers handle CR LF themselves)."""
        return io.TextIOWrapper(self.open_binary(), encoding=self.encoding, errors=errors, newline="")


# Extensions -> container; content sniffing settles unknown or misleading names.
EXTENSIONS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonlines": "jsonl", ".json": "json",
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
    ".txt": "text", ".text": "text", ".md": "text",
}
UNSUPPORTED = {
    ".xlsx": "Excel workbooks are not read directly: save the sheet as 'CSV UTF-8' and import that",
    ".xls": "Excel workbooks are not read directly: save the sheet as 'CSV UTF-8' and import that",
    ".zip": "zip archives are not read: unpack it and import the data file inside",
    ".tar": "tar archives are not read: unpack it and import the data file inside",
    ".arrow": "a single Arrow cache file is not read: import the folder written by save_to_disk",
}


def open_source(path: str | Path) -> Source:
    """Work out container, compression and encoding of ``path`` (raises DataError when unreadable)."""
    path = Path(path).expanduser()
    if not path.exists():
        if path.is_symlink():
            raise DataError(f"{path}: a symbolic link that loops or points nowhere; give the real file's path")
        raise DataError(f"{path}: no such file or folder; check the path")
    if path.is_dir():
        return _folder_source(path)
    if not path.is_file():  # a pipe or a device would block or never end
        raise DataError(f"{path}: not a regular file (a pipe or a device); save the data to a file first")
    magic, ext, compression = _name_and_magic(path)
    if magic == b"PAR1" or ext in (".parquet", ".pq"):
        return Source(path, "parquet", encoding="binary", compression=compression)
    src = Source(path, EXTENSIONS.get(ext, ""), compression=compression)
    head = _head(src)
    if not head.strip():
        raise DataError(f"{path}: the file is empty; export some rows into it first")
    src.encoding = _encoding(head, src.notes)
    src.cr_only = b"\r" in head and b"\n" not in head
    text = _decode_head(head, src.encoding)
    _refuse_binary(src, text)
    src.kind = _sniff_kind(src, text)
    return src


def _name_and_magic(path: Path) -> tuple[bytes, str, str | None]:
    """First four bytes, the extension that names the container (under .gz) and the compression."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e}); check its permissions") from None
    compression = "gzip" if magic[:2] == b"\x1f\x8b" else None
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".gzip"):
        suffixes = suffixes[:-1]
        if compression is None:
            raise DataError(f"{path}: the name ends in .gz but the file is not gzip-compressed; "
                            "rename or re-compress it")
    ext = suffixes[-1] if suffixes else ""
    if ext in UNSUPPORTED:
        raise DataError(f"{path}: {UNSUPPORTED[ext]}")
    return magic, ext, compression


def _head(src: Source) -> bytes:
    """The first bytes (decompressed); a damaged file still gives what comes before the damage."""
    chunks, size = [], 0
    try:
        with src.open_binary() as fh:
            while size < SNIFF_BYTES and (chunk := fh.read(4096)):
                chunks.append(chunk)
                size += len(chunk)
    except (OSError, EOFError) as e:
        if not chunks:
            raise DataError(f"{src.path}: cannot be read ({e}); is the file complete?") from None
    return b"".join(chunks)


# The files datasets' save_to_disk writes beside its Arrow files: a folder holding one is a dataset.
SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def is_saved_dataset(path: Path) -> bool:
    return any((path / n).is_file() for n in SAVED_DATASET_MARKERS)


def row_file_suffixes() -> tuple[str, ...]:
    """The names of files that hold rows (a folder with one beside a README is a dataset, not documents):
    the row containers of EXTENSIONS, their gzip forms, and Arrow files."""
    rows = tuple(e for e, kind in EXTENSIONS.items() if kind != "text")
    return rows + tuple(e + ".gz" for e in rows) + (".arrow",)


def _folder_source(path: Path) -> Source:
    if is_saved_dataset(path):
        return Source(path, "arrow", encoding="binary")
    raise DataError(f"{path}: a folder is read when it holds documents (PDF, DOCX, ODT, EPUB, HTML, Markdown, "
                    "text) or when datasets.save_to_disk wrote it (it has dataset_info.json); this one has "
                    "neither: pass the data file inside instead")


def _encoding(head: bytes, notes: list) -> str:
    """BOMs first, then UTF-16 without BOM (NUL pattern), then UTF-8, else Windows-1252 with a note."""
    if head.startswith(codecs.BOM_UTF32_LE) or head.startswith(codecs.BOM_UTF32_BE):
        return "utf-32"
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16"
    sample = head[:4096]
    if len(sample) >= 4 and sample.count(0) >= len(sample) // 4:
        return "utf-16-le" if sample[1::2].count(0) > sample[0::2].count(0) else "utf-16-be"
    text = head.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    if len(head) == SNIFF_BYTES and text.endswith("\ufffd"):
        bad -= 1  # a character cut by the sample's end
    # A few bad bytes among real UTF-8 text are damaged lines (reported per line), not another encoding.
    if bad == 0 or sum(1 for c in text if c > "\x7f") > bad:
        return "utf-8"
    notes.append("the file is not UTF-8; it was read as Windows-1252 (Excel's default). If characters look "
                 "wrong, save it again as UTF-8")
    return "cp1252"


def _refuse_binary(src: Source, text: str) -> None:
    """Control characters that no text format uses mean a binary file (an image, a model, a database)."""
    controls = sum(1 for c in text[:8192] if c < " " and c not in "\t\n\r\f\v\x1b")
    if controls > max(8, len(text[:8192]) // 100):
        raise DataError(f"{src.path}: this looks like a binary file, not a dataset; export the data as JSONL, CSV "
                        "or Parquet")


def _decode_head(head: bytes, encoding: str) -> str:
    return head.decode(encoding, errors="replace")


KNOWN_COLUMNS = {"messages", "conversations", "text", "instruction", "input", "output", "prompt", "completion",
                 "question", "answer", "response", "system"}


def _sniff_kind(src: Source, text: str) -> str:
    """Trust the content over the name for JSON vs JSONL; use the name for tables and text."""
    stripped = text.lstrip("\ufeff \t\r\n")
    first = stripped.split("\n", 1)[0]
    cells = {c.strip().strip('"').lower() for c in first.split("\t")} if "\t" in first else set()
    if src.kind == "text" and KNOWN_COLUMNS & cells:
        src.notes.append("the text file has a tab-separated header row; it was read as TSV (Excel 'Unicode Text')")
        return "tsv"
    if src.kind in ("csv", "tsv", "text"):
        return src.kind
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        return _json_or_jsonl(src, stripped)
    if src.kind in ("json", "jsonl"):
        lines = [x.lstrip() for x in stripped.splitlines()[:50] if x.strip()]
        if sum(x.startswith(("{", "[")) for x in lines) * 2 >= len(lines):
            return "jsonl"  # JSON lines after a stray first line: those lines are reported one by one
        src.notes.append(f"the file is named .{src.kind} but does not start with JSON; it was read by its content")
    elif src.kind:
        return src.kind
    if "\t" in first:
        return "tsv"
    return "csv" if first.count(",") + first.count(";") >= 1 and len(first) < 2000 else "text"


def _json_or_jsonl(src: Source, text: str) -> str:
    """One object per line (JSONL), or one document (a single object, pretty-printed objects)."""
    lines = [x for x in text.split("\n", 2)[:2] if x.strip()]
    try:
        json.loads(lines[0].strip().rstrip(","))
    except ValueError:
        return "json" if src.kind in ("json", "") or _looks_multiline_json(text) else "jsonl"
    return "jsonl" if len(lines) > 1 or src.kind != "json" else "json"


def _looks_multiline_json(text: str) -> bool:
    """A pretty-printed object: the first line is just an opening brace or an unfinished object."""
    first = text.split("\n", 1)[0].strip()
    return first in ("{", "[") or first.endswith(("{", "[", ":", ","))


# ---------------------------------------------------------------------------- readers

def read_jsonl(src: Source) -> Records:
    """One JSON value per line; a bad line is a problem for that line, never the end of the import."""
    # Bytes are fastest for UTF-8; other encodings and old-Mac CR-only files go through text mode.
    binary = src.encoding in ("utf-8", "utf-8-sig") and not src.cr_only
    fh = src.open_binary() if binary else src.open_text(errors="replace")
    row = 0
    with fh:
        for line_no, raw in _lines(src, fh):
            if isinstance(raw, TooLong):
                row += 1
                yield Record(row, line_no, None, raw.problem(row, line_no))
                continue
            if not raw.strip():
                continue
            row += 1
            yield _parse_json_line(raw, row, line_no)


class TooLong(NamedTuple):
    """A line longer than MAX_RECORD_BYTES, skipped without being held in memory."""

    size: int

    def problem(self, row: int, line: int, what: str = "the record") -> Problem:
        return Problem(f"{what} on line {line} is {_size(self.size)} or more; a record may be at most "
                       f"{_size(MAX_RECORD_BYTES)}, so it was skipped",
                       "split or shorten it (is a newline missing between records?)", row=row, line=line,
                       code="size")


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 1 << 20 else f"{n} bytes"


def bounded_line(fh, limit: int | None = None) -> Any:
    """The next line (bytes or str, '' or b'' at the end), or TooLong after skipping the rest of it."""
    limit = MAX_RECORD_BYTES if limit is None else limit
    raw = fh.readline(limit + 1)
    if len(raw) <= limit or raw.endswith(("\n", "\r") if isinstance(raw, str) else b"\n"):
        return raw
    size = len(raw)
    del raw
    while True:  # drop the rest of the line a megabyte at a time
        more = fh.readline(1 << 20)
        size += len(more)
        if not more or more.endswith(("\n", "\r") if isinstance(more, str) else b"\n"):
            return TooLong(size)


def _bounded_lines(fh) -> Iterator[Any]:
    while raw := bounded_line(fh):
        yield raw


def _lines(src: Source, fh) -> Iterator[tuple[int, Any]]:
    """Numbered lines (TooLong for over-long ones); a truncated compressed file ends with a note, not a crash."""
    line_no = 0
    try:
        for line_no, raw in enumerate(_bounded_lines(fh), 1):
            yield line_no, raw
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        src.notes.append(f"reading stopped after line {line_no}: the file is damaged or cut short ({e})")


_decode = json.JSONDecoder().decode


def _parse_json_line(raw: bytes | str, row: int, line: int) -> Record:
    try:
        return Record(row, line, _decode(raw.decode("utf-8") if isinstance(raw, bytes) else raw), None)
    except UnicodeDecodeError:
        return Record(row, line, None, Problem(
            "the line is not valid UTF-8 text", "save the file as UTF-8, or fix the characters on this line",
            row=row, line=line, code="encoding"))
    except (ValueError, RecursionError) as e:
        return _lenient(raw, row, line, e)


def _lenient(raw: bytes | str, row: int, line: int, error: ValueError | RecursionError) -> Record:
    """Forgive what is clearly meant (a byte-order mark, a trailing comma) with a warning; else the error."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = text.strip().lstrip("\ufeff").strip()
    comma = text.endswith(",") and len(text) > 2
    try:
        value = json.loads(text[:-1] if comma else text)
    except (ValueError, RecursionError):
        return Record(row, line, None, _json_problem(error, row, line, raw))
    if not comma:  # only the byte-order mark was in the way (files joined together)
        return Record(row, line, value, None)
    return Record(row, line, value, Problem(
        "the line ends with a comma (JSON array punctuation); it was read without it",
        "remove the trailing comma: JSONL has one object per line and no separators",
        row=row, line=line, severity=WARNING, code="trailing_comma"))


def _json_problem(e: ValueError | RecursionError, row: int, line: int, raw: Any) -> Problem:
    if isinstance(e, RecursionError):
        return Problem("the JSON is nested too deeply to read", "flatten this record", row=row, line=line,
                       code="json")
    text = raw.strip() if isinstance(raw, (bytes, str)) else b""
    if text in (b"[", b"]", "[", "]", b",", ","):
        return Problem(f"'{text if isinstance(text, str) else text.decode()}' on its own is not a JSON object",
                       "delete this line: a JSONL file holds one object per line, not an array",
                       row=row, line=line, code="json")
    chars = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if getattr(e, "pos", 0) >= len(chars):
        return Problem("the JSON object is incomplete: the line ends before its closing brackets",
                       "complete or delete this line: each line must be one whole JSON object",
                       row=row, line=line, code="json")
    return Problem(f"not valid JSON: {_json_msg(e, with_line=False)}",
                   "fix or delete this line: each line must be one complete JSON object",
                   row=row, line=line, code="json")


def _json_msg(e: ValueError, with_line: bool) -> str:
    """'Expecting value at column 3' from a JSONDecodeError (its own text repeats the whole position)."""
    msg = getattr(e, "msg", str(e))
    if not isinstance(e, json.JSONDecodeError):  # e.g. an integer too long to convert: no position
        return msg
    where = f"line {e.lineno}, column {e.colno}" if with_line else f"column {e.colno}"
    return f"{msg} {where}" if msg.endswith(" at") else f"{msg} at {where}"


def read_json(src: Source) -> Records:
    """A JSON array, an object holding one, a single object, or concatenated objects."""
    text = _read_all_text(src)
    pos = _skip_ws(text, 0)
    if text.startswith("[", pos):
        yield from _walk(text, pos + 1, "]", src)
        return
    try:
        value, end = json.JSONDecoder().raw_decode(text, pos)
    except (ValueError, RecursionError):
        yield from _walk(text, pos, None, src)  # broken or concatenated objects: recover per object
        return
    if _skip_ws(text, end) < len(text):
        yield from _walk(text, pos, None, src)  # JSON Lines or concatenated objects in a .json file
        return
    yield from _from_object(value, src)


def _from_object(value: Any, src: Source) -> Iterator[Record]:
    """An object holding the records: pick its largest list of objects (e.g. {"data": [...]})."""
    if isinstance(value, dict):
        lists = [(k, v) for k, v in value.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
        record_like = {"messages", "conversations", "text", "instruction", "prompt", "question"}
        if lists and not record_like & set(value):
            preferred = [kv for name in ("train", "data", "examples", "rows", "records")
                         for kv in lists if kv[0] == name]
            key, items = preferred[0] if preferred else max(lists, key=lambda kv: len(kv[1]))
            if len(lists) > 1:
                src.notes.append(f"the file holds several lists; read '{key}' ({len(items)} records)")
            for i, item in enumerate(items, 1):
                yield Record(i, None, item, None)
            return
        if len(value) > 1 and all(isinstance(v, dict) for v in value.values()) and not record_like & set(value):
            src.notes.append("the file is an object of objects; each value was read as a record")
            for i, item in enumerate(value.values(), 1):
                yield Record(i, None, item, None)
            return
        yield Record(1, 1, value, None)
        return
    yield Record(1, 1, None, Problem("the file holds a single JSON value, not records",
                                     "write a list of objects, one per example", row=1, line=1, code="json"))


def _read_all_text(src: Source) -> str:
    try:
        with src.open_text(errors="replace") as fh:
            text = fh.read(MAX_JSON_DOCUMENT_BYTES + 1)  # decompressed as it is read, never past the cap
    except (EOFError, OSError) as e:
        raise DataError(f"{src.path}: cannot be read ({e}); is the file complete?") from None
    if len(text) > MAX_JSON_DOCUMENT_BYTES:
        raise DataError(f"{src.path}: a .json document over {_size(MAX_JSON_DOCUMENT_BYTES)} is read whole and "
                        "would not fit in memory; convert it to JSONL (one record per line), which is streamed")
    return text.lstrip("\ufeff")


_WS = re.compile(r"[\s,]*")


def _skip_ws(text: str, pos: int) -> int:
    found = _WS.match(text, pos)  # the pattern matches the empty string, so it always matches
    return found.end() if found else pos


def _walk(text: str, pos: int, close: str | None, src: Source) -> Iterator[Record]:
    """Decode values one by one (array items or concatenated objects), recovering after a bad one."""
    decoder = json.JSONDecoder()
    row, line, last = 0, 1 + text.count("\n", 0, pos), pos
    while True:
        pos = _skip_ws(text, pos)
        if pos >= len(text):
            if close:
                src.notes.append(f"the JSON array is not closed with '{close}'; is the file cut short?")
            return
        if close and text[pos] == close:
            return
        row += 1
        line += text.count("\n", last, pos)
        last = pos
        try:
            value, end = decoder.raw_decode(text, pos)
        except RecursionError:
            yield Record(row, line, None, Problem(
                "the JSON record is nested too deeply to read", "flatten this record; the records after it "
                "were read on", row=row, line=line, code="json"))
            pos = _resync(text, pos, pos + 1)
            continue
        except ValueError as e:
            yield Record(row, line, None, Problem(
                f"not valid JSON: {_json_msg(e, with_line=True)}",
                "fix this record; the records after it were read on", row=row, line=line, code="json"))
            pos = _resync(text, pos, max(getattr(e, "pos", pos), pos + 1))
            continue
        if end - pos > MAX_RECORD_BYTES:
            yield Record(row, line, None, TooLong(end - pos).problem(row, line))
        else:
            yield Record(row, line, value, None)
        pos = end


def _resync(text: str, start: int, err: int) -> int:
    """Next line whose first character is '{' at the column where the bad record began."""
    col = start - (text.rfind("\n", 0, start) + 1)
    found = re.compile(r"\n[ \t]{%d}\{" % col).search(text, err)
    return found.end() - 1 if found else len(text)


def read_csv(src: Source, delimiter: str | None = None) -> Records:
    """A header row then records; quoted fields may hold delimiters, quotes and newlines."""
    csv.field_size_limit(MAX_RECORD_BYTES - 1)
    with src.open_text(errors="replace") as fh:
        delimiter = delimiter or _delimiter(fh)
        lines = _CsvLines(fh)
        reader = csv.reader(lines, delimiter=delimiter)
        header = _header(src, reader, delimiter)
        yield from _csv_rows(src, reader, header, lines)


class _CsvLines:
    """The file's lines for csv.reader, each at most MAX_RECORD_BYTES; over-long ones are cut and remembered."""

    def __init__(self, fh) -> None:
        self.fh, self.line = fh, 0
        self.too_long: dict[int, TooLong] = {}  # line number -> the cut line

    def __iter__(self):
        return self

    def __next__(self) -> str:
        raw = bounded_line(self.fh)
        if not raw:
            raise StopIteration
        self.line += 1
        if isinstance(raw, TooLong):
            self.too_long[self.line] = raw
            return "\n"  # an empty row stands in; _csv_rows reports the line
        return raw


def read_tsv(src: Source) -> Records:
    return read_csv(src, "\t")


def _delimiter(fh) -> str:
    first = fh.readline(SNIFF_BYTES)
    fh.seek(0)
    counts = {d: first.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def _header(src: Source, reader, delimiter: str) -> list[str]:
    try:
        names = next(reader)
    except StopIteration:
        raise DataError(f"{src.path}: the file has no header row; add one naming the columns") from None
    except csv.Error as e:
        raise DataError(f"{src.path}: the header row cannot be read ({e})") from None
    header, seen = [], set()
    for i, name in enumerate(names, 1):
        name = name.strip().lstrip("\ufeff").strip() or f"column_{i}"
        while name in seen:
            name += "_"
        seen.add(name)
        header.append(name)
    while header and header[-1].startswith("column_") and len(header) > 1:
        header.pop()  # trailing empty header cells (spreadsheets export them)
    if len(header) == 1 and delimiter != "\t" and "\t" in names[0]:
        src.notes.append("the header has tabs in it: is this a TSV file? rename it to .tsv")
    return header


def _csv_rows(src: Source, reader, header: list[str], lines: _CsvLines) -> Iterator[Record]:
    row, start = 0, reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            row += 1
            if "field larger than field limit" in str(e):
                yield Record(row, start, None, TooLong(MAX_RECORD_BYTES).problem(row, start, "a cell of the row"))
                start = reader.line_num + 1
                continue
            yield Record(row, start, None, Problem(f"the row cannot be read as CSV ({e})",
                                                   "check the quotes on this row", row=row, line=start, code="csv"))
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        cut = [n for n in range(line, start) if n in lines.too_long]
        if cut:
            row += 1
            yield Record(row, cut[0], None, lines.too_long.pop(cut[0]).problem(row, cut[0], "the row"))
            continue
        if not fields or all(not f.strip() for f in fields):
            continue
        row += 1
        if len(fields) < len(header) and any("\n" in f for f in fields):
            yield Record(row, line, None, Problem(
                f"a quote opened on this row is never closed, so lines {line}-{start - 1} were read as one cell",
                'close the quote; a quote inside a quoted cell is written twice ("")', row=row, line=line,
                code="csv"))
            continue
        yield _csv_record(header, fields, row, line)


def _csv_record(header: list[str], fields: list[str], row: int, line: int) -> Record:
    extra = fields[len(header):]
    if any(f.strip() for f in extra):
        return Record(row, line, None, Problem(
            f"the row has {len(fields)} fields but the header has {len(header)}",
            "wrap fields that contain the delimiter, quotes or line breaks in double quotes",
            row=row, line=line, code="columns"))
    # Spreadsheets write line breaks inside cells as CR LF; training text uses LF.
    value = {name: (fields[i].replace("\r\n", "\n") if i < len(fields) else None) for i, name in enumerate(header)}
    return Record(row, line, value, None)


def read_text(src: Source) -> Records:
    """Plain text: paragraphs (separated by blank lines) are documents; without blank lines, lines are."""
    with src.open_text(errors="replace") as fh:
        head = fh.read(SNIFF_BYTES)
        fh.seek(0)
        paragraphs = re.search(r"\n[ \t\r]*\n\s*\S", head) is not None
        yield from (_paragraphs(fh) if paragraphs else _text_lines(fh))


def _text_lines(fh) -> Iterator[Record]:
    row = 0
    for line_no, line in enumerate(_bounded_lines(fh), 1):
        if isinstance(line, TooLong):
            row += 1
            yield Record(row, line_no, None, line.problem(row, line_no, "the line"))
            continue
        text = line.rstrip("\r\n").lstrip("\ufeff") if line_no == 1 else line.rstrip("\r\n")
        if text.strip():
            row += 1
            yield Record(row, line_no, text, None)


def _paragraphs(fh) -> Iterator[Record]:
    row, start, size = 0, 0, 0
    buf: list[str] = []
    for line_no, line in enumerate(_bounded_lines(fh), 1):
        if isinstance(line, TooLong) or size + len(line) > MAX_RECORD_BYTES:
            row += 1  # the paragraph so far and this line: one record too big to keep
            yield Record(row, start or line_no, None, TooLong(size + (line.size if isinstance(line, TooLong)
                                                                          else len(line))).problem(
                row, start or line_no, "the paragraph starting"))
            buf, size, start = [], 0, 0
            continue
        size += len(line)
        line = line.rstrip("\r\n")
        if line_no == 1:
            line = line.lstrip("\ufeff")
        if line.strip():
            if not buf:
                start = line_no
            buf.append(line)
        elif buf:
            row += 1
            yield Record(row, start, "\n".join(buf), None)
            buf, size = [], 0
    if buf:
        yield Record(row + 1, start, "\n".join(buf), None)


def read_parquet(src: Source, batch_size: int = 2048) -> Records:
    """Streamed in record batches through Arrow, so big files are never loaded whole."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(src.path)
    except Exception as e:  # pyarrow raises several types for damaged files
        raise DataError(f"{src.path}: not a readable Parquet file ({e})") from None
    yield from _arrow_batches(pf.iter_batches(batch_size=batch_size), src)


def read_arrow(src: Source, batch_size: int = 2048) -> Records:
    """A folder from datasets.save_to_disk: memory-mapped Arrow, read in batches (train split if several)."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(src.path))
    except Exception as e:  # damaged or foreign folders raise many types
        raise DataError(f"{src.path}: not a readable datasets folder ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else next(iter(ds))
        src.notes.append(f"the folder holds splits {sorted(ds)}; read '{split}'")
        ds = ds[split]
    yield from _arrow_batches(ds.data.to_batches(max_chunksize=batch_size), src)


def _arrow_batches(batches, src: Source) -> Iterator[Record]:
    row = 0
    try:
        for batch in batches:
            for value in batch.to_pylist():
                row += 1
                yield Record(row, None, value, None)
    except Exception as e:  # pyarrow raises OSError or ArrowInvalid for a damaged file
        src.notes.append(f"reading stopped after row {row}: the file is damaged ({e})")


def arrow_columns(src: Source) -> list[str]:
    """Column names straight from the schema (no rows read)."""
    if src.kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(src.path).names)
    return []


READERS: dict[str, Callable[[Source], Records]] = {
    "jsonl": read_jsonl, "json": read_json, "csv": read_csv, "tsv": read_tsv,
    "text": read_text, "parquet": read_parquet, "arrow": read_arrow,
}


def records(src: Source) -> Records:
    """All records of ``src`` in file order."""
    return READERS[src.kind](src)
