"""Settings of the Text server (flags and GENMESH_* environment, parsed once)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from genmesh.services import BY_NAME
from servers.runtime.settings import ServerSettings, setting
from servers.text.framing import FRAME_SECONDS


@dataclasses.dataclass(frozen=True)
class TextSettings(ServerSettings):
    """genmesh Text server: LLM generation and chat on llama.cpp."""

    port: int = setting(BY_NAME["text"].port, "gRPC port", env="GENMESH_TEXT_PORT")
    model: str = setting(
        "", "default model name (empty: the built-in Gemma 3 270M, gemma-3-270m-q4_k_m)", env="GENMESH_TEXT_MODEL"
    )
    model_path: Path | None = setting(None, "a GGUF file to serve (becomes the default)", env="GENMESH_TEXT_MODEL_PATH")
    models_dir: Path | None = setting(
        None, "folder of *.gguf files, each listed as a model (default: <data_dir>/models/text)"
    )
    context_length: int = setting(4096, "context window in tokens", env="GENMESH_TEXT_CONTEXT_LENGTH")
    gpu_layers: int = setting(
        0, "layers to offload to the GPU (-1: all); needs a GPU build of llama.cpp (Makefile LLAMA_CMAKE_ARGS)"
    )
    stream_frame_ms: float = setting(
        FRAME_SECONDS * 1000,
        "streamed text is sent at most this often, the tokens made in between in one delta (the first at once; "
        "0: every token; each message costs the server, Envoy and the client ~1 ms of CPU that llama.cpp's cores "
        "would otherwise use)",
        env="GENMESH_TEXT_STREAM_FRAME_MS",
    )

    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.default_models_dir("text")
