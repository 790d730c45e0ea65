"""Image datasets (vision fine-tuning): each layout keeps its images as ``<image>`` markers plus ``images``
(absolute paths) and ``image_sizes``; every image is opened and decoded in full, and what cannot be used is
a row problem naming the row and the file. Images are made here with Pillow, a few pixels each."""
from __future__ import annotations

import base64
import csv
import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from studio import paths
from studio.cli import main
from studio.data import DataError, images, inspect, load_examples, strip_images


def _png(path: Path, size=(3, 2), color="red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "PNG")
    return path


def _noisy(fmt: str, size=(32, 32)) -> bytes:
    """An image whose pixels do not compress away, so cutting the file cuts pixels."""
    img = Image.frombytes("RGB", size, bytes((i * 37 + i // 7) % 256 for i in range(size[0] * size[1] * 3)))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (the pixels are never there)."""
    buf = io.BytesIO()
    Image.new("1", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _problems(report) -> list[tuple]:
    return [(p.row, p.code, p.field) for p in report.problems]


def _turn(role: str, content) -> dict:
    return {"role": role, "content": content}


# ------------------------------------------------------------------ layouts

def test_message_parts_with_every_image_key_resolve_against_the_file(tmp_path, monkeypatch):
    data = tmp_path / "set"
    for name, size in (("a.png", (3, 2)), ("pics/b.png", (5, 4)), ("c.png", (2, 2)), ("d.png", (7, 1)),
                       ("e.png", (1, 6))):
        _png(data / name, size)
    path = _jsonl(data / "chat.jsonl", [
        {"messages": [_turn("user", [{"type": "image", "image": "a.png"}, {"type": "text", "text": "What is in "},
                                     {"type": "image_url", "image_url": {"url": "pics/b.png"}},
                                     {"type": "text", "text": "?"}]),
                      _turn("assistant", "Two squares.")]},
        {"messages": [_turn("user", [{"type": "image_url", "image_url": "c.png"}, {"type": "text", "text": "And?"}]),
                      _turn("assistant", "A square."),
                      _turn("user", [{"type": "image", "url": "d.png"}, {"type": "image", "path": str(data / "e.png")}]),
                      _turn("assistant", "A line and a column.")]}])
    monkeypatch.chdir(tmp_path)  # relative paths are read from the dataset file's folder, not the working one
    examples, report = load_examples(path)
    one, two = examples
    assert report.format == "messages" and (report.usable, report.skipped, report.images) == (2, 0, 5)
    assert one["messages"][0]["content"] == "<image>What is in <image>?"
    assert one["images"] == [str(data / "a.png"), str(data / "pics" / "b.png")]
    assert one["image_sizes"] == [[3, 2], [5, 4]]
    assert [m["content"] for m in two["messages"]] == ["<image>And?", "A square.", "<image><image>",
                                                       "A line and a column."]
    assert two["images"] == [str(data / n) for n in ("c.png", "d.png", "e.png")]
    assert two["image_sizes"] == [[2, 2], [7, 1], [1, 6]]
    assert report.image_sizes == {"count": 5, "rows": 2, "min_width": 1, "median_width": 3, "max_width": 7,
                                  "min_height": 1, "median_height": 2, "max_height": 6}
    for ex in examples:
        assert sum(m["content"].count("<image>") for m in ex["messages"]) == len(ex["images"])


def test_placeholder_parts_take_their_images_from_the_images_column(tmp_path):
    _png(tmp_path / "x.png", (4, 4))
    _png(tmp_path / "y.png", (6, 2))
    path = _jsonl(tmp_path / "trl.jsonl", [{
        "messages": [_turn("user", [{"type": "image"}, {"type": "text", "text": "Compare with "}, {"type": "image"}]),
                     _turn("assistant", "The second is wider.")],
        "images": ["x.png", "y.png"]}])
    (ex,), report = load_examples(path)
    assert ex["messages"][0]["content"] == "<image>Compare with <image>"
    assert ex["images"] == [str(tmp_path / "x.png"), str(tmp_path / "y.png")]
    assert ex["image_sizes"] == [[4, 4], [6, 2]] and report.column_map["images"] == "images"


def test_llava_placeholders_with_an_images_column_and_a_count_mismatch(tmp_path):
    _png(tmp_path / "img" / "1.png")
    _png(tmp_path / "img" / "2.png")
    rows = [{"id": "ok", "conversations": [{"from": "human", "value": "<image>\nWhat is this?"},
                                           {"from": "gpt", "value": "Red."}], "images": ["img/1.png"]},
            {"id": "two", "conversations": [{"from": "human", "value": "<image> then <image>: which is redder?"},
                                            {"from": "gpt", "value": "Same."}], "images": ["img/1.png", "img/2.png"]},
            {"id": "bad", "conversations": [{"from": "human", "value": "<image><image> Which?"},
                                            {"from": "gpt", "value": "Left."}], "images": ["img/1.png"]}]
    path = tmp_path / "llava.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    r = inspect(path, preview_rows=5)
    assert (r.format, r.usable, r.skipped, r.images) == ("sharegpt", 2, 1, 3)
    assert r.preview[0]["messages"][0]["content"] == "<image>\nWhat is this?"
    assert r.preview[1]["images"] == [str(tmp_path / "img" / "1.png"), str(tmp_path / "img" / "2.png")]
    (bad,) = r.problems
    assert (bad.row, bad.code, bad.field) == (3, "image_count", "images")
    assert bad.message == "the text holds 2 <image> marker(s) but column 'images' lists 1 image(s)"
    assert "make the counts match" in bad.hint


def test_a_lone_image_without_marker_goes_first_in_the_user_turn_with_one_note(tmp_path):
    _png(tmp_path / "cat.png")
    rows = [{"image": "cat.png", "conversations": [{"from": "system", "value": "Be brief."},
                                                   {"from": "human", "value": f"Question {i}?"},
                                                   {"from": "gpt", "value": "A cat."}]} for i in range(3)]
    path = tmp_path / "single.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    r = inspect(path, preview_rows=3)
    assert r.usable == 3 and r.images == 3
    assert [m["content"] for m in r.preview[0]["messages"]] == ["Be brief.", "<image>\nQuestion 0?", "A cat."]
    placed = [n for n in r.notes if "no <image> marker" in n]
    assert placed == ["3 row(s) have one image and no <image> marker: it is placed at the start of the first "
                      "user turn, as LLaVA-style trainers do"]
    assert not [p for p in r.problems if p.code.startswith("image")]


def test_plain_image_and_text_columns_in_csv_and_jsonl(tmp_path):
    _png(tmp_path / "photos" / "p.png", (8, 5))
    with (tmp_path / "vqa.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "question", "answer"])
        w.writerow(["photos/p.png", "What shape?", "A rectangle."])
        w.writerow(["photos/p.png", "What colour?", "Red."])
    r = inspect(tmp_path / "vqa.csv", preview_rows=2)
    assert (r.format, r.confidence, r.usable, r.images) == ("question_answer", 1.0, 2, 2)
    assert [m["content"] for m in r.preview[0]["messages"]] == ["<image>\nWhat shape?", "A rectangle."]
    assert r.preview[0]["images"] == [str(tmp_path / "photos" / "p.png")] and r.preview[0]["image_sizes"] == [[8, 5]]
    assert r.column_map == {"question": "question", "answer": "answer", "images": "image"} and not r.unused_columns
    assert r.duplicates == 0

    captions = _jsonl(tmp_path / "captions.jsonl", [{"image": "photos/p.png", "caption": "A red rectangle."},
                                                    {"image": "photos/p.png", "caption": "Red."}])
    r = inspect(captions, preview_rows=2)
    assert (r.format, r.usable, r.images) == ("image_text", 2, 2)
    assert [m["content"] for m in r.preview[0]["messages"]] == ["<image>", "A red rectangle."]
    r = inspect(_jsonl(tmp_path / "text.jsonl", [{"image": "photos/p.png", "text": "Red."}]))
    assert (r.format, r.confidence) == ("image_text", 1.0)  # text beside an image is its caption
    r = inspect(_jsonl(tmp_path / "asked.jsonl", [{"img": "photos/p.png", "prompt": "Colour?", "caption": "Red."}]),
                "image_text", {"images": "img"}, preview_rows=1)
    assert [m["content"] for m in r.preview[0]["messages"]] == ["<image>\nColour?", "Red."]


def test_parquet_image_structs_with_bytes_go_to_the_cache_once(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    png = _noisy("PNG", (6, 3))
    _png(tmp_path / "local.png", (2, 9))
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([{"bytes": png, "path": "named.jpg"}, {"bytes": png, "path": "again.jpg"},
                           {"bytes": None, "path": "local.png"}], type=kind),
        "question": ["Which?", "Again?", "Tall?"], "answer": ["This.", "Yes.", "Very."]})
    path = tmp_path / "vqa.parquet"
    pq.write_table(table, path)
    before = sorted(p.name for p in tmp_path.iterdir())
    examples, r = load_examples(path)
    assert (r.reader, r.format, r.usable, r.images) == ("parquet", "question_answer", 3, 3)
    digest = __import__("hashlib").sha256(png).hexdigest()
    cached = paths.data_dir() / "image_cache" / f"{digest}.png"  # the real format names it, not 'named.jpg'
    assert examples[0]["images"] == [str(cached)] and examples[1]["images"] == [str(cached)]
    assert cached.read_bytes() == png and examples[0]["image_sizes"] == [[6, 3]]
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # written once, no temp file left
    assert examples[2]["images"] == [str(tmp_path / "local.png")] and examples[2]["image_sizes"] == [[2, 9]]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written beside the user's files


def test_data_uri_is_decoded_into_the_cache(tmp_path):
    jpeg = _noisy("JPEG", (5, 5))
    uri = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    path = _jsonl(tmp_path / "uri.jsonl", [
        {"messages": [_turn("user", [{"type": "image_url", "image_url": {"url": uri}},
                                     {"type": "text", "text": "Noise?"}]), _turn("assistant", "Yes.")]}])
    (ex,), _ = load_examples(path)
    assert Path(ex["images"][0]).parent == paths.data_dir() / "image_cache"
    assert Path(ex["images"][0]).suffix == ".jpg" and ex["image_sizes"] == [[5, 5]]


# ------------------------------------------------------------------ what cannot be used

def test_each_broken_image_is_a_row_error_naming_the_row_and_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # someone else's setting does not hide a cut
    good = _png(tmp_path / "good.png")
    (tmp_path / "notes.png").write_text("these are notes, not pixels", encoding="utf-8")
    png, jpeg = _noisy("PNG"), _noisy("JPEG")
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) - 200])
    (tmp_path / "big.png").write_bytes(_bomb_png(9000, 9000))  # over our limit, under Pillow's
    (tmp_path / "bigger.png").write_bytes(_bomb_png(10000, 10000))  # Pillow warns
    (tmp_path / "huge.png").write_bytes(_bomb_png(20000, 20000))  # Pillow refuses
    refs = ["good.png", "absent.png", "notes.png", "cut.png", "cut.jpg", "big.png", "bigger.png", "huge.png",
            "http://example.com/cat.png", "https://example.com/dog.jpg", "ftp://example.com/x.png",
            "s3://bucket/y.png"]
    rows = [{"image": ref, "question": f"q{i}", "answer": "a"} for i, ref in enumerate(refs)]
    r = inspect(_jsonl(tmp_path / "rows.jsonl", rows), preview_rows=1)
    assert (r.usable, r.skipped, r.images) == (1, len(refs) - 1, 1)
    assert r.preview[0]["images"] == [str(good)]
    assert [(p.row, p.line, p.code) for p in r.problems] == [
        (2, 2, "image_missing"), (3, 3, "image_invalid"), (4, 4, "image_truncated"), (5, 5, "image_truncated"),
        (6, 6, "image_too_large"), (7, 7, "image_too_large"), (8, 8, "image_too_large"),
        (9, 9, "image_remote"), (10, 10, "image_remote"), (11, 11, "image_remote"), (12, 12, "image_remote")]
    by_row = {p.row: p for p in r.problems}
    for row, name in ((2, "absent.png"), (3, "notes.png"), (4, "cut.png"), (5, "cut.jpg"), (6, "big.png"),
                      (7, "bigger.png"), (8, "huge.png")):
        assert str(tmp_path / name) in by_row[row].message and by_row[row].field == "image"
    assert by_row[2].message.endswith("does not exist") and "fix the path" in by_row[2].hint
    assert "is not a PNG, JPEG, WebP, GIF or BMP image" in by_row[3].message and "convert it" in by_row[3].hint
    assert "is truncated" in by_row[4].message and "in full" in by_row[4].hint
    assert "9000x9000" in by_row[6].message and "too large" in by_row[6].message and "scale" in by_row[6].hint
    assert "400,000,000 pixels" in by_row[8].message
    assert "http://example.com/cat.png" in by_row[9].message and "over the network" in by_row[9].message
    assert "download the image" in by_row[9].hint
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the check put the caller's setting back


def test_a_bomb_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    (tmp_path / "big.png").write_bytes(_bomb_png(9000, 9000))
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded a bomb"))
    with pytest.raises(DataError, match=r"big.png is too large \(9000x9000"):
        load_examples(_jsonl(tmp_path / "b.jsonl", [{"image": "big.png", "question": "q", "answer": "a"}]))


def test_a_repeated_image_is_decoded_once_and_again_after_it_changes(tmp_path, monkeypatch):
    img = _png(tmp_path / "same.png", (3, 3))
    calls = []
    real = images._verify
    monkeypatch.setattr(images, "_verify", lambda opener, what: calls.append(what) or real(opener, what))
    path = _jsonl(tmp_path / "many.jsonl", [{"image": "same.png", "question": f"q{i}", "answer": "a"}
                                            for i in range(50)])
    assert load_examples(path)[1].images == 50
    assert calls == [f"image file {img}"]
    _png(img, (4, 4), "blue")  # another size and time: checked again
    examples, _ = load_examples(path)
    assert len(calls) == 2 and examples[0]["image_sizes"] == [[4, 4]]


def test_images_in_parts_and_in_the_column_at_once_are_an_error(tmp_path):
    _png(tmp_path / "a.png")
    path = _jsonl(tmp_path / "both.jsonl", [
        {"messages": [_turn("user", [{"type": "image", "image": "a.png"}, {"type": "text", "text": "?"}]),
                      _turn("assistant", "!")], "images": ["a.png"]},
        {"messages": [_turn("user", [{"type": "image"}, {"type": "text", "text": "?"}]), _turn("assistant", "!")]}])
    r = inspect(path)
    assert _problems(r) == [(1, "image_count", "images"), (2, "image_count", "images")]
    assert r.problems[0].message == "the turns name 1 image(s) and column 'images' lists 1 more"
    assert r.problems[1].message == "the text holds 1 <image> marker(s) but column 'images' lists 0 image(s)"
    alone = inspect(_jsonl(tmp_path / "alone.jsonl", [
        {"messages": [_turn("user", "<image> What?"), _turn("assistant", "!")]}]))
    assert _problems(alone) == [(1, "image_count", "content")]
    assert alone.problems[0].message == "the text holds 1 <image> marker(s) but the row gives 0 image(s)"


# ------------------------------------------------------------------ report, CLI, text models

def test_data_inspect_json_and_text_say_how_many_images(tmp_path, capsys):
    _png(tmp_path / "a.png", (10, 20))
    _png(tmp_path / "b.png", (30, 40))
    path = _jsonl(tmp_path / "vqa.jsonl", [{"images": "a.png", "question": "q1", "answer": "a"},
                                           {"images": ["a.png", "b.png"], "question": "<image> q2 <image>",
                                            "answer": "b"},
                                           {"images": ["gone.png"], "question": "q3", "answer": "c"}])
    code = main(["data", "inspect", str(path), "--json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["images"] == 3 and (d["usable"], d["skipped"]) == (2, 1)
    assert d["image_sizes"]["max_width"] == 30 and d["image_sizes"]["max_height"] == 40
    assert d["preview"][1]["images"] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert d["problems"][0]["code"] == "image_missing" and "gone.png" in d["problems"][0]["message"]
    code = main(["data", "inspect", str(path)])
    out = capsys.readouterr().out
    assert code == 0 and "  images     3 in 2 row(s), checked; largest 30x40, median 10x20" in out
    assert "gone.png does not exist" in out


def test_same_text_with_other_images_is_not_a_duplicate(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png", color="blue")
    path = _jsonl(tmp_path / "d.jsonl", [{"image": n, "question": "Colour?", "answer": "?"}
                                         for n in ("a.png", "b.png", "a.png")])
    r = inspect(path)
    assert r.duplicates == 1 and [(p.row, p.code) for p in r.problems] == [(3, "duplicate")]


def test_strip_images_gives_a_text_copy_and_leaves_the_example(tmp_path):
    _png(tmp_path / "a.png")
    path = _jsonl(tmp_path / "s.jsonl", [{"image": "a.png", "question": "What?", "answer": "Red."},
                                         {"question": "Plain?", "answer": "Yes."}])
    (vision, plain), _ = load_examples(path)
    text = strip_images(vision)
    assert text == {"messages": [_turn("user", "What?"), _turn("assistant", "Red.")]}
    assert vision["messages"][0]["content"] == "<image>\nWhat?" and vision["images"]  # untouched
    assert strip_images(plain) is plain and "images" not in plain


def test_formats_that_run_programs_or_decode_slowly_network_shares_huge_uris_and_images_outside_user_turns(
        tmp_path, monkeypatch):
    """An EPS renamed .png would make Pillow start Ghostscript and a TIFF decodes through libtiff: only PNG, JPEG,
    WebP, GIF and BMP are opened, whatever the name says. A Windows network share would connect to another machine.
    A data: URI is bounded before it is decoded. An image in an assistant or system turn is refused, not dropped."""
    eps = tmp_path / "chart.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buf, "TIFF")
    (tmp_path / "scan.png").write_bytes(buf.getvalue())
    _png(tmp_path / "ok.png")
    monkeypatch.setattr(images, "MAX_EMBEDDED", 1 << 20)  # 1 MiB here, so the row stays under the record limit
    huge = "data:image/png;base64," + "A" * ((1 << 20) * 4 // 3 + 4096)
    rows = [{"messages": [_turn("user", [{"type": "image", "image": "chart.png"}, {"type": "text", "text": "?"}]),
                          _turn("assistant", "a")]},
            {"messages": [_turn("user", [{"type": "image", "image": "scan.png"}, {"type": "text", "text": "?"}]),
                          _turn("assistant", "b")]},
            {"messages": [_turn("user", [{"type": "image", "image": "//fileserver/share/x.png"},
                                         {"type": "text", "text": "?"}]), _turn("assistant", "c")]},
            {"messages": [_turn("user", [{"type": "image", "image": "\\\\fileserver\\share\\x.png"},
                                         {"type": "text", "text": "?"}]), _turn("assistant", "d")]},
            {"messages": [_turn("user", [{"type": "image", "image": huge}, {"type": "text", "text": "?"}]),
                          _turn("assistant", "e")]},
            {"messages": [_turn("user", "What is this?"),
                          _turn("assistant", [{"type": "image", "image": "ok.png"}, {"type": "text", "text": "f"}])]},
            {"messages": [_turn("user", [{"type": "image", "image": "ok.png"}, {"type": "text", "text": "?"}]),
                          _turn("assistant", "fine")]}]
    report = inspect(_jsonl(tmp_path / "rows.jsonl", rows), workers=1)
    by_row = {p.row: p for p in report.problems}
    assert report.usable == 1 and report.images == 1
    assert by_row[1].code == "image_invalid" and "chart.png is not a PNG, JPEG, WebP, GIF or BMP" in by_row[1].message
    assert by_row[2].code == "image_invalid" and "scan.png" in by_row[2].message
    assert by_row[3].code == by_row[4].code == "image_remote" and "network share" in by_row[3].message
    assert by_row[5].code == "image_too_large" and "data: URI" in by_row[5].message
    assert by_row[6].code == "image_count" and "assistant turn" in by_row[6].message
