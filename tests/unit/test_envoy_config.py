"""The gateway config: rendering, strict validation by the real Envoy, API key loading, and one real
Envoy started from it (no upstream needed: auth, unknown paths, empty clusters, probes)."""

from __future__ import annotations

import json
import os
import re
import stat
import urllib.error
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from google.api import annotations_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_tools import protoc

from genmesh.services import SERVICES
from servers.mesh import envoy as envoy_mod
from servers.mesh.api_keys import KeySource, QuotaOverride, RateLimit
from servers.mesh.envoy import (
    ApiKeyError,
    Envoy,
    EnvoyConfigError,
    envoy_binary,
    load_api_keys,
    render_envoy_config,
    validate_envoy_config,
)
from servers.mesh.gateway_filters import (
    ADMIN_HEADER_FILTER,
    API_KEY_AUTH,
    DISCOVERY_FILES,
    FILTER_TYPES,
    LOCAL_RATE_LIMIT,
    UNAUTHENTICATED_MESSAGE,
    GatewayFilters,
    write_discovery_files,
)
from servers.mesh.keys_sync import KeySync
from servers.mesh.processes import free_port, wait_until
from tests.support.certificates import make_certificates

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "protos"

try:
    envoy_binary()
    HAVE_ENVOY = True
except FileNotFoundError:
    HAVE_ENVOY = False
needs_envoy = pytest.mark.skipif(not HAVE_ENVOY, reason="envoy not installed (mesh extra)")

ALL_LOCAL = {"text": [("127.0.0.1", 50051)], "image": [("127.0.0.1", 50052)], "video": [("127.0.0.1", 50053)]}
ALL_LOCAL["training"] = [("127.0.0.1", 50054)]
# Every character class a key may hold that means something to YAML, JSON, shells or string.Template.
AWKWARD_KEY = "k\"e'y\\$x{y}#z:[a]&*!|>%@`~-"


def build_descriptor(out: Path, files: list[str]) -> Path:
    google_api = Path(annotations_pb2.__file__).resolve().parents[2]
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    argv = ["protoc", f"-I{PROTO_ROOT}", f"-I{google_api}", f"-I{well_known}", "--include_imports"]
    assert protoc.main([*argv, f"--descriptor_set_out={out}", *files]) == 0
    return out


@pytest.fixture(scope="module")
def descriptor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.glob("genmesh/*/v1/*.proto"))
    if not files:
        pytest.skip("no protos under protos/genmesh yet")
    return build_descriptor(tmp_path_factory.mktemp("descriptor") / "genmesh.pb", files)


def render(descriptor: Path, **overrides) -> str:
    args = {
        "listen_port": 8080,
        "admin_port": 9901,
        "descriptor_path": descriptor,
        "api_keys": {"local": "secret-key-1"},
        "upstreams": ALL_LOCAL,
        "rate_limit_rps": 50,
        "rate_limit_burst": 100,
    }
    return render_envoy_config(**{**args, **overrides})


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------
# Rendering + envoy --mode validate


@needs_envoy
@pytest.mark.parametrize(
    ("api_keys", "upstreams"),
    [
        pytest.param({"local": "secret-key-1"}, ALL_LOCAL, id="one-key-all-services"),
        pytest.param(
            {"alice": "a" * 43, "bob.ci": AWKWARD_KEY, "key-1": "plain"},
            {"text": [("127.0.0.1", 6001), ("127.0.0.1", 6002)], "image": [("127.0.0.1", 6003)], "training": []},
            id="awkward-keys-video-missing-training-empty",
        ),
        pytest.param({"only": "k"}, {}, id="no-upstream-at-all"),
        pytest.param({"web": "k"}, {"text": [("127.0.0.1", 6001)], "web": [("127.0.0.1", 6010)]}, id="web-front-door"),
        pytest.param(
            {"k8s": "key"},
            {"text": [("text.genmesh.svc", 50051)], "image": [("::1", 50052)], "video": [("video", 50053)]},
            id="dns-names-and-ipv6",
        ),
    ],
)
def test_rendered_configs_validate(tmp_path: Path, descriptor: Path, api_keys, upstreams) -> None:
    upstreams = dict(upstreams)
    text = render(descriptor, api_keys=api_keys, upstreams=upstreams, web=upstreams.pop("web", ()))
    assert "${" not in text
    validate_envoy_config(write(tmp_path, text))


