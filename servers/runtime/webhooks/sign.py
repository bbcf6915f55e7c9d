"""How a webhook proves it comes from this mesh, as Stripe and GitHub sign theirs.

The header ``Genmesh-Signature: t=<unix seconds>,v1=<hex>`` carries the time of the attempt and
HMAC-SHA256, keyed with the key's webhook secret, over ``"<t>." + body`` (the raw body bytes). A
receiver recomputes it, compares in constant time, and refuses a ``t`` too far from its clock (a
replayed old delivery). The README shows the recipe.

A key's secret is its ``secret=`` in the keys file; without one, it is derived from the API key
(``derived_secret``), so whoever holds the key can compute it and the operator hands out nothing
more. Jobs created without the gateway (no client id) use the server's ``GENMESH_WEBHOOK_SECRET``.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "Genmesh-Signature"
SCHEME = "v1"
DERIVATION = b"genmesh-webhook-v1"
TOLERANCE_SECONDS = 300


def derived_secret(api_key: str) -> str:
    """The webhook secret of a key without its own ``secret=``: HMAC-SHA256(key, "genmesh-webhook-v1"), hex."""
    return hmac.new(api_key.encode(), DERIVATION, hashlib.sha256).hexdigest()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def header_value(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Genmesh-Signature`` value for ``body`` sent now (or at ``timestamp``)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},{SCHEME}={signature(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, *, now: float | None = None, tolerance: int = TOLERANCE_SECONDS
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds of ``now``."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get(SCHEME, []))
