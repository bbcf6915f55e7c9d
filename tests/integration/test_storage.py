"""ObjectStore against a real SeaweedFS S3 server (``weed mini``) started on free loopback ports."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from genmesh.errors import InvalidArgument, NotFound, Unavailable
from servers.mesh.processes import free_port
from servers.mesh.s3 import S3Server
from storage import ALL_BUCKETS, OUTPUTS, ObjectStore, StorageSettings, output_key, output_prefix

pytestmark = pytest.mark.integration

ACCESS_KEY = "genmesh-test"
SECRET_KEY = "genmesh-test-secret-0123456789"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3") / "data", ACCESS_KEY, SECRET_KEY)
    server.start()
    try:
        yield server
    finally:
        server.stop()  # SIGTERM by PID, SIGKILL after a timeout
        assert not server.alive()


@pytest.fixture(scope="module")
def store(s3_server) -> ObjectStore:
    store = ObjectStore(s3_server.settings())
    store.ensure_buckets()
    return store


def test_server_listens_on_loopback_only(s3_server):
    assert s3_server.endpoint.startswith("127.0.0.1:")
    assert s3_server.startup_seconds is not None and s3_server.startup_seconds < 30
    argv = " ".join(s3_server.argv())
    for flag in ("-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", "-admin.ui=false"):
        assert flag in argv


def test_ensure_buckets_is_idempotent(s3_server):
    store = ObjectStore(s3_server.settings())
    store.ensure_buckets()
    assert store.ensure_buckets() == []
    for bucket in ALL_BUCKETS:
        store.put_bytes(bucket, "probe", b"x")


def test_ensure_buckets_survives_a_race(s3_server):
    buckets = ("race-a", "race-b", "race-c")
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def create():
        store = ObjectStore(s3_server.settings())
        barrier.wait()
        try:
            results.append(store.ensure_buckets(buckets))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    created = [b for result in results for b in result]
    assert sorted(set(created)) == sorted(buckets)
    assert ObjectStore(s3_server.settings()).ensure_buckets(buckets) == []


def test_put_get_round_trip(store):
    data = b"a generated caption\n" * 100
    key = output_key("job-rt", "caption.txt", datetime.now(UTC))
    stored = store.put_bytes(OUTPUTS, key, data, "text/plain; charset=utf-8", {"job-id": "job-rt"})
    assert stored.bucket == OUTPUTS and stored.key == key
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.content_type == "text/plain; charset=utf-8"

    assert store.get_bytes(OUTPUTS, key) == data
    stat = store.stat(OUTPUTS, key)
    assert (stat.size_bytes, stat.sha256, stat.content_type) == (len(data), stored.sha256, stored.content_type)
    assert store.exists(OUTPUTS, key)

    listed = list(store.list(OUTPUTS, key.rsplit("/", 1)[0] + "/"))
    assert [(e.key, e.size_bytes) for e in listed] == [(key, len(data))]


def test_list_recursive_and_not(store):
    prefix = output_prefix("job-list", datetime(2026, 1, 2, 3, 4, tzinfo=UTC))
    for name in ("a.png", "b.png", "frames/0.png", "frames/1.png"):
        store.put_bytes(OUTPUTS, prefix + name, name.encode(), "image/png")
    assert [e.key for e in store.list(OUTPUTS, prefix)] == [
        prefix + "a.png",
        prefix + "b.png",
        prefix + "frames/0.png",
        prefix + "frames/1.png",
    ]
    shallow = list(store.list(OUTPUTS, prefix, recursive=False))
    assert [(e.key, e.is_prefix) for e in shallow] == [
        (prefix + "a.png", False),
        (prefix + "b.png", False),
        (prefix + "frames/", True),
    ]


def test_put_file_multipart_and_download(store, tmp_path):
    path = tmp_path / "weights.bin"
    data = os.urandom(17 * 1024 * 1024 + 123)  # above the 16 MiB part size: a multipart upload
    path.write_bytes(data)
    stored = store.put_file("models", "layer_1/weights.bin", path, "application/octet-stream")
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.stat("models", "layer_1/weights.bin").sha256 == stored.sha256

    target = tmp_path / "copy.bin"
    store.download_file("models", "layer_1/weights.bin", target)
    assert target.read_bytes() == data
    assert not list(tmp_path.glob(".*.part"))


def test_presigned_url_downloads_the_same_bytes(store):
    data = os.urandom(4096)
    stored = store.put_bytes(OUTPUTS, "presign/blob.bin", data, "application/octet-stream")
    url = urllib.parse.urlsplit(stored.url)
    assert url.hostname == "127.0.0.1"
    with urllib.request.urlopen(stored.url, timeout=5) as response:
        assert response.read() == data
    with urllib.request.urlopen(store.presign_get(OUTPUTS, "presign/blob.bin"), timeout=5) as response:
        assert response.read() == data


def test_presigned_urls_name_the_public_endpoint(s3_server, store):
    # Callers may reach the store under another name than the servers do (compose, Kubernetes).
    port = s3_server.endpoint.rsplit(":", 1)[1]
    public = ObjectStore(replace(s3_server.settings(), public_endpoint=f"localhost:{port}"))
    data = os.urandom(1024)
    stored = public.put_bytes(OUTPUTS, "presign/public.bin", data, "application/octet-stream")
    assert urllib.parse.urlsplit(stored.url).hostname == "localhost"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(stored.url, timeout=5) as response:
        assert response.read() == data
    with pytest.raises(ValueError, match="public endpoint"):
        replace(s3_server.settings(), public_endpoint="http://example:9000")


def test_missing_key_is_not_found(store):
    with pytest.raises(NotFound, match="outputs/no/such-key"):
        store.get_bytes(OUTPUTS, "no/such-key")
    with pytest.raises(NotFound, match="outputs/no/such-key"):
        store.stat(OUTPUTS, "no/such-key")
    assert not store.exists(OUTPUTS, "no/such-key")
    with pytest.raises(NotFound, match="no-such-bucket"):
        store.get_bytes("no-such-bucket", "k")


def test_delete(store):
    store.put_bytes(OUTPUTS, "to-delete", b"x")
    store.delete(OUTPUTS, "to-delete")
    assert not store.exists(OUTPUTS, "to-delete")
    store.delete(OUTPUTS, "to-delete")  # deleting a missing key is fine


def test_invalid_key_is_rejected_before_any_request(store):
    with pytest.raises(InvalidArgument):
        store.put_bytes(OUTPUTS, "../escape", b"x")
    with pytest.raises(InvalidArgument):
        store.get_bytes(OUTPUTS, "/abs")


def test_wrong_credentials_give_a_clear_error(s3_server):
    bad = ObjectStore(replace(s3_server.settings(), secret_key="not-the-secret"))
    started = time.monotonic()
    with pytest.raises(Unavailable, match="rejected the credentials"):
        bad.put_bytes(OUTPUTS, "nope", b"x")
    with pytest.raises(Unavailable, match="GENMESH_S3_SECRET_KEY"):
        bad.get_bytes(OUTPUTS, "nope")
    unknown = ObjectStore(replace(s3_server.settings(), access_key="nobody"))
    with pytest.raises(Unavailable, match="rejected the credentials"):
        unknown.ensure_buckets()
    assert time.monotonic() - started < 5  # not retried


def test_nothing_listening_is_unavailable_quickly():
    endpoint = f"127.0.0.1:{free_port()}"
    store = ObjectStore(StorageSettings(endpoint, ACCESS_KEY, SECRET_KEY))
    started = time.monotonic()
    with pytest.raises(Unavailable, match=f"object storage at {endpoint} is unreachable"):
        store.put_bytes(OUTPUTS, "k", b"x")
    with pytest.raises(Unavailable):
        list(store.list(OUTPUTS))
    assert time.monotonic() - started < 5


def test_stopped_store_is_unavailable(tmp_path):
    server = S3Server(tmp_path / "data", ACCESS_KEY, SECRET_KEY)
    try:
        server.start()
        store = ObjectStore(server.settings())
        store.ensure_buckets([OUTPUTS])
        store.put_bytes(OUTPUTS, "k", b"before")
    finally:
        server.stop()
    assert not server.alive()
    started = time.monotonic()
    with pytest.raises(Unavailable, match="unreachable"):
        store.get_bytes(OUTPUTS, "k")
    assert time.monotonic() - started < 5


def test_restart_keeps_objects(tmp_path):
    data_dir = tmp_path / "data"
    with S3Server(data_dir, ACCESS_KEY, SECRET_KEY) as first:
        ObjectStore(first.settings()).ensure_buckets([OUTPUTS])
        ObjectStore(first.settings()).put_bytes(OUTPUTS, "kept", b"persisted")
    with S3Server(data_dir, ACCESS_KEY, SECRET_KEY) as second:  # fresh ports, same data
        assert ObjectStore(second.settings()).get_bytes(OUTPUTS, "kept") == b"persisted"
