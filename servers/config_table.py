"""The configuration table of deploy/README.md, generated from the settings classes.

Every ``GENMESH_*`` variable a server reads is a field of its settings class (``servers/registry.py``
names them; the web front door's is ``servers.web.settings:WebSettings``), so the table is rendered
from those fields: name, flag, default, which service reads it, and the field's help text. The few
variables read outside a settings class (the gateway, ``genmesh up``, the client, the container
scripts) are listed in ``OUTSIDE_SETTINGS``; a unit test greps the code for every ``GENMESH_*``
name and fails when one is in neither place, or when the committed table is stale.

    python -m servers.config_table           # rewrite the block in deploy/README.md
    python -m servers.config_table --check   # exit 1 when the committed block differs
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from genmesh.local import DEFAULT_DATA_DIR
from servers.registry import SERVERS, _load
from servers.runtime.settings import env_name

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "deploy" / "README.md"
BEGIN = "<!-- config:begin -->"
END = "<!-- config:end -->"
WEB_SETTINGS = "servers.web.settings:WebSettings"


class Outside(NamedTuple):
    """A variable read outside the settings classes: its default, who reads it, and what it does."""

    default: str
    read_by: str
    meaning: str


# Read by code that is no server (the gateway's renderer and entrypoint, `genmesh up`, the client and
# CLI, the container health check). Kept by hand: the staleness test names any GENMESH_* in the code
# that is neither here nor in a settings class.
OUTSIDE_SETTINGS: dict[str, Outside] = {
    "GENMESH_API_KEYS": Outside(
        "(none; `genmesh up` generates one)",
        "gateway, `genmesh up`",
        "comma-separated `client=key` or `key` entries for the gateway",
    ),
    "GENMESH_API_KEYS_FILE": Outside(
        "`<data dir>/api-keys`",
        "gateway, `genmesh up`",
        "file with one `client=key [rps=N] [burst=N] [admin]` per line; re-read while running",
    ),
    "GENMESH_RATE_LIMIT_RPS": Outside(
        "`50` (`genmesh up`: `100`)", "gateway", "each API key's token bucket refill per second"
    ),
    "GENMESH_RATE_LIMIT_BURST": Outside("`100` (`genmesh up`: `200`)", "gateway", "each API key's token bucket size"),
    "GENMESH_UPSTREAM_<SERVICE>": Outside(
        "(empty)",
        "gateway (`python -m servers.mesh.envoy`)",
        "`host:port[,host:port]` of a service's servers (`GENMESH_UPSTREAM_TEXT`, `_IMAGE`, ..., `_WEB` for "
        "the web front door, `_MEDIA` for the object store serving presigned media); names become STRICT_DNS "
        "clusters",
    ),
    "GENMESH_UPSTREAM_TLS_DIR": Outside(
        "(empty: plaintext)", "gateway", "folder with `tls.crt`, `tls.key`, `ca.crt`: mutual TLS to the servers"
    ),
    "GENMESH_ENVOY": Outside(
        "`envoy` next to the running Python, else on PATH", "`genmesh up`, gateway", "the Envoy binary"
    ),
    "GENMESH_ENVOY_CONFIG": Outside(
        "`/etc/genmesh-envoy/envoy.yaml`", "gateway image entrypoint", "where the rendered gateway config goes"
    ),
    "GENMESH_ENVOY_DESCRIPTOR": Outside(
        "`/app/deploy/envoy/genmesh.pb`", "gateway image entrypoint", "the descriptor set the transcoder reads"
    ),
    "GENMESH_GATEWAY_PORT": Outside("`8080`", "gateway image entrypoint", "the gateway's listener port"),
    "GENMESH_GATEWAY_ADMIN_PORT": Outside("`9901`", "gateway image entrypoint", "Envoy's admin port"),
    "GENMESH_GATEWAY_DRAIN_SECONDS": Outside(
        "`30`", "gateway image entrypoint", "on SIGTERM, how long running streams may take before Envoy stops"
    ),
    "GENMESH_HEALTH_PORT": Outside(
        "`50051`",
        "server images' `healthcheck.py`",
        "the port the container health check asks (`GENMESH_PLAINTEXT_HEALTH_PORT` wins when set)",
    ),
    "GENMESH_THREADS": Outside(
        "`2`", "`genmesh up`", "passed on to every server it starts (each server also reads it: see above)"
    ),
    "GENMESH_DEVICE": Outside(
        "`auto`",
        "`genmesh up`",
        "`cpu` tells it no GPU is shared (the agent then keeps the services' own keep-alive; see above for the "
        "servers' own reading)",
    ),
    "GENMESH_AGENT_KEEP_ALIVE_SECONDS": Outside(
        "`0` when the services share a GPU",
        "`genmesh up`",
        "when set, `genmesh up` leaves the agent's keep-alive to it instead of passing `0`",
    ),
    "GENMESH_S3_PUBLIC_ENDPOINT": Outside(
        "the gateway's address",
        "`genmesh up`",
        "passed on to the servers; `genmesh up` signs presigned URLs for the gateway, which routes media to S3",
    ),
    "GENMESH_LOG_LEVEL": Outside("`info`", "`genmesh up`, gateway key sync", "as for the servers"),
    "GENMESH_LOG_FORMAT": Outside("`auto`", "`genmesh up`, gateway key sync", "as for the servers"),
    "GENMESH_EXTRAS": Outside(
        "`text,image,video,training`", "server Dockerfiles (build argument)", "the extras installed into the image"
    ),
    "GENMESH_S3_PRESIGN_EXPIRY_SECONDS": Outside(
        "`3600`",
        "`StorageSettings.from_env` (scripts)",
        "how long presigned URLs last; the servers do not read it (they build their storage settings from the "
        "fields above, with the 3600 s default)",
    ),
    "GENMESH_URL": Outside("`127.0.0.1:8080`", "client, CLI", "where the client and CLI connect (`--url`)"),
    "GENMESH_API_KEY": Outside("(none)", "client, CLI", "the API key the client and CLI send (`--api-key`)"),
}
# Where the staleness test looks for GENMESH_* names: the code that runs and the deploy files.
SOURCE_GLOBS = (
    "servers/**/*.py",
    "client/genmesh/**/*.py",
    "storage/**/*.py",
    "deploy/docker/*",
    "deploy/compose/*.yaml",
    "deploy/kubernetes/**/*.yaml",
)
NAME = re.compile(r"\bGENMESH_[A-Z0-9_]*[A-Z0-9]\b")
COMPOSE = ROOT / "deploy" / "compose"
# ${NAME}, ${NAME:-default} or ${NAME:?message}; a default may hold one more ${...}.
COMPOSE_VARIABLE = re.compile(r"\$\{(GENMESH_[A-Z0-9_]+)(?::?([-?])((?:[^{}]|\$\{[^}]*\})*))?\}")


@dataclasses.dataclass
class Row:
    env: str
    flag: str
    defaults: dict[str, str] = dataclasses.field(default_factory=dict)  # service -> default
    helps: dict[str, str] = dataclasses.field(default_factory=dict)  # service -> help


def settings_classes() -> dict[str, type]:
    """Service name -> settings class, in the declared order, the web front door last."""
    classes = {name: _load(spec.settings) for name, spec in SERVERS.items()}
    classes["web"] = _load(WEB_SETTINGS)
    return classes


def format_default(value: Any) -> str:
    if value is None or value == "":
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, Path) and value == DEFAULT_DATA_DIR:
        return "`~/.local/share/genmesh`"
    return f"`{value}`"


def cell(text: str) -> str:
    """Markdown table cell: pipes escaped, ``<placeholders>`` in code so they are not read as HTML."""
    text = text.replace("|", "\\|")
    return re.sub(r"(?<!`)<([a-z_ ]+)>(?!`)", r"`<\1>`", text)


def rows(classes: dict[str, type]) -> list[Row]:
    table: dict[str, Row] = {}
    for service, cls in classes.items():
        for field in dataclasses.fields(cls):
            env = env_name(field, cls)
            row = table.setdefault(env, Row(env, "--" + field.name.replace("_", "-")))
            default = field.default if field.default is not dataclasses.MISSING else None
            row.defaults[service] = format_default(default)
            row.helps[service] = field.metadata.get("help", "")
    return list(table.values())


def grouped(values: dict[str, str], everyone: Iterable[str]) -> str:
    """One value when every reader agrees, else ``a, b: value; c: other``."""
    distinct = list(dict.fromkeys(values.values()))
    if len(distinct) == 1:
        return distinct[0]
    return "; ".join(
        f"{', '.join(name for name in everyone if values.get(name) == value)}: {value}" for value in distinct
    )


def readers(services: Iterable[str], servers: list[str]) -> str:
    chosen = list(services)
    if chosen == servers:
        return "every server"
    if set(servers) <= set(chosen):
        return "every server, " + ", ".join(name for name in chosen if name not in servers)
    return ", ".join(chosen)


@dataclasses.dataclass
class ComposeVariable:
    name: str
    default: str
    files: list[str] = dataclasses.field(default_factory=list)
    sets: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # key it fills -> compose services


def _strings(node: Any, path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*path, str(key)))
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value, path)
    elif isinstance(node, str):
        yield path, node


def compose_variables(folder: Path = COMPOSE) -> dict[str, ComposeVariable]:
    """The GENMESH_* variables the compose files interpolate: default, files, and what each fills in
    (an environment key, ``image``, ``ports``...) of which compose service."""
    import yaml  # the dev extra; only this generator and its test read compose files

    found: dict[str, ComposeVariable] = {}
    for path in sorted(folder.glob("compose*.yaml"), key=lambda path: (path.name != "compose.yaml", path.name)):
        for where, text in _strings(yaml.safe_load(path.read_text(encoding="utf-8"))):
            for name, kind, value in COMPOSE_VARIABLE.findall(text):
                default = "(required)" if kind == "?" else f"`{value}`" if kind == "-" and value else "(empty)"
                variable = found.setdefault(name, ComposeVariable(name, default))
                if path.name not in variable.files:
                    variable.files.append(path.name)
                if where[0] == "services" and len(where) >= 3:  # x-anchors are merged into the services
                    owners = variable.sets.setdefault(where[-1], [])
                    if where[1] not in owners:
                        owners.append(where[1])
    return found


def render(classes: dict[str, type] | None = None) -> str:
    classes = classes or settings_classes()
    servers = [name for name in classes if name in SERVERS]
    order = list(classes)
    lines = [
        BEGIN,
        "<!-- generated by `python -m servers.config_table` from the settings classes; edit those, not this -->",
        "",
        "Every server takes each setting as a flag (`python -m servers text --help`) or from the environment",
        "(flag > environment > default).",
        "",
        "| variable | flag | default | read by | meaning |",
        "|---|---|---|---|---|",
    ]
    for row in rows(classes):
        lines.append(
            f"| `{row.env}` | `{row.flag}` | {cell(grouped(row.defaults, order))} | {readers(row.helps, servers)} "
            f"| {cell(grouped(row.helps, order))} |"
        )
    lines += [
        "",
        "Read outside the settings classes (by the gateway, `genmesh up`, the client, the container scripts):",
        "",
        "| variable | default | read by | meaning |",
        "|---|---|---|---|",
    ]
    for name, outside in OUTSIDE_SETTINGS.items():
        lines.append(f"| `{name}` | {cell(outside.default)} | {outside.read_by} | {cell(outside.meaning)} |")
    lines += [
        "",
        "Interpolated by the compose files (`deploy/compose/.env`, see `.env.example`): what each fills in, and where:",
        "",
        "| variable | default | file | fills in |",
        "|---|---|---|---|",
    ]
    for variable in compose_variables().values():
        sets = "; ".join(f"`{key}` of {', '.join(owners)}" for key, owners in variable.sets.items())
        lines.append(f"| `{variable.name}` | {cell(variable.default)} | {', '.join(variable.files)} | {sets} |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def splice(document: str, block: str) -> str:
    """``document`` with the text from BEGIN through END (and its newline) replaced by ``block``."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{README.relative_to(ROOT)}: no {BEGIN} ... {END} block")
    after = end + len(END)
    if document[after : after + 1] == "\n":
        after += 1
    return document[:start] + block + document[after:]


def settings_env_names(classes: dict[str, type] | None = None) -> set[str]:
    return {row.env for row in rows(classes or settings_classes())}


def names_in_code(root: Path = ROOT) -> dict[str, str]:
    """Every GENMESH_* name in the code that runs (not tests, not docs), with one file naming it."""
    found: dict[str, str] = {}
    for pattern in SOURCE_GLOBS:
        for path in sorted(root.glob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                for name in NAME.findall(path.read_text(encoding="utf-8", errors="replace")):
                    found.setdefault(name, str(path.relative_to(root)))
    return found


def unlisted_names(root: Path = ROOT) -> dict[str, str]:
    """GENMESH_* names in the code that neither a settings class nor OUTSIDE_SETTINGS lists."""
    known = settings_env_names() | set(OUTSIDE_SETTINGS) | set(compose_variables())
    prefixes = tuple(name.split("<")[0] for name in OUTSIDE_SETTINGS if "<" in name)
    found = names_in_code(root).items()
    return {name: where for name, where in found if name not in known and not name.startswith(prefixes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m servers.config_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when deploy/README.md's table is stale")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    updated = splice(current, render())
    if args.check:
        if updated != current:
            print(f"{README.relative_to(ROOT)}: the configuration table is stale; run python -m servers.config_table")
            return 1
        return 0
    if updated != current:
        README.write_text(updated, encoding="utf-8")
        print(f"wrote {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
