"""A fake worker: ``python fake_worker.py MODE [ARGS]``; speaks studio.events on stdout.

Modes: ok (a short run), crash (dies mid-run without an error event), error (reports an error
with a hint, exits 1), hang (ignores stop, SIGTERM and SIGBREAK), garbage (interleaves junk with events),
flood RATE SECONDS (metric+memory events at RATE per second), obey (waits for stop on stdin,
then says done), stderr (writes lines to stderr).
"""
from __future__ import annotations

import os
import signal
import sys
import time

from studio.events import DONE, ERROR, HELLO, MEMORY, METRIC, PROGRESS, Emitter, decode_command

GIB = 1024 ** 3


def ok(em: Emitter) -> int:
    em.emit(HELLO, device="fake")
    for step in range(1, 6):
        em.emit(PROGRESS, phase="train", done=step, total=5)
        em.emit(METRIC, step=step, loss=2.0 / step, learning_rate=1e-3, tokens_per_s=1000.0)
        em.emit(MEMORY, allocated=GIB, reserved=2 * GIB, device_used=3 * GIB, budget=8 * GIB, predicted_peak=4 * GIB)
    em.emit(DONE, status="finished")
    return 0


def crash(em: Emitter) -> int:
    em.emit(HELLO, device="fake")
    em.emit(METRIC, step=1, loss=1.0)
    sys.stderr.write("Traceback (most recent call last):\n  boom\nRuntimeError: fake crash\n")
    sys.stderr.flush()
    if os.name == "nt":  # no SIGKILL there: TerminateProcess (exit code 15), no clean-up either
        os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


def error(em: Emitter) -> int:
    em.emit(HELLO, device="fake")
    em.emit(ERROR, kind="oom", message="CUDA out of memory at step 3", hint="lower the micro-batch")
    return 1


# The polite signals: SIGTERM on POSIX; on Windows CTRL_BREAK_EVENT arrives as SIGBREAK.
POLITE = [signal.SIGTERM, *([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else [])]


def hang(em: Emitter) -> int:
    for sig in POLITE:
        signal.signal(sig, signal.SIG_IGN)
    em.emit(HELLO, device="fake")
    while True:
        time.sleep(1)


def garbage(em: Emitter) -> int:
    out = sys.stdout.buffer
    em.emit(HELLO, device="fake")
    out.write(b"this is not json\n{\"half\": \n\xff\xfe binary junk\n[1,2,3]\n")
    out.flush()
    em.emit(METRIC, step=1, loss=1.5)
    out.write(b'{"v": 1, "type": "from_the_future", "data": {}}\n')
    em.emit(METRIC, step=2, loss=1.25)
    out.write(b'{"v": 1, "type": "metric", "seq": 9, "data": {"step": 3, "loss": 1.0}}')  # no final newline
    out.flush()
    return 0


def flood(em: Emitter, rate: float, seconds: float) -> int:
    em.emit(HELLO, device="fake")
    n = int(rate * seconds)
    t0 = time.perf_counter()
    for i in range(n):
        em.emit(METRIC, step=i, loss=2.0 / (1 + i * 0.01), learning_rate=1e-4, tokens_per_s=5000.0 + i % 100)
        if i % 5 == 0:
            em.emit(MEMORY, allocated=GIB, reserved=2 * GIB, device_used=3 * GIB, budget=8 * GIB, predicted_peak=4 * GIB)
        if i % 50 == 0:
            sys.stderr.write(f"log line {i}\n")
        lag = t0 + (i + 1) / rate - time.perf_counter()
        if lag > 0:
            time.sleep(lag)
    em.emit(DONE, status="finished")
    return 0


def obey(em: Emitter) -> int:
    em.emit(HELLO, device="fake")
    for line in sys.stdin.buffer:
        cmd = decode_command(line)
        if cmd and cmd["cmd"] == "pause":
            em.emit(PROGRESS, phase="paused", done=0, total=0)
        if cmd and cmd["cmd"] == "stop":
            em.emit(DONE, status="stopped")
            return 0
    return 0


def stderr_lines(em: Emitter) -> int:
    for i in range(3):
        sys.stderr.write(f"stderr line {i}\n")
    sys.stderr.flush()
    em.emit(DONE, status="finished")
    return 0


def survive(em: Emitter, marker: str) -> int:
    """Keeps going after the reader of its stdout has gone, then leaves a marker file."""
    em.emit(HELLO, device="fake")
    for step in range(30):
        em.emit(METRIC, step=step, loss=1.0)
        time.sleep(0.05)
    with open(marker, "w") as fh:
        fh.write(f"finished stdout_ok={em.stdout_ok}\n")
    return 0


def record(run_dir: str, seconds: float) -> int:
    """A run started by an earlier window: events only in events.jsonl, state.json says running."""
    from pathlib import Path

    from studio import procs, runs
    from studio.events import stop_requested

    run = Path(run_dir)
    stop = []
    procs.on_stop_signal(lambda *_: stop.append(1))
    em = Emitter(run=run.name, log_path=run / runs.EVENTS, stream=open(os.devnull, "wb"))
    runs.write_state(run, status="running", pid=os.getpid())
    em.emit(HELLO, device="fake")
    t0 = time.monotonic()
    step = 0
    inbox = run / runs.COMMANDS
    while time.monotonic() - t0 < seconds and not stop:
        if inbox.is_file() and any(stop_requested(line) for line in inbox.read_bytes().splitlines()):
            stop.append(1)  # the inbox's stop, as the real worker reads it between steps
            break
        step += 1
        em.emit(METRIC, step=step, loss=1.0 / step)
        em.emit(MEMORY, step=step, allocated=GIB, reserved=GIB, device_used=None, budget=8 * GIB)
        time.sleep(0.05)
    status = "stopped" if stop else "finished"
    em.emit(DONE, status=status)
    runs.write_state(run, status=status, pid=None)
    return 0


def main(argv: list[str]) -> int:
    em = Emitter(run="fake", stream=sys.stdout.buffer)
    mode = argv[0]
    if mode == "record":
        return record(argv[1], float(argv[2]))
    if mode == "survive":
        return survive(em, argv[1])
    if mode == "flood":
        return flood(em, float(argv[1]), float(argv[2]))
    return {"ok": ok, "crash": crash, "error": error, "hang": hang, "garbage": garbage, "obey": obey,
            "stderr": stderr_lines}[mode](em)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