def http_filters(text: str) -> dict[str, dict]:
    """The gateway's http_filters by name: their typed_config, or their config_discovery."""
    config = yaml.safe_load(text)
    (hcm,) = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    return {
        entry["name"]: entry.get("typed_config") or {"config_discovery": entry["config_discovery"]}
        for entry in hcm["typed_config"]["http_filters"]
    }


def test_values_are_emitted_as_json(descriptor: Path) -> None:
    text = render(
        descriptor,
        api_keys={"bob": AWKWARD_KEY},
        upstreams={"text": [("text", 1)], "image": [("10.0.0.2", 2)]},
        listen_host="0.0.0.0",
        listen_port=18080,
        admin_port=19901,
    )
    filters = http_filters(text)
    # A caller's x-client-id and admin marker are dropped, then the key check sets the client id, the
    # admin filter marks admin keys, and the per-key rate limit reads the client id.
    assert list(filters)[:4] == [
        "envoy.filters.http.header_mutation",
        API_KEY_AUTH,
        ADMIN_HEADER_FILTER,
        LOCAL_RATE_LIMIT,
    ]
    removed = filters["envoy.filters.http.header_mutation"]["mutations"]["request_mutations"]
    assert {"remove": "x-genmesh-admin"} in removed and {"remove": "x-client-id"} in removed
    assert {"remove": "x-genmesh-parent-job"} in removed  # only the agent names a sub-job's parent
    assert filters[API_KEY_AUTH]["credentials"] == [{"key": AWKWARD_KEY, "client": "bob"}]
    assert 'socket_address: {address: "0.0.0.0", port_value: 18080}' in text
    assert "socket_address: {address: 127.0.0.1, port_value: 19901}" in text  # admin never leaves loopback
    assert f"proto_descriptor: {json.dumps(str(descriptor.resolve()))}" in text
    # A host name makes a STRICT_DNS cluster, IP literals a STATIC one, no endpoint a STATIC empty one.
    assert "- name: text\n    type: STRICT_DNS" in text
    assert "- name: image\n    type: STATIC" in text
    assert "- name: video\n    type: STATIC" in text
    # Every service but text and image, the web front door and the object store (none given).
    assert text.count("lb_endpoints: []") == len(SERVICES) - 2 + 2
    # The reflection/health cluster holds every upstream once.
    any_cluster = _cluster(text, "any")
    assert '"address": "text"' in any_cluster and '"address": "10.0.0.2"' in any_cluster
    assert "- name: any\n    type: STRICT_DNS" in text


def test_every_key_gets_its_own_bucket(descriptor: Path) -> None:
    text = render(
        descriptor,
        api_keys={"alice": "ka", "bob": "kb", "ci": "kc"},
        quotas={"ci": QuotaOverride(rps=2), "bob": QuotaOverride(rps=500, burst=900)},
    )
    limit = http_filters(text)[LOCAL_RATE_LIMIT]
    assert limit["always_consume_default_token_bucket"] is False  # no bucket shared by every key
    (rate_limit,) = limit["rate_limits"]
    assert rate_limit["actions"] == [{"request_headers": {"header_name": "x-client-id", "descriptor_key": "client_id"}}]
    assert limit["descriptors"] == [
        # Overrides first (the first full match wins), each client's default after: a wildcard entry.
        {"entries": [{"key": "client_id", "value": "bob"}], "token_bucket": bucket(900, 500)},
        {"entries": [{"key": "client_id", "value": "ci"}], "token_bucket": bucket(100, 2)},
        {"entries": [{"key": "client_id"}], "token_bucket": bucket(100, 50)},
    ]
    assert limit["rate_limited_as_resource_exhausted"] is True
    assert limit["enable_x_ratelimit_headers"] == "DRAFT_VERSION_03"


def bucket(burst: int, rps: int) -> dict:
    return {"max_tokens": burst, "tokens_per_fill": rps, "fill_interval": "1s"}


@needs_envoy
def test_quotas_validate(tmp_path: Path, descriptor: Path) -> None:
    text = render(descriptor, api_keys={"a": "ka", "b": "kb"}, quotas={"a": QuotaOverride(burst=1)})
    validate_envoy_config(write(tmp_path, text))


