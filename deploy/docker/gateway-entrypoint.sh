#!/bin/sh
# Entrypoint of the genmesh gateway image (Dockerfile.gateway).
#
#   run     (default) render, then serve: what compose runs.
#   render  render the gateway config with `python3 -m servers.mesh.envoy` -- the one renderer and
#           the one template, deploy/envoy/envoy.yaml.tmpl -- and check it with
#           `envoy --mode validate` (what the Kubernetes initContainer does, by that same command).
#   serve   run Envoy on an already rendered config; on SIGTERM/SIGINT drain gracefully (running
#           streams finish, up to GENMESH_GATEWAY_DRAIN_SECONDS), then stop Envoy.
#   drain   only the graceful drain of a running Envoy (e.g. a preStop hook).
#   other   exec'd as given: `python3 -c ...`, `envoy --version`, `sh`.
#
# Rendering reads GENMESH_API_KEYS / GENMESH_API_KEYS_FILE (required: there is no default key),
# GENMESH_UPSTREAM_TEXT / _IMAGE / _VIDEO / _TRAINING (host:port[,host:port]; names become
# STRICT_DNS clusters, so compose service names and Kubernetes headless services work),
# GENMESH_RATE_LIMIT_RPS / GENMESH_RATE_LIMIT_BURST.
set -eu

here="$(dirname "$0")"
config="${GENMESH_ENVOY_CONFIG:-/etc/genmesh-envoy/envoy.yaml}"
descriptor="${GENMESH_ENVOY_DESCRIPTOR:-/app/deploy/envoy/genmesh.pb}"
port="${GENMESH_GATEWAY_PORT:-8080}"
admin_port="${GENMESH_GATEWAY_ADMIN_PORT:-9901}"
drain_seconds="${GENMESH_GATEWAY_DRAIN_SECONDS:-30}"

render() {
    python3 -m servers.mesh.envoy --out "$config" --descriptor "$descriptor" \
        --listen-port "$port" --admin-port "$admin_port" --validate
}

drain() {
    python3 "$here/envoy_drain.py" "$admin_port" "$drain_seconds" || true
}

serve() {
    if [ ! -s "$config" ]; then
        echo "gateway: no rendered config at $config (run 'render' first)" >&2
        exit 2
    fi
    # --disable-hot-restart: no shared memory or domain socket; one Envoy per container.
    envoy -c "$config" --disable-hot-restart \
        --concurrency "${ENVOY_CONCURRENCY:-2}" \
        --drain-time-s "$drain_seconds" \
        --log-level "${ENVOY_LOG_LEVEL:-info}" &
    envoy_pid=$!
    stopping=0
    # Envoy itself exits at once on SIGTERM; this shell drains first.
    trap 'if [ "$stopping" = 0 ]; then stopping=1; drain; kill -TERM "$envoy_pid" 2>/dev/null || true; fi' TERM INT
    status=0
    wait "$envoy_pid" || status=$?
    # A signal interrupts `wait` (status 128+n) and runs the trap, which drains and stops Envoy;
    # this second `wait` returns Envoy's own exit status (the shell keeps it even once reaped).
    if [ "$stopping" = 1 ]; then
        status=0
        wait "$envoy_pid" || status=$?
    fi
    exit "$status"
}

case "${1:-run}" in
    run)
        render
        serve
        ;;
    render)
        render
        ;;
    serve)
        serve
        ;;
    drain)
        drain
        ;;
    *)
        exec "$@"
        ;;
esac
