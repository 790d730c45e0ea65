import io
import json

from studio.events import EVENT_KEYS, Emitter, EventReader, decode, decode_command, encode, encode_command, read_events


def test_event_has_exactly_the_protocol_keys(tmp_path):
    out = io.BytesIO()
    em = Emitter(run="r1", log_path=tmp_path / "events.jsonl", stream=out)
    em.emit("metric", step=3, loss=1.5)
    em.close()
    line = out.getvalue()
    obj = json.loads(line)
    assert tuple(obj) == EVENT_KEYS
    assert obj["v"] == 1 and obj["type"] == "metric" and obj["seq"] == 1 and obj["run"] == "r1"
    assert obj["data"] == {"step": 3, "loss": 1.5}
    assert (tmp_path / "events.jsonl").read_bytes() == line


def test_round_trip_and_non_finite_numbers():
    em = Emitter(run="r", stream=io.BytesIO())
    ev = em.emit("metric", loss=float("nan"), grad_norm=float("inf"))
    back = decode(encode(ev))
    assert back.type == "metric" and back.data == {"loss": "nan", "grad_norm": "inf"}


def test_reader_handles_split_chunks_garbage_and_unknown_types():
    em = Emitter(run="r", stream=io.BytesIO())
    a, b = encode(em.emit("progress", done=1, total=2)), encode(em.emit("future_type", x=1))
    stream = a + b"Traceback (most recent call last):\n" + b"{not json}\n" + b"[1,2]\n" + b
    reader = EventReader()
    got = []
    for i in range(0, len(stream), 7):
        got += reader.feed(stream[i:i + 7])
    assert [e.type for e in got] == ["progress", "future_type"]
    assert reader.malformed == 3


def test_reader_survives_a_flood_without_newlines():
    reader = EventReader()
    assert reader.feed(b"x" * (2 << 20)) == []
    assert reader.malformed == 1
    em = Emitter(run="r", stream=io.BytesIO())
    assert [e.type for e in reader.feed(encode(em.emit("done")))] == ["done"]


def test_last_line_without_newline_is_read_on_close(tmp_path):
    em = Emitter(run="r", stream=io.BytesIO())
    path = tmp_path / "events.jsonl"
    path.write_bytes(encode(em.emit("log", message="a")) + encode(em.emit("done"))[:-1])
    assert [e.type for e in read_events(path)] == ["log", "done"]


def test_commands():
    assert decode_command(encode_command("stop")) == {"v": 1, "cmd": "stop"}
    assert decode_command(b"rm -rf /") is None
    assert decode_command(b'{"cmd": "explode"}') is None


def test_emitter_keeps_recording_when_stdout_is_gone(tmp_path):
    class Broken(io.BytesIO):
        def write(self, _):
            raise BrokenPipeError

    em = Emitter(run="r", log_path=tmp_path / "e.jsonl", stream=Broken())
    em.emit("log", message="one")
    em.emit("log", message="two")
    em.close()
    assert [e.data["message"] for e in read_events(tmp_path / "e.jsonl")] == ["one", "two"]


def test_a_failing_record_does_not_swallow_the_event(tmp_path):
    class Full(io.BytesIO):
        def write(self, _):
            raise OSError(28, "No space left on device")

    out = io.BytesIO()
    em = Emitter(run="r", stream=out)
    em._log = Full()
    em.emit("error", kind="io", message="disk full")
    assert decode(out.getvalue()).data["message"] == "disk full"
    assert em.log_ok is False
