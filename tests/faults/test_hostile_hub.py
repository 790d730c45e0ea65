"""The download worker and `lora-studio models download` against a Hub that lies (tests/hubserver.py).

Every server-chosen name (ETag, commit, file names, redirect targets), the token on redirects,
bodies longer than declared or compressed against the request, wrong digests, stalls and resets.
Each attack must end in an error event with kind, message and hint, no traceback, a non-zero exit
of the CLI with the message, and nothing written outside the cache folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hubserver import HubServer, Repo

from studio import events, hub, procs

ROOT = Path(__file__).resolve().parents[2]
REPO = "tiny-org/tiny-llama"
SHA = Repo({}).sha
WEIGHTS = os.urandom(3 << 20)
FILES = {"config.json": json.dumps({"model_type": "llama"}).encode(), "model.safetensors": WEIGHTS,
         "tokenizer.json": b'{"version": "1.0"}'}
STORAGE = "models--tiny-org--tiny-llama"


@pytest.fixture
def server(tmp_path):
    s = HubServer(repos={REPO: Repo(dict(FILES))})
    s.url = s.start()
    yield s
    s.stop()


def _env(server: HubServer, cache: Path, **extra: str) -> dict:
    env = procs.worker_env()
    env.pop("HF_TOKEN", None)
    env.update(HF_ENDPOINT=server.url, HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf-home"),
               HF_HUB_DISABLE_XET="1", HF_HUB_DOWNLOAD_TIMEOUT="1", HF_HUB_ETAG_TIMEOUT="1")
    env.update(extra)
    return env


def _worker(server: HubServer, cache: Path, *args: str, **extra: str) -> tuple[int, list[events.Event], str]:
    code = "import sys; from workers.download import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, *(args or (REPO,))], capture_output=True, timeout=90,
                          env=_env(server, cache, **extra), cwd=ROOT, stdin=subprocess.DEVNULL)
    reader = events.EventReader()
    return proc.returncode, reader.feed(proc.stdout) + reader.close(), proc.stderr.decode()


def _cli(server: HubServer, cache: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_studio", "models", "download", *(args or (REPO,))],
                          capture_output=True, text=True, timeout=90, env=_env(server, cache, **extra), cwd=ROOT,
                          stdin=subprocess.DEVNULL)


def _outside(tmp_path: Path, *caches: Path) -> list[Path]:
    """Every file under tmp_path that is not inside one of the cache folders (or huggingface_hub's HF_HOME)."""
    keep = [c.resolve() for c in caches] + [(c.parent / "hf-home").resolve() for c in caches]
    return [p for p in tmp_path.rglob("*") if not p.is_dir() and not any(k in p.resolve().parents for k in keep)]


_CLI_CHECKED: set[str] = set()


def _first_case() -> bool:
    """True the first time this process sees the current test function (any of its parameter cases): the CLI is
    one more Python start per case, and it only passes the worker's error on, which every case checks."""
    name = os.environ.get("PYTEST_CURRENT_TEST", "").split("[", 1)[0].split(" ", 1)[0]
    first = name not in _CLI_CHECKED
    _CLI_CHECKED.add(name)
    return first


def _refused(server: HubServer, tmp_path: Path, *args: str, words: str = "", **extra: str) -> dict:
    """Run the worker (and the CLI, for the first case of each test function in this process), each with a fresh
    cache; both must fail cleanly. Returns the error event."""
    cache, cli_cache = tmp_path / "hub", tmp_path / "cli" / "hub"
    code, evs, err = _worker(server, cache, *args, **extra)
    assert code == 1, err
    errors = [e.data for e in evs if e.type == events.ERROR]
    assert errors, err
    error = errors[-1]
    assert error["kind"] in ("io", "config") and error["message"] and error["hint"], error
    assert words in error["message"], error
    assert "Traceback" not in err, err
    assert not [e for e in evs if e.type == events.DONE]
    if _first_case():
        cli = _cli(server, cli_cache, *args, **extra)
        assert cli.returncode == 1, cli.stderr
        assert "lora-studio models download: " in cli.stderr and words in cli.stderr, cli.stderr
        assert "Traceback" not in cli.stderr, cli.stderr
    assert _outside(tmp_path, cache, cli_cache) == []
    for c in (cache, cli_cache):  # nothing half-written is ever a model
        assert not list(c.glob(f"{STORAGE}/snapshots/*/config.json"))
    return error


# --- 1. path traversal in every server-chosen name --------------------------------------------------
@pytest.mark.parametrize("etag", ["../../../evil.pth", "../../../../../evil.pth", "/tmp/evil.pth",
                                  "..\\..\\..\\evil.pth", "a" * 63 + "/", "ABCDEF" + "0" * 58, ""])
def test_etag_that_is_not_a_digest_is_refused(server, tmp_path, etag):
    """The blob file is named after the ETag: ../../../evil.pth once landed in tmp_path (a .pth in
    site-packages runs code at every Python start)."""
    server.etag["model.safetensors"] = etag
    error = _refused(server, tmp_path, words="model.safetensors")
    assert "not a file digest" in error["message"]
    assert not (tmp_path / "evil.pth").exists()


@pytest.mark.parametrize("sha", ["../../../evil", "../../../../../evil", "/tmp/evil", "main", "0" * 39 + "/"])
def test_commit_that_is_not_a_git_sha_is_refused(tmp_path, sha):
    s = HubServer(repos={REPO: Repo(dict(FILES), sha=sha)})
    s.url = s.start()
    try:
        _refused(s, tmp_path, words="not a git commit")
    finally:
        s.stop()


def test_file_commit_header_other_than_the_listed_commit_is_refused(server, tmp_path):
    server.commit_header = "../../../evil"
    _refused(server, tmp_path, words="not a git commit")
    server.commit_header = "f" * 40
    _refused(server, tmp_path, words="from commit " + "f" * 40)


@pytest.mark.parametrize("name", ["../evil.pth", "a/../../evil.pth", "/tmp/evil.pth", "..\\..\\evil.pth", "..",
                                  "C:\\evil.pth", "C:evil.safetensors", "a//b", "./config.json", "x\0y"])
def test_file_name_that_leaves_the_repo_is_refused(server, tmp_path, name):
    server.repos[REPO].files[name] = b"import os  # runs at startup when it lands in site-packages\n"
    _refused(server, tmp_path, words="the file name")


@pytest.mark.parametrize("location", ["file:///etc/passwd", "/../../../../evil.pth", "//%s/x" % "127.0.0.1:1",
                                      "ftp://127.0.0.1/x"])
def test_redirect_anywhere_writes_nothing_outside(server, tmp_path, location):
    server.redirect["model.safetensors"] = location
    _refused(server, tmp_path)


def test_snapshot_link_pointing_out_of_the_cache_is_refused(server, tmp_path):
    """A cache left with a snapshot link to a file elsewhere: not taken as the downloaded file."""
    cache = tmp_path / "hub"
    snap = cache / STORAGE / "snapshots" / SHA
    snap.mkdir(parents=True)
    (tmp_path / "secret").write_text("not a model")
    (snap / "model.safetensors").symlink_to(tmp_path / "secret")
    code, evs, err = _worker(server, cache)
    assert code == 1, err
    error = [e.data for e in evs if e.type == events.ERROR][-1]
    assert "outside the Hugging Face cache" in error["message"] and error["hint"]
    assert (tmp_path / "secret").read_text() == "not a model"


def test_repo_id_and_revision_with_traversal_are_refused(server, tmp_path):
    error = _refused(server, tmp_path, "../evil", words="not a Hugging Face model id")
    assert error["kind"] == "config"
    code, evs, err = _worker(server, tmp_path / "hub", REPO, "--revision=../../../evil")
    assert code == 1 and "not a branch, tag or commit" in [e for e in evs if e.type == events.ERROR][-1].data["message"]


# --- 2. the token stays on the Hub's origin ------------------------------------------------------
@pytest.mark.parametrize("get_only", [False, True])
def test_token_does_not_follow_a_redirect_to_another_host(server, tmp_path, get_only):
    """HEAD or GET of the file redirects to a second server (another origin): it must not see the token."""
    cdn = HubServer(repos=server.repos)
    cdn_url = cdn.start()
    try:
        server.redirect["model.safetensors"] = f"{cdn_url}/{REPO}/resolve/{SHA}/model.safetensors"
        server.redirect_get_only = get_only
        code, evs, err = _worker(server, tmp_path / "hub", HF_TOKEN="hf_secret_token")
        assert code == 0, err
        assert "Bearer hf_secret_token" in {a for _, a in server.auth}  # the Hub itself gets it
        assert [a for _, a in cdn.auth if a] == []
        assert any(n == "model.safetensors" for n, _, _ in cdn.served)
        assert (tmp_path / "hub" / STORAGE / "snapshots" / SHA / "model.safetensors").read_bytes() == WEIGHTS
    finally:
        cdn.stop()


# --- 3. bodies longer than declared ---------------------------------------------------------------
def test_body_longer_than_declared_stops_at_the_declared_size_and_continues(server, tmp_path):
    server.body["model.safetensors"] = WEIGHTS + os.urandom(24 << 20)
    error = _refused(server, tmp_path, words="more than the 3145728 bytes it declared")
    assert "continues" in error["hint"]
    for p in tmp_path.rglob("*"):
        assert p.is_dir() or p.stat().st_size <= len(WEIGHTS), p
    # the hint is true: the next download continues (nothing fetched again), checks the digest, succeeds
    server.body.clear()
    before = len(server.served)
    code, evs, err = _worker(server, tmp_path / "hub")
    assert code == 0, err
    assert not [s for s in server.served[before:] if s[0] == "model.safetensors"]
    assert (tmp_path / "hub" / STORAGE / "snapshots" / SHA / "model.safetensors").read_bytes() == WEIGHTS


def test_gzip_bomb_is_refused_before_its_body_is_read(server, tmp_path):
    """3 MiB declared, 256 MiB of zeros once inflated (a 0.3 MiB body), against Accept-Encoding: identity."""
    server.gzip = True
    server.body["model.safetensors"] = WEIGHTS + bytes(256 << 20)
    _refused(server, tmp_path, words="'gzip'-encoded body", HF_HUB_DOWNLOAD_TIMEOUT="30")
    assert not [p for p in tmp_path.rglob("*.incomplete") if p.stat().st_size]


def test_huge_declared_size_fails_the_disk_check_before_the_first_byte(server, tmp_path):
    server.linked_size["model.safetensors"] = str(1 << 50)
    _refused(server, tmp_path, words="Not enough free disk space")
    assert not [s for s in server.served if s[0] == "model.safetensors"]


@pytest.mark.parametrize("size", [-5, "abc", 1.5, None])
def test_garbage_sizes_are_refused(server, tmp_path, size):
    if size is None:
        server.linked_size["model.safetensors"] = "-3"
    else:
        server.tree_size["model.safetensors"] = size
    _refused(server, tmp_path, words="not a number of bytes")


# --- 4. digests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json"])
def test_file_not_matching_its_digest_is_deleted(server, tmp_path, name):
    """sha256 (LFS files) or git blob sha1 (the others): same length, other bytes."""
    data = FILES[name]
    server.body[name] = bytes([data[0] ^ 1]) + data[1:]
    error = _refused(server, tmp_path, words=f"{name} does not match its digest")
    assert error["kind"] == "io"
    assert not [p for p in (tmp_path / "hub").rglob("*") if p.is_file() and p.read_bytes() == server.body[name]]


def test_digest_matches_what_the_registry_records(server, tmp_path):
    code, _, err = _worker(server, tmp_path / "hub")
    assert code == 0, err
    blob = (tmp_path / "hub" / STORAGE / "snapshots" / SHA / "model.safetensors").resolve()
    assert blob.name == hashlib.sha256(WEIGHTS).hexdigest() == hashlib.sha256(blob.read_bytes()).hexdigest()


# --- stalls and resets ------------------------------------------------------------------------------
def test_stalled_body_times_out_with_a_clear_error_and_resumes(server, tmp_path):
    server.stall_at = 1 << 20
    error = _refused(server, tmp_path, words="the server sent nothing for 1 s")
    assert "continues where it stopped" in error["hint"]
    server.stall_at = None
    before = len(server.served)
    code, _, err = _worker(server, tmp_path / "hub")
    assert code == 0, err
    assert [s[1] for s in server.served[before:] if s[0] == "model.safetensors"] == [1 << 20]


def test_stalled_repo_info_times_out(server, tmp_path):
    server.stall_api = True
    _refused(server, tmp_path, words="the server sent nothing")


def test_connection_reset_is_a_clear_error_and_resumes(server, tmp_path):
    server.reset_at, server.delay_s = 1 << 20, 0.01
    error = _refused(server, tmp_path, words="the connection broke")
    assert "continues where it stopped" in error["hint"]
    kept = sum(p.stat().st_size for p in (tmp_path / "hub").rglob("*.incomplete"))
    assert kept > 0
    server.reset_at, server.delay_s = None, 0.0
    before = len(server.served)
    code, _, err = _worker(server, tmp_path / "hub")
    assert code == 0, err
    assert [s[1] for s in server.served[before:] if s[0] == "model.safetensors"] == [kept]
    assert (tmp_path / "hub" / STORAGE / "snapshots" / SHA / "model.safetensors").read_bytes() == WEIGHTS


# --- the tree listing's next pages ----------------------------------------------------------------
def test_next_page_on_another_origin_is_refused_before_it_is_asked(server, tmp_path):
    """huggingface_hub sends its headers, Authorization included, to whatever Link: rel="next" names:
    a capture server got the token and the download went on."""
    other = HubServer()
    other_url = other.start()
    try:
        server.tree_next = lambda path: f"{other_url}/steal?page=2"
        _refused(server, tmp_path, words="next page", HF_TOKEN="hf_secret_token")
        assert other.requests == []
    finally:
        other.stop()


def test_token_is_dropped_from_any_request_to_another_origin(server, tmp_path):
    """The worker's request hook, also on the client huggingface_hub makes anew after a ConnectError
    (``close_session``): a request the library addresses elsewhere with the token goes without it."""
    code = ("import sys; from workers import download, download_fetch; "
            "from huggingface_hub import close_session, get_session; download_fetch._bound_waits(); close_session(); "
            "get_session().get(sys.argv[1], headers={'authorization': 'Bearer hf_secret_token'})")
    env = _env(server, tmp_path / "hub", HF_ENDPOINT="https://hub.invalid", HF_TOKEN="hf_secret_token")
    proc = subprocess.run([sys.executable, "-c", code, f"{server.url}/api/models"], capture_output=True, text=True,
                          timeout=60, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert server.auth == [("/api/models", None)]


@pytest.mark.parametrize("loop", ["itself", "endless"])
def test_next_page_loop_is_refused(server, tmp_path, loop):
    """A next page naming the page itself (962 requests in 45 s, never ending), or always a new one."""
    count = iter(range(1 << 30))
    server.tree_next = (lambda path: server.url + path) if loop == "itself" else \
        (lambda path: f"{server.url}/api/models/{REPO}/tree/{SHA}?recursive=True&cursor={next(count)}")
    _refused(server, tmp_path, words="next page")
    assert len([p for _, p in server.requests if "/tree/" in p]) <= 2 * hub.MAX_PAGES


# --- answers too large to hold ------------------------------------------------------------------
@pytest.mark.parametrize("chunked", [False, True])
def test_huge_repo_info_is_refused_without_reading_it_whole(server, tmp_path, chunked):
    """A 200 MiB repo info (a 600 MB one took 1.9 GB of memory), with a Content-Length or chunked."""
    server.api_flood, server.api_chunked = 200 << 20, chunked
    _refused(server, tmp_path, words="more than 64 MiB")


# --- file names the file system cannot hold, or the terminal would obey -------------------------------
@pytest.mark.parametrize("name", ["a" * 300 + ".safetensors", "\u00e9" * 128 + ".json", "sub/" + "b" * 256])
def test_file_name_longer_than_a_file_system_allows_is_refused(server, tmp_path, name):
    """300 bytes: 'File name too long' was reported as a bug in LoRA Studio, with a traceback."""
    server.repos[REPO].files[name] = b"x"
    _refused(server, tmp_path, words="longer than 255 bytes")


@pytest.mark.parametrize("name", ["\u202egnp.\x9b2J\x7f\u2028red.safetensors", "a\x9b2J.safetensors",
                                  "a\x7f.safetensors", "a\u2029.json", "a\u200b.safetensors", "sub/\u202ex.json",
                                  "a\udcff.json"])
def test_invisible_or_control_characters_in_file_names_are_refused(server, tmp_path, name):
    """C1 controls (\\x9b is a one-byte CSI), DEL, bidi overrides, zero-width and line/paragraph separators
    were written into the snapshot and raw into the progress line."""
    from studio.termtext import printable

    server.repos[REPO].files[name] = b"x"
    error = _refused(server, tmp_path, words="an invisible or control character")
    assert printable(error["message"]) == error["message"]


@pytest.mark.parametrize("name", ["CON.safetensors", "nul.safetensors", "Aux", "com1.json", "LPT9.tar.gz",
                                  "sub/PRN.json", "CONIN$", "com\u00b9.json", "model.safetensors.",
                                  "model.safetensors ", "model.safetensors:evil"])
def test_windows_device_and_stream_names_are_refused(server, tmp_path, name):
    """CON.safetensors opens the console on Windows, model.safetensors:evil writes a hidden stream, and a
    trailing dot or space is dropped (so the name is another file's)."""
    server.repos[REPO].files[name] = b"x"
    _refused(server, tmp_path, words="on Windows")


@pytest.mark.parametrize("names", [("Model.safetensors", "model.safetensors"),
                                   ("STRASSE.safetensors", "stra\u00dfe.safetensors"),
                                   ("caf\u00e9.safetensors", "cafe\u0301.safetensors")])
def test_names_that_differ_only_in_case_are_refused(server, tmp_path, names):
    """On Windows and macOS the second overwrites the first (macOS also folds accents composed or not)."""
    for name in names:
        server.repos[REPO].files[name] = name.encode()
    _refused(server, tmp_path, words="differ only in case")


@pytest.mark.skipif(sys.platform == "win32", reason="builds a folder near Linux's PATH_MAX (4096 bytes)")
def test_cache_too_deep_for_a_long_file_name_is_a_clear_error(server, tmp_path):
    """A name any server may send (252 bytes) under a cache folder so deep that its snapshot path passes
    the system's limit: 'File name too long' was a bug report with a traceback, from the worker and the CLI."""
    server.repos[REPO].files["a" * 240 + ".safetensors"] = b"x"
    deep = tmp_path
    while len(os.fsencode(deep)) < 3800:
        deep = deep / ("d" * 100)
    code, evs, err = _worker(server, deep / "hub")
    error = [e.data for e in evs if e.type == events.ERROR][-1]
    assert code == 1 and "Traceback" not in err, err
    assert error["kind"] == "io" and "File name too long" in error["message"] and "HF_HUB_CACHE" in error["hint"]
    cli = _cli(server, deep / "cli" / "hub")
    assert cli.returncode == 1 and "Traceback" not in cli.stderr, cli.stderr
    assert "lora-studio models download: writing the download into the Hugging Face cache failed" in cli.stderr
    assert _outside(tmp_path, deep / "hub", deep / "cli" / "hub") == []


def test_snapshot_links_follow_huggingface_hubs_rule(server, tmp_path):
    """Where the cache takes no links (HF_HUB_DISABLE_SYMLINKS, or huggingface_hub's probe fails), the
    snapshot holds the files themselves; other failures to link are errors, not a move that fails alike."""
    code, _, err = _worker(server, tmp_path / "hub", HF_HUB_DISABLE_SYMLINKS="1")
    assert code == 0, err
    pointer = tmp_path / "hub" / STORAGE / "snapshots" / SHA / "model.safetensors"
    assert not pointer.is_symlink() and pointer.read_bytes() == WEIGHTS
