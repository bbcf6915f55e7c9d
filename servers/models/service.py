"""Wires the models server together: folders, resolver, puller, queue, storage, servicer."""

from __future__ import annotations

import grpc

from genmesh.models.v1 import models_pb2_grpc
from servers.models.engine import ModelPuller
from servers.models.servicer import ModelsServicer
from servers.models.settings import ModelsSettings
from servers.runtime.service import QueuedService
from storage.pulled import PulledModels


class ModelsService(QueuedService):
    def __init__(self, settings: ModelsSettings) -> None:
        # Each "device" is a pull slot: downloads wait on the network, not on an accelerator.
        super().__init__("models", settings, devices=[f"pull-{index}" for index in range(settings.parallel_pulls)])
        self.puller = ModelPuller(
            settings.folders(), settings.resolver(), stall_seconds=settings.pull_stall_seconds,
            max_retries=settings.pull_retries, published=PulledModels(self.store) if settings.pull_to_store else None,
        )  # fmt: skip

    def register(self, server: grpc.aio.Server) -> None:
        models_pb2_grpc.add_ModelsServiceServicer_to_server(ModelsServicer(self.puller, self.queue, self.store), server)
