"""Where the other replicas of a service listen, from configuration only (``GENMESH_PEERS``).

Either a list in replica order (``127.0.0.1:50061,127.0.0.1:50062``: the local launcher) or a
template with ``{n}`` (``text-{n}.text-peers:50051``: a StatefulSet's pods behind a headless
Service). A job id names its owner by index; the address always comes from here, never from the
caller, so a crafted id can reach nothing but a replica of this service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from servers.runtime.job_ids import MAX_REPLICAS

_ADDRESS = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:]+\]):[0-9]{1,5}")
PLACEHOLDER = "{n}"


def _check_address(address: str, source: str) -> str:
    if not _ADDRESS.fullmatch(address) or not 0 < int(address.rpartition(":")[2]) < 65536:
        raise ValueError(f"GENMESH_PEERS: expected host:port, got {source!r}")
    return address


@dataclass(frozen=True)
class Peers:
    addresses: tuple[str, ...] = ()
    template: str = ""

    @classmethod
    def parse(cls, text: str) -> Peers:
        text = text.strip()
        if not text:
            return cls()
        if PLACEHOLDER in text:
            if text.count(PLACEHOLDER) != 1 or "," in text:
                raise ValueError(f"GENMESH_PEERS: a template has exactly one {PLACEHOLDER} (got {text!r})")
            _check_address(text.replace(PLACEHOLDER, "0"), text)
            return cls(template=text)
        addresses = tuple(_check_address(part.strip(), part.strip()) for part in text.split(","))
        if len(addresses) > MAX_REPLICAS:
            raise ValueError(f"GENMESH_PEERS: at most {MAX_REPLICAS} replicas")
        return cls(addresses=addresses)

    @property
    def configured(self) -> bool:
        return bool(self.addresses or self.template)

    def count(self) -> int | None:
        """How many replicas the list names; None for a template (a StatefulSet may be scaled)."""
        return len(self.addresses) if self.addresses else None

    def address(self, replica: int) -> str | None:
        """The address of ``replica``, or None when the configuration names no such replica."""
        if not 0 <= replica < MAX_REPLICAS:
            return None
        if self.template:
            return self.template.replace(PLACEHOLDER, str(replica))
        return self.addresses[replica] if replica < len(self.addresses) else None
