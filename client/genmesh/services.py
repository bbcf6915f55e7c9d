"""Every genmesh service, declared once: name, proto service, job-id prefixes, default port.

Servers (bootstrap, launcher, gateway config), the client and the CLI all read this table; a new
service is one entry here plus its folder under ``servers/`` (see ``servers/registry.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceInfo:
    name: str  # "video": cluster, process and CLI name
    proto_service: str  # "genmesh.video.v1.VideoService"
    job_prefixes: tuple[str, ...]  # job ids start with "<prefix>-"
    port: int  # default gRPC port
    gpu: bool = True  # runs models on an accelerator (deploy files give it a GPU)

    @property
    def proto_package(self) -> str:
        """``genmesh.video.v1``: the gateway routes ``/genmesh.video.v1.*`` here."""
        return self.proto_service.rsplit(".", 1)[0]


SERVICES: tuple[ServiceInfo, ...] = (
    ServiceInfo("text", "genmesh.text.v1.TextService", ("txt",), 50051),
    ServiceInfo("image", "genmesh.image.v1.ImageService", ("img",), 50052),
    ServiceInfo("video", "genmesh.video.v1.VideoService", ("vid",), 50053),
    # Training jobs ("trn") and its short tasks: synthetic data, restore, evaluate ("tsk").
    ServiceInfo("training", "genmesh.training.v1.TrainingService", ("trn", "tsk"), 50054),
    # Chains text, image and video into one job (a character); calls those servers directly.
    ServiceInfo("agent", "genmesh.agent.v1.AgentService", ("agt",), 50055, gpu=False),
    # Pulls model files into the folders the Text, Image and Video servers read; loads no model.
    ServiceInfo("models", "genmesh.models.v1.ModelsService", ("pul",), 50056, gpu=False),
)
BY_NAME: dict[str, ServiceInfo] = {service.name: service for service in SERVICES}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def service_for_job(job_id: str) -> ServiceInfo | None:
    """The service whose job ids look like ``job_id`` (by its prefix), or None."""
    prefix = job_id.partition("-")[0]
    return next((service for service in SERVICES if prefix in service.job_prefixes), None)
