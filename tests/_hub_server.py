"""A loopback stand-in for the Hugging Face hub, for tests of georeason.model.hub.

Serves the endpoints huggingface_hub's snapshot_download / hf_hub_download call: the revision API
(/api/models/{repo}/revision/{rev}), the tree listing (/api/models/{repo}/tree/{rev}) and file
resolution (HEAD and GET /{repo}/resolve/{rev}/{path}, with X-Repo-Commit, ETag, Content-Length and
Range requests), with the hub's X-Error-Code on errors. Faults: cut a file's download once after a
number of bytes, or send no body at all every time.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = ""
    branches: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + self.files[name])
        self.commit = self.commit or digest.hexdigest()
        self.branches.setdefault("main", self.commit)

    def resolve(self, revision: str) -> str | None:
        return revision if revision == self.commit else self.branches.get(revision)


def repo_from_folder(folder: Path, extra: dict[str, bytes] | None = None) -> Repo:
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return Repo({**files, **(extra or {})})


class HubStandIn:
    """`with HubStandIn(repos) as hub:` serves on 127.0.0.1:hub.port; hub.requests logs what came in."""

    def __init__(self, repos: dict[str, Repo]) -> None:
        self.repos = repos
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.cut_once: dict[str, int] = {}  # file path -> bytes its next full GET sends before the connection drops
        self.cut_always: set[str] = set()  # file paths whose GETs send headers and no body
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HubStandIn:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self.server.server_close()
            self._thread = None

    def gets(self, path_end: str) -> list[str | None]:
        """The Range headers of the GETs of files whose URL ends with `path_end`."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.endswith(path_end)]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _error(self, code: str, status: int = 404, commit: str | None = None) -> None:
                payload = json.dumps({"error": code}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _json(self, value) -> None:
                payload = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _serve(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                with hub.lock:
                    hub.requests.append((self.command, path, self.headers.get("Range")))
                api = re.match(r"^/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(?:/(.*))?$", path)
                resolve = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
                match = api or resolve
                if match is None:
                    return self._error("NotFound")
                repo = hub.repos.get(match.group(1))
                if repo is None:
                    return self._error("RepoNotFound", 401)  # the hub answers 401 for unknown repos too
                revision = match.group(3) if api else match.group(2)
                commit = repo.resolve(revision)
                if commit is None:
                    return self._error("RevisionNotFound")
                if api and api.group(2) == "revision":
                    return self._json({"id": match.group(1), "sha": commit, "private": False,
                                       "siblings": [{"rfilename": name} for name in sorted(repo.files)]})
                if api:
                    return self._json([_tree_entry(name, data) for name, data in sorted(repo.files.items())])
                name = resolve.group(3)
                if name not in repo.files:
                    return self._error("EntryNotFound", commit=commit)
                self._send_file(repo.files[name], name, commit, body)

            def _send_file(self, data: bytes, name: str, commit: str, body: bool) -> None:
                start = 0
                requested = self.headers.get("Range")
                if requested:
                    start = int(re.match(r"bytes=(\d+)-", requested).group(1))
                self.send_response(206 if requested else 200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if requested:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if not body:
                    return
                with hub.lock:
                    cut_always = name in hub.cut_always
                    cut_after = hub.cut_once.pop(name, None) if not requested else None
                if cut_always:
                    self.close_connection = True
                    return
                self.wfile.write(data[start:len(data) if cut_after is None else cut_after])
                if cut_after is not None:
                    self.wfile.flush()
                    self.close_connection = True

        return Handler


def _tree_entry(name: str, data: bytes) -> dict:
    entry = {"type": "file", "path": name, "size": len(data),
             "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
    if name.endswith(".safetensors"):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry
