"""Which webhook URLs a server may post to: those matching the operator's allowlist, and never an
address inside the operator's network unless the operator named that host.

``GENMESH_WEBHOOK_ALLOW`` is comma-separated patterns ``scheme://host[:port][/path]``; ``*`` matches
any run of characters in the host, port and path (``https://n8n.example.com/*``,
``https://*.example.com/hooks/*``, ``http://127.0.0.1:5678/*``). A pattern without a port means the
scheme's default; without a path, any path. Empty: webhooks are off.

Every address the host resolves to is checked: a loopback, private, link-local (cloud metadata at
169.254.169.254), multicast, reserved or unspecified one is refused unless the matching pattern names
the host literally (no ``*``), so ``https://*`` never reaches ``http://10.0.0.5``. The request is then
sent to one of the checked addresses (``deliver.py`` over ``servers.runtime.egress``), so a DNS answer
that changes in between (rebinding) cannot swap in another one.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from dataclasses import dataclass

from genmesh.errors import InvalidArgument
from servers.runtime.egress import Resolver, internal, resolve

ENV = "GENMESH_WEBHOOK_ALLOW"
FIELD = "notify_url"
MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}
_PATTERN_RE = re.compile(r"(https?)://([A-Za-z0-9*.\-]+)(?::([0-9]{1,5}|\*))?(/.*)?")


@functools.cache
def _wildcard(pattern: str) -> re.Pattern[str]:
    """``*`` matches any run of characters; everything else only itself."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


@dataclass(frozen=True)
class Pattern:
    scheme: str
    host: str
    port: str  # digits or "*"
    path: str

    @classmethod
    def parse(cls, text: str) -> Pattern:
        match = _PATTERN_RE.fullmatch(text)
        if match is None:
            raise ValueError(
                f"{ENV}: {text!r} is not a URL pattern scheme://host[:port][/path] (http or https; '*' as a wildcard)"
            )
        scheme, host, port, path = match.groups()
        port = port or str(DEFAULT_PORTS[scheme])
        if port != "*" and not 1 <= int(port) <= 65535:
            raise ValueError(f"{ENV}: {text!r}: port must be 1..65535")
        return cls(scheme, host.lower(), port, path or "/*")

    @property
    def names_host(self) -> bool:
        """A literal host: the operator meant this one, private or not."""
        return "*" not in self.host

    def matches(self, url: Url) -> bool:
        return (
            url.scheme == self.scheme
            and _wildcard(self.host).fullmatch(url.host) is not None
            and (self.port == "*" or int(self.port) == url.port)
            and _wildcard(self.path).fullmatch(url.path) is not None
        )


@dataclass(frozen=True)
class AllowList:
    patterns: tuple[Pattern, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """Raises ``ValueError`` naming ``GENMESH_WEBHOOK_ALLOW`` and the bad pattern."""
        return cls(tuple(Pattern.parse(part.strip()) for part in text.split(",") if part.strip()))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def match(self, url: Url) -> Pattern | None:
        """The first pattern naming the URL's host literally, else the first matching one."""
        matching = [pattern for pattern in self.patterns if pattern.matches(url)]
        return next((pattern for pattern in matching if pattern.names_host), matching[0] if matching else None)


@dataclass(frozen=True)
class Url:
    """A webhook URL taken apart: what the allowlist matches and the connection needs."""

    text: str
    scheme: str
    host: str  # lower case; an IPv6 literal without brackets
    port: int
    path: str  # with its query, never empty

    @classmethod
    def parse(cls, text: str) -> Url:
        if len(text) > MAX_URL_LENGTH:
            raise InvalidArgument(f"{FIELD}: at most {MAX_URL_LENGTH} characters (got {len(text)})", field=FIELD)
        try:
            parts = urllib.parse.urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise InvalidArgument(f"{FIELD}: not a valid URL ({exc})", field=FIELD) from None
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise InvalidArgument(f"{FIELD}: an http:// or https:// URL with a host (got {text!r})", field=FIELD)
        if parts.username is not None or parts.password is not None:
            raise InvalidArgument(f"{FIELD}: credentials in the URL are not allowed", field=FIELD)
        if any(ord(char) <= 32 or ord(char) == 127 for char in text):
            raise InvalidArgument(f"{FIELD}: spaces and control characters are not allowed", field=FIELD)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(text, parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme], path)


@dataclass(frozen=True)
class Target:
    """A URL that passed the checks, and the addresses it may be sent to."""

    url: Url
    addresses: tuple[str, ...]


def check(text: str, allow: AllowList, resolver: Resolver = resolve) -> Target:
    """The checked target of a webhook URL; ``InvalidArgument`` naming ``notify_url`` when it is refused.
    Blocking (it resolves the host)."""
    url = Url.parse(text)
    if not allow:
        raise InvalidArgument(
            f"{FIELD}: webhooks are off on this server (the operator allows URLs with {ENV})", field=FIELD
        )
    pattern = allow.match(url)
    if pattern is None:
        raise InvalidArgument(f"{FIELD}: {text!r} is not allowed by the operator's {ENV}", field=FIELD)
    try:
        addresses = tuple(resolver(url.host, url.port))
    except (OSError, UnicodeError) as exc:
        raise InvalidArgument(f"{FIELD}: cannot resolve {url.host!r} ({exc})", field=FIELD) from None
    if not addresses:
        raise InvalidArgument(f"{FIELD}: {url.host!r} has no address", field=FIELD)
    if not pattern.names_host:
        for address in addresses:
            if internal(address):
                raise InvalidArgument(
                    f"{FIELD}: {url.host!r} resolves to {address}, a loopback, private or link-local address; "
                    f"only a {ENV} entry naming that host allows it",
                    field=FIELD,
                )
    return Target(url, addresses)
