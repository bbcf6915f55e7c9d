"""python -m servers.image: the genmesh Image server."""

from __future__ import annotations

import os
import sys

# No model hub is ever reached: every load is local (a second guard beside local_files_only).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from servers.image.settings import ImageSettings
from servers.runtime.logging import configure_logging
from servers.runtime.settings import parse_settings


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(ImageSettings, argv if argv is not None else sys.argv[1:], prog="python -m servers.image")
    configure_logging(settings.log_level, settings.log_format, service="image")
    # Heavy imports (torch, diffusers) only after logging is configured.
    from servers.image.service import ImageService
    from servers.runtime.server import run_service

    run_service(ImageService(settings), settings)


if __name__ == "__main__":
    main()
