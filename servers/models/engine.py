"""Pulling, deleting and pruning model files (no grpc, no torch).

A pull: resolve the reference (URL, expected sha256), refuse it without a digest unless
``no_verify``, download into the staging folder (``download.py``), compare the digest (a mismatch
deletes the file and names both digests), read the kind from the file (``kinds.py``), and move it
into its kind's folder with one rename: the Text, Image and Video catalogs scan their folders on
every call, so the model is listed at once and never half-written.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from genmesh.errors import FailedPrecondition, InvalidArgument, NotFound
from servers.models.download import CHUNK_BYTES, Download, Staged, Tick, staging_key
from servers.models.kinds import SUFFIXES, Kind, detect
from servers.models.refs import FIELD, Reference, Resolver, Source, opener, parse_reference, refuse
from servers.text.models import BUILTIN_NAME as BUILTIN_TEXT_MODEL
from storage.pulled import PulledModels, StoredModel

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
MODEL_SUFFIXES = (".gguf", ".safetensors", ".ckpt")


class Phase:
    RESOLVE = "resolve"
    DOWNLOAD = "download"
    VERIFY = "verify"
    INSTALL = "install"


class PullReporter(Protocol):
    def check_cancelled(self) -> None: ...

    def report(self, phase: str, file_name: str, tick: Tick | None = None) -> None: ...


@dataclass(frozen=True)
class PullRequest:
    ref: str
    no_verify: bool = False
    allow_pickle: bool = False
    name: str = ""  # the installed name; "" for the source's file name


@dataclass(frozen=True)
class Pulled:
    name: str
    kind: Kind
    family: str
    path: Path
    sha256: str
    size_bytes: int
    verified: bool
    digest_source: str
    url: str
    already_present: bool = False
    resumed_bytes: int = 0


@dataclass(frozen=True)
class Deleted:
    path: Path
    kind: Kind
    size_bytes: int


@dataclass(frozen=True)
class Folders:
    """Where each kind lands (the catalogs' folders) and the staging folder none of them lists."""

    text: Path
    image: Path
    motion: Path
    staging: Path

    def of(self, kind: Kind) -> Path:
        return {Kind.TEXT: self.text, Kind.IMAGE: self.image, Kind.MOTION: self.motion}[kind]


def check_name(name: str, field: str = "name") -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"{field}: 1..128 characters of letters, digits and ._+- not starting with a dot (got {name!r})",
            field=field,
        )
    return name


