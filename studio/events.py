"""The worker protocol: one JSON object per line on stdout, commands as JSON lines on stdin.

This module is the only code that encodes or parses it (DESIGN.md, "The worker protocol").

    {"v": 1, "type": "metric", "seq": 42, "ts": 1764000000.12, "run": "...", "data": {...}}

A reader keeps a byte buffer and splits on newlines; a malformed line (not JSON, nested too deep
for the parser, longer than MAX_LINE_BYTES, cut short by a kill) is counted and kept for the
report, never fatal, and reading always moves past it. Unknown event types are passed through so
older readers can ignore them.
"""
from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

PROTOCOL_VERSION = 1
EVENT_KEYS = ("v", "type", "seq", "ts", "run", "data")

HELLO, LOG, PROGRESS, METRIC, MEMORY = "hello", "log", "progress", "metric", "memory"
CHECKPOINT, WARNING, ERROR, DONE = "checkpoint", "warning", "error", "done"
# The chat worker (workers/chat.py): a piece of a streamed answer, and the end of one answer.
TOKEN, ANSWER = "token", "answer"
EVENT_TYPES = (HELLO, LOG, PROGRESS, METRIC, MEMORY, CHECKPOINT, WARNING, ERROR, DONE, TOKEN, ANSWER)
ERROR_KINDS = ("oom", "nan", "data", "io", "config", "internal")
# The exact data keys of the chat worker's events (tests hold the worker to them).
TOKEN_KEYS = ("id", "variant", "index", "text")
ANSWER_KEYS = ("id", "variant", "text", "tokens", "time_to_first_token_s", "tokens_per_s", "stopped", "finish")
# stop/pause/resume: the training worker. stop/generate/adapter: the chat worker (stop ends the answer).
COMMANDS = ("stop", "pause", "resume", "generate", "adapter")
MAX_LINE_BYTES = 1 << 20  # a line longer than this is garbage, not an event


@dataclass
class Event:
    type: str
    data: dict = field(default_factory=dict)
    seq: int = 0
    ts: float = 0.0
    run: str = ""
    v: int = PROTOCOL_VERSION

    def to_dict(self) -> dict:
        return {"v": self.v, "type": self.type, "seq": self.seq, "ts": self.ts, "run": self.run, "data": self.data}


def _clean(value: Any) -> Any:
    """JSON has no NaN/Infinity: send them as strings so every reader can parse the line."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def encode(event: Event) -> bytes:
    return (json.dumps(_clean(event.to_dict()), separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


def decode(line: bytes | str) -> Event:
    """Parse one line; raises ValueError (only) on anything that is not a protocol event.

    events.jsonl is a file anyone can edit: an integer of 5,000 digits, JSON nested 100,000 deep,
    a ``seq`` that is a list or ``Infinity`` must read as a bad line, never as an exception of
    another kind in the caller; ``seq`` and ``ts`` are checked to be the numbers the studio writes.
    """
    try:
        obj = json.loads(line)
    except (RecursionError, UnicodeDecodeError, TypeError) as e:
        raise ValueError(f"not JSON ({type(e).__name__})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str) or not isinstance(obj.get("data", {}), dict):
        raise ValueError("not an event object")
    v = obj.get("v", PROTOCOL_VERSION)
    if not isinstance(v, int) or v > PROTOCOL_VERSION:
        raise ValueError(f"unsupported protocol version {v!r}")
    seq, ts = obj.get("seq", 0), obj.get("ts", 0.0)
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 1 << 63:
        raise ValueError("'seq' is not a sequence number")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not -1e12 < ts < 1e12:
        raise ValueError("'ts' is not a time")
    return Event(type=obj["type"], data=obj.get("data", {}), seq=seq, ts=float(ts), run=str(obj.get("run", "")), v=v)


class EventReader:
    """Incremental parser: feed it bytes as they arrive, get complete events back."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.malformed = 0
        self.last_malformed: bytes = b""

    def feed(self, chunk: bytes) -> list[Event]:
        self._buf.extend(chunk)
        out: list[Event] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE_BYTES:  # a flood with no newline: drop it, count it
                    self._bad(bytes(self._buf[:200]))
                    self._buf.clear()
                break
            line = bytes(self._buf[:nl]).strip()
            del self._buf[: nl + 1]
            if line:
                self._parse(line, out)
        return out

    def close(self) -> list[Event]:
        """Parse what is left when the stream ends without a final newline."""
        out: list[Event] = []
        line = bytes(self._buf).strip()
        self._buf.clear()
        if line:
            self._parse(line, out)
        return out

    def _parse(self, line: bytes, out: list[Event]) -> None:
        try:
            out.append(decode(line))
        except (ValueError, TypeError, UnicodeDecodeError, RecursionError, OverflowError):
            self._bad(line)  # RecursionError: [[[[... 30,000 deep is valid JSON the parser cannot hold

    def _bad(self, line: bytes) -> None:
        self.malformed += 1
        self.last_malformed = line[:200]


