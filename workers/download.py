"""Download worker: ``python -m workers.download REPO_ID [--revision R] [--allow-pickle]``.

The studio's one worker that uses the network, and only because the user asked for this model.
It puts what training needs (``studio.hub.select_files``: safetensors weights, config, tokenizer,
generation config, chat template) into the standard Hugging Face cache, where every tool finds it.

Events on stdout: ``hello``; ``progress`` (phase "download", done and total in bytes, speed_bps,
eta_s, file) a few times a second; ``done`` with the snapshot folder, or ``error`` (kind, message,
hint). A ``stop`` command on stdin, SIGINT or SIGTERM cancels (exit 3).

Resuming: the bytes of a file being downloaded go to ``blobs/<etag>.incomplete`` in the cache and
a later run continues from its length with an HTTP Range request (huggingface_hub's own downloader
writes each attempt to a new, unique temporary file and deletes it on failure, so it cannot resume
across a killed process). A finished file is renamed into place and huggingface_hub links it into
the snapshot. ``config.json`` comes last: until it is there the snapshot is not a model to the
studio, so nothing half-downloaded is ever resolved.
"""
from __future__ import annotations

import os
import sys

# The only worker that goes online: lift the offline switch explicitly, before huggingface_hub is imported.
os.environ["HF_HUB_OFFLINE"] = "0"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("PYTHONUNBUFFERED", "1")

import argparse  # noqa: E402
import errno  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from studio import hub  # noqa: E402
from studio.events import DONE, ERROR, HELLO, LOG, PROGRESS, Emitter, read_commands, reserve_stdout, stop_requested  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 3
REPORT_EVERY_S = 0.25
# huggingface_hub reads the body in pieces of this size (10 MiB by default): smaller pieces give a
# smoother progress bar and lose less on a kill (a piece is written to the partial file when complete).
CHUNK_BYTES = 512 << 10


class Cancelled(Exception):
    pass


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


