"""``python -m servers <name> [flags]``: run one genmesh server (text, image, video, training, agent)."""

from __future__ import annotations

import sys

from servers.registry import SERVERS, main

if __name__ == "__main__":
    usage = f"usage: python -m servers {{{','.join(SERVERS)}}} [--help | flags]"
    if len(sys.argv) == 2 and sys.argv[1] in ("-h", "--help"):
        print(usage)
        raise SystemExit(0)
    if len(sys.argv) < 2 or sys.argv[1] not in SERVERS:
        raise SystemExit(usage)
    main(sys.argv[1], sys.argv[2:])
