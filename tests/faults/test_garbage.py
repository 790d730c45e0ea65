"""A worker that prints garbage or floods stdout, and an events.jsonl cut mid-line: readers survive."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from studio.attach import EventTail, last_seq
from studio.events import MAX_LINE_BYTES, Emitter, Event, EventReader, encode

FAKE_WORKER = textwrap.dedent("""
    import json, os, sys
    out = sys.stdout.buffer
    def ev(seq, type, **data):
        out.write((json.dumps({"v": 1, "type": type, "seq": seq, "ts": 0, "run": "x", "data": data}) + "\\n").encode())
    ev(1, "hello", pid=os.getpid())
    out.write(b"Some library printed this\\n")                        # text
    out.write(bytes(range(256)) + b"\\n")                              # binary junk
    out.write(b'{"v": 1, "type": "metric", "data": {"loss": 1.0\\n')   # cut JSON
    out.write(b'[1, 2, 3]\\n{"v": 99, "type": "metric", "data": {}}\\n')  # not an event, a future version
    out.write(b"x" * (3 * 1024 * 1024) + b"\\n")                       # a 3 MB line
    for i in range(20000):                                            # a flood of real events
        ev(i + 2, "metric", step=i, loss=0.5)
    out.write(b"y" * (2 * 1024 * 1024))                               # a flood with no newline at all
    out.write(b"\\n")
    ev(20002, "done", status="finished")
    out.flush()
""")


def test_reader_keeps_every_event_from_a_worker_printing_garbage_and_flooding():
    proc = subprocess.Popen([sys.executable, "-c", FAKE_WORKER], stdout=subprocess.PIPE)
    reader, events, biggest = EventReader(), [], 0
    while chunk := proc.stdout.read1(65536):
        events += reader.feed(chunk)
        biggest = max(biggest, len(reader._buf))
    events += reader.close()
    assert proc.wait() == 0
    assert [e.type for e in events[:1] + events[-1:]] == ["hello", "done"]
    assert [e.seq for e in events] == list(range(1, 20003))  # not one real event lost
    # text, junk, cut JSON, list, v=99, then the long lines (counted once per megabyte dropped)
    assert reader.malformed >= 7 and reader.last_malformed.startswith(b"y")
    assert biggest <= MAX_LINE_BYTES + 65536  # memory stays bounded while flooded


def test_tail_waits_for_a_line_cut_by_a_kill_and_skips_garbage(tmp_path):
    run_dir = tmp_path
    path = run_dir / "events.jsonl"
    em = Emitter(run="r", log_path=path, stream=open("/dev/null", "wb"))
    em.emit("hello")
    em.emit("metric", step=1, loss=2.0)
    em.close()
    partial = encode(Event(type="metric", data={"step": 2, "loss": 1.5}, seq=3))
    with open(path, "ab") as fh:
        fh.write(b"garbage line\n" + partial[:10])  # the worker was killed mid-write
    tail = EventTail(run_dir)
    assert [e.seq for e in tail.poll()] == [1, 2] and tail.malformed == 1
    offset = tail.offset
    assert tail.poll() == [] and tail.offset == offset
    with open(path, "ab") as fh:
        fh.write(partial[10:])
    assert [e.data["step"] for e in tail.poll()] == [2]
    assert last_seq(path) == 3
