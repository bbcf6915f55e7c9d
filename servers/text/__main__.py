"""python -m servers.text: the genmesh Text server."""

from __future__ import annotations

import sys

from servers.runtime.logging import configure_logging
from servers.runtime.settings import parse_settings
from servers.text.settings import TextSettings


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(TextSettings, argv if argv is not None else sys.argv[1:], prog="python -m servers.text")
    configure_logging(settings.log_level, settings.log_format, service="text")
    # Heavy imports (llama.cpp) only after logging is configured.
    from servers.runtime.server import run_service
    from servers.text.service import TextService

    run_service(TextService(settings), settings)


if __name__ == "__main__":
    main()
