"""One resumable, verified download into the staging folder.

The partial file (``<key>.part``) and its validator (``<key>.json``: URL, ETag or Last-Modified,
size) sit side by side in the staging folder, so a dropped connection, a stall (no bytes for
``stall_seconds``) and a restart of this server all resume with ``Range`` + ``If-Range``: a source
whose file changed answers the whole file (200) and the partial is started over. The sha256 is
computed as bytes arrive (a resumed partial is hashed once from disk first). The first bytes are
sniffed as they arrive, so an HTML page or an unwanted pickle stops the download at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from genmesh.errors import FailedPrecondition, GenmeshError, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from servers.models.kinds import SNIFF_BYTES, Format, sniff
from servers.models.refs import FIELD, Source

CHUNK_BYTES = 1024 * 1024
CANCEL_POLL_SECONDS = 0.2
SPEED_WINDOW_SECONDS = 5.0
FREE_SPACE_MARGIN_BYTES = 64 * 1024 * 1024  # never fill the disk to the last byte
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def staging_key(url: str, sha256: str | None) -> str:
    """The staging name of a download: the same source (and expected digest) resumes the same partial."""
    return hashlib.sha256(f"{url}\n{sha256 or ''}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Tick:
    """Download progress, as the job reports it."""

    bytes_done: int
    bytes_total: int  # 0 while unknown
    bytes_per_second: float
    eta_seconds: float
    retries: int


@dataclass(frozen=True)
class Staged:
    path: Path
    meta: Path
    sha256: str
    size: int
    format: Format | None  # None for a file downloaded without sniffing (a folder's configs)
    resumed_bytes: int
    retries: int


class _Retry(Exception):
    """A connection failed in a way worth trying again (dropped, stalled, a 5xx)."""


@dataclass
class Download:
    source: Source
    staging_dir: Path
    opener: urllib.request.OpenerDirector
    allow_pickle: bool = False
    sniff_format: bool = True  # False: any bytes (a config or tokenizer file of a folder)
    stall_seconds: float = 30.0
    max_retries: int = 5
    check_cancelled: Callable[[], None] = lambda: None
    on_tick: Callable[[Tick], None] = lambda tick: None
    tick_seconds: float = 0.25

    def __post_init__(self) -> None:
        key = staging_key(self.source.url, self.source.sha256)
        self.partial = self.staging_dir / f"{key}.part"
        self.meta = self.staging_dir / f"{key}.json"
        self.retries = 0
        self.done, self.total, self.digest, self.form, self.head = 0, 0, hashlib.sha256(), None, b""
        self._samples: deque[tuple[float, int]] = deque()
        self._last_tick = 0.0

    # -- the partial and its validator ---------------------------------------------------------
    def _load_meta(self) -> dict:
        try:
            meta = json.loads(self.meta.read_text())
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) and meta.get("url") == self.source.url else {}

    def _save_meta(self, validator: str, total: int) -> None:
        temporary = self.meta.with_suffix(".json.tmp")
        temporary.write_text(json.dumps({"url": self.source.url, "validator": validator, "total": total}))
        temporary.replace(self.meta)

    def _restart(self) -> None:
        """Start the file over (the partial is of another file, or cannot be continued)."""
        self.partial.write_bytes(b"")
        self.meta.unlink(missing_ok=True)
        self.done, self.digest, self.form, self.head = 0, hashlib.sha256(), None, b""

    def _hash_partial(self) -> None:
        """Continue from what is on disk: its digest, size and first bytes."""
        self.done, self.digest, self.head = 0, hashlib.sha256(), b""
        with open(self.partial, "rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                self._add(chunk)
                self.check_cancelled()

    def _add(self, chunk: bytes) -> None:
        """Hash and count ``chunk``; sniff the format once enough bytes arrived (before writing any
        more, so an HTML page or a refused pickle stops at once)."""
        if self.form is None and self.sniff_format:
            self.head += chunk[: SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES or (self.total and self.done + len(chunk) >= self.total):
                self.form = sniff(self.head, allow_pickle=self.allow_pickle, file_name=self.source.file_name)
        self.digest.update(chunk)
        self.done += len(chunk)

    # -- progress ------------------------------------------------------------------------------
    def _tick(self, force: bool = False) -> None:
        done, total = self.done, self.total
        now = time.monotonic()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > SPEED_WINDOW_SECONDS:
            self._samples.popleft()
        if not force and now - self._last_tick < self.tick_seconds:
            return
        self._last_tick = now
        first_time, first_done = self._samples[0]
        speed = (done - first_done) / (now - first_time) if now > first_time else 0.0
        eta = (total - done) / speed if speed > 0 and total else 0.0
        self.on_tick(Tick(done, total, speed, eta, self.retries))

    # -- the download --------------------------------------------------------------------------
    def run(self) -> Staged:
        """Download (or resume) into the staging folder; a refused file (HTML, pickle, unknown) is
        deleted, while a failed or cancelled one is kept for the next pull to resume."""
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self._run()
        except InvalidArgument:
            self.discard()
            raise

    def discard(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)

    def _run(self) -> Staged:
        meta = self._load_meta()
        self.total = int(meta.get("total") or 0)
        if not self.partial.exists() or not meta.get("validator"):
            self._restart()  # nothing proves a partial is of the same file: start over
        self._hash_partial()
        resumed = self.done
        failures = 0
        while True:
            self.check_cancelled()
            before = self.done
            try:
                self._attempt(self._load_meta().get("validator", ""))
                break
            except _Retry as exc:
                self.check_cancelled()  # a cancel that cut the connection is not a failure to retry
                failures = 0 if self.done > before else failures + 1  # progress resets the count
                self.retries += 1
                if failures > self.max_retries:
                    raise Unavailable(
                        f"{FIELD}: {self.source.url} failed {failures} times in a row ({exc}); the partial file "
                        f"({self.done} bytes) is kept, pull again to resume",
                        field=FIELD,
                    ) from None
                self._wait(min(0.2 * 2**failures, 5.0))
        if self.form is None and self.sniff_format:  # shorter than SNIFF_BYTES
            if not self.head:
                raise Unavailable(f"{FIELD}: {self.source.url} sent an empty file", field=FIELD)
            self.form = sniff(self.head, allow_pickle=self.allow_pickle, file_name=self.source.file_name)
        self._tick(force=True)
        return Staged(self.partial, self.meta, self.digest.hexdigest(), self.done, self.form, resumed, self.retries)

    @contextmanager
    def _cancel_watch(self, response: http.client.HTTPResponse) -> Iterator[None]:
        """Cut the connection when the job is cancelled, so a read blocked on a stalled source ends
        at once rather than after ``stall_seconds`` (the reading thread then sees the cancel)."""
        done = threading.Event()

        def watch() -> None:
            while not done.wait(CANCEL_POLL_SECONDS):
                try:
                    self.check_cancelled()
                except GenmeshError:
                    # A duplicate of the connection's descriptor: shutting it down ends the blocked read.
                    with contextlib.suppress(OSError), socket.fromfd(response.fileno(), socket.AF_INET,
                                                                     socket.SOCK_STREAM) as connection:  # fmt: skip
                        connection.shutdown(socket.SHUT_RDWR)
                    return

        watcher = threading.Thread(target=watch, name="pull-cancel-watch", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()

    def _wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check_cancelled()
            time.sleep(min(left, 0.1))

    def _request(self, validator: str) -> urllib.request.Request:
        headers = dict(self.source.headers)
        if self.done:
            headers["Range"] = f"bytes={self.done}-"
            headers["If-Range"] = validator
        return urllib.request.Request(self.source.url, headers=headers)

    def _attempt(self, validator: str) -> None:
        if self.done and not validator:
            self._restart()
        try:
            response = self.opener.open(self._request(validator), timeout=self.stall_seconds)
        except urllib.error.HTTPError as exc:
            self._http_error(exc)
            raise _Retry(f"HTTP {exc.code}") from None
        except GenmeshError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise _Retry(f"cannot connect: {exc}") from None
        with response, self._cancel_watch(response):
            if response.status == 206:
                match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
                if not match or int(match[1]) != self.done:
                    self._restart()
                    raise _Retry(f"the source sent a range that does not continue at byte {self.done}")
                self.total = int(match[3]) if match[3] != "*" else 0
            else:
                if self.done:  # the file changed (If-Range failed) or Range is not supported: start over
                    self._restart()
                self.total = int(response.headers.get("Content-Length") or 0)
            self._check_space(self.total - self.done)
            new_validator = self._validator(response)
            if new_validator:
                self._save_meta(new_validator, self.total)
            else:
                self.meta.unlink(missing_ok=True)
            self._tick(force=True)
            with open(self.partial, "ab") as out:
                while True:
                    self.check_cancelled()
                    try:
                        chunk = response.read1(CHUNK_BYTES)
                    except (OSError, http.client.HTTPException) as exc:
                        kind = "stalled" if isinstance(exc, socket.timeout | TimeoutError) else "dropped"
                        raise _Retry(f"connection {kind} at byte {self.done}: {exc}") from None
                    if not chunk:
                        break
                    self._add(chunk)  # may refuse the file: then nothing of this chunk is written
                    out.write(chunk)
                    self._tick()
        if self.total and self.done < self.total:
            raise _Retry(f"connection dropped at byte {self.done} of {self.total}")
        if self.total and self.done > self.total:
            self._restart()
            raise _Retry(f"the source sent {self.done} bytes of a {self.total}-byte file")

    @staticmethod
    def _validator(response: http.client.HTTPResponse) -> str:
        """A strong ETag, else Last-Modified: what If-Range may carry (RFC 9110 13.1.5)."""
        etag = response.headers.get("ETag", "")
        if etag and not etag.startswith("W/"):
            return etag
        return response.headers.get("Last-Modified", "")

    def _http_error(self, exc: urllib.error.HTTPError) -> None:
        if exc.code in (404, 410):
            raise NotFound(f"{FIELD}: {self.source.url} is not there (HTTP {exc.code})", field=FIELD)
        if exc.code == 416 and self.done:  # the partial is at or past the end of what the source has now
            self._restart()
            return
        if exc.code in (401, 403):
            raise FailedPrecondition(
                f"{FIELD}: {self.source.url} refused the download (HTTP {exc.code}); it may need a token "
                "(HF_TOKEN, CIVITAI_TOKEN in the models server's environment)",
                field=FIELD,
            )
        if exc.code < 500 and exc.code != 429:
            raise Unavailable(f"{FIELD}: {self.source.url} answered HTTP {exc.code}", field=FIELD)

    def _check_space(self, needed: int) -> None:
        check_free_space(self.staging_dir, needed)


def check_free_space(folder: Path, needed: int) -> None:
    """``ResourceExhausted`` naming ``ref`` unless ``folder``'s disk has ``needed`` bytes and a margin."""
    free = shutil.disk_usage(folder).free
    if needed > 0 and needed + FREE_SPACE_MARGIN_BYTES > free:
        raise ResourceExhausted(
            f"{FIELD}: not enough disk space for the model: {needed} bytes needed (plus a "
            f"{FREE_SPACE_MARGIN_BYTES}-byte margin), {free} free in {folder}",
            field=FIELD,
        )
