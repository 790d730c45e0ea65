"""Every container, encoding and format fixture is read, detected and normalised the same way."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from studio.data import DataError, formats, inspect, load_examples

FIX = Path(__file__).parent / "fixtures" / "data"


@pytest.mark.parametrize("name, reader, encoding, fmt, rows", [
    ("messages.jsonl", "jsonl", "utf-8", "messages", 4),
    ("messages_bom.jsonl", "jsonl", "utf-8-sig", "messages", 4),
    ("messages_utf16.jsonl", "jsonl", "utf-16", "messages", 4),
    ("messages_tools.jsonl", "jsonl", "utf-8", "messages", 2),
    ("sharegpt.json", "json", "utf-8", "sharegpt", 3),
    ("alpaca.json", "json", "utf-8", "alpaca", 3),
    ("alpaca.jsonl", "jsonl", "utf-8", "alpaca", 3),
    ("alpaca.jsonl.gz", "jsonl", "utf-8", "alpaca", 3),
    ("prompt_completion.csv", "csv", "utf-8", "prompt_completion", 3),
    ("prompt_completion.parquet", "parquet", "binary", "prompt_completion", 4),
    ("question_answer.tsv", "tsv", "utf-8", "question_answer", 3),
    ("text.txt", "text", "utf-8", "text", 3),
])
def test_fixture_is_detected_and_fully_usable(name, reader, encoding, fmt, rows):
    r = inspect(FIX / name)
    assert (r.reader, r.encoding, r.format, r.rows, r.usable, r.skipped) == (reader, encoding, fmt, rows, rows, 0)
    assert r.confidence == 1.0
    assert not [p for p in r.problems if p.severity == "error"]


def test_encodings_and_compression_normalise_to_identical_content():
    """BOM, UTF-16 and gzip change the bytes, never the examples (same fingerprint)."""
    plain = inspect(FIX / "messages.jsonl")
    assert inspect(FIX / "messages_bom.jsonl").fingerprint == plain.fingerprint
    assert inspect(FIX / "messages_utf16.jsonl").fingerprint == plain.fingerprint
    assert inspect(FIX / "alpaca.jsonl.gz").fingerprint == inspect(FIX / "alpaca.jsonl").fingerprint
    assert plain.preview[3]["messages"][1]["content"] == "Hallo und schöne Grüße — naïve café."


def test_formats_normalise_to_chat_messages():
    ex = load_examples(FIX / "alpaca.json")[0]
    assert ex[0]["messages"] == [
        {"role": "user", "content": "Summarise the sentence.\n\nThe cat sat on the mat all afternoon."},
        {"role": "assistant", "content": "A cat rested on a mat."}]
    assert ex[1]["messages"][0]["content"] == "Give a synonym for happy."  # empty input adds nothing
    share = load_examples(FIX / "sharegpt.json")[0]
    assert [m["role"] for m in share[1]["messages"]] == ["system", "user", "assistant"]
    qa = load_examples(FIX / "question_answer.tsv")[0]
    assert qa[2]["messages"][0]["content"] == "Is a tab\there?"
    assert load_examples(FIX / "text.txt")[0][1] == {
        "text": "Quantising the frozen base to four bits leaves room on the GPU\nfor longer sequences and larger batches."}


def test_tool_turns_are_kept_and_text_parts_joined():
    r = inspect(FIX / "messages_tools.jsonl")
    first = r.preview[0]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant", "tool", "assistant"]
    assert first[1]["tool_calls"] == [{"type": "function", "id": "c1",
                                       "function": {"name": "weather", "arguments": {"city": "Oslo"}}}]
    assert first[2] == {"role": "tool", "content": "{\"temp\": 3}", "tool_call_id": "c1"}
    assert r.preview[1]["messages"][0]["content"] == "Hello there"
    assert r.problems == [] and r.tool_rows == 1


def test_csv_quoted_newlines_keep_line_numbers(tmp_path):
    r = inspect(FIX / "prompt_completion.csv")
    assert [row["row"] for row in r.preview] == [1, 2, 3]
    assert r.preview[0]["messages"][1]["content"] == "Soft rain on the roof\nthe gutters hum a low song\nsleep comes easily"
    assert r.preview[2]["messages"][0]["content"] == 'He said "yes".'
    path = tmp_path / "bad.csv"
    path.write_text('prompt,completion\n"multi\nline",ok\nb,c\n"x",y\nd,e\nf,g,h\n', encoding="utf-8")
    r = inspect(path)
    assert [(p.row, p.line, p.code) for p in r.problems] == [(5, 7, "columns")]
    assert (r.usable, r.skipped) == (4, 1)


def test_text_paragraphs_carry_their_first_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("first para\nstill first\n\n\nsecond\n\nthird\n", encoding="utf-8")
    path.write_text(path.read_text() + "missing: trailing\n")
    r = inspect(path)
    assert [(x["row"], x["text"]) for x in r.preview] == [
        (1, "first para\nstill first"), (2, "second"), (3, "third\nmissing: trailing")]
    lines = tmp_path / "lines.txt"
    lines.write_text("doc one\ndoc two\n", encoding="utf-8")
    assert [x["text"] for x in inspect(lines).preview] == ["doc one", "doc two"]


def test_excel_csv_with_bom_crlf_semicolons_and_cp1252(tmp_path):
    excel = tmp_path / "export.csv"
    excel.write_bytes(b"\xef\xbb\xbfInstruction ;Input;Output\r\nSay hi;;Hi!\r\n\"Two\r\nlines\";x;\"caf\xc3\xa9\"\r\n;;\r\n")
    r = inspect(excel)
    assert (r.format, r.usable, r.rows) == ("alpaca", 2, 2)
    assert r.preview[1]["messages"] == [{"role": "user", "content": "Two\nlines\n\nx"},
                                        {"role": "assistant", "content": "café"}]
    legacy = tmp_path / "legacy.csv"
    legacy.write_bytes("question,answer\nPrice?,5 \u20ac\n".encode("cp1252"))
    r = inspect(legacy)
    assert r.encoding == "cp1252" and r.preview[0]["messages"][1]["content"] == "5 \u20ac"
    assert any("Windows-1252" in n for n in r.notes)


def test_json_array_recovers_after_a_broken_record(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": "c", "completion": },\n'
                    '  {"prompt": "d", "completion": "e"}\n]\n', encoding="utf-8")
    r = inspect(path)
    assert (r.rows, r.usable, r.skipped) == (3, 2, 1)
    assert (r.problems[0].row, r.problems[0].line, r.problems[0].code) == (2, 3, "json")
    assert [row["row"] for row in r.preview] == [1, 3]


def test_pretty_printed_objects_in_a_jsonl_named_file(tmp_path):
    path = tmp_path / "pretty.jsonl"
    path.write_text('{\n "text": "one"\n}\n{\n "text": "two"\n}\n', encoding="utf-8")
    r = inspect(path)
    assert (r.format, r.usable) == ("text", 2) and [p["row"] for p in r.preview] == [1, 2]


def test_save_to_disk_folder_reads_the_train_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(x) for x in (FIX / "messages.jsonl").read_text(encoding="utf-8").splitlines()]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                               "test": datasets.Dataset.from_list(rows[:1])})
    dd.save_to_disk(str(tmp_path / "ds"))
    r = inspect(tmp_path / "ds")
    assert (r.reader, r.format, r.usable) == ("arrow", "messages", 4)
    assert r.fingerprint == inspect(FIX / "messages.jsonl").fingerprint
    assert any("'train'" in n for n in r.notes)


@pytest.mark.parametrize("content, name, words", [
    (None, "missing.jsonl", "no such file"),
    (b"", "empty.jsonl", "empty"),
    (b"PK\x03\x04", "sheet.xlsx", "CSV UTF-8"),
    (b"not gzip", "data.jsonl.gz", "not gzip"),
    (b'{"foo": 1, "bar": 2}\n{"foo": 3, "bar": 4}\n', "odd.jsonl", "--format"),
])
def test_unreadable_files_raise_one_line_errors(tmp_path, content, name, words):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as e:
        inspect(path)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_truncated_gzip_keeps_the_rows_before_the_damage(tmp_path):
    rows = "".join(json.dumps({"text": f"document {i} {hashlib.sha256(str(i).encode()).hexdigest()}"}) + "\n"
                   for i in range(3000))
    data = gzip.compress(rows.encode(), mtime=0)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    r = inspect(path)
    assert 0 < r.usable < 3000 and r.skipped <= 1 and any("damaged or cut short" in n for n in r.notes)


def test_user_files_are_never_modified():
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in FIX.iterdir()}
    mtimes = {p.name: p.stat().st_mtime_ns for p in FIX.iterdir()}
    for p in FIX.iterdir():
        if not p.name.startswith("_"):
            try:
                inspect(p)
            except DataError:
                pass
    assert before == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in FIX.iterdir()}
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in FIX.iterdir()}


def test_format_registry_lists_the_contract_names():
    assert list(formats()) == ["messages", "sharegpt", "alpaca", "prompt_completion", "question_answer",
                               "preference", "prompts", "image_text", "text"]
    assert all(isinstance(v, str) and v for v in formats().values())


@pytest.mark.parametrize("name, content, fmt, usable", [
    ("cr.jsonl", b'{"text": "a"}\r{"text": "b"}\r', "text", 2),  # classic Mac line endings
    ("joined.jsonl", b'{"text": "a"}\n\xef\xbb\xbf{"text": "b"}\n', "text", 2),  # BOM of a second file
    ("byid.json", b'{"1": {"prompt": "a", "completion": "b"}, "2": {"prompt": "c", "completion": "d"}}',
     "prompt_completion", 2),
    ("unicode.txt", "instruction\toutput\r\nSay hi\tHi\r\n".encode("utf-16"), "alpaca", 1),  # Excel Unicode Text
    ("named.jsonl", b"prompt,completion\na,b\n", "prompt_completion", 1),  # CSV behind a .jsonl name
])
def test_messy_files_others_write(tmp_path, name, content, fmt, usable):
    path = tmp_path / name
    path.write_bytes(content)
    r = inspect(path)
    assert (r.format, r.usable, r.skipped) == (fmt, usable, 0)


def test_records_that_are_not_objects_and_binary_files_are_refused(tmp_path):
    (tmp_path / "pairs.json").write_text('[["a", "b"], ["c", "d"]]', encoding="utf-8")
    with pytest.raises(DataError, match="not objects with named columns"):
        inspect(tmp_path / "pairs.json")
    (tmp_path / "blob.jsonl").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match="binary file"):
        inspect(tmp_path / "blob.jsonl")


def test_csv_unclosed_quote_is_named(tmp_path):
    path = tmp_path / "unclosed.csv"
    path.write_text('prompt,completion\na,b\n"c,d\ne,f\ng,h\n', encoding="utf-8")
    r = inspect(path)
    (p,) = r.problems
    assert (p.row, p.line, p.code, r.usable) == (2, 3, "csv", 1) and "lines 3-5" in p.message


def test_pipes_are_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        inspect(fifo)
