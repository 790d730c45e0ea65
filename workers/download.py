"""Download worker: ``python -m workers.download REPO_ID [--revision R] [--allow-pickle]``.

The studio's one worker that uses the network, and only because the user asked for this model.
It puts what training needs (``studio.hub.select_files``: safetensors weights, config, tokenizer,
generation config, chat template) into the standard Hugging Face cache, where every tool finds it.

Events on stdout: ``hello``; ``progress`` (phase "download", done and total in bytes, speed_bps,
eta_s, file) a few times a second; ``done`` with the snapshot folder, or ``error`` (kind, message,
hint). A ``stop`` command on stdin, SIGINT or SIGTERM cancels (exit 3).

huggingface_hub does the talking (``workers/download_fetch.py`` drives it; this module is the
worker's entry: arguments, events, stop and signals): the repo info and tree listing (``HfApi``), each file's HEAD
(``get_hf_file_metadata``: ETag, size, commit, relative redirects followed, none to another host)
and the body (``http_get``: Range requests, retries, timeouts). What it lacks is kept here:

- Resuming: the bytes of a file go to ``blobs/<etag>.incomplete`` and a later run continues from
  its length (``hf_hub_download`` writes each attempt to a new, unique temporary file and deletes it
  on failure, so it cannot resume across a killed process); progress events; a body cut at the
  size the server declared.
- The server is not trusted to name paths: the commit must be a git sha, an ETag a 40/64-hex
  digest, a file name a relative path that stays in the repo, and every path must resolve inside
  the cache (``hf_hub_download`` 2.4 names blobs after any ETag it is sent, so the worker links the
  snapshot itself instead of handing the file to it). A finished file must match its ETag (sha256
  of LFS files, the git blob sha1 of the others) or it is deleted. The token is sent only to the
  Hub's own origin (a request hook drops it from any other, whoever addressed the request).
- The server is not trusted to size or end its answers: a next page of the tree listing only on
  the Hub's origin, each page once, at most ``hub.MAX_PAGES`` (huggingface_hub follows any
  ``Link``, forever); no body but a file's read past ``hub.API_MAX_BYTES``. The hooks are on the
  client huggingface_hub makes (``set_client_factory``), so a client made anew keeps them.

``config.json`` comes last: until it is there the snapshot is not a model to the studio, so nothing
half-downloaded is ever resolved.
"""
from __future__ import annotations

import os

# The only worker that goes online: lift the offline switch explicitly, before huggingface_hub is imported.
os.environ["HF_HUB_OFFLINE"] = "0"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("PYTHONUNBUFFERED", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from studio import hub  # noqa: E402
from studio.events import DONE, ERROR, HELLO, LOG, PROGRESS, Emitter, reserve_stdout  # noqa: E402
from workers import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, cancellable, report_failure, run_worker  # noqa: E402
from workers.download_fetch import Cancelled, download  # noqa: E402

REPORT_EVERY_S = 0.25


class Progress:
    """Bytes on disk of the whole download; speed over this session's bytes; raises when cancelled."""

    def __init__(self, em: Emitter, cancel: threading.Event, total: int, have: int) -> None:
        self.em, self.cancel, self.total = em, cancel, total
        self.done = have
        self.file = ""
        self._window: list[tuple[float, int]] = [(time.monotonic(), have)]
        self._last = 0.0

    def advance(self, n: int) -> None:
        if self.cancel.is_set():
            raise Cancelled()
        self.done += int(n)
        self.report()

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < REPORT_EVERY_S:
            return
        self._last = now
        self._window.append((now, self.done))
        self._window = [(t, b) for t, b in self._window if now - t <= 5.0] or [(now, self.done)]
        t0, b0 = self._window[0]
        speed = (self.done - b0) / (now - t0) if now - t0 > 0.2 else 0.0
        eta = (self.total - self.done) / speed if speed > 0 else None
        self.em.emit(PROGRESS, phase="download", done=self.done, total=self.total, speed_bps=round(speed),
                     eta_s=None if eta is None else round(eta, 1), file=self.file)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers.download", description=__doc__.splitlines()[0])
    parser.add_argument("repo_id", help="a Hugging Face model id, owner/name")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="take pytorch_model*.bin weights when the repo has no safetensors")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    em = Emitter(run=args.repo_id, stream=reserve_stdout())
    try:
        return run(args.repo_id, args.revision, args.allow_pickle, em)
    finally:
        em.close()


def run(repo_id: str, revision: str | None, allow_pickle: bool, em: Emitter) -> int:
    """Download with events on ``em``; stop on stdin, SIGINT or SIGTERM cancels. Returns the exit code."""
    cancel = threading.Event()
    with cancellable(cancel, lambda signum: Cancelled()):
        return _run(repo_id, revision, allow_pickle, em, cancel)


def _run(repo_id: str, revision: str | None, allow_pickle: bool, em: Emitter, cancel: threading.Event) -> int:
    em.emit(HELLO, pid=os.getpid(), worker="download", python=platform.python_version(), repo_id=repo_id,
            revision=revision, endpoint=os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    state: dict = {}

    def progress_for(total: int, have: int) -> Progress:
        state["p"] = Progress(em, cancel, total, have)
        return state["p"]

    try:
        result = download(repo_id, revision, allow_pickle, progress_for, lambda m: em.emit(LOG, message=m))
        em.emit(DONE, **result)
        return EXIT_OK
    except Cancelled:
        p = state.get("p")
        kept = f"; {hub.gib(p.done)} of {hub.gib(p.total)} is kept and the next download continues from there" \
            if p is not None and p.done else ""
        em.emit(DONE, status="cancelled", repo_id=repo_id, path=None, message=f"download cancelled{kept}")
        return EXIT_CANCELLED
    except hub.HubError as e:
        em.emit(ERROR, kind=e.kind, message=str(e), hint=e.hint)
        return EXIT_FAILED
    except OSError as e:  # the cache's file system (the network's errors are HubErrors by now)
        where = f": {e.filename}" if e.filename else ""
        em.emit(ERROR, kind="io", message=f"writing the download into the Hugging Face cache failed: "
                f"{e.strerror or e}{where}", hint="Check that the cache folder (HF_HUB_CACHE or HF_HOME) is "
                "writable and not nested so deep that its paths pass the system's limit (4096 bytes on Linux, "
                "260 characters on Windows without long paths), then download again.")
        return EXIT_FAILED
    except Exception as e:  # a bug: traceback to stderr
        return report_failure(em, e, message=f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    run_worker(main)
