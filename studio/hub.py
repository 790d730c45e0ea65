"""The Hugging Face Hub, the studio's only network use: which files a download takes, search results.

Nothing here touches the network at import time, and nothing here is called by a training or
export worker (those stay offline, ``studio.procs.OFFLINE_ENV``). The download worker
(``workers/download.py``) and ``lora-studio models search`` / ``login`` are the callers; each is
something the user asked for.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import urlsplit

from studio import termtext
from studio.fsutil import sha256_files

# What training needs besides the weights: config, tokenizer, generation config, chat template.
META_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "tokenizer.model", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
              "vocab.txt", "chat_template.jinja", "chat_template.json", "*.tiktoken")
SAFETENSORS = ("*.safetensors", "model.safetensors.index.json")
PICKLE = ("pytorch_model*.bin", "pytorch_model.bin.index.json")
# Everything else (GGUF, ONNX, .pt/.pth, Mistral's consolidated.safetensors, subfolders) is never taken.
CONFIG = "config.json"
# What the Hub names things with: a commit is a 40-hex git sha; a file's ETag is its git blob sha1
# (40 hex, plain git files) or its sha256 (64 hex, LFS files). huggingface_hub checks revisions with
# the same pattern (file_download.REGEX_COMMIT_HASH) but names blobs after any ETag it is sent.
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
DIGEST_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
DISK_MARGIN_BYTES = 64 << 20  # the cache's locks and symlinks, and not filling a disk to the last byte
# What a server's answers may be: the Hub's repo info and tree pages are a few MiB at most (1000 files
# a page), and no model repo lists anywhere near 100,000 files.
API_MAX_BYTES = 64 << 20
MAX_PAGES = 200
MAX_FILES = 100_000
# One segment of a file name: 255 bytes is the most ext4, btrfs, APFS and NTFS take (NTFS counts UTF-16
# units, never more than UTF-8 bytes).
NAME_MAX_BYTES = 255
# Names that open a device, not a file, on Windows, with any extension (Python 3.13's ntpath.isreserved).
WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} |
                            {f"{d}{n}" for d in ("COM", "LPT") for n in "123456789\u00b9\u00b2\u00b3"})
NOT_THE_HUB = ("The server (HF_ENDPOINT, a mirror or a proxy) does not answer like the Hugging Face Hub: check "
               "HF_ENDPOINT and your proxy settings, or report the repo.")


class HubError(Exception):
    """A download or search that cannot go on; the message says what to do."""

    def __init__(self, message: str, kind: str = "io", hint: str = "") -> None:
        super().__init__(message)
        self.kind, self.hint = kind, hint


@dataclass
class RemoteFile:
    name: str
    size: int


def online() -> None:
    """Lift the offline switch for this process, explicitly: the studio asked for the network.

    Workers and the window's commands run with HF_HUB_OFFLINE=1 (``studio.procs.OFFLINE_ENV``);
    huggingface_hub reads it once, at import, so its constant is set too when already imported.
    """
    os.environ["HF_HUB_OFFLINE"] = "0"
    import sys

    constants: Any = sys.modules.get("huggingface_hub.constants")  # a module: its attributes are not known here
    if constants is not None:
        constants.HF_HUB_OFFLINE = False


# --- what a server says, checked before it names anything on disk ----------------------------------
def _refuse(repo_id: str, what: str, value: object, why: str) -> HubError:
    shown = repr(value) if len(repr(value)) <= 120 else repr(value)[:117] + "..."
    return HubError(f"{model_page(repo_id)}: the server sent {what} {shown}, {why}; nothing was written for it",
                    kind="io", hint=NOT_THE_HUB)


def checked_commit(repo_id: str, sha: object) -> str:
    """The repo's commit as the server says it, refused unless it is a 40-hex git sha (it names a folder)."""
    if not isinstance(sha, str) or not COMMIT_RE.fullmatch(sha):
        raise _refuse(repo_id, "the commit", sha, "which is not a git commit (40 hex digits)")
    return sha


def checked_etag(repo_id: str, name: str, etag: object) -> str:
    """A file's ETag, refused unless it is a git sha1 or a sha256 in hex: it names the file's blob."""
    if not isinstance(etag, str) or not DIGEST_RE.fullmatch(etag):
        raise _refuse(repo_id, f"an ETag for {name!r} of", etag,
                      "which is not a file digest (40 or 64 hex digits)")
    return etag


def checked_name(repo_id: str, name: object) -> str:
    """A file name from the repo's listing, refused when it could leave the folder it is joined to,
    when some file system the studio runs on cannot hold it, or when it would act on a terminal.

    A name is a relative POSIX path: no empty, ``.`` or ``..`` segment, no absolute or Windows
    drive/UNC form, no backslash (a separator on Windows), no character ``termtext.printable``
    escapes (C0 and C1 controls, DEL, bidi overrides, zero-width and line separators: the name is
    shown in the progress line and the error), and each segment one a file can have (``_segment_problem``).
    """
    if not isinstance(name, str) or not name:
        raise _refuse(repo_id, "the file name", name, "which is not a file name")
    why = ""
    if termtext.unsafe(name):
        why = "which holds an invisible or control character"
    elif "\\" in name:
        why = "which holds a backslash (a folder separator on Windows)"
    elif PurePosixPath(name).is_absolute() or any(PureWindowsPath(p).drive or PureWindowsPath(p).root
                                                   for p in name.split("/")):
        why = "which is an absolute path"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        why = "which climbs out of the repo's folder"
    else:
        why = next(filter(None, map(_segment_problem, name.split("/"))), "")
    if why:
        raise _refuse(repo_id, "the file name", name, why)
    return name


