"""Attack class: one enormous record (a gzip bomb of a single line, a giant CSV cell or text line).

Memory is bounded by the record cap, not by the record: the over-long record is skipped while
streaming (decompressed as it is read) and reported with its line.
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio.data import inspect, sources
from studio.procs import worker_env

ROW = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
BIG = 256 << 20  # a single record of 256 MiB, about 250 KB compressed


def _gzip_bomb(path):
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write((ROW + "\n").encode())
        fh.write(b'{"text": "')
        chunk = b"a" * (8 << 20)
        for _ in range(BIG // len(chunk)):
            fh.write(chunk)
        fh.write(b'"}\n')
        fh.write((ROW + "\n").encode())
    return path


PEAK = """
import resource, subprocess, sys
out = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(out.returncode, peak, repr(out.stdout[-2000:]), repr(out.stderr[-2000:]), sep="\\n")
"""


def test_a_gzip_bomb_record_is_skipped_with_its_line_and_memory_stays_bounded(tmp_path):
    path = _gzip_bomb(tmp_path / "bomb.jsonl.gz")
    assert path.stat().st_size < 2 << 20
    exe = [str(Path(sys.executable).with_name("lora-studio")), "data", "inspect", str(path), "--json"]
    res = subprocess.run([sys.executable, "-c", PEAK, *exe], capture_output=True, text=True, env=worker_env(),
                         timeout=300)
    rc, peak, stdout, stderr = res.stdout.split("\n", 3)
    report = json.loads(eval(stdout))  # noqa: S307 - our own repr() of the child's output
    assert int(rc) == 0 and report["usable"] == 2, stderr
    problems = [p for p in report["problems"] if p.get("code") == "size"]
    assert len(problems) == 1 and problems[0]["line"] == 2
    assert "on line 2 is 256 MiB or more" in problems[0]["message"]
    print(f"peak RSS {int(peak) / 2**20:.0f} MiB")
    assert int(peak) < BIG, f"peak RSS {int(peak) / 2**20:.0f} MiB for a {BIG >> 20} MiB record"


@pytest.fixture
def small_cap(monkeypatch):
    monkeypatch.setattr(sources, "MAX_RECORD_BYTES", 1000)


def test_an_over_long_jsonl_line_is_named_and_the_rest_read(tmp_path, small_cap):
    path = tmp_path / "d.jsonl"
    path.write_text(ROW + "\n" + json.dumps({"text": "x" * 5000}) + "\n" + ROW + "\n")
    report = inspect(path, workers=1)
    assert report.usable == 2
    (p,) = [p for p in report.problems if p.code == "size"]
    assert p.line == 2 and "on line 2 is 5013 bytes or more" in p.message


def test_an_over_long_csv_row_and_text_line_are_named(tmp_path, small_cap):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("prompt,completion\nhi,hello\n" + "x" * 5000 + ",y\nq,a\n")
    report = inspect(csv_path, workers=1)
    assert report.usable == 2
    assert [(p.line, p.code) for p in report.problems if p.code == "size"] == [(3, "size")]
    txt = tmp_path / "d.txt"
    txt.write_text("first line\n" + "y" * 5000 + "\nthird line\n")
    report = inspect(txt, workers=1)
    assert report.usable == 2 and [p.line for p in report.problems if p.code == "size"] == [2]


def test_a_deeply_nested_record_in_a_json_array_is_named(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("[\n" + ROW + ",\n" + "[" * 100000 + "]" * 100000 + ",\n" + ROW + "\n]\n")
    report = inspect(path, workers=1)
    assert report.usable >= 1
    assert any("nested too deeply" in p.message for p in report.problems)


def test_a_too_big_json_document_says_convert_to_jsonl(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_JSON_DOCUMENT_BYTES", 100)
    path = tmp_path / "d.json"
    path.write_text("[" + ",".join([ROW] * 10) + "]")
    with pytest.raises(sources.DataError, match="convert it to JSONL"):
        inspect(path, workers=1)
