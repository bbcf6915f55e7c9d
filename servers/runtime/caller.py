"""Who is calling: the client named by the API key the gateway checked, and whether that key is an
admin key. Jobs belong to their caller (``Job.owner``); only the owner and admins see them.

The gateway sets both headers and drops any copy a caller sends (``deploy/envoy/envoy.yaml.tmpl``),
so neither can be forged through it. A call that reaches a server without the gateway and carries
no client id (a direct gRPC call on the server's port, a test, the launcher) comes from inside the
trust boundary: it is the operator, treated as admin. Servers listen on loopback or behind network
policies and mutual TLS, and whoever can call them directly could send any client id anyway.
Nothing here imports grpc; the interceptor binds the caller of each call.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from genmesh.errors import InvalidArgument
from storage.keys import validate_job_id

CLIENT_HEADER = "x-client-id"
ADMIN_HEADER = "x-genmesh-admin"  # "true" for a key marked admin in the keys file
# "true" on the agent's calls for its sub-jobs: they do not take the key's default webhook (the
# agent job itself does). A caller sending it only drops its own default, so the gateway lets it be.
SUB_JOB_HEADER = "x-genmesh-sub-job"
# The id of the job a sub-job is a step of (the agent's job, for its stages), recorded with the
# sub-job (``JobStatus.parent_job_id``) so the library lists its parent alone. The gateway drops a
# caller's copy: only the agent, calling the services directly, sets it.
PARENT_JOB_HEADER = "x-genmesh-parent-job"
# What a call made on a caller's behalf passes on (a forwarded call, the web front door's calls):
# the request id for the logs, and who asks, for ownership.
PASSED_ON = ("x-request-id", CLIENT_HEADER, ADMIN_HEADER)


@dataclass(frozen=True)
class Caller:
    client_id: str  # "" without the gateway
    admin: bool
    sub_job: bool = False  # a call another job makes on the caller's behalf (the agent's stages)
    parent_job_id: str = ""  # the job that call is a step of, when it says (``PARENT_JOB_HEADER``)

    def may_see(self, owner: str) -> bool:
        """Whether this caller may get, watch, cancel or list a job owned by ``owner``."""
        return self.admin or owner == self.client_id

    def headers(self) -> tuple[tuple[str, str], ...]:
        """The headers that make a call on this caller's behalf (the agent's sub-jobs, a forwarded call)."""
        if not self.client_id:
            return ()
        return (
            (CLIENT_HEADER, self.client_id),
            *(((ADMIN_HEADER, "true"),) if self.admin else ()),
            (SUB_JOB_HEADER, "true"),
        )


OPERATOR = Caller("", admin=True)
_current: ContextVar[Caller] = ContextVar("genmesh_caller", default=OPERATOR)


def from_headers(metadata: Mapping[str, str]) -> Caller:
    client_id = metadata.get(CLIENT_HEADER, "")
    parent = _job_id(metadata.get(PARENT_JOB_HEADER, ""))
    if not client_id:
        return Caller("", admin=True, parent_job_id=parent) if parent else OPERATOR
    return Caller(
        client_id,
        admin=metadata.get(ADMIN_HEADER) == "true",
        sub_job=metadata.get(SUB_JOB_HEADER) == "true",
        parent_job_id=parent,
    )


def _job_id(value: str) -> str:
    """``value`` when it is a job id, else "" (a header that is not one names no parent)."""
    try:
        return validate_job_id(value) if value else ""
    except InvalidArgument:
        return ""


def bind(caller: Caller) -> None:
    """Set for the current call (each RPC runs in its own task, so it ends with the call)."""
    _current.set(caller)


def current() -> Caller:
    return _current.get()
