"""A job request's webhook, decided before the job is queued, in one place for every RPC.

The server interceptor hands the request's ``notify_url`` (empty: the key's ``notify=`` default) to
``NotifyGate.admit``, which checks the URL (``allow.check``) and that the caller has a secret to sign
with, and binds the result for the call; ``JobQueue.submit`` reads it (``requested()``), as it reads
the caller. A refused URL is ``InvalidArgument`` naming ``notify_url``: nothing was queued.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass

from genmesh.errors import InvalidArgument
from servers.mesh.api_keys import ApiKeyError, KeyConfig, KeySource
from servers.runtime.caller import Caller
from servers.runtime.webhooks import allow, sign


@dataclass(frozen=True)
class Notify:
    """Where a job's completion is posted, and whose secret signs it."""

    url: str
    client_id: str  # "" for a job created without the gateway


@dataclass(frozen=True)
class WebhookConfig:
    """The server's webhook settings, parsed once (``ServerSettings.webhooks``)."""

    allow: allow.AllowList
    first_backoff: float  # seconds before the first retry; doubling after each failure
    timeout: float  # seconds an attempt may take (connect, send, answer)
    keys: KeySource  # the gateway's keys: each key's notify= default and secret
    operator_secret: str  # signs the webhooks of jobs created without the gateway
    max_backoff: float = 3600.0
    horizon: float = 24 * 3600.0  # how long after the job ended attempts go on


_requested: ContextVar[Notify | None] = ContextVar("genmesh_notify", default=None)


def bind(notify: Notify | None) -> None:
    """Set for the current call (each RPC runs in its own task)."""
    _requested.set(notify)


def requested() -> Notify | None:
    """The webhook the current call asked for, checked; None when it asked for none."""
    return _requested.get()


class KeyWebhooks:
    """Each client's default URL and secret, read from the keys on each use: keys rotate live."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config

    def _keys(self) -> KeyConfig | None:
        if self.config.keys.env_value is None and self.config.keys.file is None:
            return None
        try:
            return self.config.keys.load()
        except ApiKeyError:
            return None

    def default_url(self, client_id: str) -> str:
        keys = self._keys() if client_id else None
        hook = keys.webhooks.get(client_id) if keys is not None else None
        return hook.notify if hook is not None else ""

    def secret(self, client_id: str) -> str:
        """The client's signing secret; "" when it has none (no keys here, or an unknown client)."""
        if not client_id:
            return self.config.operator_secret
        keys = self._keys()
        if keys is None or client_id not in keys.keys:
            return ""
        hook = keys.webhooks.get(client_id)
        return hook.secret if hook is not None and hook.secret else sign.derived_secret(keys.keys[client_id])


class NotifyGate:
    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.keys = KeyWebhooks(config)

    async def admit(self, url: str, who: Caller) -> Notify | None:
        """The checked webhook of a job request (``url``, else the caller's key default unless the call
        is another job's sub-job), or None."""
        url = url.strip()
        explicit = bool(url)
        if not explicit and who.client_id and not who.sub_job and self.config.allow:
            url = await asyncio.to_thread(self.keys.default_url, who.client_id)
        if not url:
            return None
        await asyncio.to_thread(allow.check, url, self.config.allow)
        if not await asyncio.to_thread(self.keys.secret, who.client_id):
            whose = f"client {who.client_id!r}" if who.client_id else "calls without the gateway"
            raise InvalidArgument(
                f"notify_url: no webhook secret for {whose} on this server (the servers read the gateway's keys, "
                "GENMESH_API_KEYS_FILE; calls without the gateway need GENMESH_WEBHOOK_SECRET)",
                field="notify_url",
            )
        return Notify(url, who.client_id)
