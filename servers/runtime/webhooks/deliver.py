"""One webhook attempt: a POST to an address that passed the checks, and when to try again.

The connection goes to the checked address itself (the Host header and TLS name stay the URL's
host), so the name cannot resolve elsewhere between the check and the request. Redirects are not
followed (``http.client`` never does): a 3xx is a failed attempt. Each attempt has one timeout for
connecting and for the answer; the answer's body is read up to a small limit and dropped.
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass

from servers.runtime.egress import PinnedHTTPConnection, PinnedHTTPSConnection
from servers.runtime.webhooks import sign
from servers.runtime.webhooks.allow import Target

USER_AGENT = "genmesh-webhooks/1"
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``first`` seconds after the first failure, doubling, at most ``cap``;
    attempts stop once the next would fall later than ``horizon`` seconds after the job ended."""

    first: float
    cap: float = 3600.0
    horizon: float = 24 * 3600.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1, 2, ...)."""
        return min(self.cap, self.first * 2 ** (failures - 1))

    def next_attempt(self, ended_at: float, last_attempt_at: float, failures: int) -> float | None:
        """When to try again (epoch seconds), or None: give up."""
        due = last_attempt_at + self.delay(failures)
        return due if due <= ended_at + self.horizon else None


@dataclass(frozen=True)
class Outcome:
    status: int  # the HTTP status; 0 when none came back
    error: str  # "" after a 2xx

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300


def post(target: Target, body: bytes, secret: str, job_id: str, timeout: float) -> Outcome:
    """Blocking: one signed POST of ``body`` to ``target`` (its first address that connects)."""
    url = target.url
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Genmesh-Job-Id": job_id,
        sign.HEADER: sign.header_value(secret, body),
    }
    error = "no address"
    for address in target.addresses:
        kind = PinnedHTTPSConnection if url.scheme == "https" else PinnedHTTPConnection
        connection = kind(url.host, url.port, addresses=(address,), timeout=timeout)
        try:
            connection.request("POST", url.path, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read(MAX_ANSWER_BYTES)
        except TimeoutError:
            error = "timed out"
            continue
        except (OSError, http.client.HTTPException) as exc:
            error = _describe(exc)
            continue
        finally:
            connection.close()
        if 200 <= answer.status < 300:
            return Outcome(answer.status, "")
        if 300 <= answer.status < 400:
            return Outcome(answer.status, f"HTTP {answer.status} (redirects are not followed)")
        return Outcome(answer.status, f"HTTP {answer.status}")
    return Outcome(0, error)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)[:200]