def _segment_problem(part: str) -> str:
    """Why one segment of a file name cannot be a file (of that name) everywhere; "" when it can."""
    if len(os.fsencode(part)) > NAME_MAX_BYTES:
        return f"which is longer than {NAME_MAX_BYTES} bytes, the most a file name may be"
    if part[-1] in ". ":
        return "which ends in a dot or a space, dropped on Windows (so it would name another file)"
    if ":" in part:
        return "which holds a colon, a hidden data stream on Windows"
    if part.partition(".")[0].rstrip(" ").upper() in WINDOWS_DEVICES:
        return "which is a device name on Windows (CON, PRN, AUX, NUL, COM1-9, LPT1-9, with any extension)"
    return ""


def _caseless(name: str) -> str:
    """``name`` as a case-insensitive file system compares it (Unicode's canonical caseless match:
    Windows folds case, macOS also composed and decomposed accents)."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def distinct_names(repo_id: str, files: list[RemoteFile]) -> None:
    """Refuse two files that would be one file on Windows or macOS: the second would overwrite the first."""
    seen: dict[str, str] = {}
    for f in files:
        key = _caseless(f.name)
        if key not in seen:
            seen[key] = f.name
        elif seen[key] == f.name:
            raise _refuse(repo_id, "the file name", f.name, "which it lists twice")
        else:
            raise _refuse(repo_id, "the file names", (seen[key], f.name),
                          "which differ only in case or accents: on Windows and macOS one would overwrite the other")


def checked_size(repo_id: str, name: str, size: object) -> int:
    """A file size from the listing or a response header: a whole number of bytes, not negative."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise _refuse(repo_id, f"a size for {name!r} of", size, "which is not a number of bytes")
    return size


