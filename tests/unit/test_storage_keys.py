"""Key layout, key validation and settings parsing: pure, no object store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import urllib3
from minio.error import S3Error, ServerError

from genmesh.errors import InvalidArgument, NotFound, Unavailable
from storage import ALL_BUCKETS, StorageSettings
from storage.keys import (
    join_key,
    model_prefix,
    output_key,
    output_prefix,
    training_data_prefix,
    training_output_prefix,
    validate_job_id,
    validate_key,
    validate_key_part,
)
from storage.object_store import ObjectStore, RetryPolicy, _is_transient

NOON = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_buckets_of_the_brief():
    assert set(ALL_BUCKETS) == {
        "training-data",
        "models",
        "training-outputs",
        "synthetic-data",
        "evaluation",
        "outputs",
    }


def test_output_prefix_layout():
    assert output_prefix("job-42", NOON) == "20260304_0506/job-42/"
    assert output_key("job-42", "image_0.png", NOON) == "20260304_0506/job-42/image_0.png"


def test_output_prefix_is_utc():
    tokyo = timezone(timedelta(hours=9))
    assert output_prefix("j", datetime(2026, 3, 4, 8, 30, tzinfo=tokyo)) == "20260303_2330/j/"


def test_output_prefix_defaults_to_now():
    assert output_prefix("j").endswith("/j/")
    assert len(output_prefix("j").split("/")[0]) == len("YYYYMMDD_HHmm")


def test_output_prefix_rejects_naive_datetime():
    with pytest.raises(ValueError, match="timezone-aware"):
        output_prefix("j", datetime(2026, 1, 1))


@pytest.mark.parametrize("job_id", ["abc", "A1", "0b3e-11.v2_x", "x" * 128])
def test_valid_job_ids(job_id):
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize("job_id", ["", "..", "a..b", "/abc", "a/b", ".hidden", "-x", "a b", "é", "x" * 129, "a\\b"])
def test_invalid_job_ids(job_id):
    with pytest.raises(InvalidArgument) as err:
        output_prefix(job_id, NOON)
    assert err.value.field == "job_id"


@pytest.mark.parametrize("key", ["a", "a/b.txt", "clean/", "layer_1/weights.safetensors", "ünïcode/ok"])
def test_valid_keys(key):
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key", ["", "/a", "a/../b", "..", "a/./b", "a//b", "a\\b", "a\nb", "a\x00", "x" * 1025, "é" * 513]
)
def test_invalid_keys(key):
    with pytest.raises(InvalidArgument) as err:
        validate_key(key)
    assert err.value.field == "key"


def test_key_part_has_no_slash():
    assert validate_key_part("out.png") == "out.png"
    with pytest.raises(InvalidArgument):
        validate_key_part("a/b")
    with pytest.raises(InvalidArgument) as err:
        output_key("j", "../escape", NOON)
    assert err.value.field == "filename"


def test_join_key():
    assert join_key("20260304_0506/j/", "a.txt") == "20260304_0506/j/a.txt"
    assert join_key("clean", "/x/", "y") == "clean/x/y"
    with pytest.raises(InvalidArgument):
        join_key("clean", "..", "y")


def test_bucket_prefixes():
    assert training_data_prefix("clean") == "clean/"
    assert training_data_prefix("degraded") == "degraded/"
    assert model_prefix(2) == "layer_2/"
    assert training_output_prefix("checkpoints", "run-1") == "checkpoints/run-1/"
    with pytest.raises(InvalidArgument):
        training_data_prefix("dirty")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        model_prefix(0)
    with pytest.raises(InvalidArgument):
        training_output_prefix("reports", "..")


ENV = {
    "GENMESH_S3_ENDPOINT": "127.0.0.1:8333",
    "GENMESH_S3_ACCESS_KEY": "ak",
    "GENMESH_S3_SECRET_KEY": "sk",
}


def test_settings_from_env_defaults():
    settings = StorageSettings.from_env(ENV)
    assert settings == StorageSettings("127.0.0.1:8333", "ak", "sk", False, "us-east-1", 3600)
    assert "sk" not in repr(settings)


def test_settings_from_env_all():
    env = {**ENV, "GENMESH_S3_SECURE": "true", "GENMESH_S3_REGION": "eu-west-1"}
    settings = StorageSettings.from_env(env)
    assert settings.secure and settings.region == "eu-west-1"


@pytest.mark.parametrize("name", sorted(ENV))
def test_settings_from_env_names_the_missing_variable(name):
    env = {k: v for k, v in ENV.items() if k != name}
    with pytest.raises(ValueError, match=name):
        StorageSettings.from_env(env)


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="GENMESH_S3_SECURE"):
        StorageSettings.from_env({**ENV, "GENMESH_S3_SECURE": "maybe"})
    with pytest.raises(ValueError, match="host:port"):
        StorageSettings.from_env({**ENV, "GENMESH_S3_ENDPOINT": "http://127.0.0.1:8333"})
    with pytest.raises(ValueError, match="presign_expiry_seconds"):
        StorageSettings("127.0.0.1:1", "a", "b", presign_expiry_seconds=8 * 24 * 3600)


def test_default_retry_budget_is_short():
    policy = RetryPolicy()
    sleeps = sum(policy.backoff(a) for a in range(1, policy.attempts))
    assert sleeps + policy.attempts * policy.connect_timeout_s < 5


def test_transient_classification():
    refused = urllib3.exceptions.MaxRetryError(None, "/", ConnectionRefusedError("refused"))
    assert _is_transient(refused)
    assert _is_transient(ConnectionResetError())
    assert _is_transient(ServerError("boom", 503))
    assert not _is_transient(FileNotFoundError())
    assert not _is_transient(ValueError("bad"))


class _FlakyClient:
    """Stands in for the minio client: fails ``failures`` times with ``error``, then answers."""

    def __init__(self, error: Exception, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    def remove_object(self, bucket: str, key: str) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error


def _store_with(client: _FlakyClient, attempts: int = 3) -> ObjectStore:
    store = ObjectStore(
        StorageSettings("127.0.0.1:9", "ak", "sk"), retry=RetryPolicy(attempts=attempts, initial_backoff_s=0.001)
    )
    store._client = client  # type: ignore[assignment]
    return store


def test_transient_errors_are_retried():
    client = _FlakyClient(ServerError("server failed with HTTP status code 503", 503), failures=2)
    _store_with(client).delete("outputs", "k")
    assert client.calls == 3


def test_retries_exhausted_give_unavailable():
    client = _FlakyClient(S3Error(None, "SlowDown", "slow down", "/outputs/k", None, None), failures=10)
    with pytest.raises(Unavailable, match=r"object storage at 127\.0\.0\.1:9 is unreachable: SlowDown"):
        _store_with(client).delete("outputs", "k")
    assert client.calls == 3


def test_missing_object_is_not_retried():
    client = _FlakyClient(S3Error(None, "NoSuchKey", "gone", "/outputs/k", None, None), failures=10)
    with pytest.raises(NotFound, match="outputs/k"):
        _store_with(client).delete("outputs", "k")
    assert client.calls == 1
