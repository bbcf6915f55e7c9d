"""``python -m servers.web``: the HTTP front door (OpenAI-compatible routes) on uvicorn."""

from __future__ import annotations

import sys

from servers.runtime.logging import configure_logging
from servers.runtime.settings import parse_settings
from servers.web.settings import WebSettings


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(WebSettings, argv if argv is not None else sys.argv[1:], prog="python -m servers.web")
    configure_logging(settings.log_level, settings.log_format, service="web")
    import uvicorn

    from servers.web.app import create_app

    # uvicorn's own access log would duplicate the gateway's; its errors go through the logging setup.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, access_log=False, log_config=None,
                timeout_graceful_shutdown=30)  # fmt: skip


if __name__ == "__main__":
    main()