def result_of(data: bytes) -> dict | None:
    """The data of the last ``done`` event in ``data``: the answer of a one-shot command (a probe)."""
    reader = EventReader()
    done = [ev for ev in reader.feed(data) + reader.close() if ev.type == DONE]
    return done[-1].data if done else None


def read_events(path: Path, reader: EventReader | None = None) -> list[Event]:
    """All events of a run's events.jsonl (malformed or truncated lines skipped; pass ``reader`` to count them)."""
    reader = reader if reader is not None else EventReader()
    out: list[Event] = []
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):  # streamed: memory bounded by MAX_LINE_BYTES, not the file
                out += reader.feed(chunk)
    except FileNotFoundError:
        return []
    return out + reader.close()


class Emitter:
    """Writes events to stdout (the protocol) and appends them to events.jsonl (the record)."""

    def __init__(self, run: str = "", log_path: Path | None = None, stream: IO[bytes] | None = None,
                 start_seq: int = 0) -> None:
        self.run = run
        self.seq = start_seq
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._log = open(log_path, "ab") if log_path else None
        if self._log is not None:
            _end_partial_line(self._log)
        self._lock = threading.Lock()
        self.stdout_ok = True
        self.log_ok = True

    def emit(self, type: str, **data: Any) -> Event:
        with self._lock:
            self.seq += 1
            event = Event(type=type, data=data, seq=self.seq, ts=round(time.time(), 3), run=self.run)
            line = encode(event)
            if self._log:
                try:
                    self._log.write(line)
                    self._log.flush()
                except OSError:  # a full disk must not swallow the event (often the error saying so)
                    self.log_ok = False
            if self.stdout_ok:
                try:
                    self._stream.write(line)
                    self._stream.flush()
                except (BrokenPipeError, OSError, ValueError):
                    # The GUI or CLI went away: keep training, the record is events.jsonl.
                    self.stdout_ok = False
            return event

    def close(self) -> None:
        if self._log:
            self._log.close()
            self._log = None


def _end_partial_line(log: IO[bytes]) -> None:
    """A worker killed mid-write leaves a line without its newline; end it so our first event stands alone."""
    import os

    try:
        size = os.fstat(log.fileno()).st_size
        if size:
            with open(log.name, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    log.write(b"\n")
                    log.flush()
    except OSError:
        pass


def reserve_stdout() -> IO[bytes]:
    """Keep stdout for events only: return a stream on the real stdout and point fd 1 at stderr.

    Libraries print (the Trainer's log dicts, warnings from C extensions); after this call those
    prints land in stderr, and the protocol stream carries nothing but events.
    """
    import os

    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(events_fd, "wb", buffering=0)


def encode_command(name: str, **args: Any) -> bytes:
    if name not in COMMANDS:
        raise ValueError(f"unknown command {name!r}")
    return (json.dumps({"v": PROTOCOL_VERSION, "cmd": name, **args}) + "\n").encode("utf-8")


def decode_command(line: bytes | str) -> dict | None:
    """A command dict, or None for anything else (never raises)."""
    try:
        obj = json.loads(line)
    except (ValueError, TypeError):
        return None
    if isinstance(obj, dict) and obj.get("cmd") in COMMANDS:
        return obj
    return None


def read_commands(on_line: Callable[[bytes], None], on_close: Callable[[], None] | None = None,
                  fd: int | None = None,
                  on_too_long: Callable[[bytes, int], None] | None = None) -> threading.Thread:
    """Hand every line of a worker's stdin to ``on_line`` on a daemon thread; ``on_close`` at its end.

    A line longer than MAX_LINE_BYTES is never buffered whole nor handed on: it is skipped to its
    newline and reported to ``on_too_long(head, size)`` (its first 4 KiB and its length), so the
    worker can still answer it. The raw descriptor is read with os.read: a daemon thread blocked
    inside the buffered sys.stdin holds its lock and makes interpreter shutdown abort.
    """
    def too_long(head: bytes, size: int) -> None:
        if on_too_long is not None:
            on_too_long(head, size)

    def run() -> None:
        buf, head, skipped = b"", b"", -1  # skipped >= 0: inside an over-long line, that many bytes dropped
        while True:
            try:
                chunk = os.read(sys.stdin.fileno() if fd is None else fd, 65536)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                if on_close is not None:
                    on_close()
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if skipped >= 0:
                    too_long(head, skipped + len(line))
                    skipped = -1
                elif len(line) > MAX_LINE_BYTES:
                    too_long(line[:4096], len(line))
                else:
                    on_line(line)
            if skipped >= 0:
                skipped, buf = skipped + len(buf), b""
            elif len(buf) > MAX_LINE_BYTES:  # a line with no end yet: never let it grow
                head, skipped, buf = buf[:4096], len(buf), b""

    thread = threading.Thread(target=run, daemon=True, name="commands")
    thread.start()
    return thread


def stop_requested(line: bytes) -> bool:
    """Whether a command line asks the worker to stop."""
    return (decode_command(line) or {}).get("cmd") == "stop"
