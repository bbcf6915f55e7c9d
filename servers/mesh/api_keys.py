"""The gateway's API keys: who may call (client name -> key) and, per client, how fast.

An entry is ``[client=]key [rps=N] [burst=N] [admin] [notify=URL] [secret=S]``. ``GENMESH_API_KEYS``
holds comma-separated entries; a keys file holds one entry per line (comma-separated entries on a line work too: a
Kubernetes Secret holding ``GENMESH_API_KEYS``, mounted as a file, reads as it is). Blank lines and
``#`` comments are ignored. A bare key's client is named ``key-1``, ``key-2``, ... ``rps`` / ``burst``
override the gateway's default token bucket (refill per second, bucket size) for that client only.
``admin`` marks an admin key: the gateway tells the servers (``x-genmesh-admin``), which then let it
see, cancel and list every client's jobs (``servers/runtime/caller.py``). ``notify=URL`` is the
key's default completion webhook (a job request's ``notify_url`` overrides it; no commas in it) and
``secret=S`` (16+ visible characters) the secret its webhooks are signed with, else one derived from the
key (``servers/runtime/webhooks/sign.py``); the servers read these from the same file.

Keys never appear in an error message or a ``repr``: errors name the entry (``file:line`` or
``GENMESH_API_KEYS entry N``) and the client, never the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

API_KEYS_ENV = "GENMESH_API_KEYS"
API_KEYS_FILE_ENV = "GENMESH_API_KEYS_FILE"
RATE_LIMIT_RPS_ENV = "GENMESH_RATE_LIMIT_RPS"
RATE_LIMIT_BURST_ENV = "GENMESH_RATE_LIMIT_BURST"

_CLIENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Visible ASCII without the separators of the key formats (",", "=") and without whitespace.
_KEY_RE = re.compile(r"[\x21-\x7e]+")
_KEY_FORBIDDEN = frozenset(",=")
_OPTION_RE = re.compile(r"(rps|burst)=([0-9]{1,9})")
_WEBHOOK_OPTIONS = ("notify", "secret")
MIN_SECRET_LENGTH = 16


class ApiKeyError(ValueError):
    """The API key configuration is missing or malformed."""


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``rps`` tokens added every second, at most ``burst`` held."""

    rps: int
    burst: int

    def __post_init__(self) -> None:
        for name in ("rps", "burst"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"rate limit {name} must be a positive integer (got {value!r})")


def default_rate_limit(environ: Mapping[str, str]) -> RateLimit:
    """Each client's bucket unless overridden: ``GENMESH_RATE_LIMIT_RPS`` (50) / ``_BURST`` (100)."""
    values = {}
    for name, variable, default in (("rps", RATE_LIMIT_RPS_ENV, "50"), ("burst", RATE_LIMIT_BURST_ENV, "100")):
        text = environ.get(variable) or default
        if not text.isdigit():
            raise ValueError(f"{variable} must be a whole number >= 1 (got {text!r})")
        values[name] = int(text)
    return RateLimit(**values)


@dataclass(frozen=True)
class QuotaOverride:
    """One client's own ``rps`` and/or ``burst``; what it leaves out comes from the default."""

    rps: int | None = None
    burst: int | None = None

    def over(self, default: RateLimit) -> RateLimit:
        return RateLimit(self.rps or default.rps, self.burst or default.burst)


@dataclass(frozen=True)
class KeyWebhook:
    """A key's webhook options: its default URL ("" for none) and its own secret ("": derived from the key)."""

    notify: str = ""
    secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class KeyConfig:
    """Keys by client name and the clients' quota overrides. ``repr`` leaves the keys out."""

    keys: dict[str, str] = field(repr=False)
    overrides: dict[str, QuotaOverride] = field(default_factory=dict)
    admins: frozenset[str] = frozenset()  # clients whose key is marked admin
    webhooks: dict[str, KeyWebhook] = field(default_factory=dict, repr=False)  # clients with notify= or secret=

    @property
    def clients(self) -> list[str]:
        return sorted(self.keys)


def check_key(key: str, where: str) -> str:
    if not key:
        raise ApiKeyError(f"{where}: empty API key")
    if not _KEY_RE.fullmatch(key) or _KEY_FORBIDDEN.intersection(key):
        raise ApiKeyError(f"{where}: an API key must be visible ASCII without spaces, ',' or '='")
    return key


def check_client(client: str, where: str) -> str:
    if not _CLIENT_RE.fullmatch(client):
        raise ApiKeyError(
            f"{where}: client name {client!r} must be 1-64 characters of letters, digits, '.', '_' or '-'"
            " starting with a letter or digit"
        )
    return client


@dataclass(frozen=True)
class _Entry:
    client: str | None
    key: str = field(repr=False)
    override: QuotaOverride | None
    where: str
    admin: bool = False
    webhook: KeyWebhook | None = None


def _webhook_option(name: str, value: str, where: str) -> str:
    if name == "notify" and not re.fullmatch(r"https?://[\x21-\x7e]+", value):
        raise ApiKeyError(f"{where}: notify= must be an http:// or https:// URL without spaces or commas")
    if name == "secret" and (len(value) < MIN_SECRET_LENGTH or not _KEY_RE.fullmatch(value)):
        raise ApiKeyError(f"{where}: secret= must be at least {MIN_SECRET_LENGTH} visible characters without spaces")
    return value


