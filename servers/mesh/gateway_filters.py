"""The gateway's per-client filters: the API key check and the per-key rate limit.

Both are built here as Envoy filter configs and placed in the one gateway config
(``deploy/envoy/envoy.yaml.tmpl``) in one of two ways:

- inline (``typed_config``): a self-contained config; changing a key needs a new Envoy.
- as discovery files (ECDS, ``config_discovery`` with a ``path_config_source``): Envoy watches
  each file and applies a new version to the *next* request, without a restart and without
  draining a listener, so open streams keep flowing. ``write_discovery_files`` replaces a file
  by an atomic rename (what Envoy's file watch reacts to) and only when its content changed:
  rewriting the rate-limit file would start every client's bucket afresh.

Admin keys: a Lua filter right after the key check adds ``x-genmesh-admin: true`` when the client
id it set is one of the admin clients (``servers/runtime/caller.py``); the gateway drops any copy a
caller sends before the key check, so only a key marked ``admin`` gets it.

Per-key quotas: the key check forwards the client name in ``x-client-id`` (overwriting what a
caller sent); the rate limit makes a descriptor of it, and a descriptor entry without a value gives
every client its own token bucket of the default size. A client with an override gets an entry
with its name and its own bucket. No bucket is shared between clients.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from servers.mesh.api_keys import ApiKeyError, KeyConfig, QuotaOverride, RateLimit, check_client, check_key

API_KEY_AUTH = "envoy.filters.http.api_key_auth"
ADMIN_HEADER_FILTER = "genmesh.admin_header"  # a Lua filter
LOCAL_RATE_LIMIT = "envoy.filters.http.local_ratelimit"
CLIENT_ID_HEADER = "x-client-id"
ADMIN_HEADER = "x-genmesh-admin"  # servers/runtime/caller.py reads it
FILTER_TYPES = {
    API_KEY_AUTH: "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
    ADMIN_HEADER_FILTER: "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
    LOCAL_RATE_LIMIT: "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
}
DISCOVERY_FILES = {API_KEY_AUTH: "api-keys.json", ADMIN_HEADER_FILTER: "admin-clients.json",
                   LOCAL_RATE_LIMIT: "rate-limit.json"}  # fmt: skip
# Buckets the rate limit keeps for clients without an override (least recently used ones go
# first): far more than any keys file holds, so a busy client's bucket is never evicted.
MAX_CLIENT_BUCKETS = 10000

_ALWAYS = {"numerator": 100, "denominator": "HUNDRED"}
FILL_SECONDS = 1  # every bucket refills this often: a refused caller may retry after it
# What a caller over its key's limit reads (the gateway's JSON body, or grpc-message), naming the key's
# client; its bucket's size is in the reply's x-ratelimit-limit header.
RATE_LIMITED_MESSAGE = (
    "rate limit of API key '%REQ(X-CLIENT-ID)%' reached (its burst is in the x-ratelimit-limit header; it "
    f"refills every {FILL_SECONDS} s); retry after {FILL_SECONDS} s"
)

# What a caller without a valid key reads (JSON body or grpc-message): how to send one.
UNAUTHENTICATED_MESSAGE = (
    "missing or unknown API key: send it in the x-api-key header (or Authorization: Bearer <key>); "
    "genmesh up prints one and keeps it in the api-keys file of its data folder"
)


def _bucket(limit: RateLimit) -> dict:
    return {"max_tokens": limit.burst, "tokens_per_fill": limit.rps, "fill_interval": f"{FILL_SECONDS}s"}


@dataclass(frozen=True)
class GatewayFilters:
    """The keys (client -> key), the default bucket per client and the clients' overrides."""

    keys: Mapping[str, str] = field(repr=False)
    default: RateLimit
    overrides: Mapping[str, QuotaOverride] = field(default_factory=dict)
    admins: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.keys:
            raise ApiKeyError("no API keys: the gateway needs at least one")
        seen: set[str] = set()
        for client, key in self.keys.items():
            check_client(client, "api_keys")
            check_key(key, f"api_keys[{client!r}]")
            if key in seen:
                raise ApiKeyError(f"api_keys[{client!r}]: the same key is used by another client")
            seen.add(key)
        unknown = sorted(set(self.overrides) - set(self.keys))
        if unknown:
            raise ApiKeyError(f"quota overrides for clients without a key: {unknown}")
        unknown = sorted(set(self.admins) - set(self.keys))
        if unknown:
            raise ApiKeyError(f"admin clients without a key: {unknown}")

    @classmethod
    def from_config(cls, config: KeyConfig, default: RateLimit) -> GatewayFilters:
        return cls(config.keys, default, config.overrides, config.admins)

    def admin_header(self) -> dict:
        # Client names are letters, digits, ".", "_" and "-" (check_client): safe in a Lua string.
        admins = ", ".join(f'["{client}"] = true' for client in sorted(self.admins))
        source = (
            f"local admins = {{{admins}}}\n"
            "function envoy_on_request(handle)\n"
            "  local headers = handle:headers()\n"
            f'  if admins[headers:get("{CLIENT_ID_HEADER}") or ""] then headers:replace("{ADMIN_HEADER}", "true") end\n'
            "end\n"
        )
        return {"@type": FILTER_TYPES[ADMIN_HEADER_FILTER], "default_source_code": {"inline_string": source}}

    def api_key_auth(self) -> dict:
        return {
            "@type": FILTER_TYPES[API_KEY_AUTH],
            "credentials": [{"key": key, "client": client} for client, key in self.keys.items()],
            # The first source present wins; "Bearer " is stripped from either header.
            "key_sources": [{"header": "x-api-key"}, {"header": "authorization"}],
            # Overwrites whatever the caller sent; removes both key headers before the upstream.
            "forwarding": {"header": CLIENT_ID_HEADER, "hide_credentials": True},
        }

    def local_rate_limit(self) -> dict:
        own = [
            {"entries": [{"key": "client_id", "value": client}], "token_bucket": _bucket(override.over(self.default))}
            for client, override in sorted(self.overrides.items())
        ]
        every_client = {"entries": [{"key": "client_id"}], "token_bucket": _bucket(self.default)}
        return {
            "@type": FILTER_TYPES[LOCAL_RATE_LIMIT],
            "stat_prefix": "gateway_rate_limit",
            # Only for a request without a client id, which the key check never lets through.
            "token_bucket": _bucket(self.default),
            "always_consume_default_token_bucket": False,  # else one shared bucket again
            "rate_limits": [
                {"actions": [{"request_headers": {"header_name": CLIENT_ID_HEADER, "descriptor_key": "client_id"}}]}
            ],
            "descriptors": [*own, every_client],  # the first full match wins: overrides first
            "max_dynamic_descriptors": MAX_CLIENT_BUCKETS,
            "filter_enabled": {"runtime_key": "gateway_rate_limit_enabled", "default_value": _ALWAYS},
            "filter_enforced": {"runtime_key": "gateway_rate_limit_enforced", "default_value": _ALWAYS},
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            "rate_limited_as_resource_exhausted": True,
            "response_headers_to_add": [  # a refused caller may retry once its bucket refilled
                {
                    "header": {"key": "retry-after", "value": str(FILL_SECONDS)},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
        }

    def configs(self) -> dict[str, dict]:
        """Filter name -> typed config, in the order the gateway runs them (key check first)."""
        return {
            API_KEY_AUTH: self.api_key_auth(),
            ADMIN_HEADER_FILTER: self.admin_header(),
            LOCAL_RATE_LIMIT: self.local_rate_limit(),
        }


# The http_filters entries, at the template's indentation; values as JSON (valid YAML).
_ENTRY = "\n          - name: {name}\n            {field}: {value}"


def inline_entries(filters: GatewayFilters) -> str:
    return "".join(
        _ENTRY.format(name=name, field="typed_config", value=json.dumps(config))
        for name, config in filters.configs().items()
    )


def discovery_entries(keys_dir: Path) -> str:
    entries = []
    for name, file_name in DISCOVERY_FILES.items():
        source = {
            "config_source": {
                "path_config_source": {"path": str(Path(keys_dir).resolve() / file_name)},
                "resource_api_version": "V3",
            },
            "type_urls": [FILTER_TYPES[name]],
        }
        entries.append(_ENTRY.format(name=name, field="config_discovery", value=json.dumps(source)))
    return "".join(entries)


def discovery_files(filters: GatewayFilters) -> dict[str, str]:
    """File name -> content (an xDS discovery response holding one TypedExtensionConfig)."""
    files = {}
    for name, config in filters.configs().items():
        resource = {
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": name,
            "typed_config": config,
        }
        files[DISCOVERY_FILES[name]] = json.dumps({"resources": [resource]}, indent=1) + "\n"
    return files


def write_discovery_files(keys_dir: Path, filters: GatewayFilters) -> list[str]:
    """Write the files whose content changed (mode 600, atomic rename); return their names."""
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    changed = []
    for file_name, text in discovery_files(filters).items():
        path = keys_dir / file_name
        try:
            if path.read_text(encoding="utf-8") == text:
                continue
        except OSError:
            pass
        tmp = keys_dir / f".{file_name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)  # a rename: Envoy's watch sees the whole new file, never half of it
        changed.append(file_name)
    return changed
