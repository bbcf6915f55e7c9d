"""``python -m servers <name> [flags]``: run one genmesh server, any service the declaration names
(``genmesh.services``). ``python -m servers <name> --help`` lists that server's flags."""

from __future__ import annotations

import sys

from genmesh.services import SERVICES
from servers.registry import SERVERS, main


def usage() -> str:
    width = max(len(name) for name in SERVERS)
    lines = [f"  {info.name:{width}}  {info.proto_service} (port {info.port})" for info in SERVICES]
    return (
        f"usage: python -m servers {{{','.join(SERVERS)}}} [--help | flags]\n\n"
        "Runs one genmesh server (`genmesh up` runs them all). Services:\n" + "\n".join(lines) + "\n\n"
        "python -m servers <name> --help lists that server's flags (each also read from GENMESH_* variables)."
    )


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0)
    if len(sys.argv) < 2 or sys.argv[1] not in SERVERS:
        raise SystemExit(usage())
    main(sys.argv[1], sys.argv[2:])
