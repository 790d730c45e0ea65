"""Dataset import speed and memory: a 1,000,000-row (~500 MB) chat JSONL, inspected end to end.

    python bench/data_inspect.py                # generate (once) into /tmp, inspect, tokenise 100k rows
    python bench/data_inspect.py --rows 200000 --token-rows 0

Targets (issue 4): >= 50,000 rows/s and peak RSS < 1.5 GB without tokenisation. Each measured
step runs in a fresh child process so its peak RSS is its own. Tokenisation statistics use the
demo model's fast tokenizer in batches (the Rust side spreads each batch over all cores).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("the model adapter rank memory quantised weights gradient batch token sequence learning rate "
         "paris france answer question because therefore however example dataset training evaluation "
         "studio local private offline consumer graphics card checkpoint export merge").split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def generate(path: Path, rows: int, seed: int = 0, broken_every: int = 1000) -> None:
    """Chat rows of 1-3 exchanges (~500 bytes each); one line in ``broken_every`` is cut short."""
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            msgs = [{"role": "system", "content": "You are a concise assistant."}] if i % 3 == 0 else []
            for _ in range(rng.choice((1, 1, 2, 3))):
                msgs.append({"role": "user", "content": _sentence(rng, rng.randint(5, 16))})
                msgs.append({"role": "assistant", "content": _sentence(rng, rng.randint(8, 26))})
            line = json.dumps({"messages": msgs}, ensure_ascii=False)
            fh.write((line[: len(line) // 2] if broken_every and i % broken_every == 7 else line) + "\n")
    tmp.replace(path)


def child_inspect(path: str) -> dict:
    """Run in a fresh process: inspect without a tokenizer."""
    from studio.data import inspect

    t0, c0 = time.perf_counter(), _cpu()
    report = inspect(path, preview_rows=5)
    dt, cpu = time.perf_counter() - t0, _cpu() - c0
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest worker process
    workers = (os.cpu_count() or 1) if worker else 0
    return {"rows": report.rows, "usable": report.usable, "skipped": report.skipped, "seconds": round(dt, 2),
            "rows_per_s": round(report.rows / dt), "rows_per_cpu_s": round(report.rows / cpu),
            "fingerprint": report.fingerprint[:16], "workers": workers, "worker_rss_mb": round(worker),
            "peak_rss_mb": round(parent + workers * worker)}


def _cpu() -> float:
    """CPU seconds of this process and of its finished worker processes."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def child_tokens(path: str, rows: int) -> dict:
    """Run in a fresh process: token statistics of the first ``rows`` rows with the demo tokenizer."""
    from itertools import islice

    from studio.data import inspect
    from studio.data.tokens import load_tokenizer
    from studio.demo import ensure_demo_model

    tok = load_tokenizer(ensure_demo_model())
    head = Path(path).with_name(f"{Path(path).stem}-head-{rows}.jsonl")
    if not head.exists():
        with open(path, "rb") as src, open(head, "wb") as dst:
            dst.writelines(islice(src, rows))
    t0, c0 = time.perf_counter(), time.process_time()
    report = inspect(head, tokenizer=tok, seq_len=1024, preview_rows=1)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    t = report.tokens
    return {"rows": report.rows, "seconds": round(dt, 2), "rows_per_s": round(report.rows / dt),
            "cpu_seconds": round(cpu, 1),
            "min": t.min, "p50": t.p50, "p95": t.p95, "max": t.max, "truncated_at_1024": t.truncated,
            "threads": os.cpu_count(), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _run_child(*args: str) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="true")
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--token-rows", type=int, default=100_000, help="rows tokenised for the statistics (0: skip)")
    ap.add_argument("--out", default="/tmp/lora-studio-bench")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, path, *rest = args.child
        result = child_inspect(path) if kind == "inspect" else child_tokens(path, int(rest[0]))
        print(json.dumps(result))
        return
    path = Path(args.out) / f"chat-{args.rows}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        t0 = time.perf_counter()
        generate(path, args.rows)
        print(f"generated {path} in {time.perf_counter() - t0:.1f}s")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (figures are only meaningful when quiet)")
    print(f"file: {path} ({path.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows)")
    r = _run_child("inspect", str(path))
    ok = r["rows_per_s"] >= 50_000 and r["peak_rss_mb"] < 1536
    print(f"inspect (no tokenizer): {r['rows']:,} rows ({r['usable']:,} usable, {r['skipped']:,} skipped) in "
          f"{r['seconds']} s = {r['rows_per_s']:,} rows/s ({r['rows_per_cpu_s']:,} per CPU-second, "
          f"{r['workers']} worker processes), peak RSS {r['peak_rss_mb']} MB (parent + workers) "
          f"[{'meets' if ok else 'MISSES'} >= 50,000 rows/s and < 1536 MB]")
    if args.token_rows:
        t = _run_child("tokens", str(path), str(min(args.token_rows, args.rows)))
        print(f"token statistics (demo tokenizer, batches, {t['threads']} cores): {t['rows']:,} rows in "
              f"{t['seconds']} s = {t['rows_per_s']:,} rows/s using {t['cpu_seconds']} CPU-seconds; min {t['min']} p50 {t['p50']} p95 {t['p95']} "
              f"max {t['max']}, {t['truncated_at_1024']} over 1024; peak RSS {t['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
