#!/bin/sh
# Installs the browser the console's tests drive (Debian's Chromium) when it is missing; run by
# `make test`. Playwright cannot download its own browser on these machines, so the system's is used.
# Without root or apt-get it only says so: the browser tests then skip, and fail under CI.
set -eu
CHROMIUM="${GENMESH_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Chromium for the browser tests (apt-get install chromium)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    echo "no Chromium at $CHROMIUM and no root to install it (apt-get install chromium): the browser tests will skip (fail under CI)" >&2
fi
