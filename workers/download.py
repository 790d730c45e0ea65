"""Download worker: ``python -m workers.download REPO_ID [--revision R] [--allow-pickle]``.

The studio's one worker that uses the network, and only because the user asked for this model.
It puts what training needs (``studio.hub.select_files``: safetensors weights, config, tokenizer,
generation config, chat template) into the standard Hugging Face cache, where every tool finds it.

Events on stdout: ``hello``; ``progress`` (phase "download", done and total in bytes, speed_bps,
eta_s, file) a few times a second; ``done`` with the snapshot folder, or ``error`` (kind, message,
hint). A ``stop`` command on stdin, SIGINT or SIGTERM cancels (exit 3).

huggingface_hub does the talking: the repo info and tree listing (``HfApi``), each file's HEAD
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
import errno  # noqa: E402
import platform  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urljoin, urlsplit  # noqa: E402

import httpx2  # noqa: E402

from studio import fsutil, hub, termtext  # noqa: E402
from studio.events import DONE, ERROR, HELLO, LOG, PROGRESS, Emitter, reserve_stdout  # noqa: E402
from workers import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, cancellable, report_failure, run_worker  # noqa: E402
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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _hub_error(repo_id: str, e: Exception, name: str = "") -> hub.HubError:
    """huggingface_hub's (and httpx's) exceptions in the studio's words."""
    import httpx2
    from huggingface_hub import constants, errors

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
    what = f"{repo_id}/{name}" if name else repo_id
    if isinstance(e, httpx2.TimeoutException):
        return hub.HubError(f"downloading {what} failed: the server sent nothing for {constants.HF_HUB_DOWNLOAD_TIMEOUT:g} "
                            "s, several times (HF_HUB_DOWNLOAD_TIMEOUT)", kind="io", hint=CONTINUE_HINT)
    if isinstance(e, httpx2.TransportError):
        return hub.HubError(f"downloading {what} failed: the connection broke ({_first_line(e)})", kind="io",
                            hint=CONTINUE_HINT)
    return hub.HubError(f"downloading {what} failed: {_first_line(e)}", kind="io", hint=CONTINUE_HINT)


CONTINUE_HINT = "Check the network connection and download again: it continues where it stopped."


class Capped:
    """The partial file as ``http_get`` writes it, refusing bytes past the file's declared size.

    ``http_get`` writes whatever the server streams and compares the length at the end; a body
    longer than declared (or a compressed one that expands) would fill the disk past the free-space
    check first. The first ``limit`` bytes are kept, so the next run checks them against the digest.
    """

    def __init__(self, fh, limit: int, repo_id: str, name: str) -> None:
        self.fh, self.limit, self.repo_id, self.name = fh, limit, repo_id, name

    def write(self, data: bytes) -> int:
        room = self.limit - self.fh.tell()
        if len(data) > room:
            self.fh.write(data[:max(room, 0)])
            self.fh.flush()
            raise hub.HubError(f"{hub.model_page(self.repo_id)}: the server sent more than the {self.limit} bytes it "
                               f"declared for {self.name}; stopped there (the first {self.limit} bytes are kept and "
                               "checked against the file's digest by the next download)", kind="io",
                               hint="Download again: it continues where it stopped. If this repeats, the server "
                                    "(HF_ENDPOINT, a mirror or a proxy) does not answer like the Hugging Face Hub.")
        return self.fh.write(data)

    def tell(self) -> int:
        return self.fh.tell()

    def seek(self, *args) -> int:
        return self.fh.seek(*args)

    def truncate(self, *args) -> int:
        return self.fh.truncate(*args)


def _check_request(repo_id: str, revision: str | None) -> None:
    """The user's repo id and revision, before either is sent anywhere or names a folder."""
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except Exception as e:
        raise hub.HubError(f"{repo_id!r} is not a Hugging Face model id: {_first_line(e)}", kind="config",
                           hint="Write owner/name, e.g. Qwen/Qwen3-4B.") from None
    if revision is not None:
        try:
            hub.checked_name(repo_id, revision)
        except hub.HubError:
            raise hub.HubError(f"--revision {revision!r} is not a branch, tag or commit name", kind="config",
                               hint="Use a branch, tag or commit of the repo (default: main).") from None


def _default_timeout(request) -> None:
    """A request hook giving a time limit to requests sent without one: HfApi's repo info and tree
    listing send none, so a server that stops answering would hold the download forever."""
    if not any(request.extensions.get("timeout", {}).values()):
        import httpx2
        from huggingface_hub import constants

        request.extensions["timeout"] = httpx2.Timeout(constants.HF_HUB_DOWNLOAD_TIMEOUT).as_dict()


