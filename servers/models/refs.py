"""Model references (``https://...#sha256=``, ``hf:org/repo[/path]@rev``, ``civitai:<version id>``),
parsed and resolved into a download: URL, file name, expected sha256 and where that digest came
from, and the auth headers for the first host only. An ``hf:`` reference to a folder (the repo, or a
folder in it) resolves to every file of a diffusers folder there (``folders.select``), each with
the digest the hub gives for it.

Outbound fetches go to addresses a caller chose, so the operator decides where: ``AllowedHosts``
(setting ``pull_allowed_hosts``) must allow a reference's host and scheme; a redirect from there
may go to another allowed host or to any public address (a hub's CDN), never to a loopback or
private one that the operator did not list. Every connection to a host the operator did not name
(each redirect hop, again on each retry and resume) resolves it once, checks the addresses and
connects to a checked one (``servers.runtime.egress``), so a DNS answer that changes after the
check (rebinding) cannot reach the operator's network.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from genmesh.errors import FailedPrecondition, GenmeshError, InvalidArgument, NotFound, Unavailable
from servers.runtime import egress

FIELD = "ref"
SHA256_RE = re.compile(r"[0-9a-f]{64}")
HF_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
HF_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
MAX_REF_CHARS = 2000
JSON_TIMEOUT_SECONDS = 30.0


def refuse(message: str) -> InvalidArgument:
    return InvalidArgument(f"{FIELD}: {message}", field=FIELD)


@dataclass(frozen=True)
class Reference:
    """A parsed reference. ``scheme`` is "url", "hf" or "civitai"."""

    text: str
    scheme: str
    url: str = ""
    sha256: str | None = None  # from ``#sha256=`` (url references only)
    repo: str = ""  # hf: "org/repo"
    path: str = ""  # hf: a file's or a folder's path in the repo; "" for the repo itself
    revision: str = "main"
    version_id: int = 0  # civitai


@dataclass(frozen=True)
class Source:
    """What to download."""

    url: str
    file_name: str  # the source's file name (the installed name by default)
    sha256: str | None
    digest_source: str  # "reference", "huggingface", "civitai"; "" when none is known
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # auth for the first host only


@dataclass(frozen=True)
class RepoFile:
    """One file of a hub folder. The hub gives an LFS file's sha256; for a small (plain git) file only
    its git blob id, ``sha1(b"blob <size>\\0" + bytes)``, which verifies it as well."""

    path: str  # relative to the folder
    url: str
    size: int
    sha256: str | None
    git_oid: str


@dataclass(frozen=True)
class FolderSource:
    """A folder to download file by file (``files``: all of it; the pull picks what to fetch)."""

    origin: str  # "hf:org/repo/path@revision"
    name: str  # the folder's own name (the repo's when it is the repo)
    files: tuple[RepoFile, ...]
    headers: dict[str, str] = field(default_factory=dict, repr=False)


def _file_name(path: str) -> str:
    name = PurePosixPath(urllib.parse.unquote(path)).name
    if not name or name in (".", ".."):
        raise refuse(f"the reference names no file (got path {path!r})")
    return name


def parse_reference(text: str) -> Reference:
    """Parse ``text``; ``InvalidArgument`` naming ``ref`` and the accepted forms otherwise."""
    text = text.strip()
    forms = "https://host/path/file[#sha256=<hex>], hf:org/repo[/path][@revision] or civitai:<version id>"
    if not text:
        raise refuse(f"required: one of {forms}")
    if len(text) > MAX_REF_CHARS:
        raise refuse(f"at most {MAX_REF_CHARS} characters (got {len(text)})")
    if text.startswith("hf:"):
        body, _, revision = text[3:].partition("@")
        parts = body.strip("/").split("/")
        if len(parts) < 2 or not all(HF_REPO_PART.fullmatch(part) for part in parts[:2]) or "" in parts:
            raise refuse(f"hf: references are hf:org/repo[/path/in/repo][@revision] (got {text!r})")
        if ".." in parts or "." in parts:
            raise refuse("hf: a path in the repo may not contain '.' or '..' parts")
        if revision and not HF_REVISION.fullmatch(revision):
            raise refuse(f"hf: bad revision {revision!r}")
        # A file, or a diffusers folder (the repo itself when no path is given): the hub says which.
        return Reference(text, "hf", repo="/".join(parts[:2]), path="/".join(parts[2:]), revision=revision or "main")
    if text.startswith("civitai:"):
        version = text[len("civitai:") :]
        if not version.isdigit() or not 0 < int(version) < 2**63:
            raise refuse(f"civitai: references are civitai:<model version id, a positive number> (got {text!r})")
        return Reference(text, "civitai", version_id=int(version))
    url, _, fragment = text.partition("#")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise refuse(f"expected one of {forms} (got {text!r})")
    sha256 = None
    if fragment:
        key, _, value = fragment.partition("=")
        if key != "sha256" or not SHA256_RE.fullmatch(value.lower()):
            raise refuse(f"the fragment must be #sha256=<64 hex digits> (got #{fragment})")
        sha256 = value.lower()
    _file_name(parsed.path)
    return Reference(text, "url", url=url, sha256=sha256)


@dataclass(frozen=True)
class AllowedHosts:
    """``[scheme://]host`` entries (scheme https when left out); a host allows its subdomains."""

    entries: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> AllowedHosts:
        entries = []
        for item in (part.strip().lower() for part in text.split(",")):
            if not item:
                continue
            scheme, _, host = item.rpartition("://")
            if host.startswith("[") and host.endswith("]"):  # an IPv6 literal, as URLs write it
                host = host[1:-1]
            if scheme not in ("", "http", "https") or not host or "/" in host:
                raise ValueError(f"GENMESH_PULL_ALLOWED_HOSTS: bad entry {item!r} (expected [http[s]://]host)")
            entries.append((scheme or "https", host))
        return cls(tuple(entries))

    def allows(self, url: str) -> bool:
        parsed = urllib.parse.urlsplit(url)
        host = (parsed.hostname or "").lower()
        return any(
            parsed.scheme == scheme and (host == allowed or host.endswith("." + allowed))
            for scheme, allowed in self.entries
        )

    def check(self, url: str) -> None:
        if not self.allows(url):
            parsed = urllib.parse.urlsplit(url)
            allowed = ", ".join(f"{scheme}://{host}" for scheme, host in self.entries) or "none"
            raise refuse(
                f"{parsed.scheme}://{parsed.hostname} is not a source this server may fetch from (allowed: "
                f"{allowed}; the operator adds hosts with GENMESH_PULL_ALLOWED_HOSTS)"
            )

    def check_redirect(self, url: str) -> None:
        """A redirect target: an allowed host, or an https URL of a public host (``addresses`` checks
        that when connecting, on the addresses the connection then uses)."""
        if self.allows(url):
            return
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise refuse(f"the source redirected to {parsed.scheme}://{parsed.hostname}, which is not allowed")

    def addresses(self, url: str, resolver: egress.Resolver) -> tuple[str, ...] | None:
        """Where a connection for ``url`` may go: None (by name) for an allowed host, whatever it
        resolves to (the operator named it); else a redirect target's addresses, resolved once and
        all public, the only ones the connection may use."""
        if self.allows(url):
            return None
        self.check_redirect(url)
        parsed = urllib.parse.urlsplit(url)
        host = str(parsed.hostname)
        try:
            port = parsed.port or 443
            addresses = tuple(resolver(host, port))
        except ValueError:  # a port out of range; IDNA errors are UnicodeError, a ValueError too
            raise refuse(f"the source redirected to a malformed URL {url[:200]!r}") from None
        except OSError as exc:
            raise Unavailable(f"{FIELD}: cannot resolve {host} ({exc})", field=FIELD) from None
        if not addresses:
            raise Unavailable(f"{FIELD}: cannot resolve {host} (no address)", field=FIELD)
        for address in addresses:
            if egress.internal(address):
                raise refuse(
                    f"the source redirected to {host}, which resolves to {address}, a non-public address that "
                    "is not allowed"
                )
        return addresses


class CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only where ``AllowedHosts.check_redirect`` lets it, and drops credentials
    when the host changes (a hub's token never reaches its CDN)."""

    def __init__(self, allowed: AllowedHosts) -> None:
        self.allowed = allowed

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.allowed.check_redirect(newurl)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).hostname != urllib.parse.urlsplit(req.full_url).hostname:
            for name in ("Authorization", "Cookie"):
                new.remove_header(name)
        return new


def opener(allowed: AllowedHosts, dialer: egress.Dialer = egress.DIALER) -> urllib.request.OpenerDirector:
    """What every request of a pull goes through: allowed hosts by name, any other host only at the
    public addresses checked for that connection; no proxy."""
    return egress.opener(allowed.addresses, CheckedRedirects(allowed), dialer=dialer)


@dataclass(frozen=True)
class Resolver:
    """Turns references into sources. ``hf_endpoint`` None: huggingface_hub's own (HF_ENDPOINT).
    ``dialer``: how pulls reach the network (tests route it)."""

    allowed: AllowedHosts
    civitai_url: str = "https://civitai.com"
    civitai_token: str = field(default="", repr=False)
    hf_endpoint: str | None = None
    dialer: egress.Dialer = field(default=egress.DIALER, repr=False)

    def opener(self) -> urllib.request.OpenerDirector:
        return opener(self.allowed, self.dialer)

    def resolve(self, ref: Reference) -> Source | FolderSource:
        if ref.scheme == "hf":
            return self._huggingface(ref)
        if ref.scheme == "civitai":
            return self._civitai(ref)
        self.allowed.check(ref.url)
        return Source(ref.url, _file_name(urllib.parse.urlsplit(ref.url).path), ref.sha256,
                      "reference" if ref.sha256 else "")  # fmt: skip

    @contextmanager
    def _hub(self, ref: Reference) -> Iterator[None]:
        """The hub client's errors as the caller should see them."""
        from huggingface_hub import constants
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

        endpoint = self.hf_endpoint or constants.ENDPOINT  # HF_ENDPOINT, else huggingface.co
        try:
            yield
        except (RepositoryNotFoundError, EntryNotFoundError) as exc:
            raise NotFound(f"{FIELD}: {ref.text}: {type(exc).__name__}", field=FIELD) from None
        except HfHubHTTPError as exc:
            raise Unavailable(f"{FIELD}: the hub at {endpoint} answered {exc}", field=FIELD) from None
        except GenmeshError:
            raise
        except Exception as exc:  # the hub client's own transport errors (httpx), not OSError
            raise Unavailable(f"{FIELD}: the hub at {endpoint} does not answer ({exc})", field=FIELD) from None

    def _huggingface(self, ref: Reference) -> Source | FolderSource:
        from huggingface_hub import HfApi, get_token, hf_hub_url

        api = HfApi(endpoint=self.hf_endpoint)
        url = hf_hub_url(ref.repo, ref.path or "model_index.json", revision=ref.revision, endpoint=api.endpoint)
        self.allowed.check(url)
        token = get_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        info = None
        if ref.path:
            with self._hub(ref):
                infos = api.get_paths_info(ref.repo, [ref.path], revision=ref.revision)
            info = next((item for item in infos if getattr(item, "path", None) == ref.path), None)
            if info is None:
                raise NotFound(f"{FIELD}: {ref.path} is not in {ref.repo} at {ref.revision}", field=FIELD)
        if info is None or not hasattr(info, "lfs"):  # the repo itself, or a folder in it
            return self._hub_folder(api, ref, headers)
        sha256 = info.lfs.sha256 if info.lfs is not None else None  # small non-LFS files carry a git sha1 only
        return Source(url, _file_name(ref.path), sha256, "huggingface" if sha256 else "", headers)

    def _hub_folder(self, api: Any, ref: Reference, headers: dict[str, str]) -> FolderSource:
        from huggingface_hub import hf_hub_url

        prefix = f"{ref.path}/" if ref.path else ""
        with self._hub(ref):
            entries = list(api.list_repo_tree(ref.repo, ref.path or None, recursive=True, revision=ref.revision))
        files = tuple(
            RepoFile(
                entry.path[len(prefix) :],
                hf_hub_url(ref.repo, entry.path, revision=ref.revision, endpoint=api.endpoint),
                int(entry.size),
                entry.lfs.sha256 if entry.lfs is not None else None,
                entry.blob_id,
            )
            for entry in entries
            if hasattr(entry, "lfs") and entry.path.startswith(prefix)
        )
        if not files:
            raise NotFound(f"{FIELD}: {ref.text} holds no files", field=FIELD)
        name = PurePosixPath(ref.path).name if ref.path else ref.repo.split("/")[1]
        return FolderSource(ref.text, name, files, headers)

    def _civitai(self, ref: Reference) -> Source:
        api = f"{self.civitai_url.rstrip('/')}/api/v1/model-versions/{ref.version_id}"
        self.allowed.check(api)
        headers = {"Authorization": f"Bearer {self.civitai_token}"} if self.civitai_token else {}
        request = urllib.request.Request(api, headers={**headers, "Accept": "application/json"})
        try:
            with self.opener().open(request, timeout=JSON_TIMEOUT_SECONDS) as response:
                version = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise NotFound(f"{FIELD}: civitai has no model version {ref.version_id}", field=FIELD) from None
            raise Unavailable(f"{FIELD}: civitai answered HTTP {exc.code} for {api}", field=FIELD) from None
        except (OSError, ValueError) as exc:
            raise Unavailable(f"{FIELD}: civitai at {api} does not answer ({exc})", field=FIELD) from None
        files = version.get("files") or []
        chosen = next((item for item in files if item.get("primary")), files[0] if files else None)
        if not chosen or not chosen.get("downloadUrl"):
            raise FailedPrecondition(f"{FIELD}: civitai model version {ref.version_id} has no file", field=FIELD)
        self.allowed.check(chosen["downloadUrl"])
        sha256 = str((chosen.get("hashes") or {}).get("SHA256", "")).lower() or None
        if sha256 is not None and not SHA256_RE.fullmatch(sha256):
            raise Unavailable(f"{FIELD}: civitai gave a malformed SHA256 {sha256!r}", field=FIELD)
        name = chosen.get("name") or _file_name(urllib.parse.urlsplit(chosen["downloadUrl"]).path)
        return Source(chosen["downloadUrl"], name, sha256, "civitai" if sha256 else "", headers)