def _parse_entry(entry: str, where: str) -> _Entry:
    """``[client=]key [rps=N] [burst=N]`` -> an entry."""
    credential, *options = entry.split()
    values: dict[str, int] = {}
    admin = options.count("admin")
    if admin > 1:
        raise ApiKeyError(f"{where}: admin is given twice")
    options = [option for option in options if option != "admin"]
    webhook: dict[str, str] = {}
    for option in options:
        name, _, value = option.partition("=")
        if name in _WEBHOOK_OPTIONS:
            if name in webhook:
                raise ApiKeyError(f"{where}: {name} is given twice")
            webhook[name] = _webhook_option(name, value, where)
            continue
        match = _OPTION_RE.fullmatch(option)
        name = option.partition("=")[0]
        if name in ("rps", "burst") and (match is None or int(match.group(2)) < 1):
            raise ApiKeyError(f"{where}: {name} must be a whole number >= 1")
        if match is None:  # never echoed: it may be half of a key with a space in it
            raise ApiKeyError(
                f"{where}: unexpected text after the key (an API key has no spaces; the options are rps=N, burst=N "
                "admin, notify=URL and secret=S)"
            )
        if match.group(1) in values:
            raise ApiKeyError(f"{where}: {match.group(1)} is given twice")
        values[match.group(1)] = int(match.group(2))
    override = QuotaOverride(**values) if values else None
    hook = KeyWebhook(**webhook) if webhook else None
    if "=" in credential:
        client, _, key = credential.partition("=")
        return _Entry(check_client(client, where), check_key(key, where), override, where, bool(admin), hook)
    return _Entry(None, check_key(credential, where), override, where, bool(admin), hook)


def _split_entries(text: str, where: str) -> list[_Entry]:
    entries = []
    for index, part in enumerate(text.split(","), start=1):
        part = part.strip()
        if not part:
            raise ApiKeyError(f"{where}{f' entry {index}' if ',' in text else ''} is empty (stray comma?)")
        entries.append(_parse_entry(part, f"{where} entry {index}" if "," in text else where))
    return entries


def load_key_config(environ: Mapping[str, str], keys_file: Path | None = None) -> KeyConfig:
    """Keys and quota overrides from ``GENMESH_API_KEYS`` and a keys file.

    The keys file is ``keys_file``, else the path in ``GENMESH_API_KEYS_FILE``. Raises
    ``ApiKeyError`` for a malformed or duplicate entry, and when no key is configured at all
    (there is never a default key).
    """
    return KeySource.from_environ(environ, keys_file).load()


def _parse_sources(env_value: str | None, file_text: str | None, keys_file: Path | None) -> KeyConfig:
    entries: list[_Entry] = []
    if env_value is not None and env_value.strip():
        for index, part in enumerate(env_value.split(","), start=1):
            where = f"{API_KEYS_ENV} entry {index}"
            part = part.strip()
            if not part:
                raise ApiKeyError(f"{where} is empty (stray comma?)")
            entries.append(_parse_entry(part, where))
    if file_text is not None:
        for number, line in enumerate(file_text.splitlines(), start=1):
            line = re.split(r"\s#", line, maxsplit=1)[0].strip()
            if not line or line.startswith("#"):
                continue
            entries.extend(_split_entries(line, f"{keys_file}:{number}"))
    if not entries:
        raise ApiKeyError(
            f"no API keys configured: set {API_KEYS_ENV} (comma-separated 'client=key' or 'key') "
            f"or {API_KEYS_FILE_ENV} / a keys file (one 'client=key' or 'key' per line)"
        )

    keys: dict[str, str] = {}
    overrides: dict[str, QuotaOverride] = {}
    admins: set[str] = set()
    webhooks: dict[str, KeyWebhook] = {}
    seen: dict[str, str] = {}  # key -> where
    for entry in entries:
        if entry.key in seen:
            raise ApiKeyError(f"{entry.where}: the same API key is already configured at {seen[entry.key]}")
        seen[entry.key] = entry.where
        if entry.client is not None:
            if entry.client in keys:
                raise ApiKeyError(f"{entry.where}: client {entry.client!r} is configured twice")
            keys[entry.client] = entry.key
            if entry.override:
                overrides[entry.client] = entry.override
            if entry.admin:
                admins.add(entry.client)
            if entry.webhook:
                webhooks[entry.client] = entry.webhook
    number = 0
    for entry in entries:
        if entry.client is None:
            number += 1
            while f"key-{number}" in keys:
                number += 1
            keys[f"key-{number}"] = entry.key
            if entry.override:
                overrides[f"key-{number}"] = entry.override
            if entry.admin:
                admins.add(f"key-{number}")
            if entry.webhook:
                webhooks[f"key-{number}"] = entry.webhook
    return KeyConfig(keys, overrides, frozenset(admins), webhooks)


def load_api_keys(environ: Mapping[str, str], keys_file: Path | None = None) -> dict[str, str]:
    """API keys as ``{client name: key}`` (``load_key_config`` without the quotas)."""
    return load_key_config(environ, keys_file).keys


@dataclass(frozen=True)
class KeySource:
    """Where the keys come from: the value of ``GENMESH_API_KEYS`` and/or a keys file.

    ``read()`` takes the file's text afresh (it is what changes when keys rotate); ``parse()``
    turns a text into keys; ``load()`` does both.
    """

    env_value: str | None = field(default=None, repr=False)
    file: Path | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], keys_file: Path | None = None) -> KeySource:
        path = keys_file or (Path(environ[API_KEYS_FILE_ENV]) if environ.get(API_KEYS_FILE_ENV) else None)
        return cls(environ.get(API_KEYS_ENV), path)

    def read(self) -> str | None:
        if self.file is None:
            return None
        try:
            return Path(self.file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ApiKeyError(f"cannot read API keys file {self.file}: {exc.strerror or exc}") from None

    def parse(self, file_text: str | None) -> KeyConfig:
        return _parse_sources(self.env_value, file_text, self.file)

    def load(self) -> KeyConfig:
        return self.parse(self.read())
