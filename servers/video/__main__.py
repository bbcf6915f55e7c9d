"""python -m servers.video: the genmesh Video server."""

from __future__ import annotations

import os
import sys

# No model hub is ever reached: every load is local (a second guard beside local_files_only).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from servers.runtime.logging import configure_logging
from servers.runtime.settings import parse_settings
from servers.video.settings import VideoSettings


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(VideoSettings, argv if argv is not None else sys.argv[1:], prog="python -m servers.video")
    configure_logging(settings.log_level, settings.log_format, service="video")
    # Heavy imports (torch, diffusers) only after logging is configured.
    from servers.runtime.server import run_service
    from servers.video.service import VideoService

    run_service(VideoService(settings), settings)


if __name__ == "__main__":
    main()