@needs_envoy
def test_keys_dir_puts_keys_in_watched_files(tmp_path: Path, descriptor: Path) -> None:
    keys_dir = tmp_path / "keys"
    text = render(descriptor, api_keys={"a": "secret-a"}, keys_dir=keys_dir)
    assert "secret-a" not in text  # the bootstrap holds no key
    filters = http_filters(text)
    for name, file_name in DISCOVERY_FILES.items():
        source = filters[name]["config_discovery"]
        assert source["config_source"]["path_config_source"] == {"path": str(keys_dir.resolve() / file_name)}
        assert source["type_urls"] == [FILTER_TYPES[name]]
    write_discovery_files(keys_dir, GatewayFilters({"a": "secret-a"}, RateLimit(50, 100)))
    validate_envoy_config(write(tmp_path, text))


def test_discovery_files_are_private_and_rewritten_only_when_changed(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    filters = GatewayFilters({"a": "secret-a"}, RateLimit(5, 10))
    assert write_discovery_files(keys_dir, filters) == ["api-keys.json", "admin-clients.json", "rate-limit.json"]
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    for path in keys_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = json.loads((keys_dir / "api-keys.json").read_text())
    (resource,) = keys["resources"]
    assert resource["name"] == API_KEY_AUTH and resource["typed_config"]["credentials"][0]["key"] == "secret-a"
    assert write_discovery_files(keys_dir, filters) == []
    # A new key rewrites the key file only: the rate-limit file (and every client's bucket) stays.
    added = GatewayFilters({"a": "secret-a", "b": "secret-b"}, RateLimit(5, 10))
    assert write_discovery_files(keys_dir, added) == ["api-keys.json"]
    # Marking a key admin rewrites the admin filter's file only.
    admin = GatewayFilters({"a": "secret-a", "b": "secret-b"}, RateLimit(5, 10), admins=frozenset({"b"}))
    assert write_discovery_files(keys_dir, admin) == ["admin-clients.json"]
    names = sorted(path.name for path in keys_dir.iterdir())
    assert names == ["admin-clients.json", "api-keys.json", "rate-limit.json"]  # no temp files


def test_any_cluster_deduplicates_shared_servers(descriptor: Path) -> None:
    shared = [("127.0.0.1", 7000)]
    text = render(descriptor, upstreams={"text": shared, "image": shared})
    assert _cluster(text, "any").count('"port_value": 7000') == 1


def _cluster(text: str, name: str) -> str:
    """One cluster's block of the rendered config (up to the next cluster, or the end)."""
    start = text.index(f"- name: {name}\n")
    end = text.find("\n  - name: ", start + 1)
    return text[start : end if end != -1 else None]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api_keys": {}}, "no API keys"),
        ({"api_keys": {"a": "same", "b": "same"}}, "same key"),
        ({"api_keys": {"bad name": "k"}}, "client name"),
        ({"api_keys": {"a": "has space"}}, "visible ASCII"),
        ({"api_keys": {"a": "x,y"}}, "visible ASCII"),
        ({"upstreams": {"text": [("evil\n  injected: 1", 1)]}}, "bad host"),
        ({"upstreams": {"text": [("127.0.0.1", 0)]}}, "bad port"),
        ({"upstreams": {"text": [("127.0.0.1", "80")]}}, "bad port"),
        ({"upstreams": {"audio": [("127.0.0.1", 1)]}}, "unknown upstream"),
        ({"listen_host": "localhost"}, "listen_host"),
        ({"rate_limit_rps": 0}, "rate_limit_rps"),
        ({"rate_limit_burst": 1.5}, "rate_limit_burst"),
    ],
)
def test_render_rejects_bad_input(descriptor: Path, overrides, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render(descriptor, **overrides)


@needs_envoy
def test_validate_reports_envoys_error(tmp_path: Path) -> None:
    # A descriptor without the image/video/training services: the transcoder refuses the config.
    only_text = build_descriptor(tmp_path / "text.pb", ["genmesh/text/v1/text.proto"])
    with pytest.raises(EnvoyConfigError, match=re.escape("genmesh.image.v1.ImageService")):
        validate_envoy_config(write(tmp_path, render(only_text)))


@needs_envoy
def test_a_missing_descriptor_set_fails_the_render_naming_it(tmp_path: Path) -> None:
    # The strict JSON check's schema is read from it at render time, before Envoy would notice.
    with pytest.raises(FileNotFoundError, match=r"missing\.pb"):
        render(tmp_path / "missing.pb")


@needs_envoy
def test_command_line_renders_from_environment(
    tmp_path: Path, descriptor: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENMESH_API_KEYS", "ci=ci-key")
    monkeypatch.delenv("GENMESH_API_KEYS_FILE", raising=False)
    monkeypatch.setenv("GENMESH_UPSTREAM_TEXT", "text:50051,10.1.2.3:50051")
    monkeypatch.setenv("GENMESH_UPSTREAM_IMAGE", "[::1]:50052")
    out = tmp_path / "out" / "envoy.yaml"
    assert envoy_mod.main(["--out", str(out), "--descriptor", str(descriptor), "--validate"]) == 0
    assert os.stat(out).st_mode & 0o777 == 0o600
    text = out.read_text()
    assert '"key": "ci-key"' in text and '"address": "::1"' in text and '"address": "text"' in text
    monkeypatch.delenv("GENMESH_API_KEYS")
    assert envoy_mod.main(["--out", str(out), "--descriptor", str(descriptor)]) == 2  # no keys: refuses


# ------------------------------------------------------------------------------------------------
# API keys


def test_load_keys_from_environment() -> None:
    keys = load_api_keys({"GENMESH_API_KEYS": " alice=ka , kb,bob=kc,kd "})
    assert keys == {"alice": "ka", "bob": "kc", "key-1": "kb", "key-2": "kd"}


def test_load_keys_from_file_and_environment(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# gateway keys\n\nci=ci-key   # the CI runner\nplain-key\n  key-1=taken  \n")
    keys = load_api_keys({"GENMESH_API_KEYS": "env-key"}, keys_file)
    # Bare keys are numbered after explicit names are known, skipping names already taken.
    assert keys == {"ci": "ci-key", "key-1": "taken", "key-2": "env-key", "key-3": "plain-key"}


def test_keys_file_from_environment_variable(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("ops=ops-key\n")
    assert load_api_keys({"GENMESH_API_KEYS_FILE": str(keys_file)}) == {"ops": "ops-key"}
    # An explicit file wins over the variable.
    other = tmp_path / "other"
    other.write_text("dev=dev-key\n")
    assert load_api_keys({"GENMESH_API_KEYS_FILE": str(keys_file)}, other) == {"dev": "dev-key"}


@pytest.mark.parametrize(
    ("environ", "file_text", "message"),
    [
        ({}, None, "no API keys configured"),
        ({"GENMESH_API_KEYS": "   "}, None, "no API keys configured"),
        ({}, "# only a comment\n\n", "no API keys configured"),
        ({"GENMESH_API_KEYS": "a,,b"}, None, "entry 2 is empty"),
        ({"GENMESH_API_KEYS": "a,"}, None, "entry 2 is empty"),
        ({"GENMESH_API_KEYS": "=key"}, None, "client name ''"),
        ({"GENMESH_API_KEYS": "client="}, None, "empty API key"),
        ({"GENMESH_API_KEYS": "client=a=b"}, None, "visible ASCII"),
        ({"GENMESH_API_KEYS": "has space"}, None, "an API key has no spaces"),
        ({"GENMESH_API_KEYS": "bad/name=key"}, None, "client name 'bad/name'"),
        ({"GENMESH_API_KEYS": "a=k,b=k"}, None, "same API key"),
        ({"GENMESH_API_KEYS": "a=k1,a=k2"}, None, "configured twice"),
        ({"GENMESH_API_KEYS": "a=k1"}, "b=k1\n", "same API key"),
        ({}, "ok=key\nnot ok\n", r"keys:2: unexpected text after the key"),
    ],
)
def test_load_keys_errors(tmp_path: Path, environ, file_text, message: str) -> None:
    keys_file = None
    if file_text is not None:
        keys_file = tmp_path / "keys"
        keys_file.write_text(file_text)
    with pytest.raises(ApiKeyError, match=message):
        load_api_keys(environ, keys_file)


def test_missing_keys_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ApiKeyError, match="cannot read API keys file"):
        load_api_keys({}, tmp_path / "nope")


# ------------------------------------------------------------------------------------------------
# A real Envoy from the rendered config (no genmesh server behind it)


NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with NO_PROXY.open(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@needs_envoy
def test_envoy_runs_the_rendered_config(tmp_path: Path, descriptor: Path) -> None:
    port, admin_port = free_port(), free_port()
    # Nothing listens on the upstream port: its health check fails, so the service gets no traffic.
    config = write(
        tmp_path,
        render(
            descriptor,
            listen_port=port,
            admin_port=admin_port,
            api_keys={"bob": AWKWARD_KEY},
            upstreams={"text": [("127.0.0.1", free_port())]},
        ),
    )
    gateway = Envoy(config, admin_port=admin_port, log_path=tmp_path / "envoy.log", concurrency=1).start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert http(f"{base}/healthz")[:1] == (200,)  # probes need no key

        status, headers, body = http(f"{base}/v1/images/models")
        assert status == 401 and json.loads(body) == {"code": 16, "message": UNAUTHENTICATED_MESSAGE}
        assert http(f"{base}/v1/images/models", {"x-api-key": "wrong"})[0] == 401

        # The awkward key reached Envoy intact; image has no endpoint: 503 with a gRPC-style JSON body
        # naming the service, and gRPC callers get UNAVAILABLE with the same words.
        for auth in ({"x-api-key": AWKWARD_KEY}, {"authorization": f"Bearer {AWKWARD_KEY}"}):
            status, headers, body = http(f"{base}/v1/images/models", auth)
            assert status == 503, body
            assert json.loads(body) == {
                "code": 14,
                "message": "the image server is not available (down or restarting); retry shortly",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "SERVICE_UNAVAILABLE",
                        "domain": "genmesh",
                        "metadata": {"service": "image"},
                    }
                ],
            }
            assert headers["x-ratelimit-limit"] == "100"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/genmesh.image.v1.ImageService/ListModels")
            with pytest.raises(grpc.RpcError) as raised:
                call(b"", metadata=[("x-api-key", AWKWARD_KEY)], timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert raised.value.details() == "the image server is not available (down or restarting); retry shortly"

        status, _, body = http(f"{base}/v1/nothing", {"x-api-key": AWKWARD_KEY})
        assert status == 404 and json.loads(body)["code"] == 5

        # A second Envoy on the same port fails at startup instead of sharing the traffic.
        clash_admin = free_port()
        clash_config = tmp_path / "clash.yaml"
        clash_config.write_text(render(descriptor, listen_port=port, admin_port=clash_admin))
        clash = Envoy(clash_config, admin_port=clash_admin, log_path=tmp_path / "clash.log", concurrency=1)
        with pytest.raises(RuntimeError, match="exited"):
            clash.start(timeout=20)
        assert "Address already in use" in clash.log_tail()
    finally:
        gateway.stop()
    assert not gateway.alive()


@needs_envoy
def test_running_envoy_rotates_keys_and_limits_each_key_alone(tmp_path: Path, descriptor: Path) -> None:
    """Keys from watched files: a key added or revoked in the keys file applies on the running Envoy;
    a key that empties its bucket gets 429 while another key's requests still pass the limit."""
    port, admin_port = free_port(), free_port()
    keys_file = tmp_path / "api-keys"
    keys_file.write_text("a=key-a burst=3\nc=key-c\n")
    sync = KeySync(KeySource(file=keys_file), tmp_path / "gateway-keys", RateLimit(rps=1, burst=1000))
    sync.sync()
    config = write(
        tmp_path,
        render(descriptor, listen_port=port, admin_port=admin_port, api_keys={"boot": "k"}, keys_dir=sync.keys_dir),
    )
    gateway = Envoy(config, admin_port=admin_port, log_path=tmp_path / "envoy.log", concurrency=1).start()
    url = f"http://127.0.0.1:{port}/v1/images/models"  # no image upstream: a request past both filters gets 503

    def status(key: str) -> int:
        return http(url, {"x-api-key": key})[0]

    try:
        assert [status("key-c"), status("key-b"), status("k")] == [503, 401, 401]  # only the file's keys count
        assert http(url, {"x-api-key": "wrong", "x-client-id": "spoofed"})[0] == 401
        assert http(f"http://127.0.0.1:{port}/healthz")[0] == 200  # probes pass the watched filters too
        # Key a: 3 tokens, refilled 1/s: quick requests empty its bucket; key c still passes.
        limited = next(reply for reply in (http(url, {"x-api-key": "key-a"}) for _ in range(200)) if reply[0] == 429)
        assert limited[1]["x-ratelimit-limit"] == "3" and limited[1]["retry-after"] == "1"
        assert json.loads(limited[2]) == {
            "code": 8,  # RESOURCE_EXHAUSTED, naming the key's client and when to retry
            "message": "rate limit of API key 'a' reached (its burst is in the x-ratelimit-limit header; it refills "
            "every 1 s); retry after 1 s",
        }
        assert status("key-c") == 503

        keys_file.write_text("a=key-a burst=3\nb=key-b\n")  # b added, c revoked
        assert sync.sync() == ["api-keys.json"]
        wait_until(lambda: status("key-b") == 503 and status("key-c") == 401, timeout=10, what="the new keys")
        stats = http(f"http://127.0.0.1:{admin_port}/stats?filter=extension_config_discovery")[2].decode()
        assert "envoy.filters.http.api_key_auth.config_reload: 2" in stats
        assert "envoy.filters.http.local_ratelimit.config_reload: 1" in stats  # the buckets were left alone
    finally:
        gateway.stop()
    log = (tmp_path / "envoy.log").read_text()
    access = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert {"a", "b", "c"} <= {entry["client_id"] for entry in access}
    assert "spoofed" not in log  # a caller's own x-client-id is dropped before anything reads it
    assert "key-a" not in log and "key-b" not in log


def tls_server(folder: Path) -> tuple[grpc.Server, int]:
    """A grpcio server that demands a client certificate from the CA: SERVING, TextService.ListModels."""
    read = lambda name: (folder / name).read_bytes()  # noqa: E731
    credentials = grpc.ssl_server_credentials(
        [(read("tls.key"), read("tls.crt"))], root_certificates=read("ca.crt"), require_client_auth=True
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    handlers = {"ListModels": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("genmesh.text.v1.TextService", handlers)])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


@needs_envoy
def test_upstream_mutual_tls(tmp_path: Path, descriptor: Path) -> None:
    """--upstream-tls-dir: the gateway reaches a server that demands its client certificate, and
    refuses one whose certificate names another service."""
    make_certificates(tmp_path, {"gateway": "gateway", "text": "text", "impostor": "video"})
    text, text_port = tls_server(tmp_path / "text")
    impostor, impostor_port = tls_server(tmp_path / "impostor")  # plays "image" with video's certificate
    port, admin_port = free_port(), free_port()
    config = render(
        descriptor,
        listen_port=port,
        admin_port=admin_port,
        upstreams={"text": [("127.0.0.1", text_port)], "image": [("127.0.0.1", impostor_port)]},
        upstream_tls_dir=tmp_path / "gateway",
    )
    assert '"sni": "text"' in config and "tls.crt" in _cluster(config, "any")
    gateway = Envoy(write(tmp_path, config), admin_port=admin_port, log_path=tmp_path / "envoy.log").start()
    key = {"x-api-key": "secret-key-1"}
    try:
        wait_until(lambda: http(f"http://127.0.0.1:{port}/v1/text/models", key)[0] == 200, timeout=30, what="text")
        assert http(f"http://127.0.0.1:{port}/v1/images/models", key)[0] == 503
        stats = http(f"http://127.0.0.1:{admin_port}/stats?filter=cluster.image.ssl")[2].decode()
        assert re.search(r"cluster\.image\.ssl\.fail_verify_san: [1-9]", stats), stats
    finally:
        gateway.stop()
        text.stop(grace=None)
        impostor.stop(grace=None)


# ------------------------------------------------------------------------------------------------
# OpenAI's routes: to the web front door, without the strict JSON check and the transcoder


@pytest.mark.parametrize(
    ("path", "openai"),
    [
        ("/v1/models", True),
        ("/v1/models/gemma-3-270m-q4_k_m", True),
        ("/v1/chat/completions", True),
        ("/v1/completions", True),
        ("/v1/embeddings", True),
        ("/v1/images/generations", True),
        ("/v1/images/edits", True),
        ("/v1/videos", True),
        ("/v1/videos/vid-0-4abcc89098809ad06419", True),
        ("/v1/videos/vid-0-4abcc89098809ad06419/content", True),
        # genmesh's own REST paths stay with the transcoder
        ("/v1/videos/models", False),
        ("/v1/videos/jobs/vid-0-4abcc89098809ad06419", False),
        ("/v1/videos:generate", False),
        ("/v1/images/models", False),
        ("/v1/images:generate", False),
        ("/v1/text/models", False),
        ("/v1/training/models", False),
        ("/v1/chat/completions/extra", False),
    ],
)
def test_openai_paths_are_told_apart_from_genmesh_ones(path: str, openai: bool) -> None:
    assert bool(re.fullmatch(envoy_mod.OPENAI_PATH_REGEX, path)) is openai


def test_openai_routes_go_to_the_web_front_door_without_strict_json(descriptor: Path) -> None:
    config = yaml.safe_load(render(descriptor, web=[("127.0.0.1", 8088)]))
    (hcm,) = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    (openai,) = [route for route in routes if route["match"].get("safe_regex", {}).get("regex", "").startswith("/v1/")]
    assert openai["route"] == {"cluster": "web", "timeout": "0s"}
    disabled = {name for name, value in openai["typed_per_filter_config"].items() if value["disabled"]}
    assert disabled == {"envoy.filters.http.lua", "envoy.filters.http.grpc_json_transcoder"}
    # It comes before the catch-all; the key check and rate limit are not disabled for it.
    assert routes.index(openai) < len(routes) - 1
    (web,) = [cluster for cluster in config["static_resources"]["clusters"] if cluster["name"] == "web"]
    endpoint = web["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert endpoint == {"address": "127.0.0.1", "port_value": 8088}
    assert web["health_checks"][0]["http_health_check"] == {"path": "/livez"}
    # The gateway's own replies on those paths (bad key, rate limit, front door down) are OpenAI's shape.
    mappers = hcm["typed_config"]["local_reply_config"]["mappers"]
    texts = [mapper.get("body_format_override", {}).get("text_format_source", {}) for mapper in mappers]
    openai_replies = [
        mapper for mapper, text in zip(mappers, texts, strict=True) if '"error"' in text.get("inline_string", "")
    ]
    bodies = [
        json.loads(mapper["body_format_override"]["text_format_source"]["inline_string"]) for mapper in openai_replies
    ]
    assert [body["error"]["code"] for body in bodies][:3] == [
        "invalid_api_key",
        "rate_limit_exceeded",
        "service_unavailable",
    ]
    assert all(set(body["error"]) == {"message", "type", "param", "code"} for body in bodies)


def test_the_console_and_presigned_media_need_no_key(descriptor: Path) -> None:
    """/ui (the console's files) goes to the web front door, /<bucket>/<key> GET/HEAD to the object
    store: neither can carry a key from a browser (a page load, an <img>), so the key check and the
    rate limit are off there, and only there (and on /openapi.json, the public REST contract)."""
    config = yaml.safe_load(render(descriptor, web=[("127.0.0.1", 8088)], media=[("127.0.0.1", 8333)]))
    (hcm,) = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    keyless = {
        json.dumps(route["match"], sort_keys=True): route
        for route in routes
        if route.get("typed_per_filter_config", {}).get(API_KEY_AUTH, {}).get("disabled")
    }
    console = next(route for route in routes if route["match"].get("safe_regex", {}).get("regex") == "/ui(/.*)?")
    assert console["route"] == {"cluster": "web"}
    media = next(route for route in routes if route.get("route", {}).get("cluster") == "media")
    assert media["route"]["timeout"] == "0s"
    assert media["match"]["headers"] == [{"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}}]
    media_regex = re.compile(media["match"]["safe_regex"]["regex"])
    assert media_regex.fullmatch("/outputs/20261207_0857/img-0-4a0d/image_0.png")
    assert not media_regex.fullmatch("/outputs/") and not media_regex.fullmatch("/v1/images/models")
    root = next(route for route in routes if route["match"] == {"path": "/"})
    assert root["redirect"] == {"path_redirect": "/ui/"}
    contract = next(route for route in routes if route["match"] == {"path": "/openapi.json"})
    assert contract["route"] == {"cluster": "web"}
    for route in (console, media, root, contract):
        disabled = {name for name, value in route["typed_per_filter_config"].items() if value["disabled"]}
        assert {API_KEY_AUTH, LOCAL_RATE_LIMIT} <= disabled
    # Only these and the gateway's own /healthz skip the key check.
    assert len(keyless) == 5, list(keyless)
    (cluster,) = [cluster for cluster in config["static_resources"]["clusters"] if cluster["name"] == "media"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert endpoint == {"address": "127.0.0.1", "port_value": 8333}
