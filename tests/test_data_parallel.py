"""The multi-process pass over a big JSONL file gives exactly the serial report."""
from __future__ import annotations

import json

from studio.data import inspect, parallel


def _messy_jsonl(path, n: int = 3000) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            row = {"messages": [{"role": "user", "content": f"q{i % 700}"},
                                {"role": "assistant", "content": f"a{i % 700}" if i % 97 else ""}]}
            row.update(id=i, tag="bad" if i % 7 == 0 else "good")  # an unused column and a label filter
            if i % 11 == 0:  # tool calls and results
                row["messages"][1:1] = [{"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "f", "arguments": {"i": i}}}]}, {"role": "tool", "content": "r"}]
            if i % 13 == 0:  # an image with its marker
                row["images"], row["messages"][0]["content"] = ["x.jpg"], "<image>" + row["messages"][0]["content"]
            line = json.dumps(row)
            if i % 101 == 0:
                line = line[:-3]  # broken JSON
            elif i % 53 == 0:
                line += ","  # warning, row kept
            fh.write(line + "\n" + ("\n" if i % 211 == 0 else ""))


def test_parallel_report_equals_serial(tmp_path, monkeypatch):
    path = tmp_path / "big.jsonl"
    _messy_jsonl(path)
    from PIL import Image

    Image.new("RGB", (5, 4), "blue").save(tmp_path / "x.jpg", "JPEG")  # the rows' image, beside the file
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    serial = inspect(path, workers=1, preview_rows=7).to_dict()
    calls = []
    real = parallel.inspect_parallel
    monkeypatch.setattr(parallel, "inspect_parallel", lambda *a, **k: calls.append(a) or real(*a, **k))
    multi = inspect(path, workers=3, preview_rows=7).to_dict()
    assert len(calls) == 1
    assert serial["duplicates"] > 0 and serial["skipped"] > 0 and serial["warnings"] > serial["duplicates"]
    assert serial["filtered"] > 0 and serial["tool_rows"] > 0 and serial["unused_columns"]["id"] > 2000
    assert serial["column_map"]["images"] == "images" and serial["images"] > 100
    assert serial["image_sizes"]["max_width"] == 5 and any("image(s) in" in n for n in serial["notes"])
    assert multi == serial


def test_ranges_cut_at_line_starts(tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"".join(b'{"text": "%d"}\n' % i for i in range(1000)))
    cuts = parallel.ranges(path, 4)
    data = path.read_bytes()
    assert cuts[0][0] == 0 and cuts[-1][1] == len(data)
    assert all(a == 0 or data[a - 1:a] == b"\n" for a, _ in cuts)
    assert all(b == c for (_, b), (c, _) in zip(cuts, cuts[1:]))
