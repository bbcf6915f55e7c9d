"""Each declared service's RPCs, found from its proto: the one core of the clients' job methods.

Every service with job ids (``ServiceInfo.job_prefixes``) answers the shared job RPCs (GetJob,
CancelJob, WatchJob, ListJobs; ``common/v1/job.proto``). Its stub class and request types follow
from its proto service name (``genmesh.video.v1.VideoService``): the generated modules of the
package ``genmesh.video.v1`` hold the stub, the descriptor names the request types. The sync and
async clients only make the calls, so a new service gets ``get_job``, ``cancel_job``, ``watch`` and
a place in ``list_jobs`` from its declaration alone.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory

from genmesh.services import BY_NAME, SERVICES, ServiceInfo

# Job ids a service answers through RPCs of their own resource rather than the shared job RPCs:
# training jobs ("trn-...") are TrainingJobs (GetTrainingJob, CancelTrainingJob, WatchTrainingJob);
# the Training server's short tasks ("tsk-...") are plain jobs like every other service's.
RESOURCE_JOBS: dict[str, str] = {"trn": "Training"}  # job-id prefix -> the <Verb><Resource>Job RPCs
VERBS = ("Get", "Cancel", "Watch")


def job_services() -> tuple[str, ...]:
    """The services whose jobs ``list_jobs`` merges: every declared service with job ids."""
    return tuple(info.name for info in SERVICES if info.job_prefixes)


@functools.cache
def generated_modules(info: ServiceInfo) -> tuple[Any, Any]:
    """(the ``*_pb2`` module, the ``*_pb2_grpc`` module) that define ``info``'s proto service."""
    package = importlib.import_module(info.proto_package)
    service_name = info.proto_service.rpartition(".")[2]
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.endswith("_pb2_grpc"):
            grpc_module = importlib.import_module(f"{info.proto_package}.{module.name}")
            if hasattr(grpc_module, f"{service_name}Stub"):
                return importlib.import_module(f"{info.proto_package}.{module.name[: -len('_grpc')]}"), grpc_module
    raise LookupError(f"no generated stub for {info.proto_service} in {info.proto_package} (run protos/generate.py)")


@dataclass(frozen=True)
class ServiceRpcs:
    """One service's stub class and the request type of each of its RPCs."""

    info: ServiceInfo
    stub_class: type
    requests: dict[str, type]  # RPC name -> its request message class
    streams: frozenset[str]  # the server-streaming RPCs

    def stub(self, channel: Any) -> Any:
        return self.stub_class(channel)

    def call(self, verb: str, job_id: str) -> tuple[str, Any]:
        """(RPC name, request) for ``verb`` ("Get", "Cancel", "Watch") of the job ``job_id``."""
        resource = RESOURCE_JOBS.get(job_id.partition("-")[0], "")
        rpc = f"{verb}{resource}Job" if f"{verb}{resource}Job" in self.requests else f"{verb}Job"
        return rpc, self.requests[rpc](job_id=job_id)

    def list_request(self, **fields: Any) -> Any:
        return self.requests["ListJobs"](**fields)


@functools.cache
def service_rpcs(name: str) -> ServiceRpcs:
    """The RPCs of the declared service ``name`` (LookupError when its proto lacks the job RPCs its
    job ids promise)."""
    info = BY_NAME[name]
    pb2, grpc_module = generated_modules(info)
    service = pb2.DESCRIPTOR.services_by_name[info.proto_service.rpartition(".")[2]]
    requests = {method.name: message_factory.GetMessageClass(method.input_type) for method in service.methods}
    wanted = (*(f"{verb}Job" for verb in VERBS), "ListJobs") if info.job_prefixes else ()
    missing = [rpc for rpc in wanted if rpc not in requests]
    if missing:
        raise LookupError(f"{info.proto_service} declares job ids but lacks the shared job RPCs {missing}")
    streams = frozenset(method.name for method in service.methods if method.server_streaming)
    return ServiceRpcs(info, getattr(grpc_module, f"{service.name}Stub"), requests, streams)