def _identity_only(response) -> None:
    """A response hook: a file asked for as it is (``Accept-Encoding: identity``) must come as it is.

    An encoded body's length says nothing about the file's, and a Range offset into it means
    nothing; httpx would inflate it as it streams (``Capped`` would still stop it at the declared
    size). Refused on the headers, before any of it is read.
    """
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    request = response.request
    if request.method == "GET" and request.headers.get("Accept-Encoding") == "identity" and encoding != "identity":
        raise hub.HubError(f"{request.url}: the server sent a {encoding!r}-encoded body for a file asked for "
                           "unencoded (Accept-Encoding: identity); refused before reading it", kind="io",
                           hint="The server (HF_ENDPOINT, a mirror or a proxy) does not answer like the Hugging "
                                "Face Hub: check HF_ENDPOINT and your proxy settings.")


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _is_api(url) -> bool:
    """Whether ``url`` (an httpx URL) is one of the Hub's API answers (repo info, a tree page), not a file."""
    base = urlsplit(_endpoint())
    return hub.same_origin(str(url), _endpoint()) and url.path.startswith(base.path.rstrip("/") + "/api/")


def _token_to_hub_only(request) -> None:
    """A request hook: no Authorization to any origin but HF_ENDPOINT's, whoever addressed the request
    (huggingface_hub resends its headers, the token included, to every next-page link)."""
    if not hub.same_origin(str(request.url), _endpoint()):
        request.headers.pop("authorization", None)


def _api_unencoded(request) -> None:
    """A request hook: API answers asked for as they are, so the bytes counted (``_bounded_body``) are
    the bytes parsed; one sent encoded anyway is refused by ``_identity_only``."""
    if _is_api(request.url):
        request.headers["Accept-Encoding"] = "identity"


def _too_large(url) -> hub.HubError:
    return hub.HubError(f"{termtext.printable(str(url), 200)}: the server's answer is more than "
                        f"{hub.API_MAX_BYTES >> 20} MiB, far more than the Hub sends for a repo's information or "
                        "file list; refused without reading the rest", kind="io", hint=hub.NOT_THE_HUB)


class _Counted(httpx2.SyncByteStream):
    """A response body that raises once it passes ``hub.API_MAX_BYTES`` (a body without a Content-Length)."""

    def __init__(self, stream, url) -> None:
        self.stream, self.url = stream, url

    def __iter__(self):
        got = 0
        for chunk in self.stream:
            got += len(chunk)
            if got > hub.API_MAX_BYTES:
                raise _too_large(self.url)
            yield chunk

    def close(self) -> None:
        self.stream.close()


def _bounded_body(response) -> None:
    """A response hook: every body but a file's (which ``Capped`` bounds) stops at ``hub.API_MAX_BYTES``.

    httpx reads a repo info, a tree page, a redirect or an error answer whole into memory: a 600 MB
    repo info took 1.9 GB. Refused on its Content-Length before any of it is read, else counted.
    """
    request = response.request
    if request.method == "HEAD" or (request.method == "GET" and response.status_code in (200, 206)
                                    and not _is_api(request.url)):
        return
    length = response.headers.get("Content-Length", "").strip()
    if length.isdigit() and int(length) > hub.API_MAX_BYTES:
        raise _too_large(request.url)
    response.stream = _Counted(response.stream, request.url)


