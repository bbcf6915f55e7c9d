"""python -m servers.training: the genmesh Training server."""

from __future__ import annotations

import sys

from servers.runtime.logging import configure_logging
from servers.runtime.settings import parse_settings
from servers.training.settings import TrainingSettings


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    settings = parse_settings(TrainingSettings, args, prog="python -m servers.training")
    configure_logging(settings.log_level, settings.log_format, service="training")
    # Heavy imports (torch) only after logging is configured.
    from servers.runtime.server import run_service
    from servers.training.service import TrainingService

    run_service(TrainingService(settings), settings)


if __name__ == "__main__":
    main()
