"""A local HTTP server that answers like the Hugging Face Hub's file API (for HF_ENDPOINT in tests).

It serves ``/api/models/OWNER/NAME[/revision/REV]`` (repo info), ``/api/models/OWNER/NAME/tree/REV``
(the file tree with sizes, as ``snapshot_download`` reads it), HEAD and GET of
``/OWNER/NAME/resolve/REV/FILE`` (with ETag, X-Repo-Commit, Range requests) and ``/api/models``
(a recorded search answer). It records every byte range it sends, so a test can prove a resumed
download did not fetch a byte twice. ``delay_s`` slows the body down so a test can stop it midway.
ETags are what the Hub sends: the sha256 of ``*.safetensors`` (LFS files), the git blob sha1 of others.

The hostile knobs (tests/faults/test_hostile_hub.py) make it lie the way a malicious server, mirror
or proxy could: any ETag, commit or size, a redirect anywhere, a body other than the declared one,
longer, gzip-compressed against the request, one that stalls or one cut by a connection reset,
a tree listing whose next page points anywhere, a repo info too large to hold.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


@dataclass
class Repo:
    files: dict[str, bytes]
    sha: str = "0123456789abcdef0123456789abcdef01234567"
    gated: bool = False  # files answer 401 like the Hub's gated repos without an accepted licence


@dataclass
class HubServer:
    repos: dict[str, Repo] = field(default_factory=dict)
    search_answer: list = field(default_factory=list)
    delay_s: float = 0.0  # pause after each chunk of the body
    chunk: int = 64 << 10
    served: list[tuple[str, int, int]] = field(default_factory=list)  # (file, start, bytes sent)
    requests: list[tuple[str, str]] = field(default_factory=list)
    auth: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Authorization) of every request
    # --- hostile knobs (file name -> value where keyed) ---
    etag: dict[str, str] = field(default_factory=dict)  # the ETag sent instead of the true one
    commit_header: str | None = None  # X-Repo-Commit sent instead of the repo's sha
    linked_size: dict[str, str] = field(default_factory=dict)  # X-Linked-Size sent (the declared size)
    tree_size: dict[str, object] = field(default_factory=dict)  # the size the tree listing gives
    body: dict[str, bytes] = field(default_factory=dict)  # the bytes a GET sends (HEAD declares the true file)
    redirect: dict[str, str] = field(default_factory=dict)  # Location the file's URL answers 302 with
    redirect_get_only: bool = False  # the 302 only for GET (HEAD answers 200 here)
    gzip: bool = False  # the body gzip-compressed, whatever the request asked for
    stall_at: int | None = None  # stop sending a body at this offset of the file (until stop())
    reset_at: int | None = None  # reset the connection at this offset of the file
    stall_api: bool = False  # the repo info never answers
    tree_next: Callable[[str], str] | None = None  # request path -> the Link rel="next" of the tree listing
    api_flood: int = 0  # the repo info is a JSON text of this many bytes (a commit that long)
    api_chunked: bool = False  # ... sent without Content-Length (chunked transfer encoding)

    def start(self) -> str:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, body: bool) -> None:
                url = urlparse(self.path)
                path = unquote(url.path)
                server.requests.append((self.command, self.path))
                server.auth.append((path, self.headers.get("Authorization")))
                if server.stall_api and path.startswith("/api/models/"):
                    server._stopping.wait()
                    return
                if path == "/api/models":
                    return self._json(server.search_answer)
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?", path)
                if m:
                    repo = server.repos.get(m.group(1))
                    if repo is None:
                        return self._error(404, "RepoNotFound", "Repository not found")
                    dirs = sorted({n.rsplit("/", 1)[0] for n in repo.files if "/" in n})
                    link = {"Link": f'<{server.tree_next(self.path)}>; rel="next"'} if server.tree_next else {}
                    return self._json([{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in dirs] +
                                      [{"type": "file", "oid": git_sha1(b), "size": server.tree_size.get(n, len(b)),
                                        "path": n} for n, b in repo.files.items()], headers=link)
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                if m:
                    repo = server.repos.get(m.group(1))
                    if repo is None:
                        return self._error(404, "RepoNotFound", "Repository not found")
                    if server.api_flood:
                        return self._flood()
                    return self._json({"id": m.group(1), "modelId": m.group(1), "sha": repo.sha, "private": False,
                                       "gated": "manual" if repo.gated else False, "tags": [],
                                       "siblings": [{"rfilename": n, "size": len(b),
                                                     "blobId": hashlib.sha1(b).hexdigest()}
                                                    for n, b in repo.files.items()]})
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if not m or m.group(1) not in server.repos:
                    return self._error(404, "RepoNotFound", "Repository not found")
                repo, name = server.repos[m.group(1)], m.group(3)
                if repo.gated:
                    return self._error(401, "GatedRepo", f"Access to model {m.group(1)} is restricted. You must have "
                                                         "access to it and be authenticated to access it.")
                if name not in repo.files:
                    return self._error(404, "EntryNotFound", "Entry not found")
                data = repo.files[name]
                etag = server.etag[name] if name in server.etag else \
                    hashlib.sha256(data).hexdigest() if name.endswith(".safetensors") else git_sha1(data)
                if name in server.redirect and (body or not server.redirect_get_only):
                    self.send_response(302)
                    self.send_header("Location", server.redirect[name])
                    self.send_header("ETag", f'"{etag}"')
                    self.send_header("X-Linked-Etag", f'"{etag}"')
                    self.send_header("X-Linked-Size", server.linked_size.get(name, str(len(data))))
                    self.send_header("X-Repo-Commit", server.commit_header or repo.sha)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if body:
                    data = server.body.get(name, data)
                start = 0
                rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if rng:
                    start = int(rng.group(1))
                payload = data[start:]
                if body and server.gzip:
                    payload = server._gzipped(payload)
                self.send_response(206 if rng else 200)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Repo-Commit", server.commit_header or repo.sha)
                if name in server.linked_size:
                    self.send_header("X-Linked-Size", server.linked_size[name])
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(payload)))
                if body and server.gzip:
                    self.send_header("Content-Encoding", "gzip")
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if not body:
                    return
                self._send_body(name, start, payload)

            def _flood(self) -> None:
                """A repo info whose commit is ``api_flood`` bytes long, made as it is sent (never held whole)."""
                head, tail, piece = b'{"sha": "', b'"}', b"a" * (1 << 20)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if server.api_chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(server.api_flood))
                self.end_headers()
                left = server.api_flood - len(head) - len(tail)
                parts = [head] + [piece] * (left // len(piece)) + [piece[:left % len(piece)], tail]
                try:
                    for part in filter(None, parts):  # an empty chunk would end a chunked body
                        if server.api_chunked:
                            part = b"%x\r\n%s\r\n" % (len(part), part)
                        self.wfile.write(part)
                    if server.api_chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send_body(self, name: str, start: int, payload: bytes) -> None:
                """The body in chunks; stalls or resets at ``stall_at`` / ``reset_at`` (file offsets)."""
                sent = 0
                try:
                    for i in range(0, len(payload), server.chunk):
                        piece = payload[i:i + server.chunk]
                        for at, act in ((server.stall_at, self._stall), (server.reset_at, self._reset)):
                            if at is not None and start + sent + len(piece) > at:
                                self.wfile.write(piece[:max(0, at - start - sent)])
                                self.wfile.flush()
                                sent += max(0, at - start - sent)
                                return act()
                        self.wfile.write(piece)
                        self.wfile.flush()
                        sent += len(piece)
                        if server.delay_s:
                            time.sleep(server.delay_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    server.served.append((name, start, sent))

            def _stall(self) -> None:
                server._stopping.wait()
                self.close_connection = True

            def _reset(self) -> None:
                """Close with a TCP reset (SO_LINGER 0), as a dropped connection looks to the client."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _error(self, status: int, code: str, message: str) -> None:
                data = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

        self._stopping = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _gzipped(self, data: bytes) -> bytes:
        """gzip of ``data``, made once per body (a 256 MiB bomb takes a second to compress)."""
        cache = self.__dict__.setdefault("_gzip_cache", {})
        key = hashlib.sha256(data).digest()
        if key not in cache:
            cache[key] = gzip.compress(data, compresslevel=9)
        return cache[key]

    def stop(self) -> None:
        self._stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def git_sha1(data: bytes) -> str:
    """The git blob id of ``data``: what the Hub sends as the ETag of a file kept in git (not LFS)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