def readable_name(file_name: str) -> str:
    """A source's file name as a model name: its stem, with what a name may not hold turned into "_"
    ("Juggernaut XL v9.safetensors" -> "Juggernaut_XL_v9")."""
    stem = file_name.rsplit(".", 1)[0] if "." in file_name.lstrip(".") else file_name
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", stem).lstrip("._-")[:128]
    return check_name(name or "model", "ref")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class ModelPuller:
    def __init__(
        self,
        folders: Folders,
        resolver: Resolver,
        *,
        stall_seconds: float = 30.0,
        max_retries: int = 5,
        published: PulledModels | None = None,
    ) -> None:
        self.folders = folders
        self.published = published  # clusters: pulled files also go to the models bucket
        self.resolver = resolver
        self.stall_seconds = stall_seconds
        self.max_retries = max_retries
        self._active: set[str] = set()  # staging keys being written
        self._lock = threading.Lock()

    def check(self, request: PullRequest) -> Reference:
        """What can be refused before the job is queued: the reference's form and the name."""
        if request.name:
            check_name(request.name)
        return parse_reference(request.ref)

    def pull(self, request: PullRequest, reporter: PullReporter) -> Pulled:
        ref = self.check(request)
        reporter.report(Phase.RESOLVE, "")
        source = self.resolver.resolve(ref)
        name = request.name or readable_name(source.file_name)
        if source.sha256 is None and not request.no_verify:
            raise refuse(
                f"no sha256 is known for {source.file_name} (the source gives none and the reference names none): "
                "add #sha256=<hex> to the URL, or pull with no_verify (genmesh pull --no-verify) to skip the check"
            )
        present = self._present(name, source)
        if present is not None:
            return present
        with self._staging(source):
            return self._download_and_install(request, source, name, reporter)

    @contextmanager
    def _staging(self, source: Source) -> Iterator[None]:
        key = staging_key(source.url, source.sha256)
        with self._lock:
            if key in self._active:
                raise FailedPrecondition(f"{FIELD}: {source.url} is being pulled already; watch that job", field=FIELD)
            self._active.add(key)
        try:
            yield
        finally:
            with self._lock:
                self._active.discard(key)

    def _download_and_install(self, request: PullRequest, source: Source, name: str, reporter: PullReporter) -> Pulled:
        download = Download(
            source,
            self.folders.staging,
            opener(self.resolver.allowed),
            allow_pickle=request.allow_pickle,
            stall_seconds=self.stall_seconds,
            max_retries=self.max_retries,
            check_cancelled=reporter.check_cancelled,
            on_tick=lambda tick: reporter.report(Phase.DOWNLOAD, source.file_name, tick),
        )
        staged = download.run()
        reporter.report(Phase.VERIFY, source.file_name)
        if source.sha256 is not None and staged.sha256 != source.sha256:
            download.discard()
            raise refuse(
                f"sha256 mismatch for {source.file_name}: expected {source.sha256} ({source.digest_source}), got "
                f"{staged.sha256}; the download was deleted"
            )
        try:
            detected = detect(staged.path, staged.format, source.file_name)
        except InvalidArgument:
            download.discard()
            raise
        reporter.check_cancelled()  # the last point a cancel leaves nothing installed
        reporter.report(Phase.INSTALL, source.file_name)
        target = self.folders.of(detected.kind) / f"{name}{SUFFIXES[staged.format]}"
        try:
            already = self._install(staged, target)
        except FailedPrecondition:
            download.discard()
            raise
        download.meta.unlink(missing_ok=True)
        if self.published is not None:
            stored = StoredModel(name, detected.kind.value, target.name, staged.sha256, staged.size, detected.family)
            self.published.publish(stored, target)
        return Pulled(
            name, detected.kind, detected.family, target, staged.sha256, staged.size, source.sha256 is not None,
            source.digest_source, source.url, already, staged.resumed_bytes,
        )  # fmt: skip

    def _install(self, staged: Staged, target: Path) -> bool:
        """Move the staged file to ``target`` in one rename; True when the same file was there."""
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            if target.is_file() and file_sha256(target) == staged.sha256:
                staged.path.unlink(missing_ok=True)
                return True
            raise FailedPrecondition(
                f"name: a different model {target.name} is installed already; delete it first (genmesh models rm "
                f"{target.stem}) or pull under another name",
                field="name",
            )
        try:
            os.replace(staged.path, target)
        except OSError:  # another filesystem: copy beside the target under a name no catalog lists, then rename
            hidden = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(staged.path, hidden)
            os.replace(hidden, target)
            staged.path.unlink(missing_ok=True)
        return False

    def _present(self, name: str, source: Source) -> Pulled | None:
        """The installed model of that name when its digest is the expected one (nothing to fetch)."""
        if source.sha256 is None:
            return None
        for kind in Kind:
            for suffix in MODEL_SUFFIXES:
                path = self.folders.of(kind) / f"{name}{suffix}"
                if path.is_file() and file_sha256(path) == source.sha256:
                    return Pulled(
                        name, kind, "", path, source.sha256, path.stat().st_size, True, source.digest_source,
                        source.url, already_present=True,
                    )  # fmt: skip
        return None

    def delete(self, name: str, kind: Kind | None = None) -> Deleted:
        check_name(name)
        if name == BUILTIN_TEXT_MODEL and kind in (None, Kind.TEXT):
            raise InvalidArgument(f"name: {name} is the built-in model; it cannot be deleted", field="name")
        kinds = [kind] if kind is not None else list(Kind)
        found = [
            (found_kind, path)
            for found_kind in kinds
            for path in [self.folders.of(found_kind) / f"{name}{suffix}" for suffix in MODEL_SUFFIXES]
            + ([self.folders.of(found_kind) / name] if found_kind is not Kind.TEXT else [])
            if path.exists()
        ]
        if not found:
            where = ", ".join(str(self.folders.of(each)) for each in kinds)
            raise NotFound(f"name: no model {name!r} in {where}", field="name")
        if len(found) > 1:
            raise InvalidArgument(
                f"name: {name!r} names {len(found)} models ({', '.join(str(path) for _, path in found)}); "
                "give its kind",
                field="name",
            )
        found_kind, path = found[0]
        if self.published is not None:
            self.published.remove(found_kind.value, name)
        if path.is_dir():
            size = sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
            shutil.rmtree(path)
        else:
            size = path.stat().st_size
            path.unlink()
        return Deleted(path, found_kind, size)

    def prune(self) -> tuple[int, int]:
        """Remove every partial download no running pull is writing: (files, bytes)."""
        if not self.folders.staging.is_dir():
            return 0, 0
        removed, freed = 0, 0
        with self._lock:
            active = set(self._active)
        for path in self.folders.staging.iterdir():
            if path.is_file() and path.name.split(".", 1)[0] not in active:
                if path.suffix == ".part":
                    removed += 1
                freed += path.stat().st_size
                path.unlink(missing_ok=True)
        return removed, freed
