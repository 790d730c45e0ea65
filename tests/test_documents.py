"""A folder of documents as a dataset: each kind read or refused with its reason, cleaning, duplicates,
chunks within the length, the reader's limits, `data inspect DIR --json`, and a 2-step run with its
validation perplexity."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from docmake import write_docx, write_epub, write_odt, write_pdf, write_zip_bomb_docx
from test_train_worker import run_worker, stdout_events, tiny_recipe

from studio import evalreport, runs
from studio.data import DataError, documents, inspect, load_examples
from studio.data.tokens import load_tokenizer

CLI = [sys.executable, "-c", "import sys; from studio.cli import main; sys.exit(main())"]

CLAUSES = [
    "The tenant shall keep the premises in good repair and shall notify the landlord of any defect within seven "
    "days of its discovery, in writing, to the address given in the schedule.",
    "Rent is due on the first day of each month and is payable by bank transfer to the account the landlord "
    "names; a late payment carries interest at four percent above the base rate.",
    "The landlord shall insure the building against fire, flood and storm damage and shall show the tenant the "
    "policy on request, once in any twelve months.",
    "Either party may end this agreement by giving the other three months' notice in writing, and the deposit "
    "is returned within thirty days of the end of the tenancy.",
]


def _wrap(text: str, width: int = 78) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = ""
        line += (" " if line else "") + word
    return lines + [line]


def lease_pages() -> list[list[str]]:
    """Four pages, each with a running header and a page-number footer, one clause each; page 2's first line ends
    in a word hyphenated across the line break."""
    pages = []
    for n, clause in enumerate(CLAUSES, 1):
        body = _wrap(f"Clause {n}. {clause}")
        if n == 2:
            body = ["Rent is due on the first day of each month and is pay-", "able by bank transfer, clause 2."]
        pages.append(["ACME Property Ltd - Lease Agreement", "", *body, "", f"Page {n} of 4"])
    return pages


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("docs")
    write_pdf(d / "lease.pdf", lease_pages())
    write_pdf(d / "scan.pdf", [], image_only=2)
    write_docx(d / "policy.docx", ["Data retention policy. Records are kept for ten years after the last visit.",
                                   "Exceptions need the approval of the data protection officer."],
               table=[["Record", "Retention"], ["Clinical notes", "10 years"], ["Invoices", "7 years"]])
    write_odt(d / "memo.odt", ["Memo to all staff: the office closes at noon on Friday.", "Thank you."])
    write_epub(d / "book.epub", ["Chapter one: the sea was calm that morning.", "Chapter two: a storm came."])
    (d / "guide.md").write_text("# Guide\n\nInstall the studio, then open it.\n\n- step one\n- step two\n",
                                encoding="utf-8")
    (d / "web").mkdir()
    (d / "web" / "page.html").write_text(
        "<html><head><title>T</title><script>var secret = 1;</script></head><body><h1>Support</h1>"
        "<p>Restart the router and wait one minute.</p><table><tr><th>Code</th><th>Meaning</th></tr>"
        "<tr><td>E1</td><td>No signal</td></tr></table></body></html>", encoding="utf-8")
    (d / "broken.pdf").write_bytes((d / "lease.pdf").read_bytes()[:300])
    write_zip_bomb_docx(d / "bomb.docx", megabytes=64)
    (d / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0not really")
    return d


@pytest.fixture(scope="module")
def report(folder):
    return inspect(folder).to_dict()


def _file(report: dict, name: str) -> dict:
    return next(f for f in report["files"] if f["file"] == name)


@pytest.mark.platform  # also under Windows Python (make test-windows): the reader worker, its pipes and limits
def test_every_kind_is_read_or_refused_with_its_reason(report):
    assert report["format"] == "documents"
    assert sorted(f["file"] for f in report["files"]) == ["book.epub", "guide.md", "lease.pdf", "memo.odt",
                                                          "policy.docx", "web/page.html"]
    assert report["documents"] == 6
    skipped = {s["file"]: s["reason"] for s in report["skipped_files"]}
    assert set(skipped) == {"scan.pdf", "broken.pdf", "bomb.docx", "photo.jpg"}
    assert "no text layer" in skipped["scan.pdf"] and "OCR" in skipped["scan.pdf"]
    assert "not a readable PDF" in skipped["broken.pdf"]
    assert "zip bomb" in skipped["bomb.docx"]
    assert "not a document type" in skipped["photo.jpg"] and ".jpg" in skipped["photo.jpg"]
    assert report["skipped"] == 4 and report["usable"] == 6
    assert report["pages"] == 4 + 5  # the lease's four, one each for the others
    assert report["characters"] == sum(f["characters"] for f in report["files"]) > 0
    assert report["tokens"]["estimated"] is True and report["tokens"]["total"] > 0  # no model: said as an estimate
    assert report["chunks"] == 6


def test_cleaning_removes_running_lines_joins_hyphens_and_keeps_tables(report):
    lease = _file(report, "lease.pdf")
    text = lease["text"]
    assert "ACME Property" not in text and "Page 1 of 4" not in text and "of 4" not in text
    assert lease["header_footer_lines_removed"] == 8
    assert "payable by bank transfer" in text and "pay-" not in text
    # lines of one paragraph rejoined, clauses kept apart
    assert "in good repair and shall notify the landlord" in text
    assert text.count("\n\n") >= 3
    policy = _file(report, "policy.docx")["text"]
    assert "Record | Retention\nClinical notes | 10 years\nInvoices | 7 years" in policy
    page = _file(report, "web/page.html")["text"]
    assert "secret" not in page and "Code | Meaning\nE1 | No signal" in page
    assert _file(report, "memo.odt")["text"] == "Memo to all staff: the office closes at noon on Friday.\n\nThank you."
    assert "a storm came" in _file(report, "book.epub")["text"]


def test_exact_and_near_duplicate_passages_are_counted_and_dropped(tmp_path):
    para = "Patients must fast for eight hours before the procedure and bring a list of their medicines."
    (tmp_path / "a.md").write_text(f"{para}\n\nFirst document's own words stay here today.\n", encoding="utf-8")
    (tmp_path / "b.md").write_text(f"{para}\n\nAnother passage, said once, in the second file.\n", encoding="utf-8")
    near = para.replace("eight hours", "eight (8) hours").replace(" and ", "  and,  ").upper()  # case, digits,
    # punctuation and spacing differ
    (tmp_path / "c.txt").write_text(f"{near}\n", encoding="utf-8")
    (tmp_path / "d.txt").write_text(f"{para}\n", encoding="utf-8")  # nothing left once its duplicate is gone
    r = inspect(tmp_path).to_dict()
    assert (r["exact_duplicates"], r["near_duplicates"]) == (2, 1)
    assert any("repeated exactly" in n for n in r["notes"])
    texts = {f["file"]: f["text"] for f in r["files"]}
    assert para in texts["a.md"] and para not in texts["b.md"]
    assert "Another passage" in texts["b.md"]
    assert "c.txt" not in texts and "d.txt" not in texts
    assert {s["file"] for s in r["skipped_files"]} == {"c.txt", "d.txt"}


def test_chunks_respect_the_length_fall_on_boundaries_and_overlap(tiny_tokenizer_dir):
    tok = load_tokenizer(tiny_tokenizer_dir)
    paragraphs = [f"Paragraph {i}. " + " ".join(f"word{i}x{j}" for j in range(30)) + "." for i in range(12)]
    text = "\n\n".join(paragraphs)
    limit = 96
    pieces = documents.chunk(tok, text, limit)
    assert len(pieces) > 3
    sizes = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in pieces]
    assert max(sizes) <= limit + 1, sizes  # a cut re-tokenised may take one token more; chunk_limit leaves room
    assert all(p.startswith("Paragraph") or p.startswith("word") for p in pieces)  # boundaries, never mid-word
    words = text.split()
    for a, b in zip(pieces, pieces[1:]):  # each next chunk starts inside the previous one (the overlap)
        assert b.split()[0] in a.split(), (a[-80:], b[:80])
    covered = set(" ".join(pieces).split())
    assert covered == set(words)  # nothing lost
    # a whole training example: the last chunk of a document alone ends with the end-of-sequence token
    examples = documents.chunk_examples(tok, [{"text": text, "source": "x.md"}], seq_len=limit + 2)
    assert [e["eos"] for e in examples] == [False] * (len(examples) - 1) + [True]


@pytest.mark.platform  # Windows has no RLIMIT_AS: the memory limit is the studio's watch from outside
def test_the_reader_has_a_time_and_a_memory_limit_and_goes_on_after_either(tmp_path):
    big = tmp_path / "big.txt"
    big.write_bytes((b"word " * 20 + b"\n") * (1 << 20))  # 100 MiB of text
    long = tmp_path / "long.txt"
    long.write_bytes((b"word " * 20 + b"\n") * (1 << 18))  # 25 MiB: within the size limits, slow to answer
    ok = tmp_path / "ok.md"
    ok.write_bytes(b"still read afterwards\n")
    with documents.Extractor(time_limit=0.05) as ex:
        slow = ex.read(long)
        assert not slow["ok"] and "took longer than" in slow["reason"]
        assert ex.read(ok)["pages"] == ["still read afterwards\n"]  # a fresh worker took over
    with documents.Extractor(memory_mb=160) as ex:
        hungry = ex.read(big)
        assert not hungry["ok"] and "more than 160 MB of memory" in hungry["reason"]
        after = ex.read(ok)
        assert after["ok"], after


def test_an_empty_or_unreadable_folder_is_a_named_error(tmp_path):
    write_pdf(tmp_path / "scan.pdf", [], image_only=1)
    with pytest.raises(DataError, match="no document with text.*scan.pdf: no text layer"):
        load_examples(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.bin").write_bytes(b"\0\1")
    with pytest.raises(DataError, match="holds documents"):
        load_examples(other)


def test_data_inspect_json_on_a_folder_with_a_model(folder, tiny_model_dir):
    proc = subprocess.run([*CLI, "data", "inspect", str(folder), "--json", "--model", str(tiny_model_dir),
                           "--seq-len", "48"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["format"] == "documents" and r["documents"] == 6 and len(r["skipped_files"]) == 4
    assert r["tokens"]["estimated"] is False and r["tokens"]["max"] <= 48
    assert r["chunks"] == r["tokens"]["count"] == sum(f["chunks"] for f in r["files"]) > 6  # the lease needs several
    assert all(c["tokens"] <= 48 for c in r["chunk_preview"])
    text = subprocess.run([*CLI, "data", "inspect", str(folder)], capture_output=True, text=True, timeout=120).stdout
    assert "documents: 6 read, 4 skipped" in text and "scan.pdf: no text layer" in text


def test_a_two_step_run_on_a_folder_reports_validation_perplexity(folder, tiny_model_dir, chat_jsonl, tmp_path):
    recipe = tiny_recipe(tiny_model_dir, folder, max_steps=2)
    recipe.quant.mode = "none"
    recipe.data.val_fraction = 0.3  # of 6 documents: 2 held out whole
    recipe.data.mix, recipe.data.mix_ratio = str(chat_jsonl), 0.25
    run_dir = runs.create(recipe, tmp_path)
    proc = run_worker(run_dir)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    messages = [str(e.data.get("message", "")) for e in stdout_events(proc) if e.type == "log"]
    assert any("2 whole document(s) held out" in m for m in messages), messages
    assert any("data.mix:" in m and "chat row(s)" in m for m in messages), messages
    report = evalreport.read(run_dir)
    assert report["val_examples"] >= 2 and report["val_tokens"] > 0
    for who in ("base", "adapter"):
        assert math.isclose(report["perplexity"][who], math.exp(report["val_loss"][who]), rel_tol=1e-3)
    saved = json.loads((run_dir / "data_report.json").read_text(encoding="utf-8"))
    assert saved["format"] == "documents" and saved["documents"] == 6


@pytest.mark.platform  # the AES PDF needs the cryptography wheel in the Windows runtime too
def test_figures_equal_cells_and_real_world_shapes_are_kept(tmp_path):
    """Passages of figures are not near duplicates of each other; a table's equal neighbouring cells stay; an
    EPUB chapter in a subfolder with an escaped name, an unclosed <head>, paragraphs inside a cell, and an
    AES-encrypted PDF with an empty user password are all read."""
    import zipfile

    from pypdf import PdfReader, PdfWriter

    figures = ["2021 | 10 | 20 | 30 | 40 | 50 | 60 | 70 | 80", "2022 | 11 | 21 | 31 | 41 | 51 | 61 | 71 | 81"]
    (tmp_path / "figures.md").write_text("\n\n".join(figures) + "\n", encoding="utf-8")
    write_docx(tmp_path / "votes.docx", ["Votes by member."], table=[["Q1", "Yes", "Yes", "No"]])
    with zipfile.ZipFile(tmp_path / "book.epub", "w") as zf:
        zf.writestr("META-INF/container.xml", '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                    '<rootfiles><rootfile full-path="OPS/pkg/book.opf"/></rootfiles></container>')
        zf.writestr("OPS/pkg/book.opf", '<package xmlns="http://www.idpf.org/2007/opf"><manifest>'
                    '<item id="a" href="../text/chapter%201.xhtml#start"/><item id="b" href="gone.xhtml"/>'
                    '</manifest><spine><itemref idref="a"/><itemref idref="b"/></spine></package>')
        zf.writestr("OPS/text/chapter 1.xhtml", "<html><body><p>The first chapter.</p></body></html>")
    (tmp_path / "page.html").write_text("<html><head><title>T</title><body><p>Wrapped\nin the source</p>"
                                        "<pre>kept\nlines</pre><table><tr><td><p>one</p><p>two</p>"
                                        "</td><td>three</td></tr></table>", encoding="utf-8")
    write_pdf(tmp_path / "plain.pdf", [["A protected notice about parking."]])
    writer = PdfWriter(clone_from=PdfReader(tmp_path / "plain.pdf"))
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-128")
    with open(tmp_path / "protected.pdf", "wb") as fh:
        writer.write(fh)
    (tmp_path / "plain.pdf").unlink()
    r = inspect(tmp_path).to_dict()
    texts = {f["file"]: f["text"] for f in r["files"]}
    assert r["near_duplicates"] == 0 and texts["figures.md"] == "\n\n".join(figures)
    assert "Q1 | Yes | Yes | No" in texts["votes.docx"]
    assert texts["book.epub"] == "The first chapter."
    assert any("book.epub: 1 chapter(s)" in n and "gone.xhtml" in n for n in r["notes"])
    assert texts["page.html"] == "Wrapped in the source\n\nkept\nlines\n\none two | three"
    assert texts["protected.pdf"] == "A protected notice about parking."


def test_a_downloaded_dataset_folder_with_a_readme_is_not_documents(tmp_path):
    (tmp_path / "README.md").write_text("# My dataset\n\nRows of chats.\n", encoding="utf-8")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "a"}\n', encoding="utf-8")
    assert not documents.is_documents(tmp_path)
    with pytest.raises(DataError, match="pass the data file inside"):
        load_examples(tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need a privilege under Windows")
def test_links_are_named_not_followed(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "note.md").write_text("A note that is read once.\n", encoding="utf-8")
    (tmp_path / "sub" / "up").symlink_to(tmp_path)  # a loop: walking it would never end
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("Not in the folder.\n", encoding="utf-8")
    (tmp_path / "outside.txt").symlink_to(outside)
    r = inspect(tmp_path).to_dict()
    assert [f["file"] for f in r["files"]] == ["sub/note.md"]
    reasons = {s["file"]: s["reason"] for s in r["skipped_files"]}
    assert "a link to a folder, not followed" in reasons["sub/up"]
    assert "a link to a file outside the folder" in reasons["outside.txt"]
