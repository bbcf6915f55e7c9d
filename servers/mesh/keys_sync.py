"""Keep the gateway's key and rate-limit discovery files in step with the keys file.

Envoy watches those files (ECDS, see ``gateway_filters``) and applies a new version to the next
request. ``KeySync`` re-reads the keys file every ``interval`` seconds (a polled read also follows a
Kubernetes Secret volume, whose files change by a symlink swap), applies a change once two reads
agree, and rewrites a discovery file only when its content changes. A keys file that does not
parse is reported and ignored: the gateway keeps the last good keys. Logs name clients, never keys.

``genmesh up`` runs one on a thread of its own; on Kubernetes it is the gateway pod's ``keys-sync``
container: ``python -m servers.mesh.keys_sync --keys-dir DIR --keys-file FILE --watch``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import structlog

from servers.mesh.api_keys import ApiKeyError, KeySource, RateLimit, default_rate_limit
from servers.mesh.gateway_filters import GatewayFilters, write_discovery_files

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL_SECONDS = 1.0


class KeySync:
    """Writes the discovery files for ``source`` into ``keys_dir``; ``start()`` keeps them current."""

    def __init__(
        self, source: KeySource, keys_dir: Path, default: RateLimit, *, interval: float = DEFAULT_INTERVAL_SECONDS
    ) -> None:
        self.source = source
        self.keys_dir = Path(keys_dir)
        self.default = default
        self.interval = interval
        self.clients: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None
        self._applied: str | None = None  # the file text the discovery files were written from
        self._seen: str | None = None  # the text read by the last poll

    def sync(self) -> list[str]:
        """Read the keys, write what changed; the names of the files written. Raises ``ApiKeyError``."""
        return self._apply(self.source.read())

    def _apply(self, text: str | None) -> list[str]:
        config = self.source.parse(text)
        changed = write_discovery_files(self.keys_dir, GatewayFilters.from_config(config, self.default))
        if changed:
            added = sorted(set(config.clients) - set(self.clients))
            removed = sorted(set(self.clients) - set(config.clients))
            log.info("api_keys_applied", clients=config.clients, added=added, removed=removed, files=changed)
        self.clients = config.clients
        self._applied = text
        return changed

    def poll(self) -> None:
        """Apply a change once the file read the same twice in a row (an editor saving it in place
        is not caught half-written); errors are logged, once per distinct error, and the gateway
        keeps the last good keys."""
        try:
            text = self.source.read()
            if text == self._applied or text != self._seen:
                self._seen = text
                return
            self._apply(text)
        except (ApiKeyError, OSError) as exc:  # messages name the entry and the client, never the key
            if str(exc) != self._last_error:
                log.error("api_keys_rejected", error=str(exc), kept=self.clients)
            self._last_error = str(exc)
        else:
            self._last_error = None

    def start(self) -> KeySync:
        self._thread = threading.Thread(target=self._run, name="key-sync", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m servers.mesh.keys_sync --keys-dir DIR [--keys-file FILE] [--watch]``.

    Keys from ``GENMESH_API_KEYS`` and ``--keys-file`` (else ``GENMESH_API_KEYS_FILE``); the
    default bucket per client from ``GENMESH_RATE_LIMIT_RPS`` / ``GENMESH_RATE_LIMIT_BURST``.
    """
    parser = argparse.ArgumentParser(prog="python -m servers.mesh.keys_sync", description=main.__doc__)
    parser.add_argument("--keys-dir", type=Path, required=True, help="where the gateway's discovery files live")
    parser.add_argument("--keys-file", type=Path)
    parser.add_argument("--watch", action="store_true", help="keep running and follow changes")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_SECONDS, help="seconds between reads")
    args = parser.parse_args(argv)
    try:
        source = KeySource.from_environ(os.environ, args.keys_file)
        sync = KeySync(source, args.keys_dir, default_rate_limit(os.environ))
        sync.sync()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.watch:
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(args.interval):
        sync.poll()
    return 0


if __name__ == "__main__":
    from servers.runtime.logging import configure_logging

    configure_logging(os.environ.get("GENMESH_LOG_LEVEL", "info"), os.environ.get("GENMESH_LOG_FORMAT", "auto"))
    raise SystemExit(main())