def _bar_class(progress: Progress):
    """A tqdm for huggingface_hub's ``http_get`` that reports to ``progress`` and draws nothing."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Bar(hf_tqdm):
        def __init__(self, *args, **kwargs) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            progress.advance(int(n or 0))
            return None

    return Bar


def listen_for_stop(cancel: threading.Event) -> None:
    """A ``stop`` command on stdin cancels."""
    read_commands(lambda line: stop_requested(line) and cancel.set())


def _on_signal(cancel: threading.Event):
    def handler(signum, frame):  # noqa: ARG001
        cancel.set()
        raise Cancelled()
    return handler


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _hub_error(repo_id: str, e: Exception) -> hub.HubError:
    """huggingface_hub's exceptions in the studio's words."""
    from huggingface_hub import errors

    if isinstance(e, hub.HubError):
        return e
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, errors.GatedRepoError):
        return hub.access_error(repo_id, status, gated=True)
    if isinstance(e, errors.RevisionNotFoundError):
        return hub.HubError(f"{repo_id}: revision not found ({_first_line(e)})", kind="config",
                            hint="Check --revision: a branch, tag or commit of the repo.")
    if status in (401, 403):
        return hub.access_error(repo_id, status, gated=False)
    if isinstance(e, errors.RepositoryNotFoundError) or status == 404:
        return hub.HubError(f"{repo_id} was not found on {hub.model_page(repo_id).rsplit('/', 2)[0]}", kind="config",
                            hint="Check the id (owner/name), or search with 'lora-studio models search'.")
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return hub.HubError("The disk filled up during the download; what arrived is kept and the next download "
                            "continues from there.", kind="io", hint="Free some space and download again.")
    return hub.HubError(f"downloading {repo_id} failed: {_first_line(e)}", kind="io",
                        hint="Check the network connection and download again: it continues where it stopped.")


def download(repo_id: str, revision: str | None, allow_pickle: bool, progress_for, log) -> dict:
    """Fetch the files and return what the ``done`` event says; raises HubError or Cancelled."""
    hub.online()  # also when run in-process by 'lora-studio models download --events'
    from huggingface_hub import HfApi, constants, errors, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.file_download import http_get, repo_folder_name
    from huggingface_hub.utils import build_hf_headers

    api = HfApi()
    try:  # the calls snapshot_download makes: the commit of the revision, then the file tree at that commit
        info = api.repo_info(repo_id, revision=revision)
        commit = info.sha or revision or "main"
        try:
            listed = [hub.RemoteFile(f.path, int(f.size or 0))
                      for f in api.list_repo_tree(repo_id, recursive=True, revision=commit) if isinstance(f, RepoFile)]
        except errors.HfHubHTTPError:  # a server without the tree listing: the repo info's file names will do
            listed = [hub.RemoteFile(s.rfilename, int(s.size or 0)) for s in (info.siblings or [])]
    except Exception as e:
        raise _hub_error(repo_id, e) from None
    files = hub.select_files(repo_id, listed, allow_pickle)
    storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = storage / "snapshots" / commit

    # What each file is on the server (etag names its blob) and what the cache already holds.
    plan, total, have = [], 0, 0
    for f in files:
        try:
            meta = get_hf_file_metadata(hf_hub_url(repo_id, f.name, revision=commit), retry_on_errors=True)
        except Exception as e:
            raise _hub_error(repo_id, e) from None
        if not meta.etag:
            raise hub.HubError(f"{hub.model_page(repo_id)}: the server sent no ETag for {f.name}, so the file "
                               "cannot be placed in the Hugging Face cache", kind="io")
        size = meta.size if meta.size is not None else (f.size or None)  # None: the server does not say
        blob = storage / "blobs" / str(meta.etag)
        partial = blob.with_name(blob.name + ".incomplete")
        done = (snapshot / f.name).exists() or blob.exists()
        got = (size or 0) if done else (partial.stat().st_size if partial.exists() else 0)
        if size is None or got > size:  # unknown length, or not this file's bytes: start it over
            partial.unlink(missing_ok=True)
            got = 0
        plan.append((f.name, size, blob, partial, meta.location))
        total, have = total + (size or 0), have + got
    hub.check_disk(repo_id, storage, total, have)
    if have:
        log(f"{hub.gib(have)} of {hub.gib(total)} already in the cache; continuing from there")

    constants.DOWNLOAD_CHUNK_SIZE = CHUNK_BYTES
    progress = progress_for(total, have)
    bar = _bar_class(progress)
    headers = build_hf_headers()
    blobs = storage / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    for name, size, blob, partial, url in plan:
        progress.file = name
        if not (blob.exists() or (snapshot / name).exists()):
            try:
                with open(partial, "ab") as fh:
                    start = fh.tell()
                    if size is None or start < size:
                        http_get(url, fh, resume_size=start, headers=headers, expected_size=size,
                                 displayed_filename=name, tqdm_class=bar)
                if size is not None and partial.stat().st_size != size:
                    raise hub.HubError(f"{name}: the server sent {partial.stat().st_size} bytes, expected {size}; "
                                       "download again to continue", kind="io")
                os.replace(partial, blob)
            except (hub.HubError, Cancelled):
                raise
            except Exception as e:
                raise _hub_error(repo_id, e) from None
        try:  # huggingface_hub links the blob into the snapshot and records the branch's commit
            path = hf_hub_download(repo_id, name, revision=revision or "main")
        except Exception as e:
            raise _hub_error(repo_id, e) from None
        progress.report(force=True)
    folder = Path(path).parent
    return {"status": "downloaded", "repo_id": repo_id, "revision": commit, "path": str(folder),
            "files": [p[0] for p in plan], "bytes": total, "page": hub.model_page(repo_id)}


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
    listen_for_stop(cancel)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal(cancel))
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
    except Exception as e:  # a bug: traceback to stderr
        traceback.print_exc(file=sys.stderr)
        em.emit(ERROR, kind="internal", message=f"{type(e).__name__}: {e}",
                hint="this is a bug in LoRA Studio: the traceback is in the log (stderr)")
        return EXIT_FAILED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)


if __name__ == "__main__":
    from workers import die_with_parent, exit_now

    die_with_parent()  # nobody left to report to: end with the CLI or window (training does not)
    exit_now(main())
