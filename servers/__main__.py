"""``python -m servers <name> [flags]``: run one genmesh server (text, image, video, training)."""

from __future__ import annotations

import sys

from servers.registry import SERVERS, main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in SERVERS:
        raise SystemExit(f"usage: python -m servers {{{','.join(SERVERS)}}} [--help | flags]")
    main(sys.argv[1], sys.argv[2:])
