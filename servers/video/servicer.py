"""VideoService: proto in, AnimateDiff job, proto out. Validation lives in convert.py, the job in job.py;
the RPCs, ListModels and the messages come from ``DiffusionServicer``."""

from __future__ import annotations

from genmesh.common.v1 import model_pb2
from genmesh.video.v1 import video_pb2, video_pb2_grpc
from servers.diffusion.serving import DiffusionServicer, Generation
from servers.runtime import convert as common
from servers.video import convert
from servers.video.engine import ModelPair, VideoEngine
from servers.video.job import VideoJob


class VideoServicer(DiffusionServicer, video_pb2_grpc.VideoServiceServicer):
    engine: VideoEngine
    # Unknown names, bad inline media and out-of-range parameters are refused before queueing.
    GenerateVideo = Generation(video_pb2, convert.generate_video_request, VideoJob.prepare)

    def model_infos(self) -> list[model_pb2.ModelInfo]:
        """Base models (SD1.5) and motion adapters; a job loads one of each."""
        engine = self.engine
        loaded = engine.models.loaded_key or ModelPair("", "")
        default = ModelPair(engine.catalog.default_name, engine.adapters.default_name)
        common_labels = {"family": "sd15", "memory_mode": engine.memory_mode}
        infos = [
            self.model_info(
                entry,
                {"kind": "base", **common_labels, "default_scheduler": "SCHEDULER_DDIM"},
                loaded=entry.name == loaded.model,
                is_default=entry.name == default.model,
                defaults=common.generation_defaults(engine.defaults_for(entry)),
            )
            for entry in engine.catalog.entries()
        ]
        infos += [
            self.model_info(
                entry,
                {"kind": "motion_adapter", **common_labels},
                loaded=entry.name == loaded.motion_adapter,
                is_default=entry.name == default.motion_adapter,
            )
            for entry in engine.adapters.entries()
        ]
        return infos
