"""API keys at the real gateway, as a user meets them: each key has its own quota (a flooding key
gets 429 / RESOURCE_EXHAUSTED while another key keeps working), keys rotate in `genmesh up`'s keys
file while a text stream flows, and no key appears in any log of the run."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from genmesh import errors
from genmesh.client import GenmeshClient
from servers.mesh.api_keys import QuotaOverride
from servers.mesh.envoy import Envoy, render_envoy_config
from servers.mesh.launcher import DESCRIPTOR_PATH, LaunchOptions, Mesh, write_private
from servers.mesh.processes import free_port, wait_until

pytestmark = pytest.mark.integration

MODELS = "/v1/text/models"


def new_key() -> str:
    return "gm_" + secrets.token_urlsafe(24)


def test_a_flooding_key_gets_429_while_another_key_keeps_working(mesh: Mesh, tmp_path: Path) -> None:
    # A gateway of its own in front of the session's Text server. The flooding key's bucket holds 5
    # and refills 1/s: 200 quick requests run it dry whatever the machine's speed. The calm key has
    # the default bucket (1000), which its requests meanwhile cannot empty.
    port, admin_port = free_port(), free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(
        render_envoy_config(
            listen_port=port, admin_port=admin_port, descriptor_path=DESCRIPTOR_PATH,
            api_keys={"flood": "flood-key", "calm": "calm-key"}, quotas={"flood": QuotaOverride(rps=1, burst=5)},
            upstreams={"text": [("127.0.0.1", mesh.server_ports["text"])]}, rate_limit_rps=1000, rate_limit_burst=1000,
        )
    )  # fmt: skip
    envoy = Envoy(config, admin_port=admin_port, log_path=tmp_path / "envoy.log").start()
    url = f"http://127.0.0.1:{port}"
    flood: list[httpx.Response] = []
    calm: list[int] = []
    go = threading.Event()

    def flood_requests() -> None:
        with httpx.Client(base_url=url, headers={"x-api-key": "flood-key"}, timeout=60) as http:
            go.wait()
            flood.extend(http.get(MODELS) for _ in range(200))

    try:
        with httpx.Client(base_url=url, headers={"x-api-key": "calm-key"}, timeout=60) as http:
            wait_until(lambda: http.get(MODELS).status_code == 200, timeout=60, what="the gateway's text route")
            flooder = threading.Thread(target=flood_requests)
            flooder.start()
            go.set()
            while flooder.is_alive() or len(calm) < 20:  # the calm key calls all through the flood
                calm.append(http.get(MODELS).status_code)
            flooder.join()
        statuses = [response.status_code for response in flood]
        assert set(statuses) == {200, 429} and statuses[:5] == [200] * 5, statuses
        limited = next(response for response in flood if response.status_code == 429)
        assert limited.json()["code"] == 8  # RESOURCE_EXHAUSTED
        assert limited.headers["x-ratelimit-limit"] == "5" and limited.headers["x-ratelimit-remaining"] == "0"
        assert set(calm) == {200}, calm
        # gRPC callers of the flooding key get RESOURCE_EXHAUSTED; the calm key's still succeed.
        target = f"127.0.0.1:{port}"
        with GenmeshClient(target, "flood-key") as flooding, GenmeshClient(target, "calm-key") as steady:
            with pytest.raises(errors.ResourceExhausted):
                for _ in range(200):  # a token may have come back since the flood
                    flooding.text.list_models()
            assert steady.text.list_models()
    finally:
        envoy.stop()


@pytest.fixture
def keyed_mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Mesh, Path, dict[str, str]]]:
    """`genmesh up` with the Text server and a keys file in its data folder: clients alpha and gamma."""
    for name in ("GENMESH_API_KEYS", "GENMESH_API_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    keys = {"alpha": new_key(), "beta": new_key(), "gamma": new_key()}
    data_dir = tmp_path / "data"
    keys_file = data_dir / "api-keys"
    write_private(keys_file, f"alpha={keys['alpha']}\ngamma={keys['gamma']}\n")
    options = LaunchOptions(
        port=free_port(), services=("text",), data_dir=data_dir, service_args={"text": ["--context-length", "2048"]}
    )
    mesh = Mesh(options).start()
    try:
        yield mesh, keys_file, keys
    finally:
        mesh.stop()


def test_keys_rotate_while_a_stream_flows_and_never_reach_a_log(keyed_mesh, capfd: pytest.CaptureFixture[str]) -> None:
    mesh, keys_file, keys = keyed_mesh
    url = f"http://{mesh.url}"

    def status(client: str) -> int:
        with httpx.Client(base_url=url, headers={"x-api-key": keys[client]}, timeout=30) as http:
            return http.get(MODELS).status_code

    assert [status("alpha"), status("beta"), status("gamma")] == [200, 401, 200]

    # A long stream of key alpha (counting, greedy: it does not stop by itself for a long while).
    events: list = []
    failures: list[Exception] = []

    def stream() -> None:
        with GenmeshClient(mesh.url, keys["alpha"]) as client:
            try:
                events.extend(client.text.stream_generate("1, 2, 3, 4, 5, 6, 7,", max_tokens=1500, temperature=0))
            except errors.GenmeshError as exc:
                failures.append(exc)

    def deltas() -> int:
        """Tokens streamed so far (one delta may carry several)."""
        return max((event.progress.step for event in list(events) if event.WhichOneof("event") == "delta"), default=0)

    streamer = threading.Thread(target=stream)
    streamer.start()
    wait_until(lambda: deltas() >= 1, timeout=120, what="the stream's first token")

    # Add beta, revoke gamma, as a user edits the file (in place).
    edited = time.monotonic()
    keys_file.write_text(f"alpha={keys['alpha']}\nbeta={keys['beta']}\n")
    wait_until(lambda: status("beta") == 200 and status("gamma") == 401, timeout=10, what="beta in, gamma out")
    with capfd.disabled():  # measured, not asserted; pytest -s shows it
        print(f"\nkeys rotated {time.monotonic() - edited:.2f} s after the edit")
    at_rotation = deltas()
    wait_until(lambda: deltas() >= at_rotation + 5, timeout=60, what="more tokens after the rotation")
    assert streamer.is_alive() and not failures, "the stream of a key that stayed was cut"
    with GenmeshClient(mesh.url, keys["beta"]) as client, pytest.raises(errors.NotFound):
        client.text.cancel_job(events[0].job_id)  # the new key's client does not own it
    with GenmeshClient(mesh.url, keys["alpha"]) as client:
        client.text.cancel_job(events[0].job_id)  # its owner's other connection may; the stream ends cleanly
    streamer.join(timeout=60)
    assert events[-1].WhichOneof("event") == "cancelled" and isinstance(failures[0], errors.Cancelled)
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {keys['gamma']}"}, timeout=30) as http:
        assert http.get(MODELS).status_code == 401

    # The whole run's logs (gateway access log, servers, S3, the launcher's own output) carry client
    # ids, never a key.
    mesh.stop()
    access_log = [
        json.loads(line) for line in (mesh.logs / "envoy.log").read_text().splitlines() if line.startswith("{")
    ]
    assert {"alpha", "beta"} <= {entry["client_id"] for entry in access_log}
    captured = capfd.readouterr()
    logs = {path.name: path.read_text(errors="replace") for path in mesh.logs.iterdir()}
    logs["launcher"] = captured.out + captured.err
    assert "api_keys_applied" in logs["launcher"]
    for name, text in logs.items():
        for client, key in keys.items():
            assert key not in text, f"{client}'s key appears in {name}"
