"""Every genmesh service, declared once: one ``ServiceInfo`` entry per service.

Everything else follows from this table: the servers (``python -m servers <name>`` finds
``servers.<name>.settings`` and ``servers.<name>.service`` by convention, ``servers/registry.py``),
``genmesh up`` (which services to start, in which order, and the addresses each caller gets), the
gateway config, the clients' job methods (``client.<attr>.get_job/cancel_job/watch``, ``list_jobs``),
the CLI's lists, and the compose and Kubernetes files (``python -m servers.mesh.deploy_files``).
A new service is its proto, its folder under ``servers/``, one entry here and its tests.

This module is plain data (no grpc, no server imports): the client package and the deploy renderer
both read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Deploy:
    """How the compose and Kubernetes files run a service (defaults: a small CPU-only server)."""

    summary: str = ""  # the Kubernetes manifest's opening comment (one or more lines, no "#")
    drain_seconds: int = 30  # GENMESH_DRAIN_SECONDS: running jobs finish within it on SIGTERM
    cpu: str = "250m"  # Kubernetes request
    memory: str = "512Mi"  # Kubernetes request
    memory_limit: str = "1Gi"
    data: str = "scratch only: results go to object storage"  # what its /data volume holds
    data_size: str = "1Gi"  # the per-pod scratch volume's size limit
    shm: bool = False  # a RAM-backed /dev/shm (torch DataLoader workers share batches through it)
    replicas: int = 1  # Kubernetes replicas by default
    env: tuple[tuple[str, str], ...] = ()  # extra environment, beside the port and drain time
    loads_model: bool = True  # health turns SERVING only once a model is loaded (probe comments)
    stop_margin: int = 30  # seconds past the drain before SIGKILL (unloading, checkpointing)
    compose_env: tuple[tuple[str, str], ...] = ()  # compose only (its services share one host)
    compose_volumes: tuple[str, ...] = ()  # compose only: other services' volumes it mounts

    @property
    def grace_seconds(self) -> int:
        return self.drain_seconds + self.stop_margin


@dataclass(frozen=True)
class ServiceInfo:
    name: str  # "video": cluster, process, CLI and folder name (servers/video)
    proto_service: str  # "genmesh.video.v1.VideoService"
    job_prefixes: tuple[str, ...]  # job ids start with "<prefix>-"
    port: int  # default gRPC port (metrics on port + 1000 in compose)
    gpu: bool = True  # runs models on an accelerator (deploy files give it a GPU)
    calls: tuple[str, ...] = ()  # services it calls directly over gRPC (--<name>-url flags), never via the gateway
    extra: str = ""  # pyproject extra with its server's dependencies ("" when the base package is enough)
    client_attr: str = ""  # its attribute on GenmeshClient; default: the name
    offline: bool = True  # never reaches a model hub (only the models server pulls from one)
    deploy: Deploy = Deploy()

    @property
    def proto_package(self) -> str:
        """``genmesh.video.v1``: the gateway routes ``/genmesh.video.v1.*`` here."""
        return self.proto_service.rsplit(".", 1)[0]

    @property
    def attr(self) -> str:
        """``videos``: where ``GenmeshClient`` offers this service."""
        return self.client_attr or self.name


SERVICES: tuple[ServiceInfo, ...] = (
    ServiceInfo(
        "text", "genmesh.text.v1.TextService", ("txt",), 50051, extra="text",
        deploy=Deploy(
            "The Text server: LLM generation and chat (llama.cpp).", drain_seconds=60, cpu="2", memory="4Gi",
            memory_limit="8Gi", data="models (<data>/models/text) and state", data_size="50Gi",
            env=(("GENMESH_TEXT_CONTEXT_LENGTH", "4096"),),
        ),
    ),
    ServiceInfo(
        "image", "genmesh.image.v1.ImageService", ("img",), 50052, extra="image", client_attr="images",
        deploy=Deploy(
            "The Image server (Stable Diffusion): one replica per GPU.", drain_seconds=120, cpu="2", memory="8Gi",
            memory_limit="16Gi", data="models (<data>/models/image) and state", data_size="50Gi",
        ),
    ),
    ServiceInfo(
        "video", "genmesh.video.v1.VideoService", ("vid",), 50053, extra="video", client_attr="videos",
        deploy=Deploy(
            "The Video server (AnimateDiff): one replica per GPU. Base models are the Image server's (SD1.5);\n"
            "motion adapters go in <data>/models/motion.",
            drain_seconds=300, cpu="2", memory="8Gi", memory_limit="24Gi",
            data="models (<data>/models/image, <data>/models/motion) and state", data_size="50Gi", shm=True,
        ),
    ),
    # Training jobs ("trn") and its short tasks: synthetic data, restore, evaluate ("tsk").
    ServiceInfo(
        "training", "genmesh.training.v1.TrainingService", ("trn", "tsk"), 50054, extra="training",
        deploy=Deploy(
            "The Training server (one GPU per replica). A job runs on the replica that created it, which is\n"
            "named in its id; Get/Cancel/Watch of it from any other replica are forwarded there, and its\n"
            "records live in object storage. After a restart each replica resumes only its own interrupted\n"
            "jobs: scaling down removes the highest ordinals, and their interrupted jobs wait until a replica\n"
            "of that number runs again.",
            drain_seconds=600, cpu="4", memory="8Gi", memory_limit="32Gi",
            data="models (<data>/models/training) and state", data_size="50Gi", shm=True, stop_margin=60,
        ),
    ),
    # Chains text, image and video into one job (a character); calls those servers directly.
    ServiceInfo(
        "agent", "genmesh.agent.v1.AgentService", ("agt",), 50055, gpu=False, calls=("text", "image", "video"),
        deploy=Deploy(
            "The agent (one call: character sheet -> portrait -> animation). No GPU: it calls the Text, Image\n"
            "and Video servers directly (their headless Services), never through the gateway.",
            drain_seconds=600, loads_model=False,
            # 0: each service unloads its model when its stage ends, so one GPU holds one model at a time.
            compose_env=(("GENMESH_AGENT_KEEP_ALIVE_SECONDS", "0"),),
        ),
    ),
    # Pulls model files into the folders the Text, Image and Video servers read; loads no model.
    ServiceInfo(
        "models", "genmesh.models.v1.ModelsService", ("pul",), 50056, gpu=False, offline=False,
        deploy=Deploy(
            "The models server: pulls model files by reference (genmesh pull). No GPU, no model loaded; it\n"
            "fetches from the hubs the operator allows (GENMESH_PULL_ALLOWED_HOSTS). It runs 0 replicas until\n"
            "cluster pulls land: set GENMESH_PULL_TO_STORE=true here and GENMESH_MODELS_FROM_STORE=true on\n"
            "Text, Image and Video (server-config.yaml), so pulls reach every pod through the `models` bucket\n"
            "(client/README.md, \"Pull a model\"), and add an egress rule to the hubs (network-policies.yaml).",
            drain_seconds=600, data="partial downloads (models/.staging) and pulled files", data_size="50Gi",
            replicas=0, loads_model=False,
            # It writes pulled files into the servers' model folders (their volumes, mounted here).
            compose_env=(
                ("GENMESH_TEXT_MODELS_DIR", "/volumes/text/models/text"),
                ("GENMESH_IMAGE_MODELS_DIR", "/volumes/image/models/image"),
                ("GENMESH_MOTION_ADAPTERS_DIR", "/volumes/video/models/motion"),
            ),
            compose_volumes=("text-data:/volumes/text", "image-data:/volumes/image", "video-data:/volumes/video"),
        ),
    ),
)  # fmt: skip
BY_NAME: dict[str, ServiceInfo] = {service.name: service for service in SERVICES}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def service_for_job(job_id: str) -> ServiceInfo | None:
    """The service whose job ids look like ``job_id`` (by its prefix), or None."""
    prefix = job_id.partition("-")[0]
    return next((service for service in SERVICES if prefix in service.job_prefixes), None)


def start_order(names: tuple[str, ...] | list[str]) -> list[str]:
    """``names`` with every service after the services it calls (its callees must be up first)."""
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in ordered or name not in names:
            return
        if name in path:
            raise ValueError(f"services call each other in a circle: {' -> '.join((*path, name))}")
        for callee in BY_NAME[name].calls:
            visit(callee, (*path, name))
        ordered.append(name)

    for name in names:
        visit(name, ())
    return ordered


def stop_waves(names: tuple[str, ...] | list[str]) -> list[list[str]]:
    """``names`` in groups to stop one after another, each group at once: a service stops only after
    every service that calls it (a caller may be finishing a job that needs it)."""
    wave: dict[str, int] = {}

    def depth(name: str, path: tuple[str, ...]) -> int:
        if name not in wave:
            if name in path:
                raise ValueError(f"services call each other in a circle: {' -> '.join((*path, name))}")
            callers = [other for other in names if name in BY_NAME[other].calls]
            wave[name] = 1 + max((depth(caller, (*path, name)) for caller in callers), default=-1)
        return wave[name]

    for name in names:
        depth(name, ())
    return [[name for name in names if wave[name] == level] for level in range(max(wave.values(), default=-1) + 1)]
