"""Flood the Train page with events and measure how responsive the window stays.

    python bench/gui_event_flood.py [--rate 500] [--seconds 30]

A fake worker (tests/ui/fake_workers) emits metric events at RATE per second (plus a memory
event every 5th and a stderr line every 50th) through the real controller, charts and log panel.
A 10 ms QTimer records the gap between its ticks: the largest gap minus the interval is the
longest the event loop was stalled (target < 50 ms). On a machine busy with other work the wall
gaps include time the scheduler gave to other processes, so the GUI thread's own CPU time
between ticks is printed too. Resident memory is sampled every second
(target: bounded, i.e. flat after the first seconds).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FAKE = ROOT / "tests" / "ui" / "fake_workers" / "fake_worker.py"
TICK_MS = 10


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=30)
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["LORA_STUDIO_HOME"] = tempfile.mkdtemp(prefix="lora-studio-flood-")
    import psutil
    from PySide6.QtCore import QElapsedTimer, QTimer

    from studio import runs
    from studio.recipe import Recipe
    from ui.app import build_app
    from ui.main_window import MainWindow

    app = build_app()
    window = MainWindow()
    window.show()
    window.finish_startup()
    window.park_long_lived()  # as run_app does
    window.show_page(window.train_page)
    page = window.train_page
    proc = psutil.Process()
    gaps: list[float] = []
    rss: list[int] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]
    cpu_gaps: list[float] = []
    last_cpu = [time.thread_time_ns()]

    def tick() -> None:
        now, cpu = clock.nsecsElapsed(), time.thread_time_ns()
        gaps.append((now - last[0]) / 1e6)
        cpu_gaps.append((cpu - last_cpu[0]) / 1e6)
        last[0], last_cpu[0] = now, cpu

    ticker = QTimer()
    ticker.setInterval(TICK_MS)
    ticker.timeout.connect(tick)
    sampler = QTimer()
    sampler.setInterval(1000)
    sampler.timeout.connect(lambda: rss.append(proc.memory_info().rss))
    metrics = [0]
    page.controller.sig_metric.connect(lambda _d: metrics.__setitem__(0, metrics[0] + 1))
    page.controller.sig_finished.connect(lambda *_: QTimer.singleShot(300, app.quit))
    run_dir = runs.create(Recipe(name="flood"))
    t0 = time.perf_counter()
    page.start_run_dir(run_dir, argv=[sys.executable, str(FAKE), "flood", str(args.rate), str(args.seconds)])
    ticker.start()
    sampler.start()
    rss.append(proc.memory_info().rss)
    app.exec()
    elapsed = time.perf_counter() - t0
    worst = max(range(5, len(gaps)), key=lambda i: gaps[i]) if len(gaps) > 5 else 0
    stalls = sorted(g - TICK_MS for g in gaps[5:])  # the first ticks include start-up
    p99 = stalls[int(len(stalls) * 0.99)] if stalls else 0.0
    cpu = sorted(cpu_gaps[5:])
    mib = [r / 2 ** 20 for r in rss]
    warm = mib[min(3, len(mib) - 1)]
    print(f"events: {metrics[0]} metric events in {elapsed:.1f} s ({metrics[0] / elapsed:.0f}/s requested {args.rate:.0f}/s)")
    print(f"event loop: max stall {max(stalls):.1f} ms (tick {worst}), p99 {p99:.1f} ms over {len(stalls)} ticks "
          f"of {TICK_MS} ms (target < 50 ms)")
    print(f"GUI-thread CPU time between ticks (our own work, without time lost to other processes): "
          f"max {cpu[-1]:.1f} ms, p99 {cpu[int(len(cpu) * 0.99)]:.1f} ms; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"memory (RSS): start {mib[0]:.0f} MiB, after 3 s {warm:.0f} MiB, end {mib[-1]:.0f} MiB, max {max(mib):.0f} MiB")
    pts = {name: c.points(s) for name, c in page.charts.items() for s in list(c.series)[:1]}
    print(f"chart points kept: {pts}; log lines kept: {page.log.blockCount()}")
    return 0 if max(stalls) < 50 else 1


if __name__ == "__main__":
    sys.exit(main())
