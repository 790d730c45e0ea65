"""Text out of one document file: PDF, DOCX, ODT, EPUB, HTML, Markdown, plain text.

Runs inside the extraction worker (``workers.extract_docs``), one file at a time, under a time and a
memory limit that the studio enforces from outside (``studio.data.documents``): a hostile or broken file
can only fail its own extraction. Nothing here cleans text; it returns what the file holds, page by
page, and ``studio.data.documents`` cleans, de-duplicates and chunks it.

Libraries, chosen for being well kept, permissively licensed and pure Python (or with wheels on every
platform the studio runs on):
- PDF: ``pypdf`` (BSD-3): text layer per page, no rendering. A page without a text layer that holds an
  image is counted as scanned; the studio does no OCR (no offline OCR library is part of it).
- DOCX: ``python-docx`` (MIT), paragraphs and tables in document order.
- ODT and EPUB are zip files of XML/XHTML: read with the standard library (``zipfile``, ``xml.etree``,
  ``html.parser``); no library adds enough to be worth a dependency for them.

Every zip container is checked before it is opened: a member that would expand past
``MAX_EXPANDED`` bytes, or at a ratio no real document has, is refused as a zip bomb.
"""
from __future__ import annotations

import posixpath
import re
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree

MAX_EXPANDED = 512 * 1024 * 1024  # all members of a DOCX/ODT/EPUB together, uncompressed
MAX_CHARS = 40_000_000  # about 10 million tokens, some 15,000 pages: the cleaning after it runs in the studio
MAX_TEXT_BYTES = 200 * 1024 * 1024  # an HTML, Markdown or text file
MAX_RATIO = 200  # uncompressed / compressed for any member over 1 MiB (real XML: 5 to 20)
KINDS = {".pdf": "pdf", ".docx": "docx", ".odt": "odt", ".epub": "epub", ".html": "html", ".htm": "html",
         ".xhtml": "html", ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text"}


class Refused(Exception):
    """The file cannot give text; the message is the reason, said to the user next to the file's name."""


def kind_of(path: str | Path) -> str | None:
    return KINDS.get(Path(path).suffix.lower())


def extract(path: str | Path) -> dict:
    """``{"kind", "pages": [text per page], "scanned_pages": N, "tables": N}`` (one page for unpaged kinds)."""
    path = Path(path)
    kind = kind_of(path)
    if kind is None:
        raise Refused(f"not a document type the studio reads ({path.suffix or 'no extension'})")
    if path.stat().st_size == 0:
        raise Refused("the file is empty")
    if kind in ("html", "markdown", "text") and path.stat().st_size > MAX_TEXT_BYTES:
        raise Refused(f"{path.stat().st_size / 2**20:.0f} MiB of text is more than one document the studio reads "
                      f"({MAX_TEXT_BYTES // 2**20} MiB); split it into several files")
    out = {"pdf": _pdf, "docx": _docx, "odt": _odt, "epub": _epub, "html": _html_file, "markdown": _plain,
           "text": _plain}[kind](path)
    chars = sum(len(p) for p in out["pages"])
    if chars > MAX_CHARS:
        raise Refused(f"it holds {chars:,} characters of text, more than one document the studio reads "
                      f"({MAX_CHARS:,}); split it into several files")
    out["kind"] = kind
    return out


# ------------------------------------------------------------------ PDF

def _pdf(path: Path) -> dict:
    from pypdf import PdfReader
    from pypdf.errors import (
        DependencyError,
        FileNotDecryptedError,
        LimitReachedError,
        PdfReadError,
        PdfStreamError,
        PyPdfError,
    )

    with open(path, "rb") as fh:
        if not fh.read(1024).lstrip().startswith(b"%PDF"):
            raise Refused("not a PDF (no %PDF header): the file is damaged or misnamed")
    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise Refused("the PDF is encrypted with a password; save an unprotected copy")
        pages, scanned = [], 0
        for page in reader.pages:
            text = page.extract_text() or ""
            if not text.strip() and _has_image(page):
                scanned += 1
            pages.append(text)
    except Refused:
        raise
    except FileNotDecryptedError:
        raise Refused("the PDF is encrypted with a password; save an unprotected copy") from None
    except DependencyError:  # AES needs the 'cryptography' package (pypdf[crypto], a dependency of the studio)
        raise Refused("the PDF is encrypted with AES and the 'cryptography' package is missing from the studio's "
                      "runtime; reinstall the runtime, or save an unprotected copy") from None
    except LimitReachedError:  # pypdf's own bound on what a stream may inflate to
        raise Refused("a compressed stream in it expands past pypdf's safety limit (a decompression bomb?); "
                      "refused") from None
    except (PyPdfError, PdfReadError, PdfStreamError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            AssertionError, RecursionError, OSError) as e:  # pypdf's errors on damaged files are of many types
        raise Refused(f"not a readable PDF ({type(e).__name__}: {_first_line(e)}); is the file complete?") from None
    if not pages:
        raise Refused("the PDF has no pages")
    return {"pages": pages, "scanned_pages": scanned, "tables": 0}


def _has_image(page) -> bool:
    try:
        resources = page.get("/Resources") or {}
        xobjects = resources.get("/XObject") or {}
        return any(xobjects[name].get_object().get("/Subtype") == "/Image" for name in xobjects)
    except Exception:  # a damaged resource dictionary: not a reason to refuse the page's text
        return False


# ------------------------------------------------------------------ zip containers

def check_zip(path: Path) -> zipfile.ZipFile:
    """The open zip file, after refusing a zip bomb by its members' declared sizes."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise Refused(f"not a readable {path.suffix.lstrip('.').upper()} (a damaged zip: {_first_line(e)})") from None
    total = 0
    for info in zf.infolist():
        total += info.file_size
        if info.file_size > (1 << 20) and info.file_size > MAX_RATIO * max(1, info.compress_size):
            zf.close()
            raise Refused(f"'{info.filename}' inside it would expand {info.file_size // max(1, info.compress_size)}"
                          " times (a zip bomb?); refused")
    if total > MAX_EXPANDED:
        zf.close()
        raise Refused(f"its contents would expand to {total / 2**20:.0f} MiB (a zip bomb?); refused")
    return zf


def _read_member(zf: zipfile.ZipFile, name: str, what: str) -> bytes:
    try:
        with zf.open(name) as fh:  # the declared size can lie: read at most what passed check_zip
            data = fh.read(MAX_EXPANDED + 1)
    except KeyError:
        raise Refused(f"not a valid {what}: '{name}' is missing") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:  # zlib.error is an Exception subclass
        raise Refused(f"not a readable {what} ({_first_line(e)})") from None
    except Exception as e:  # zlib.error (a corrupt deflate stream)
        raise Refused(f"not a readable {what} ({type(e).__name__}: {_first_line(e)})") from None
    if len(data) > MAX_EXPANDED:
        raise Refused(f"'{name}' expands past {MAX_EXPANDED // 2**20} MiB (a zip bomb?); refused")
    return data


# ------------------------------------------------------------------ DOCX

def _docx(path: Path) -> dict:
    check_zip(path).close()
    try:
        import docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph

        document = docx.Document(str(path))
        lines, tables = [], 0
        for block in document.iter_inner_content():  # paragraphs and tables in the order they appear
            if isinstance(block, Paragraph):
                lines.append(block.text)
            elif isinstance(block, Table):
                tables += 1  # one block, a line per row; python-docx repeats a merged cell in every column
                rows = []  # it spans: said once (the same underlying cell), equal neighbours kept
                for row in block.rows:
                    cells, seen = [], None
                    for cell in row.cells:
                        if cell._tc is not seen:
                            cells.append(cell.text)
                        seen = cell._tc
                    rows.append(cells)
                lines.append("\n".join(_table_rows(rows)))
    except Refused:
        raise
    except Exception as e:  # python-docx raises KeyError, ValueError, lxml errors, PackageNotFoundError...
        raise Refused(f"not a readable DOCX ({type(e).__name__}: {_first_line(e)})") from None
    return {"pages": ["\n".join(_paragraph_breaks(lines))], "scanned_pages": 0, "tables": tables}


def _paragraph_breaks(lines: list[str]) -> list[str]:
    """One paragraph per blank-line-separated block, as the cleaner expects."""
    out: list[str] = []
    for line in lines:
        out.append(line)
        out.append("")
    return out


def _table_rows(rows: list[list[str]]) -> list[str]:
    """A table kept as text: one line per row, cells joined by ' | '."""
    out = []
    for cells in rows:
        kept = [" ".join(c.split()) for c in cells]
        if any(kept):
            out.append(" | ".join(kept))
    return out


# ------------------------------------------------------------------ ODT

_ODF_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_ODF_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"


def _odt(path: Path) -> dict:
    zf = check_zip(path)
    with zf:
        data = _read_member(zf, "content.xml", "ODT")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as e:
        raise Refused(f"not a readable ODT (content.xml: {e})") from None
    lines: list[str] = []
    tables = _odf_blocks(root, lines)
    return {"pages": ["\n".join(lines)], "scanned_pages": 0, "tables": tables}


def _odf_blocks(node, lines: list[str]) -> int:
    tables = 0
    for child in node:
        tag = child.tag
        if tag in (f"{{{_ODF_TEXT}}}p", f"{{{_ODF_TEXT}}}h"):
            lines += [_odf_text(child), ""]
        elif tag == f"{{{_ODF_TABLE}}}table":
            tables += 1
            rows = [[_odf_cell(cell) for cell in row.iter(f"{{{_ODF_TABLE}}}table-cell")]
                    for row in child.iter(f"{{{_ODF_TABLE}}}table-row")]
            lines += ["\n".join(_table_rows(rows)), ""]
        else:
            tables += _odf_blocks(child, lines)
    return tables


def _odf_text(node) -> str:
    parts = [node.text or ""]
    for child in node:
        name = child.tag.rsplit("}", 1)[-1]
        if name == "s":  # <text:s text:c="3"/>: spaces
            parts.append(" " * int(child.get(f"{{{_ODF_TEXT}}}c", "1") or 1))
        elif name == "tab":
            parts.append("\t")
        elif name == "line-break":
            parts.append("\n")
        elif name != "note":  # footnote bodies would land mid-sentence
            parts.append(_odf_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _odf_cell(cell) -> str:
    return " ".join(_odf_text(p) for p in cell.iter(f"{{{_ODF_TEXT}}}p"))


# ------------------------------------------------------------------ EPUB

def _epub(path: Path) -> dict:
    zf = check_zip(path)
    with zf:
        container = _xml(_read_member(zf, "META-INF/container.xml", "EPUB"), "META-INF/container.xml")
        rootfile = next((el.get("full-path") for el in container.iter() if el.tag.endswith("rootfile")), None)
        if not rootfile:
            raise Refused("not a valid EPUB: META-INF/container.xml names no package file")
        opf = _xml(_read_member(zf, rootfile, "EPUB"), rootfile)
        base = posixpath.dirname(rootfile)
        manifest = {el.get("id"): el.get("href") for el in opf.iter() if el.tag.endswith("}item")}
        spine = [el.get("idref") for el in opf.iter() if el.tag.endswith("}itemref")]
        pages, tables, missing = [], 0, []
        names = set(zf.namelist())
        for idref in spine:
            href = manifest.get(idref)
            if not href:
                continue
            # an href is a URL relative to the package file: %-escapes, ./ and ../, a #fragment
            name = posixpath.normpath(posixpath.join(base, unquote(href.split("#", 1)[0])))
            if name not in names:
                missing.append(href)
                continue
            page = _html(_read_member(zf, name, "EPUB").decode("utf-8", "replace"))
            tables += page["tables"]
            pages.append(page["pages"][0])
    if not pages and missing:
        raise Refused(f"not a valid EPUB: its chapters are missing from it (first: {missing[0]})")
    return {"pages": ["\n\n".join(pages)], "scanned_pages": 0, "tables": tables,
            "notes": [f"{len(missing)} chapter(s) named in its spine are missing from it (first: {missing[0]})"]
            if missing else []}


def _xml(data: bytes, name: str):
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as e:
        raise Refused(f"not a valid EPUB ({name}: {e})") from None


# ------------------------------------------------------------------ HTML, Markdown, text

_BLOCK = {"p", "div", "section", "article", "main", "header", "footer", "li", "ul", "ol", "h1", "h2", "h3", "h4",
          "h5", "h6", "blockquote", "pre", "br", "hr", "table", "dl", "dt", "dd", "figure", "figcaption", "aside",
          "body", "address", "details", "summary"}
_SKIP = {"script", "style", "noscript", "template", "svg", "head", "nav", "iframe", "object"}


class _HTMLText(HTMLParser):
    """Text by block: each block's parts are joined once at the end (adding to a string would copy it each
    time: quadratic on a long page); a table's rows become lines, its cells joined by ' | '."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[list[str]] = [[]]
        self.skip = 0
        self.rows: list[list[str]] | None = None
        self.cell: list[str] | None = None
        self.tables = 0
        self.depth = 0  # of nested tables: an inner table's cells read as text of the outer cell
        self.pre = 0  # inside <pre>: line breaks are the text's; elsewhere they are only spacing

    def handle_starttag(self, tag, attrs):
        if tag == "body":  # a <head> (or anything skipped) never closed ends where the body starts
            self.skip = 0
        if tag == "pre":
            self.pre += 1
        if tag in _SKIP:
            self.skip += 1
        elif tag == "table":
            self.depth += 1
            if self.depth == 1:
                self.rows, self.tables = [], self.tables + 1
        elif self.depth == 1 and tag == "tr":
            assert self.rows is not None
            self.rows.append([])
        elif self.depth == 1 and tag in ("td", "th"):
            self.cell = []
        elif tag in _BLOCK:
            if self.depth == 0:
                self.blocks.append([])
            elif self.cell is not None:
                self.cell.append(" ")  # <p>one</p><p>two</p> in a cell: two words

    def handle_endtag(self, tag):
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "table" and self.depth:
            self.depth -= 1
            if self.depth == 0 and self.rows is not None:
                self.blocks += [["\n".join(_table_rows(self.rows))], []]
                self.rows = None
        elif self.depth == 1 and tag in ("td", "th") and self.cell is not None and self.rows is not None:
            if not self.rows:
                self.rows.append([])
            self.rows[-1].append("".join(self.cell))
            self.cell = None
        elif tag in _BLOCK:
            if self.depth == 0:
                self.blocks.append([])
            elif self.cell is not None:
                self.cell.append(" ")

    def handle_data(self, data):
        if self.skip:
            return
        if self.depth:
            if self.cell is not None:
                self.cell.append(data)
            return
        self.blocks[-1].append(data if self.pre else data.replace("\r", " ").replace("\n", " "))


def _html(text: str) -> dict:
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    lines = ["\n".join(" ".join(row.split()) for row in "".join(parts).split("\n")) for parts in parser.blocks]
    return {"pages": ["\n\n".join(line for line in lines if line.strip())], "scanned_pages": 0,
            "tables": parser.tables}


def _html_file(path: Path) -> dict:
    return _html(_decode(path.read_bytes()))


def _plain(path: Path) -> dict:
    data = path.read_bytes()
    if b"\x00" in data[:4096] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise Refused("binary data, not text (is it misnamed?)")
    return {"pages": [_decode(data)], "scanned_pages": 0, "tables": 0}


def _decode(data: bytes) -> str:
    for bom, enc in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            return data.decode(enc, "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return re.sub(r"\s+", " ", text.splitlines()[0])[:200] if text else type(e).__name__
