"""Job ids that name their owner: ``<prefix>-<replica>-<boot><random>``.

``replica`` is the index of the process among its service's replicas (the StatefulSet ordinal on
Kubernetes, the launcher's index locally) and ``boot`` is random per process start. Any replica
can tell from an id which replica runs the job (and forward a call there), and the owner can tell
a job of an earlier life of its own (lost with that process) from one that never existed.
Old ids without the two parts (``txt-3f9c1a0b2d4e5f6a``) stay valid; they name no owner.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

MAX_REPLICAS = 1000  # replica indexes are 0..999: three digits in an id
BOOT_HEX = 8
RANDOM_HEX = 12
BOOT_ID = secrets.token_hex(BOOT_HEX // 2)  # this process's start
_OWNED = re.compile(rf"[a-z]+-(0|[1-9][0-9]{{0,2}})-([0-9a-f]{{{BOOT_HEX}}})[0-9a-f]{{{RANDOM_HEX}}}")


@dataclass(frozen=True)
class Owner:
    replica: int
    boot: str


def job_owner(job_id: str) -> Owner | None:
    """The replica (and its boot) that made ``job_id``; None for an id in the old, untagged form."""
    match = _OWNED.fullmatch(job_id)
    return Owner(int(match[1]), match[2]) if match else None


@dataclass(frozen=True)
class JobIds:
    """Makes and reads the ids of one process (``replica`` of its service, started as ``boot``)."""

    replica: int = 0
    boot: str = BOOT_ID

    def __post_init__(self) -> None:
        if not 0 <= self.replica < MAX_REPLICAS:
            raise ValueError(f"replica must be 0..{MAX_REPLICAS - 1} (got {self.replica})")

    def new(self, prefix: str) -> str:
        return f"{prefix}-{self.replica}-{self.boot}{secrets.token_hex(RANDOM_HEX // 2)}"

    def owns(self, job_id: str) -> bool:
        """True when this replica made the id, in this life or an earlier one (or it names no owner)."""
        owner = job_owner(job_id)
        return owner is None or owner.replica == self.replica

    def lost(self, job_id: str) -> bool:
        """True when this replica made the id in an earlier life: the job died with that process."""
        owner = job_owner(job_id)
        return owner is not None and owner.replica == self.replica and owner.boot != self.boot
