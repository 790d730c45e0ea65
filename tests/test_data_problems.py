"""Every kind of problem is reported on the right line; bad rows never stop the import."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio.data import DataError, inspect, load_examples, split_examples

FIX = Path(__file__).parent / "fixtures" / "data"


def test_each_problem_kind_on_its_line():
    r = inspect(FIX / "broken.jsonl")
    got = [(p.row, p.line, p.code, p.field, p.severity) for p in r.problems]
    assert got == [
        (2, 2, "json", None, "error"),
        (3, 4, "empty_assistant", "messages[1].content", "error"),
        (4, 5, "not_ending_assistant", "messages", "error"),
        (5, 6, "unknown_role", "messages[1].role", "error"),
        (6, 7, "missing", "messages", "error"),
        (7, 8, "not_text", "messages[1].content", "error"),
        (8, 9, "duplicate", None, "warning"),
        (10, 11, "no_assistant", "messages", "error"),
    ]
    assert (r.rows, r.usable, r.skipped, r.duplicates) == (10, 3, 7, 1)
    assert all(p.message and p.hint for p in r.problems)
    assert "msgs" in r.problems[4].message  # says what the row has instead


def test_ten_percent_broken_lines_import_the_rest(tmp_path):
    path = tmp_path / "tenth.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(1, 201):
            line = json.dumps({"prompt": f"q{i}", "completion": f"a{i}"})
            fh.write((line[:-5] if i % 10 == 0 else line) + "\n")
    examples, report = load_examples(path)
    assert (report.rows, report.usable, report.skipped) == (200, 180, 20)
    assert [p.line for p in report.problems] == list(range(10, 201, 10))
    assert examples[9]["messages"][0]["content"] == "q11"
    assert report.groups() == [{"code": "json", "severity": "error", "field": None, "count": 20,
                                "example": report.problems[0].message, "hint": report.problems[0].hint}]


def test_row_level_problems_in_single_turn_formats(tmp_path):
    path = tmp_path / "alp.jsonl"
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": 7},
            {"instruction": "", "output": "d"}, {"instruction": "e"}, {"instruction": "f", "input": None, "output": "g"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    r = inspect(path)
    assert [(p.line, p.code, p.field) for p in r.problems] == [
        (2, "not_text", "output"), (3, "empty", "instruction"), (4, "missing", "output")]
    assert r.usable == 2


def test_trailing_commas_and_array_brackets_in_jsonl(tmp_path):
    path = tmp_path / "commas.jsonl"
    path.write_text('{"text": "a"},\n{"text": "b"},\n]\n', encoding="utf-8")
    r = inspect(path)
    assert (r.usable, r.skipped) == (2, 1)
    assert [(p.line, p.code, p.severity) for p in r.problems] == [
        (1, "trailing_comma", "warning"), (2, "trailing_comma", "warning"), (3, "json", "error")]


def test_invalid_utf8_line_is_one_problem(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes('{"text": "café"}\n'.encode() + b'{"text": "bad \xff\xfe"}\n{"text": "fine"}\n')
    r = inspect(path)
    assert (r.usable, [(p.line, p.code) for p in r.problems]) == (2, [(2, "encoding")])


def test_column_mapping_override(tmp_path):
    path = tmp_path / "custom.csv"
    path.write_text("ask,reply\nHi?,Hello.\nBye?,Ciao.\n", encoding="utf-8")
    with pytest.raises(DataError, match="ask, reply"):
        inspect(path)
    r = inspect(path, columns={"prompt": "ask", "completion": "reply"})
    assert (r.format, r.usable, r.column_map) == ("prompt_completion", 2, {"prompt": "ask", "completion": "reply"})
    r = inspect(path, fmt="question_answer", columns={"question": "ask", "answer": "reply"})
    assert r.format == "question_answer" and r.preview[1]["messages"][1]["content"] == "Ciao."
    with pytest.raises(DataError, match="needs column"):
        inspect(path, fmt="alpaca")


def test_messages_with_custom_turn_keys(tmp_path):
    path = tmp_path / "turns.jsonl"
    path.write_text(json.dumps({"dialog": [{"speaker": "user", "text": "x"}, {"speaker": "assistant", "text": "y"}]})
                    + "\n", encoding="utf-8")
    r = inspect(path, fmt="messages", columns={"messages": "dialog", "role": "speaker", "content": "text"})
    assert r.preview[0]["messages"] == [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]


def test_detection_confidence_falls_with_mixed_rows(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [{"prompt": f"p{i}", "completion": "c"} for i in range(3)] + [{"question": "q", "answer": "a"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    r = inspect(path)
    assert r.format == "prompt_completion" and r.confidence == 0.75
    assert r.detection == {"prompt_completion": 0.75, "question_answer": 0.25}
    assert r.problems[0].line == 4 and r.problems[0].code == "missing"


def test_fingerprint_follows_content_not_bytes(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"text": "x"}\n{"text": "y"}\n', encoding="utf-8")
    b.write_text('{ "text" : "x" }\r\n\n{"text": "y", "extra": 1}\n', encoding="utf-8")
    assert inspect(a).fingerprint == inspect(b).fingerprint
    b.write_text('{"text": "y"}\n{"text": "x"}\n', encoding="utf-8")
    assert inspect(a).fingerprint != inspect(b).fingerprint


def test_load_examples_with_nothing_usable_raises(tmp_path):
    path = tmp_path / "none.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "q"}]}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no usable rows out of 1"):
        load_examples(path)


def test_report_serves_the_training_worker():
    examples, report = load_examples(FIX / "broken.jsonl", "auto", None)
    d = report.to_dict()
    assert len(examples) == report.usable == d["usable"] == 3
    assert report["skipped"] == d["skipped"] == 7 and report.format == "messages"
    assert d["fingerprint"] == report.fingerprint and len(report.fingerprint) == 64
    json.dumps(d)  # JSON-ready


def test_split_is_seeded_and_reproducible():
    examples = [{"text": str(i)} for i in range(100)]
    train, val = split_examples(examples, 0.1, seed=7)
    assert (len(train), len(val)) == (90, 10)
    assert split_examples(examples, 0.1, seed=7) == (train, val)
    assert split_examples(examples, 0.1, seed=8)[1] != val
    assert sorted(train + val, key=lambda e: int(e["text"])) == examples
    assert split_examples(examples, 0.0, seed=7) == (examples, [])


def test_package_import_stays_light():
    code = ("import sys, studio.data, studio.commands.data; "
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'pyarrow', 'numpy', 'PIL') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_progress_callback_sees_growing_counts(tmp_path, monkeypatch):
    import studio.data as data

    monkeypatch.setattr(data, "PROGRESS_EVERY", 50)
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(120)), encoding="utf-8")
    seen = []
    data.inspect(path, progress=lambda r: seen.append(r.usable))
    assert seen == [50, 100]


def test_mapping_to_a_column_the_file_lacks(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("ask,reply\nHi?,Hello.\n", encoding="utf-8")
    with pytest.raises(DataError, match="needs column\\(s\\) completion"):
        inspect(path, fmt="prompt_completion", columns={"prompt": "ask", "completion": "answer"})


def test_unknown_turn_keys_get_a_mapping_suggestion(tmp_path):
    path = tmp_path / "dlg.jsonl"
    path.write_text(json.dumps({"dialog": [{"speaker": "user", "text": "x"}, {"speaker": "assistant", "text": "y"}]})
                    + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="--columns messages=dialog,role=speaker,content=text"):
        inspect(path)
