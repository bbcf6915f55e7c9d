"""Wires the Image server together: catalog, engine, queue, storage, servicer."""

from __future__ import annotations

import grpc

from genmesh.image.v1 import image_pb2_grpc
from servers.diffusion.catalog import ModelCatalog
from servers.diffusion.serving import DiffusionService, engine_options
from servers.image.engine import ImageEngine
from servers.image.servicer import ImageServicer
from servers.image.settings import ImageSettings


class ImageService(DiffusionService):
    def __init__(self, settings: ImageSettings) -> None:
        catalog = ModelCatalog(settings.resolved_models_dir(), settings.model, pulled=settings.pulled_models())
        super().__init__("image", settings, ImageEngine(catalog, **engine_options(settings)))

    def register(self, server: grpc.aio.Server) -> None:
        image_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(self.engine, self.queue, self.store), server)
