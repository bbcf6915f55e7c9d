"""Model references (``https://...#sha256=``, ``hf:org/repo/path@rev``, ``civitai:<version id>``),
parsed and resolved into a download: URL, file name, expected sha256 and where that digest came
from, and the auth headers for the first host only.

Outbound fetches go to addresses a caller chose, so the operator decides where: ``AllowedHosts``
(setting ``pull_allowed_hosts``) must allow a reference's host and scheme; a redirect from there
may go to another allowed host or to any public address (a hub's CDN), never to a loopback or
private one that the operator did not list.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from genmesh.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

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
    path: str = ""  # hf: the file's path in the repo
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


def _file_name(path: str) -> str:
    name = PurePosixPath(urllib.parse.unquote(path)).name
    if not name or name in (".", ".."):
        raise refuse(f"the reference names no file (got path {path!r})")
    return name


def parse_reference(text: str) -> Reference:
    """Parse ``text``; ``InvalidArgument`` naming ``ref`` and the accepted forms otherwise."""
    text = text.strip()
    forms = "https://host/path/file[#sha256=<hex>], hf:org/repo/path/file[@revision] or civitai:<version id>"
    if not text:
        raise refuse(f"required: one of {forms}")
    if len(text) > MAX_REF_CHARS:
        raise refuse(f"at most {MAX_REF_CHARS} characters (got {len(text)})")
    if text.startswith("hf:"):
        body, _, revision = text[3:].partition("@")
        parts = body.strip("/").split("/")
        if len(parts) < 3 or not all(HF_REPO_PART.fullmatch(part) for part in parts[:2]) or "" in parts:
            raise refuse(f"hf: references are hf:org/repo/path/file[@revision] (got {text!r})")
        if ".." in parts:
            raise refuse("hf: a file path may not contain '..'")
        if revision and not HF_REVISION.fullmatch(revision):
            raise refuse(f"hf: bad revision {revision!r}")
        path = "/".join(parts[2:])
        _file_name(path)
        return Reference(text, "hf", repo="/".join(parts[:2]), path=path, revision=revision or "main")
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
        """A redirect target: an allowed host, or a public address (never loopback or private)."""
        if self.allows(url):
            return
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise refuse(f"the source redirected to {parsed.scheme}://{parsed.hostname}, which is not allowed")
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(parsed.hostname, parsed.port or 443)}
        except OSError as exc:
            raise Unavailable(f"{FIELD}: cannot resolve {parsed.hostname} ({exc})", field=FIELD) from None
        if not all(ipaddress.ip_address(address.split("%")[0]).is_global for address in addresses):
            raise refuse(f"the source redirected to {parsed.hostname}, a non-public address that is not allowed")


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


def opener(allowed: AllowedHosts) -> urllib.request.OpenerDirector:
    # No proxy handler from the environment: what is allowed is decided here, not by a proxy.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), CheckedRedirects(allowed))


@dataclass(frozen=True)
class Resolver:
    """Turns references into sources. ``hf_endpoint`` None: huggingface_hub's own (HF_ENDPOINT)."""

    allowed: AllowedHosts
    civitai_url: str = "https://civitai.com"
    civitai_token: str = field(default="", repr=False)
    hf_endpoint: str | None = None

    def resolve(self, ref: Reference) -> Source:
        if ref.scheme == "hf":
            return self._huggingface(ref)
        if ref.scheme == "civitai":
            return self._civitai(ref)
        self.allowed.check(ref.url)
        return Source(ref.url, _file_name(urllib.parse.urlsplit(ref.url).path), ref.sha256,
                      "reference" if ref.sha256 else "")  # fmt: skip

    def _huggingface(self, ref: Reference) -> Source:
        from huggingface_hub import HfApi, get_token, hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

        api = HfApi(endpoint=self.hf_endpoint)
        url = hf_hub_url(ref.repo, ref.path, revision=ref.revision, endpoint=api.endpoint)
        self.allowed.check(url)
        try:
            infos = api.get_paths_info(ref.repo, [ref.path], revision=ref.revision)
        except (RepositoryNotFoundError, EntryNotFoundError) as exc:
            raise NotFound(f"{FIELD}: {ref.text}: {type(exc).__name__}", field=FIELD) from None
        except HfHubHTTPError as exc:
            raise Unavailable(f"{FIELD}: the hub at {api.endpoint} answered {exc}", field=FIELD) from None
        except Exception as exc:  # the hub client's own transport errors (httpx), not OSError
            raise Unavailable(f"{FIELD}: the hub at {api.endpoint} does not answer ({exc})", field=FIELD) from None
        info = next((item for item in infos if getattr(item, "path", None) == ref.path), None)
        if info is None or not hasattr(info, "lfs"):
            raise NotFound(f"{FIELD}: {ref.path} is not a file of {ref.repo} at {ref.revision}", field=FIELD)
        sha256 = info.lfs.sha256 if info.lfs is not None else None  # small non-LFS files carry a git sha1 only
        token = get_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return Source(url, _file_name(ref.path), sha256, "huggingface" if sha256 else "", headers)

    def _civitai(self, ref: Reference) -> Source:
        api = f"{self.civitai_url.rstrip('/')}/api/v1/model-versions/{ref.version_id}"
        self.allowed.check(api)
        headers = {"Authorization": f"Bearer {self.civitai_token}"} if self.civitai_token else {}
        request = urllib.request.Request(api, headers={**headers, "Accept": "application/json"})
        try:
            with opener(self.allowed).open(request, timeout=JSON_TIMEOUT_SECONDS) as response:
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
