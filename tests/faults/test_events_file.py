"""Attack class: a hostile or damaged events.jsonl (deep nesting, huge lines, a line cut by a kill).

Every reader skips and counts what it cannot parse and always moves past it: resume, attach and
train keep working, and the next worker's events stand on their own lines.
"""
from __future__ import annotations

import json

from faultkit import cli, copy_run, of_type

from studio import runs
from studio.attach import EventTail, last_seq
from studio.events import Emitter, Event, EventReader, encode, read_events
from studio.fsutil import read_json

DEEP = b"[" * 30000 + b"]" * 30000


def _events(path, first_seq: int, n: int) -> None:
    with open(path, "ab") as fh:
        for i in range(n):
            fh.write(encode(Event(type="metric", data={"step": i}, seq=first_seq + i)))


def test_a_deeply_nested_line_is_skipped_and_counted_by_every_reader(tmp_path):
    path = tmp_path / runs.EVENTS
    _events(path, 1, 3)
    with open(path, "ab") as fh:
        fh.write(DEEP + b"\n" + b'{"v":1,"type":"metric","seq":4,"data":' + b'{"a":' * 30000 + b"1" + b"}" * 30001 + b"\n")
    _events(path, 5, 2)
    reader = EventReader()
    assert [e.seq for e in read_events(path, reader)] == [1, 2, 3, 5, 6] and reader.malformed == 2
    tail = EventTail(tmp_path)
    assert [e.seq for e in tail.poll()] == [1, 2, 3, 5, 6] and tail.malformed == 2
    assert last_seq(path) == 6
    with open(path, "ab") as fh:
        fh.write(DEEP + b"\n")  # the last line: last_seq must look further back, not restart at 0
    assert last_seq(path) == 6


def test_a_line_longer_than_a_tail_read_is_skipped_and_the_tail_moves_on(tmp_path):
    path = tmp_path / runs.EVENTS
    _events(path, 1, 2)
    with open(path, "ab") as fh:
        fh.write(b'{"v":1,"type":"log","data":{"message":"' + b"x" * (5 << 20) + b'"}}\n')
    _events(path, 3, 37)
    tail, got = EventTail(tmp_path), []
    for _ in range(10):
        got += tail.poll()
    assert [e.seq for e in got] == list(range(1, 40)) and tail.malformed == 1
    assert tail.offset == path.stat().st_size
    assert [e.seq for e in read_events(path)] == list(range(1, 40))


def test_a_line_cut_by_a_kill_does_not_swallow_the_next_workers_first_event(tmp_path):
    path = tmp_path / runs.EVENTS
    _events(path, 1, 2)
    with open(path, "ab") as fh:
        fh.write(encode(Event(type="metric", data={"step": 3}, seq=3))[:15])  # SIGKILL mid-write
    em = Emitter(run="r", log_path=path, stream=open("/dev/null", "wb"), start_seq=last_seq(path))
    em.emit("hello", pid=1)
    em.close()
    events = read_events(path)
    assert [(e.type, e.seq) for e in events] == [("metric", 1), ("metric", 2), ("hello", 3)]


def test_deep_json_in_state_json_reads_as_no_value(tmp_path):
    (tmp_path / runs.STATE).write_bytes(DEEP)
    assert read_json(tmp_path / runs.STATE, default={}) == {}


def test_resume_after_a_hostile_events_line_finishes(tmp_path, killed_run):
    run_dir = copy_run(killed_run, tmp_path)
    with open(run_dir / runs.EVENTS, "ab") as fh:
        fh.write(b'{"v":1,"type":"metric","seq":3,"da')  # cut by the kill ...
        fh.write(b"\n" + DEEP + b"\n")  # ... and a line no JSON parser can hold
    result = cli("resume", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    events = read_events(run_dir / runs.EVENTS)
    hellos = of_type(events, "hello")
    assert len(hellos) == 2  # the resumed worker's hello was not swallowed by the cut line
    seqs = [e.seq for e in events]
    assert len(set(seqs)) == len(seqs)
    assert json.loads((run_dir / runs.STATE).read_text())["status"] == "finished"
