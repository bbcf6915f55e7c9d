"""Pulling, deleting and pruning model files (no grpc, no torch).

A pull: resolve the reference (URL, expected sha256), refuse it without a digest unless
``no_verify``, download into the staging folder (``download.py``), compare the digest (a mismatch
deletes the file and names both digests), read the kind from the file (``kinds.py``), and move it
into its kind's folder with one rename: the Text, Image and Video catalogs scan their folders on
every call, so the model is listed at once and never half-written.

A diffusers folder (an ``hf:`` reference to a repo or a folder in it) is pulled file by file the
same way, each file verified against the hub's digest for it, into a folder in the staging area
(``<key>.tree``; files already there are not fetched again), and renamed into place as a whole
(``folders.py`` picks the files and tells the kind).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from genmesh.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from servers.models import folders as hub_folders
from servers.models.download import CHUNK_BYTES, Download, Staged, Tick, check_free_space, staging_key
from servers.models.kinds import SUFFIXES, Kind, detect
from servers.models.refs import (
    FIELD,
    FolderSource,
    Reference,
    RepoFile,
    Resolver,
    Source,
    parse_reference,
    refuse,
)
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


def readable_name(file_name: str, *, folder: bool = False) -> str:
    """A source's file name as a model name: its stem (a folder's whole name), with what a name may
    not hold turned into "_" ("Juggernaut XL v9.safetensors" -> "Juggernaut_XL_v9")."""
    stem = file_name.rsplit(".", 1)[0] if "." in file_name.lstrip(".") and not folder else file_name
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
        """What can be refused before the job is queued: the reference's form, the name, and a URL's
        host (the hubs' own hosts are checked once resolved)."""
        if request.name:
            check_name(request.name)
        ref = parse_reference(request.ref)
        if ref.scheme not in ("hf", "civitai"):
            self.resolver.allowed.check(ref.url)
        return ref

    def pull(self, request: PullRequest, reporter: PullReporter) -> Pulled:
        ref = self.check(request)
        reporter.report(Phase.RESOLVE, "")
        source = self.resolver.resolve(ref)
        if isinstance(source, FolderSource):
            return self._pull_folder(request, source, reporter)
        name = request.name or readable_name(source.file_name)
        if source.sha256 is None and not request.no_verify:
            raise refuse(
                f"no sha256 is known for {source.file_name} (the source gives none and the reference names none): "
                "add #sha256=<hex> to the URL, or pull with no_verify (genmesh pull --no-verify) to skip the check"
            )
        present = self._present(name, source)
        if present is not None:
            return present
        with self._staging(staging_key(source.url, source.sha256), source.url):
            return self._download_and_install(request, source, name, reporter)

    @contextmanager
    def _staging(self, key: str, what: str) -> Iterator[None]:
        """Claim the staging files named ``key`` (a second pull of them waits for nothing: refused)."""
        with self._lock:
            if key in self._active:
                raise FailedPrecondition(f"{FIELD}: {what} is being pulled already; watch that job", field=FIELD)
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
            self.resolver.opener(),
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

    # -- diffusers folders ----------------------------------------------------------------------
    def _pull_folder(self, request: PullRequest, source: FolderSource, reporter: PullReporter) -> Pulled:
        if self.published is not None:
            raise FailedPrecondition(
                f"{FIELD}: {source.origin} is a folder, and this server publishes pulls to the object store "
                "(pull_to_store), which holds single files only: pull a single .safetensors file",
                field=FIELD,
            )
        name = request.name or readable_name(source.name, folder=True)
        index = self._pipeline_index(source)
        files = hub_folders.select(source.files, allow_pickle=request.allow_pickle, origin=source.origin, index=index)
        files = files.files
        present = self._folder_present(name, source, files)
        if present is not None:
            return present
        key = staging_key(source.origin, None)
        with self._staging(key, source.origin):
            return self._download_folder(request, source, files, name, self.folders.staging / f"{key}.tree", reporter)

    def _pipeline_index(self, source: FolderSource) -> dict | None:
        """The folder's ``model_index.json`` (verified, parsed), read first: it names the components to
        fetch. None for a folder without one."""
        item = next((item for item in source.files if item.path == hub_folders.PIPELINE_INDEX), None)
        if item is None:
            return None
        if item.size > hub_folders.MAX_INDEX_BYTES:
            raise refuse(f"{source.origin}: a {item.size}-byte {item.path} is not a pipeline index")
        request = urllib.request.Request(item.url, headers=source.headers)
        try:
            with self.resolver.opener().open(request, timeout=self.stall_seconds) as response:
                data = response.read(hub_folders.MAX_INDEX_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise Unavailable(f"{FIELD}: {item.url} answered HTTP {exc.code}", field=FIELD) from None
        except OSError as exc:
            raise Unavailable(f"{FIELD}: {item.url} does not answer ({exc})", field=FIELD) from None
        got = hashlib.sha256(data).hexdigest() if item.sha256 else hub_folders.git_blob_oid_of(data)
        if got != (item.sha256 or item.git_oid):
            raise refuse(f"{item.path} of {source.origin} does not match the hub's digest ({got})")
        try:
            index = json.loads(data)
        except ValueError:
            index = None
        if not isinstance(index, dict):
            raise refuse(f"{source.origin}: its {item.path} is not a JSON object")
        return index

    def _download_folder(
        self,
        request: PullRequest,
        source: FolderSource,
        files: tuple[RepoFile, ...],
        name: str,
        tree: Path,
        reporter: PullReporter,
    ) -> Pulled:
        tree.mkdir(parents=True, exist_ok=True)
        total = sum(item.size for item in files)
        kept = {item.path: digest for item in files if (digest := _verified_sha256(tree / item.path, item))}
        check_free_space(self.folders.staging, total - sum(item.size for item in files if item.path in kept))
        digests, done, resumed = dict(kept), sum(item.size for item in files if item.path in kept), 0
        for item in files:
            if item.path in kept:  # fetched before a cancel or a restart
                continue
            reporter.check_cancelled()
            staged = self._download_folder_file(request, source, item, reporter, done, total)
            target = tree / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged.path, target)
            staged.meta.unlink(missing_ok=True)
            digests[item.path], done, resumed = staged.sha256, done + staged.size, resumed + staged.resumed_bytes
        resumed += sum(item.size for item in files if item.path in kept)
        try:
            detected = hub_folders.detect_folder(tree, source.origin)
        except InvalidArgument:
            shutil.rmtree(tree, ignore_errors=True)
            raise
        reporter.check_cancelled()  # the last point a cancel leaves nothing installed
        reporter.report(Phase.INSTALL, name)
        target = self.folders.of(detected.kind) / name
        if target.exists():
            raise FailedPrecondition(
                f"name: a different model {name} is installed already in {target.parent}; delete it first "
                f"(genmesh models rm {name}) or pull under another name",
                field="name",
            )
        _install_tree(tree, target)
        return Pulled(
            name, detected.kind, detected.family, target, hub_folders.manifest_sha256(files, digests), total, True,
            "huggingface", source.origin, False, resumed,
        )  # fmt: skip

    def _download_folder_file(
        self,
        request: PullRequest,
        source: FolderSource,
        item: RepoFile,
        reporter: PullReporter,
        before: int,
        total: int,
    ) -> Staged:
        """One file of a folder into the staging folder, verified (sha256, or the git blob id of a
        small file); progress is the folder's: bytes of the files before it plus this one's."""

        def tick(file_tick: Tick) -> None:
            done = before + file_tick.bytes_done
            speed = file_tick.bytes_per_second
            eta = (total - done) / speed if speed > 0 else 0.0
            reporter.report(Phase.DOWNLOAD, item.path, Tick(done, total, speed, eta, file_tick.retries))

        file_source = Source(item.url, item.path, item.sha256, "huggingface" if item.sha256 else "", source.headers)
        download = Download(
            file_source,
            self.folders.staging,
            self.resolver.opener(),
            allow_pickle=request.allow_pickle,
            sniff_format=not item.path.endswith(hub_folders.METADATA_SUFFIXES),
            stall_seconds=self.stall_seconds,
            max_retries=self.max_retries,
            check_cancelled=reporter.check_cancelled,
            on_tick=tick,
        )
        with self._staging(staging_key(item.url, item.sha256), item.url):
            staged = download.run()
        reporter.report(Phase.VERIFY, item.path)
        expected, got = (
            (item.sha256, staged.sha256) if item.sha256 else (item.git_oid, hub_folders.git_blob_oid(staged.path))
        )
        if got != expected:
            download.discard()
            kind = "sha256" if item.sha256 else "git blob id"
            raise refuse(
                f"{kind} mismatch for {item.path} of {source.origin}: expected {expected} (huggingface), got {got}; "
                "the download was deleted"
            )
        return staged

    def _folder_present(self, name: str, source: FolderSource, files: tuple[RepoFile, ...]) -> Pulled | None:
        """The installed folder of that name when every file it should hold is there, verified;
        ``FailedPrecondition`` naming ``name`` up front when another model has that name."""
        for kind in (Kind.IMAGE, Kind.MOTION):
            folder = self.folders.of(kind) / name
            if folder.exists() and not folder.is_dir():
                raise FailedPrecondition(
                    f"name: {folder} is installed already; delete it first (genmesh models rm {name}) or pull "
                    "under another name",
                    field="name",
                )
            if not folder.is_dir():
                continue
            found = {item.path: _verified_sha256(folder / item.path, item) for item in files}
            digests = {path: digest for path, digest in found.items() if digest}
            if len(digests) == len(files):
                family = hub_folders.detect_folder(folder, source.origin).family
                return Pulled(
                    name, kind, family, folder, hub_folders.manifest_sha256(files, digests),
                    sum(item.size for item in files), True, "huggingface", source.origin, already_present=True,
                )  # fmt: skip
            raise FailedPrecondition(
                f"name: a different model {name} is installed already in {folder.parent}; delete it first "
                f"(genmesh models rm {name}) or pull under another name",
                field="name",
            )
        return None

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
            if path.name.split(".", 1)[0] in active:
                continue
            if path.is_dir():  # a folder pull's verified files
                removed += 1
                freed += sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_file():
                if path.suffix == ".part":
                    removed += 1
                freed += path.stat().st_size
                path.unlink(missing_ok=True)
        return removed, freed


def _verified_sha256(path: Path, item: RepoFile) -> str | None:
    """``path``'s sha256 when it holds ``item`` (its size and the hub's digest match), else None."""
    if not path.is_file() or path.stat().st_size != item.size:
        return None
    digest = file_sha256(path)
    if item.sha256 is not None:
        return digest if digest == item.sha256 else None
    return digest if hub_folders.git_blob_oid(path) == item.git_oid else None


def _install_tree(tree: Path, target: Path) -> None:
    """Move a complete folder to ``target`` in one rename. Across filesystems, it is copied beside the
    target under a hidden name, its index or config last (a catalog lists a folder by that file), then
    renamed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tree, target)
        return
    except OSError:
        pass
    hidden = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(hidden, ignore_errors=True)
    markers = (hub_folders.PIPELINE_INDEX, hub_folders.COMPONENT_CONFIG)
    shutil.copytree(
        tree, hidden, ignore=lambda folder, names: [n for n in names if folder == str(tree) and n in markers]
    )
    for marker in markers:
        if (tree / marker).is_file():
            shutil.copyfile(tree / marker, hidden / marker)
    os.replace(hidden, target)
    shutil.rmtree(tree, ignore_errors=True)