def inside(repo_id: str, path: Path, root: Path) -> Path:
    """``path`` when it resolves (links followed) inside ``root``; refused otherwise."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, top]) != top:
        raise HubError(f"{repo_id}: {path} leads outside the Hugging Face cache ({root}) to {real}; refusing to "
                       "write there", kind="io",
                       hint="Something in the cache is a link that points elsewhere: delete the model's folder "
                            f"{root} and download again.")
    return path


def same_origin(url: str, other: str) -> bool:
    """Whether two URLs share scheme, host and port (where a token may go without leaving the Hub)."""
    a, b = urlsplit(url), urlsplit(other)
    ports = {"http": 80, "https": 443}
    return (a.scheme, (a.hostname or "").lower(), a.port or ports.get(a.scheme)) == \
        (b.scheme, (b.hostname or "").lower(), b.port or ports.get(b.scheme))


def file_digest(path: Path, etag: str) -> str:
    """The digest of ``path`` in the ETag's kind: sha256 (64 hex) or the git blob sha1 (40 hex)."""
    if len(etag) == 64:
        return sha256_files(path)
    sha = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        while chunk := fh.read(4 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def select_files(repo_id: str, files: list[RemoteFile], allow_pickle: bool = False) -> list[RemoteFile]:
    """The files a fine-tune needs, ``config.json`` last (its arrival marks the model as complete).

    Only top-level files: subfolders hold other variants (``original/``, ``onnx/``, ``gguf/``).
    ``.bin`` weights (pickle, can run code when loaded) only with ``allow_pickle`` and only when the
    repo has no safetensors.
    """
    top = [f for f in files if "/" not in f.name]
    names = {f.name for f in top}
    if CONFIG not in names:
        raise HubError(f"{repo_id} has no config.json at its top level: it is not a Transformers model "
                       "(a GGUF-only or adapter-only repo cannot be fine-tuned here)", kind="config")
    has_st = any(fnmatch.fnmatchcase(n, "*.safetensors") and not n.startswith("consolidated") for n in names)
    weights: tuple[str, ...] = SAFETENSORS
    if not has_st:
        if not any(_matches(n, PICKLE) for n in names):
            raise HubError(f"{repo_id} has no safetensors weights (only: {', '.join(sorted(names)[:8])}); "
                           "the studio fine-tunes Transformers models with safetensors weights", kind="config")
        if not allow_pickle:
            raise HubError(f"{repo_id} has only pytorch_model*.bin weights (pickle files, which can run code when "
                           "loaded) and no safetensors",
                           kind="config", hint="If you trust this model, set allow_pickle in the recipe "
                                               "(or pass --allow-pickle) and download again.")
        weights = PICKLE
    picked = [f for f in top
              if (_matches(f.name, weights) and not f.name.startswith("consolidated")) or
              _matches(f.name, META_FILES)]
    distinct_names(repo_id, picked)
    return sorted(picked, key=lambda f: (f.name == CONFIG, f.name))


def free_bytes(folder: Path) -> int:
    """Free space on the disk holding ``folder`` (its nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_disk(repo_id: str, folder: Path, total: int, have: int) -> None:
    """Raise before the first byte when the rest of the download cannot fit on the disk."""
    need = max(0, total - have)
    free = free_bytes(folder)
    if need + DISK_MARGIN_BYTES > free:
        kept = f", {gib(have)} of it already downloaded" if have else ""
        raise HubError(f"Not enough free disk space to download {repo_id}: it needs {gib(need)} more "
                       f"({gib(total)} in all{kept}) and only {gib(free)} is free in {folder}.",
                       kind="io", hint="Free some space, or point HF_HUB_CACHE (or HF_HOME) at a disk with room "
                                       "and download again.")


def gib(n: float) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{int(n)} bytes" if n < 1024 else f"{n / 1024:.1f} KiB"


def cache_dir() -> Path:
    """The standard Hugging Face hub cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def cached_models() -> list[tuple[str, str]]:
    """(repo id, newest snapshot folder with a config.json) of every model in the local hub cache."""
    out: list[tuple[str, str]] = []
    try:
        entries = sorted(cache_dir().iterdir())
    except OSError:
        return out
    for repo in entries:
        if not repo.name.startswith("models--"):
            continue
        snaps = sorted((repo / "snapshots").glob("*/config.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        if snaps:
            out.append((repo.name[len("models--"):].replace("--", "/"), str(snaps[0].parent)))
    return out


def model_page(repo_id: str) -> str:
    """The model's page on the Hub (or on HF_ENDPOINT's server), where its licence is accepted."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/{repo_id}"


def access_error(repo_id: str, status: int | None, gated: bool) -> HubError:
    """The words for a 401/403: which page to open, and where the token goes."""
    page = model_page(repo_id)
    if gated or status == 403:
        return HubError(f"{repo_id} is gated: open {page} while logged in, accept its licence, then download again "
                        "with a token of that account saved.", kind="config",
                        hint="Save a token (huggingface.co/settings/tokens, 'Read' access) in the Model page's "
                             "token field or with 'lora-studio models login'.")
    return HubError(f"{repo_id} needs a token (HTTP {status}): it is private, gated or does not exist. Check the id "
                    f"at {page}; if it is yours or gated, save a token that may read it.", kind="config",
                    hint="Save a token in the Model page's token field or with 'lora-studio models login'.")


# --- search ------------------------------------------------------------------------------------
@dataclass
class SearchHit:
    """One Hub model from a search, with what the studio can say about it without downloading."""

    repo_id: str
    downloads: int
    likes: int
    params: int  # from the safetensors metadata the Hub reports; 0 when unknown
    license: str
    gated: bool
    fits: bool | None = None  # the planner's verdict at the default recipe and the given budget
    peak_bytes: int = 0
    catalog_id: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def hit_from_model_info(m) -> SearchHit:
    """A SearchHit from huggingface_hub's ``ModelInfo`` (list_models with expand=...)."""
    st = getattr(m, "safetensors", None)
    params = int(getattr(st, "total", 0) or 0) if st is not None else 0
    card = getattr(m, "card_data", None) or getattr(m, "cardData", None)
    lic = ""
    if card is not None:
        lic = str((card.get("license") if isinstance(card, dict) else getattr(card, "license", "")) or "")
    if not lic:
        lic = next((t.split(":", 1)[1] for t in (getattr(m, "tags", None) or []) if t.startswith("license:")), "")
    gated = getattr(m, "gated", False)
    return SearchHit(repo_id=m.id, downloads=int(getattr(m, "downloads", 0) or 0), likes=int(getattr(m, "likes", 0)
                     or 0), params=params, license=lic or "unknown", gated=bool(gated and gated != "False"))


def search(text: str, limit: int = 20) -> list[SearchHit]:
    """The Hub's text-generation models with safetensors matching ``text``, most downloaded first."""
    online()
    from huggingface_hub import HfApi

    try:
        found = HfApi().list_models(search=text, pipeline_tag="text-generation", filter="safetensors",
                                    sort="downloads", limit=limit,
                                    expand=["downloads", "likes", "gated", "safetensors", "cardData", "tags"])
        return [hit_from_model_info(m) for m in found]
    except (TypeError, AttributeError, KeyError):  # a bug, not the network
        raise
    except Exception as e:  # network down, offline switch, proxy: say so in one line
        raise HubError(f"searching the Hugging Face Hub failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                       kind="io", hint="Check the network connection (search is the studio's only use of it besides "
                                       "downloads).") from None


def save_token(token: str) -> str:
    """Check ``token`` with the Hub and store it in huggingface_hub's own token file; returns the account name."""
    online()
    from huggingface_hub import login, whoami

    token = token.strip()
    if not token:
        raise HubError("no token given", kind="config")
    try:
        login(token=token, add_to_git_credential=False)
        return str(whoami(token).get("name", ""))
    except Exception as e:
        raise HubError(f"the token was not accepted: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                       kind="config", hint="Create a 'Read' token at huggingface.co/settings/tokens.") from None
