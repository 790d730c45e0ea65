"""Document text worker: ``python -m workers.extract_docs [--memory-mb N]``.

Reads one request per line on stdin (``{"path": ...}``) and answers each with one JSON line on stdout:
``{"path", "ok": true, "kind", "pages", "scanned_pages", "tables"}`` or ``{"path", "ok": false, "reason"}``
(``studio.data.extract`` does the reading). It says ``{"ready": true}`` once, when it can take files, and
ends when stdin closes.

The studio (``studio.data.documents.Extractor``) gives each file a time limit and ends and restarts this
worker when a file passes it, or passes the memory limit, or the worker dies: a hostile file fails alone.
``--memory-mb`` is also set as the process's own address-space limit where the platform has one (POSIX),
so an allocation past it fails here as a MemoryError, named, before the machine swaps.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from workers import EXIT_OK, go_offline, run_worker


def _limit_memory(mb: int) -> None:
    try:
        import resource
    except ImportError:  # Windows: the studio watches the worker's memory from outside
        return
    limit = mb * 1024 * 1024
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):  # not permitted here: the outside watch still holds
        pass


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.extract_docs")
    parser.add_argument("--memory-mb", type=int, default=0)
    args = parser.parse_args()
    # answers go to a stream of their own: anything a library prints lands on stderr (the log), never
    # between two answers
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", newline="\n")
    sys.stdout = sys.stderr
    from studio.data import extract  # imports pypdf and python-docx lazily, per kind

    if args.memory_mb > 0:
        _limit_memory(args.memory_mb)
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            path = json.loads(line)["path"]
        except (ValueError, KeyError, TypeError):
            continue
        try:
            answer = {"path": path, "ok": True, **extract.extract(path)}
        except extract.Refused as e:
            answer = {"path": path, "ok": False, "reason": str(e)}
        except MemoryError:
            answer = {"path": path, "ok": False,
                      "reason": f"reading it needed more than {args.memory_mb} MB of memory (a zip bomb or a "
                                "damaged file?); refused"}
        except RecursionError:
            answer = {"path": path, "ok": False, "reason": "its structure nests too deep to read (a damaged or "
                                                            "hostile file?); refused"}
        except OSError as e:
            answer = {"path": path, "ok": False, "reason": f"cannot be read ({e.strerror or e})"}
        except Exception as e:  # a library's own error on a damaged file: named, the next file goes on
            answer = {"path": path, "ok": False, "reason": f"cannot be read ({type(e).__name__}: {e})"[:300]}
        if args.memory_mb > 0 and _peak_mb() > args.memory_mb:
            # read faster than the studio's watch looks (Windows has no address-space limit): the peak says it;
            # this worker's peak stays that high, so it ends and the studio starts a fresh one
            answer = {"path": path, "ok": False, "restart": True,
                      "reason": f"reading it needed more than {args.memory_mb} MB of memory (a zip bomb or a "
                                "damaged file?); refused"}
        out.write(json.dumps(answer, ensure_ascii=True) + "\n")
        out.flush()
        if answer.get("restart"):
            break
    return EXIT_OK


def _peak_mb() -> float:
    """Windows: the most memory this process has held, in MB (its peak working set). Elsewhere 0: Linux has the
    address-space limit, and a POSIX peak RSS (ru_maxrss) carries over the parent's from before exec."""
    if sys.platform != "win32":
        return 0.0
    import psutil

    return float(getattr(psutil.Process().memory_info(), "peak_wset", 0)) / 2**20

if __name__ == "__main__":
    go_offline()
    run_worker(main)
