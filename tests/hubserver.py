"""A local HTTP server that answers like the Hugging Face Hub's file API (for HF_ENDPOINT in tests).

It serves ``/api/models/OWNER/NAME[/revision/REV]`` (repo info), ``/api/models/OWNER/NAME/tree/REV``
(the file tree with sizes, as ``snapshot_download`` reads it), HEAD and GET of
``/OWNER/NAME/resolve/REV/FILE`` (with ETag, X-Repo-Commit, Range requests) and ``/api/models``
(a recorded search answer). It records every byte range it sends, so a test can prove a resumed
download did not fetch a byte twice. ``delay_s`` slows the body down so a test can stop it midway.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
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

            def _json(self, obj, status: int = 200) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, body: bool) -> None:
                url = urlparse(self.path)
                path = unquote(url.path)
                server.requests.append((self.command, self.path))
                if path == "/api/models":
                    return self._json(server.search_answer)
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?", path)
                if m:
                    repo = server.repos.get(m.group(1))
                    if repo is None:
                        return self._error(404, "RepoNotFound", "Repository not found")
                    dirs = sorted({n.rsplit("/", 1)[0] for n in repo.files if "/" in n})
                    return self._json([{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in dirs] +
                                      [{"type": "file", "oid": hashlib.sha1(b).hexdigest(), "size": len(b), "path": n}
                                       for n, b in repo.files.items()])
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                if m:
                    repo = server.repos.get(m.group(1))
                    if repo is None:
                        return self._error(404, "RepoNotFound", "Repository not found")
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
                start = 0
                rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if rng:
                    start = int(rng.group(1))
                self.send_response(206 if rng else 200)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", repo.sha)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if not body:
                    return
                sent = 0
                try:
                    for i in range(start, len(data), server.chunk):
                        piece = data[i:i + server.chunk]
                        self.wfile.write(piece)
                        self.wfile.flush()
                        sent += len(piece)
                        if server.delay_s:
                            time.sleep(server.delay_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    server.served.append((name, start, sent))

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

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
