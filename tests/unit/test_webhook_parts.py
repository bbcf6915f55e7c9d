"""Completion webhooks, the parts that need no mesh: signing (and the README's verify recipe),
the allowlist and address checks, the backoff schedule, the keys file's webhook options, the gate a
job request passes, and one attempt against a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from genmesh.errors import InvalidArgument
from servers.mesh.api_keys import ApiKeyError, KeySource, KeyWebhook, load_key_config
from servers.runtime import caller
from servers.runtime.caller import OPERATOR, Caller
from servers.runtime.settings import ServerSettings, parse_settings
from servers.runtime.webhooks import allow, deliver, sign
from servers.runtime.webhooks.allow import AllowList, Target, Url
from servers.runtime.webhooks.gate import KeyWebhooks, Notify, NotifyGate, WebhookConfig

README = Path(__file__).resolve().parents[2] / "client" / "README.md"
BODY = b'{"status":{"job_id":"txt-0-abc","state":"JOB_STATE_SUCCEEDED"}}'


def readme_verify():
    """The verify function exactly as the README documents it."""
    text = README.read_text()
    block = re.search(r"<!-- webhook-verify-recipe -->\n```python\n(.*?)```", text, re.DOTALL)
    assert block is not None, "the README lost its webhook verify recipe"
    namespace: dict = {}
    exec(block.group(1), namespace)  # the documented recipe, run as a reader would
    return namespace["verify"]


# -- signing --------------------------------------------------------------------------------------
def test_a_signature_verifies_with_the_readme_recipe_and_only_with_the_right_secret_and_body() -> None:
    verify = readme_verify()
    header = sign.header_value("s" * 20, BODY)
    assert re.fullmatch(r"t=[0-9]+,v1=[0-9a-f]{64}", header)
    assert verify("s" * 20, header, BODY) and sign.verify("s" * 20, header, BODY)
    assert not verify("t" * 20, header, BODY) and not sign.verify("t" * 20, header, BODY)
    assert not verify("s" * 20, header, BODY + b" ") and not sign.verify("s" * 20, header, BODY + b" ")


def test_a_signature_is_hmac_sha256_over_timestamp_dot_body_and_old_ones_are_refused() -> None:
    header = sign.header_value("secret-of-twenty-chars", BODY, timestamp=1_700_000_000)
    expected = hmac.new(b"secret-of-twenty-chars", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert sign.verify("secret-of-twenty-chars", header, BODY, now=1_700_000_299)
    assert not sign.verify("secret-of-twenty-chars", header, BODY, now=1_700_000_301)  # a replayed old one
    assert not readme_verify()("secret-of-twenty-chars", header, BODY)  # the recipe checks the clock too
    assert not sign.verify("secret-of-twenty-chars", "v1=" + expected, BODY)  # no timestamp


def test_a_keys_secret_is_derived_from_the_key_as_the_readme_says() -> None:
    assert sign.derived_secret("gm_key") == hmac.new(b"gm_key", b"genmesh-webhook-v1", hashlib.sha256).hexdigest()
    assert sign.derived_secret("gm_key") != sign.derived_secret("gm_other")
    assert 'b"genmesh-webhook-v1"' in README.read_text()


# -- the allowlist --------------------------------------------------------------------------------
def resolver(table: dict[str, list[str]]):
    return lambda host, port: table[host]


PUBLIC = {"n8n.example.com": ["93.184.215.14"], "a.hooks.example.org": ["93.184.215.15"]}


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://n8n.example.com/webhook/abc?x=1", True),
        ("https://N8N.example.com/webhook/abc", True),  # hosts compare case-insensitively
        ("http://n8n.example.com/webhook/abc", False),  # another scheme
        ("https://n8n.example.com:8443/webhook/abc", False),  # another port
        ("https://n8n.example.com.evil.net/webhook", False),
        ("https://a.hooks.example.org/genmesh/1", True),
        ("https://a.hooks.example.org/other", False),  # outside the pattern's path
        ("https://hooks.example.org/genmesh/1", False),  # "*." needs a subdomain
    ],
)
def test_urls_match_the_allowlist_by_scheme_host_port_and_path(url: str, allowed: bool) -> None:
    patterns = AllowList.parse("https://n8n.example.com/*, https://*.hooks.example.org/genmesh/*")
    table = {**PUBLIC, "n8n.example.com.evil.net": ["93.184.215.16"], "hooks.example.org": ["93.184.215.17"]}
    if allowed:
        assert allow.check(url, patterns, resolver(table)).addresses
    else:
        with pytest.raises(InvalidArgument, match=r"notify_url: .* is not allowed") as refused:
            allow.check(url, patterns, resolver(table))
        assert refused.value.field == "notify_url"


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "192.168.0.9", "172.16.5.5", "169.254.169.254", "::1", "fd00::1", "0.0.0.0",
                "::ffff:127.0.0.1", "100.64.0.1", "224.0.0.1"],
)  # fmt: skip
def test_internal_addresses_are_refused_behind_a_wildcard_host(address: str) -> None:
    with pytest.raises(InvalidArgument, match="loopback, private or link-local") as refused:
        allow.check("https://x.example.com/hook", AllowList.parse("https://*"), resolver({"x.example.com": [address]}))
    assert refused.value.field == "notify_url"


def test_every_address_of_a_host_is_checked_and_the_checked_ones_are_kept() -> None:
    # A name answering one public and one internal address is refused (rebinding within one answer).
    mixed = resolver({"x.example.com": ["93.184.215.14", "10.0.0.5"]})
    with pytest.raises(InvalidArgument, match=r"10\.0\.0\.5"):
        allow.check("https://x.example.com/hook", AllowList.parse("https://*.example.com/*"), mixed)
    target = allow.check(
        "https://x.example.com/h", AllowList.parse("https://*"), resolver({"x.example.com": ["93.184.215.14"]})
    )
    assert target.addresses == ("93.184.215.14",) and target.url.port == 443 and target.url.path == "/h"


def test_an_internal_host_is_allowed_only_by_a_pattern_naming_it() -> None:
    patterns = AllowList.parse("https://*,http://n8n.internal:5678/*,http://127.0.0.1:*/hooks/*")
    internal = resolver({"n8n.internal": ["10.0.0.7"], "127.0.0.1": ["127.0.0.1"]})
    assert allow.check("http://n8n.internal:5678/webhook/x", patterns, internal).addresses == ("10.0.0.7",)
    assert allow.check("http://127.0.0.1:40123/hooks/a", patterns, internal).addresses == ("127.0.0.1",)
    for url in ("http://127.0.0.1:22/", "http://127.0.0.1:40123/other"):
        with pytest.raises(InvalidArgument, match="notify_url"):
            allow.check(url, patterns, internal)


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://127.0.0.1:22/"])
def test_the_issues_examples_are_refused_without_an_entry(url: str) -> None:
    for patterns in ("", "https://n8n.example.com/*", "http://*", "http://*:*/*"):
        with pytest.raises(InvalidArgument, match="notify_url"):
            allow.check(url, AllowList.parse(patterns))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://x.example.com/a", "an http:// or https:// URL"),
        ("https:///nohost", "an http:// or https:// URL"),
        ("https://user:pw@x.example.com/a", "credentials in the URL"),
        ("https://x.example.com:99999/a", "not a valid URL"),
        ("https://x.example.com/a b", "spaces and control characters"),
        ("https://x.example.com/" + "a" * 2048, "at most 2048 characters"),
    ],
)
def test_malformed_urls_are_invalid_naming_notify_url(url: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as refused:
        allow.check(url, AllowList.parse("https://*"), resolver(PUBLIC))
    assert refused.value.field == "notify_url"


def test_webhooks_are_off_without_an_allowlist() -> None:
    with pytest.raises(InvalidArgument, match="webhooks are off on this server"):
        allow.check("https://n8n.example.com/a", AllowList.parse(""), resolver(PUBLIC))


@pytest.mark.parametrize(
    "pattern", ["n8n.example.com", "ftp://x/*", "https://x:0/*", "https://[::1]/*", "https://a b/"]
)
def test_a_bad_allowlist_stops_the_server_naming_the_setting(pattern: str) -> None:
    with pytest.raises(ValueError, match="GENMESH_WEBHOOK_ALLOW"):
        AllowList.parse(f"https://ok.example.com/*,{pattern}")
    with pytest.raises(SystemExit):
        parse_settings(ServerSettings, [], {"GENMESH_WEBHOOK_ALLOW": pattern})


def test_settings_parse_the_webhook_options_once() -> None:
    settings = parse_settings(
        ServerSettings,
        ["--webhook-backoff", "0.5"],
        {
            "GENMESH_WEBHOOK_ALLOW": "https://n8n.example.com/*",
            "GENMESH_API_KEYS_FILE": "/keys",
            "GENMESH_WEBHOOK_SECRET": "op",
        },
    )
    config = settings.webhooks()
    assert config.allow == AllowList.parse("https://n8n.example.com/*")
    assert (config.first_backoff, config.timeout, config.operator_secret) == (0.5, 10.0, "op")
    assert config.keys == KeySource(None, Path("/keys"))
    assert "op" not in repr(settings)
    with pytest.raises(SystemExit):
        parse_settings(ServerSettings, [], {"GENMESH_WEBHOOK_BACKOFF": "0"})


# -- backoff ------------------------------------------------------------------------------------
def test_backoff_doubles_from_the_first_delay_up_to_the_cap_for_24_hours() -> None:
    backoff = deliver.Backoff(first=30)
    assert [backoff.delay(n) for n in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert backoff.delay(30) == 3600
    # Attempts go on while the next one falls within 24 h of the job's end, then stop.
    ended, at, failures, attempts = 0.0, 0.0, 0, [0.0]
    while (due := backoff.next_attempt(ended, at, failures + 1)) is not None:
        failures, at = failures + 1, due
        attempts.append(due)
    assert attempts[-1] <= 24 * 3600 < attempts[-1] + 3600
    assert len(attempts) == 30  # the first, 7 growing delays (1 h 4 min in all), then 22 an hour apart
    assert deliver.Backoff(first=0.05).next_attempt(100.0, 100.0, 2) == pytest.approx(100.1)


# -- the keys file -------------------------------------------------------------------------------
def test_keys_may_carry_a_default_webhook_and_a_secret(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(
        "n8n=k1 notify=https://n8n.example.com/webhook/a?x=1 secret=0123456789abcdef\n"
        "ci=k2 admin notify=http://127.0.0.1:9/hooks/x rps=3\nplain=k3\nk4 secret=fedcba9876543210xx\n"
    )
    config = load_key_config({}, keys_file)
    assert config.webhooks == {
        "n8n": KeyWebhook("https://n8n.example.com/webhook/a?x=1", "0123456789abcdef"),
        "ci": KeyWebhook("http://127.0.0.1:9/hooks/x", ""),
        "key-1": KeyWebhook("", "fedcba9876543210xx"),
    }
    assert config.admins == {"ci"} and config.keys["n8n"] == "k1"
    assert "0123456789abcdef" not in repr(config)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("a=k notify=ftp://x", "notify= must be an http"),
        ("a=k secret=short", "secret= must be at least 16 visible characters"),
        ("a=k notify=https://a/ notify=https://b/", "notify is given twice"),
    ],
)
def test_bad_webhook_options_name_the_entry(tmp_path: Path, entry: str, message: str) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(entry + "\n")
    with pytest.raises(ApiKeyError, match=f"{keys_file}:1: {message}"):
        load_key_config({}, keys_file)


# -- the gate ------------------------------------------------------------------------------------
def gate_config(tmp_path: Path, allowed: str, keys: str, operator_secret: str = "") -> WebhookConfig:
    keys_file = tmp_path / "keys"
    keys_file.write_text(keys)
    return WebhookConfig(AllowList.parse(allowed), 1.0, 5.0, KeySource(None, keys_file), operator_secret)


async def test_the_gate_takes_the_request_url_else_the_keys_default_and_needs_a_secret(tmp_path: Path) -> None:
    config = gate_config(tmp_path, "http://127.0.0.1:*/hooks/*", "a=ka notify=http://127.0.0.1:9/hooks/default\nb=kb\n")
    gate = NotifyGate(config)
    a, b = Caller("a", admin=False), Caller("b", admin=False)
    assert await gate.admit("http://127.0.0.1:8/hooks/mine", a) == Notify("http://127.0.0.1:8/hooks/mine", "a")
    assert await gate.admit("", a) == Notify("http://127.0.0.1:9/hooks/default", "a")
    assert await gate.admit("", b) is None
    # The agent's stages run on its caller's behalf: the key's default is the agent job's, not theirs.
    stage = caller.from_headers({"x-client-id": "a", caller.SUB_JOB_HEADER: "true"})
    assert stage == Caller("a", admin=False, sub_job=True) and dict(stage.headers())[caller.SUB_JOB_HEADER] == "true"
    assert await gate.admit("", stage) is None
    assert await gate.admit("http://127.0.0.1:8/hooks/own", stage) == Notify("http://127.0.0.1:8/hooks/own", "a")
    with pytest.raises(InvalidArgument, match=r"notify_url: .* is not allowed"):
        await gate.admit("http://127.0.0.1:22/", b)
    with pytest.raises(InvalidArgument, match="no webhook secret for calls without the gateway"):
        await gate.admit("http://127.0.0.1:8/hooks/x", OPERATOR)
    assert await NotifyGate(gate_config(tmp_path, "http://127.0.0.1:*/hooks/*", "b=kb\n", "op-secret")).admit(
        "http://127.0.0.1:8/hooks/x", OPERATOR
    ) == Notify("http://127.0.0.1:8/hooks/x", "")
    with pytest.raises(InvalidArgument, match="no webhook secret for client 'gone'"):
        await gate.admit("http://127.0.0.1:8/hooks/x", Caller("gone", admin=False))


def test_secrets_come_from_the_keys_file_or_are_derived_and_follow_rotation(tmp_path: Path) -> None:
    config = gate_config(tmp_path, "https://*", "a=ka secret=own-secret-0123456\nb=kb\n", "op")
    keys = KeyWebhooks(config)
    assert (keys.secret("a"), keys.secret("b"), keys.secret(""), keys.secret("c")) == (
        "own-secret-0123456",
        sign.derived_secret("kb"),
        "op",
        "",
    )
    (tmp_path / "keys").write_text("b=kb2\n")  # rotated: read again on the next use
    assert (keys.secret("a"), keys.secret("b")) == ("", sign.derived_secret("kb2"))


# -- one attempt ---------------------------------------------------------------------------------
class Receiver(http.server.BaseHTTPRequestHandler):
    answers: list[int] = []
    seen: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.path, dict(self.headers), body))
        status = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[http.server.ThreadingHTTPServer]:
    Receiver.answers, Receiver.seen = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_an_attempt_posts_signed_json_to_the_checked_address_and_follows_no_redirect(receiver) -> None:
    port = receiver.server_address[1]
    # The URL names a host that does not resolve: the connection goes to the checked address.
    target = Target(Url.parse(f"http://hooks.example.invalid:{port}/hooks/a?x=1"), ("127.0.0.1",))
    outcome = deliver.post(target, BODY, "s" * 20, "txt-0-abc", timeout=5)
    assert outcome == deliver.Outcome(200, "") and outcome.delivered
    path, headers, body = Receiver.seen[0]
    assert (path, body, headers["Host"]) == ("/hooks/a?x=1", BODY, f"hooks.example.invalid:{port}")
    assert headers["Content-Type"] == "application/json" and headers["Genmesh-Job-Id"] == "txt-0-abc"
    assert readme_verify()("s" * 20, headers["Genmesh-Signature"], body)
    Receiver.answers = [302, 500]
    assert deliver.post(target, BODY, "s" * 20, "txt-0-abc", timeout=5).error == "HTTP 302 (redirects are not followed)"
    assert deliver.post(target, BODY, "s" * 20, "txt-0-abc", timeout=5) == deliver.Outcome(500, "HTTP 500")
    assert len(Receiver.seen) == 3  # the redirect was not followed


def test_an_attempt_that_cannot_connect_says_why(receiver) -> None:
    port = receiver.server_address[1]
    receiver.shutdown()
    receiver.server_close()
    target = Target(Url.parse(f"http://127.0.0.1:{port}/hooks/a"), ("127.0.0.1",))
    assert deliver.post(target, BODY, "s" * 20, "txt-0-abc", timeout=5) == deliver.Outcome(0, "connection refused")
