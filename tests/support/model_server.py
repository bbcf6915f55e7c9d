"""A real HTTP file server for pull tests: Range, ETag, If-Range, a request log, and faults on cue.

Serves ``files`` (path -> bytes) with a strong ETag per content, honouring ``Range: bytes=N-`` and
``If-Range`` (a stale validator gets the whole file, 200). Faults, each used once per arm:
``drop_after[path] = n`` closes the connection after n body bytes, ``stall_after[path] = n`` sends n
bytes then sends nothing until ``release`` is set (or the client goes away); ``redirects[path] = url``
answers 302 to ``url``. ``start(tls=context)`` serves HTTPS. Also the hub APIs pulls
ask, kept minimal: Hugging Face's ``paths-info``, ``tree`` (recursive listing, one page) and
``resolve`` (point HF_ENDPOINT here), with git blob ids for every file and an LFS sha256 for weights
(configs and tokenizer files are plain git files, as on the hub), and civitai's
``/api/v1/model-versions/<id>``.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from servers.diffusion.detect import PE_KEY, V2_KEY

_RANGE = re.compile(r"bytes=(\d+)-")

# Tensor names and shapes that the loaders' detection (servers/diffusion/detect.py) reads as an SD1.5
# checkpoint and as a v2 motion module; zeros, a few hundred bytes (no loader could run them).
SD15_KEYS = {
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (8, 4),
    "model.diffusion_model.input_blocks.0.0.weight": (4, 4, 1, 1),
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (4, 768),
}
MOTION_KEYS = {PE_KEY: (1, 32, 4), V2_KEY: (4,)}


PLAIN_GIT_SUFFIXES = (".json", ".txt", ".md")  # small text files: no LFS pointer, only a git blob id


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hub_entry(path: str, data: bytes) -> dict:
    """A file as the hub's paths-info and tree APIs describe it."""
    entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_oid(data)}
    if not path.endswith(PLAIN_GIT_SUFFIXES):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


def folder_files(folder: Path, prefix: str = "") -> dict[str, bytes]:
    """Every file under ``folder`` as a hub repo's path -> bytes (under ``prefix``)."""
    return {prefix + path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}  # fmt: skip


def checkpoint_bytes(shapes: dict[str, tuple[int, ...]]) -> bytes:
    """A real .safetensors file of zeros with these tensors."""
    return save({key: np.zeros(shape, dtype=np.float16) for key, shape in shapes.items()})


@dataclass
class Logged:
    method: str
    path: str
    range: str | None
    if_range: str | None
    status: int = 0
    host: str = ""  # the Host header


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client that went away or refused the certificate is what some tests do: no traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    content_types: dict[str, str] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)
    stall_after: dict[str, int] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location (302)
    hf_repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # "org/repo" -> path -> bytes (main)
    civitai_versions: dict[int, dict] = field(default_factory=dict)  # id -> the API's JSON
    log: list[Logged] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    scheme: str = "http"

    def start(self, port: int = 0, tls: ssl.SSLContext | None = None) -> FileServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                owner._get(self)

            def do_POST(self) -> None:
                owner._post(self)

        self.httpd = _Server(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:  # the handshake happens on the handler's thread, at its first read
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls is not None else "http"
        # A short poll: ``stop`` waits for the loop to see the shutdown (0.5 s by default).
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    @staticmethod
    def etag(data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'

    def ranged(self) -> list[Logged]:
        return [entry for entry in self.log if entry.range]

    # -- handlers ------------------------------------------------------------------------------
    def _hf_file(self, path: str) -> bytes | None:
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match and match[1] in self.hf_repos:
            return self.hf_repos[match[1]].get(urllib.parse.unquote(match[3]))
        return None

    def _hf_tree(self, path: str) -> list[dict] | None:
        """The recursive tree of a repo or a folder in it (None: no such repo)."""
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.+))?", path)
        repo = self.hf_repos.get(match[1]) if match else None
        if repo is None:
            return None
        folder = urllib.parse.unquote(match[3] or "").strip("/")
        prefix = f"{folder}/" if folder else ""
        entries = [hub_entry(name, data) for name, data in sorted(repo.items()) if name.startswith(prefix)]
        folders = sorted({"/".join(name.split("/")[:depth]) for name in repo if name.startswith(prefix)
                          for depth in range(1, name.count("/") + 1)} - {folder, ""})  # fmt: skip
        folders = [name for name in folders if name.startswith(prefix)]
        return [{"type": "directory", "path": name, "oid": "0" * 40} for name in folders] + entries

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        path = urllib.parse.urlsplit(handler.path).path
        entry = Logged("GET", path, handler.headers.get("Range"), handler.headers.get("If-Range"))
        entry.host = handler.headers.get("Host", "")
        self.log.append(entry)
        if path in self.redirects:
            entry.status = 302
            handler.send_response(302)
            handler.send_header("Location", self.redirects[path])
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        civitai = re.fullmatch(r"/api/v1/model-versions/(\d+)", path)
        if civitai:
            version = self.civitai_versions.get(int(civitai[1]))
            return self._json(handler, entry, version, 404 if version is None else 200)
        if "/tree/" in path:
            tree = self._hf_tree(path)
            return self._json(handler, entry, tree or {"error": "Repository not found"}, 404 if tree is None else 200)
        data = self.files.get(path)
        if data is None:
            data = self._hf_file(path)
        if data is None:
            entry.status = 404
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        etag = self.etag(data)
        start = 0
        wanted = _RANGE.fullmatch(entry.range or "")
        if wanted and (entry.if_range is None or entry.if_range == etag):
            start = int(wanted[1])
        if start >= len(data) and start:
            entry.status = 416
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{len(data)}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        entry.status = 206 if start else 200
        handler.send_response(entry.status)
        handler.send_header("Content-Type", self.content_types.get(path, "application/octet-stream"))
        handler.send_header("ETag", etag)
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(len(data) - start))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        body = data[start:]
        drop = self.drop_after.pop(path, None)
        stall = self.stall_after.pop(path, None)
        cut = drop if drop is not None else stall
        try:
            if cut is None:
                handler.wfile.write(body)
                return
            handler.wfile.write(body[:cut])
            handler.wfile.flush()
            if stall is not None:
                self.release.wait(timeout=60)
            handler.close_connection = True
            handler.connection.shutdown(2)  # the connection drops with the body unfinished
        except OSError:
            return

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        path = urllib.parse.urlsplit(handler.path).path
        entry = Logged("POST", path, None, None)
        self.log.append(entry)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode()
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/paths-info/([^/]+)", path)
        repo = self.hf_repos.get(match[1]) if match else None
        if repo is None:
            return self._json(handler, entry, {"error": "Repository not found"}, 404)
        form = urllib.parse.parse_qs(body)
        paths = form.get("paths", [])
        if not paths and body.startswith("{"):
            paths = json.loads(body).get("paths", [])
        infos = [hub_entry(name, repo[name]) for name in paths if name in repo]
        infos += [
            {"type": "directory", "path": name, "oid": "0" * 40}
            for name in paths
            if name not in repo and any(each.startswith(f"{name}/") for each in repo)
        ]
        return self._json(handler, entry, infos, 200)

    @staticmethod
    def _json(handler: BaseHTTPRequestHandler, entry: Logged, value: object, status: int) -> None:
        body = json.dumps(value).encode()
        entry.status = status
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        if status == 404:
            handler.send_header("X-Error-Code", "RepoNotFound")
        handler.end_headers()
        handler.wfile.write(body)