class _Pages:
    """A response hook on the tree listing's next pages (``Link: <URL>; rel="next"``), which
    huggingface_hub follows wherever and for as long as they lead: only on HF_ENDPOINT's origin,
    each page once, at most ``hub.MAX_PAGES``. ``reset`` before each listing."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def reset(self) -> None:
        self.seen.clear()

    def __call__(self, response) -> None:
        link = response.links.get("next", {}).get("url")
        if link is None or not _is_api(response.request.url):
            return
        self.seen.add(str(response.request.url))
        target = str(httpx2.URL(urljoin(str(response.request.url), link)))
        why = ""
        if not hub.same_origin(target, _endpoint()):
            why = f"on another server than HF_ENDPOINT ({_endpoint()}); refused, and the token was not sent there"
        elif target in self.seen:
            why = "that it already sent (the listing would never end); refused"
        elif len(self.seen) >= hub.MAX_PAGES:
            why = f"after {hub.MAX_PAGES} pages (the Hub sends 1000 files a page); refused"
        if why:
            raise hub.HubError(f"{termtext.printable(str(response.request.url), 200)}: the server named a next page "
                               f"of the file list {termtext.printable(target, 200)} {why}", kind="io",
                               hint=hub.NOT_THE_HUB)


PAGES = _Pages()


def _client():
    """huggingface_hub's own HTTP client with the worker's hooks (see ``_bound_waits``)."""
    from huggingface_hub.utils._http import default_client_factory

    client = default_client_factory()
    client.event_hooks["request"].extend([_default_timeout, _token_to_hub_only, _api_unencoded])
    client.event_hooks["response"].extend([_identity_only, _bounded_body, PAGES])
    return client


def _bound_waits() -> None:
    """Have huggingface_hub make its shared HTTP client with the worker's hooks (this process only).

    Through its client factory (``set_client_factory``), not on the client of the moment: after a
    ConnectError the library closes that client and makes a new one, which would come without them.
    """
    from huggingface_hub import set_client_factory

    set_client_factory(_client)


def _listing(repo_id: str, revision: str | None) -> tuple[str, list[hub.RemoteFile]]:
    """The commit of the revision and the files at that commit (the calls snapshot_download makes), checked."""
    from huggingface_hub import HfApi, errors
    from huggingface_hub.hf_api import RepoFile

    api = HfApi()
    PAGES.reset()
    try:
        info = api.repo_info(repo_id, revision=revision)
        commit = hub.checked_commit(repo_id, info.sha)
        try:
            raw = []
            for f in api.list_repo_tree(repo_id, recursive=True, revision=commit):
                if isinstance(f, RepoFile):
                    raw.append((f.path, f.size))
                if len(raw) > hub.MAX_FILES:
                    raise hub.HubError(f"{hub.model_page(repo_id)}: the server lists more than {hub.MAX_FILES} files "
                                       "for the repo, far more than a model has; refused", kind="io",
                                       hint=hub.NOT_THE_HUB)
        except errors.HfHubHTTPError:  # a server without the tree listing: the repo info's file names will do
            raw = [(s.rfilename, s.size) for s in (info.siblings or [])]
    except Exception as e:
        raise _hub_error(repo_id, e) from None
    listed = []
    for name, size in raw:
        name = hub.checked_name(repo_id, name)
        listed.append(hub.RemoteFile(name, hub.checked_size(repo_id, name, 0 if size is None else size)))
    return commit, listed


def _locate(repo_id: str, f: hub.RemoteFile, commit: str) -> tuple[str, str, int, dict]:
    """ETag, download URL, size and request headers of one file, from a HEAD at the commit, checked.

    The token goes only to the Hub's own origin: a file served from another host (the Hub's CDN, or
    wherever a server redirects) gets no Authorization, as huggingface_hub does for LFS files.
    """

    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo_id, f.name, revision=commit)
    try:
        meta = get_hf_file_metadata(url, retry_on_errors=True)
    except Exception as e:
        raise _hub_error(repo_id, e, f.name) from None
    if meta.etag is None:
        raise hub.HubError(f"{hub.model_page(repo_id)}: the server sent no ETag for {f.name}, so the file "
                           "cannot be placed in the Hugging Face cache", kind="io")
    etag = hub.checked_etag(repo_id, f.name, meta.etag)
    if meta.commit_hash is not None and hub.checked_commit(repo_id, meta.commit_hash) != commit:
        raise hub.HubError(f"{hub.model_page(repo_id)}: the server sent {f.name} from commit {meta.commit_hash}, "
                           f"not from {commit} that it listed; nothing was written for it", kind="io",
                           hint="The repo changed during the download: download again.")
    size = hub.checked_size(repo_id, f.name, meta.size if meta.size is not None else f.size)
    target = urljoin(url, meta.location or url)
    if urlsplit(target).scheme not in ("http", "https"):
        raise hub._refuse(repo_id, f"a download address for {f.name!r} of", meta.location, "which is not http(s)")
    headers = build_hf_headers()
    if not hub.same_origin(url, target):
        headers.pop("authorization", None)
    headers["Accept-Encoding"] = "identity"  # bytes as declared: no decompression to expand past the size
    return etag, target, size, headers


def _link(blob: Path, pointer: Path, storage: Path) -> None:
    """snapshots/COMMIT/NAME -> ../../blobs/ETAG, relative, the cache layout huggingface_hub and
    transformers read; the blob itself where the cache's file system takes no links, on
    huggingface_hub's rules (``are_symlinks_supported`` tries one there, HF_HUB_DISABLE_SYMLINKS;
    a link refused for permission). Any other failure (a name too long, a read-only folder) is an
    error: moving the blob would fail the same way.
    """
    from huggingface_hub.file_download import are_symlinks_supported

    pointer.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(pointer):
        pointer.unlink()
    if are_symlinks_supported(storage):
        try:
            os.symlink(os.path.relpath(blob, pointer.parent), pointer)
            return
        except PermissionError:
            pass
    fsutil.replace(blob, pointer)


def _fetch(repo_id: str, name: str, url: str, headers: dict, size: int, etag: str, partial: Path, blob: Path,
           bar) -> None:
    """Continue ``partial`` from its length (HTTP Range), never past ``size``; check the digest; rename to the blob."""
    from huggingface_hub.file_download import http_get

    try:
        with open(partial, "ab") as fh:
            start = fh.tell()
            if start < size:
                http_get(url, Capped(fh, size, repo_id, name), resume_size=start, headers=headers,
                         expected_size=size, displayed_filename=name, tqdm_class=bar)
    except (hub.HubError, Cancelled):
        raise
    except Exception as e:
        raise _hub_error(repo_id, e, name) from None
    got = partial.stat().st_size
    if got != size:
        raise hub.HubError(f"{name}: the server sent {got} bytes, expected {size}; download again to continue",
                           kind="io", hint=CONTINUE_HINT)
    digest = hub.file_digest(partial, etag)
    if digest != etag:
        partial.unlink()
        raise hub.HubError(f"{hub.model_page(repo_id)}: {name} does not match its digest (the server declared "
                           f"{etag}, the bytes that arrived hash to {digest}); the file was deleted", kind="io",
                           hint="Download again. If this repeats, the server (HF_ENDPOINT, a mirror or a proxy) "
                                "sends damaged or altered files.")
    fsutil.replace(partial, blob)


def _record_ref(repo_id: str, storage: Path, revision: str | None, commit: str) -> None:
    """refs/BRANCH holds the commit (what huggingface_hub and studio.models resolve 'main' through)."""
    ref = revision or "main"
    if hub.COMMIT_RE.fullmatch(ref):
        return
    path = hub.inside(repo_id, storage / "refs" / ref, storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != commit:
        path.write_text(commit)


def download(repo_id: str, revision: str | None, allow_pickle: bool, progress_for, log) -> dict:
    """Fetch the files and return what the ``done`` event says; raises HubError or Cancelled.

    Every name the server chooses (commit, ETags, file names, download addresses) is checked before
    it names a path, and every path is checked to resolve inside the cache (``studio.hub.inside``).
    """
    hub.online()  # also when run in-process by 'lora-studio models download --events'
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    _check_request(repo_id, revision)
    _bound_waits()
    commit, listed = _listing(repo_id, revision)
    files = hub.select_files(repo_id, listed, allow_pickle)
    cache = Path(constants.HF_HUB_CACHE)
    storage = hub.inside(repo_id, cache / repo_folder_name(repo_id=repo_id, repo_type="model"), cache)
    snapshot = storage / "snapshots" / commit

    # What each file is on the server (its ETag names its blob) and what the cache already holds.
    plan, total, have = [], 0, 0
    for f in files:
        etag, url, size, headers = _locate(repo_id, f, commit)
        blob = hub.inside(repo_id, storage / "blobs" / etag, storage)
        partial = hub.inside(repo_id, blob.with_name(blob.name + ".incomplete"), storage)
        pointer = hub.inside(repo_id, snapshot / f.name, storage)
        done = pointer.exists() or blob.exists()
        got = size if done else (partial.stat().st_size if partial.exists() else 0)
        if got > size:  # longer than the file: not its bytes, start it over
            log(f"{f.name}: the partial download is longer than the file ({got} > {size} bytes); starting it over")
            partial.unlink()
            got = 0
        plan.append((f.name, size, etag, url, headers, blob, partial, pointer))
        total, have = total + size, have + got
    hub.check_disk(repo_id, storage, total, have)
    if have:
        log(f"{hub.gib(have)} of {hub.gib(total)} already in the cache; continuing from there")

    constants.DOWNLOAD_CHUNK_SIZE = CHUNK_BYTES
    progress = progress_for(total, have)
    bar = _bar_class(progress)
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    for name, size, etag, url, headers, blob, partial, pointer in plan:
        progress.file = name
        if not pointer.exists():
            if not blob.exists():
                _fetch(repo_id, name, url, headers, size, etag, partial, blob, bar)
            _link(blob, pointer, storage)
            hub.inside(repo_id, pointer, storage)
        progress.report(force=True)
    _record_ref(repo_id, storage, revision, commit)
    return {"status": "downloaded", "repo_id": repo_id, "revision": commit, "path": str(snapshot),
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
