"""API keys: the entry format with per-key quotas (old files still read the same), the key source,
and KeySync, which turns the keys file into the gateway's watched discovery files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from servers.mesh.api_keys import (
    ApiKeyError,
    KeyConfig,
    KeySource,
    QuotaOverride,
    RateLimit,
    default_rate_limit,
    load_api_keys,
    load_key_config,
)
from servers.mesh.keys_sync import KeySync
from servers.mesh.keys_sync import main as keys_sync_main
from servers.mesh.processes import wait_until

SECRET = "gm_s3cr3t-value"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_old_key_files_read_as_before(tmp_path: Path) -> None:
    keys_file = write(tmp_path / "keys", "# genmesh API keys, one client=key per line\nlocal=gm_abc  # mine\nplain\n")
    config = load_key_config({}, keys_file)
    assert config.keys == {"local": "gm_abc", "key-1": "plain"} and config.overrides == {}
    assert load_api_keys({"GENMESH_API_KEYS": "a=ka,kb"}) == {"a": "ka", "key-1": "kb"}


def test_entries_may_carry_their_own_rate_limit(tmp_path: Path) -> None:
    keys_file = write(tmp_path / "keys", "ci=k1 rps=5 burst=20\nbatch=k2   burst=3  # a comment\nk3 rps=7\nplain=k4\n")
    config = load_key_config({"GENMESH_API_KEYS": "env=k5 rps=9"}, keys_file)
    assert config.keys == {"env": "k5", "ci": "k1", "batch": "k2", "plain": "k4", "key-1": "k3"}
    assert config.overrides == {
        "env": QuotaOverride(rps=9),
        "ci": QuotaOverride(rps=5, burst=20),
        "batch": QuotaOverride(burst=3),
        "key-1": QuotaOverride(rps=7),
    }
    default = RateLimit(rps=50, burst=100)
    assert config.overrides["batch"].over(default) == RateLimit(rps=50, burst=3)
    assert config.overrides["ci"].over(default) == RateLimit(rps=5, burst=20)


def test_admin_marks_a_key_whose_client_sees_every_job(tmp_path: Path) -> None:
    keys_file = write(tmp_path / "keys", "ops=k1 admin\nci=k2 rps=5 admin burst=9\nplain=k3\nk4 admin\n")
    config = load_key_config({}, keys_file)
    assert config.admins == {"ops", "ci", "key-1"}
    assert config.overrides == {"ci": QuotaOverride(rps=5, burst=9)}
    assert config.keys == {"ops": "k1", "ci": "k2", "plain": "k3", "key-1": "k4"}


def test_a_line_may_hold_comma_separated_entries(tmp_path: Path) -> None:
    # A Kubernetes Secret holding GENMESH_API_KEYS, mounted as a file, reads as it is.
    assert load_api_keys({}, write(tmp_path / "GENMESH_API_KEYS", "a=ka,b=kb rps=1")) == {"a": "ka", "b": "kb"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"a={SECRET} rps=0", "rps must be a whole number >= 1"),
        (f"a={SECRET} burst=x", "burst must be a whole number >= 1"),
        (f"a={SECRET} rps=1 rps=2", "rps is given twice"),
        (f"a={SECRET} colour=red", "unexpected text after the key"),
        (f"a={SECRET} half-of-{SECRET}", "unexpected text after the key"),
        (f"a={SECRET},", "entry 2 is empty"),
        (f"a={SECRET} admin admin", "admin is given twice"),
        (f"a={SECRET} admins", "unexpected text after the key"),
    ],
)
def test_bad_entries_are_named_without_their_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ApiKeyError, match=message) as caught:
        load_key_config({}, write(tmp_path / "keys", f"ok=fine\n{text}\n"))
    assert "keys:2" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_keys_stay_out_of_reprs(tmp_path: Path) -> None:
    config = load_key_config({"GENMESH_API_KEYS": f"a={SECRET}"})
    source = KeySource.from_environ({"GENMESH_API_KEYS": f"a={SECRET}"}, tmp_path / "keys")
    assert SECRET not in repr(config) and SECRET not in repr(source)
    assert config.clients == ["a"]


def test_key_source_reads_again_on_every_load(tmp_path: Path) -> None:
    keys_file = write(tmp_path / "keys", "a=ka\n")
    source = KeySource.from_environ({"GENMESH_API_KEYS": "env=ke", "GENMESH_API_KEYS_FILE": str(keys_file)})
    assert source.file == keys_file
    assert source.load().keys == {"env": "ke", "a": "ka"}
    write(keys_file, "b=kb\n")
    assert source.load().keys == {"env": "ke", "b": "kb"}


def test_default_rate_limit_from_the_environment() -> None:
    assert default_rate_limit({}) == RateLimit(rps=50, burst=100)
    assert default_rate_limit({"GENMESH_RATE_LIMIT_RPS": "7", "GENMESH_RATE_LIMIT_BURST": "9"}) == RateLimit(7, 9)
    with pytest.raises(ValueError, match="GENMESH_RATE_LIMIT_RPS"):
        default_rate_limit({"GENMESH_RATE_LIMIT_RPS": "-1"})
    with pytest.raises(ValueError, match="burst"):
        RateLimit(rps=1, burst=0)


def credentials(keys_dir: Path) -> dict[str, str]:
    (resource,) = json.loads((keys_dir / "api-keys.json").read_text())["resources"]
    return {entry["client"]: entry["key"] for entry in resource["typed_config"]["credentials"]}


def test_key_sync_follows_the_file_and_keeps_the_last_good_keys(tmp_path: Path) -> None:
    keys_file = write(tmp_path / "keys", f"a={SECRET}\nc=kc\n")
    keys_dir = tmp_path / "gateway-keys"
    sync = KeySync(KeySource(file=keys_file), keys_dir, RateLimit(5, 10))
    with structlog.testing.capture_logs() as logs:
        assert sync.sync() == ["api-keys.json", "admin-clients.json", "rate-limit.json"]
        write(keys_file, f"a={SECRET}\nb=kb\n")  # b added, c revoked
        assert sync.sync() == ["api-keys.json"]
        assert credentials(keys_dir) == {"a": SECRET, "b": "kb"}
        assert sync.sync() == []  # nothing changed, nothing written
        write(keys_file, f"a={SECRET}\nb=kb oops\n")
        for _ in range(3):
            sync.poll()  # the same error is reported once
        assert credentials(keys_dir) == {"a": SECRET, "b": "kb"}  # the gateway keeps the last good keys
        write(keys_file, f"a={SECRET} rps=1\nb=kb\n")
        sync.poll()  # a change applies once two reads agree: never a file caught half-written
        assert len([entry for entry in logs if entry["event"] == "api_keys_applied"]) == 2
        sync.poll()
    applied = [entry for entry in logs if entry["event"] == "api_keys_applied"]
    assert [(entry["added"], entry["removed"]) for entry in applied] == [(["a", "c"], []), (["b"], ["c"]), ([], [])]
    assert applied[-1]["files"] == ["rate-limit.json"]  # a quota change rewrites the rate-limit file only
    rejected = [entry for entry in logs if entry["event"] == "api_keys_rejected"]
    assert len(rejected) == 1 and "keys:2" in rejected[0]["error"] and rejected[0]["kept"] == ["a", "b"]
    assert SECRET not in repr(logs)


def test_key_sync_thread_picks_up_a_change(tmp_path: Path) -> None:
    keys_file = write(tmp_path / "keys", "a=ka\n")
    keys_dir = tmp_path / "gateway-keys"
    sync = KeySync(KeySource(file=keys_file), keys_dir, RateLimit(5, 10), interval=0.05)
    sync.sync()
    sync.start()
    try:
        write(keys_file, "a=ka\nb=kb\n")
        wait_until(lambda: "b" in credentials(keys_dir), timeout=10, what="the new key in the discovery file")
    finally:
        sync.stop()


def test_key_sync_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    for name in ("GENMESH_API_KEYS", "GENMESH_API_KEYS_FILE", "GENMESH_RATE_LIMIT_RPS", "GENMESH_RATE_LIMIT_BURST"):
        monkeypatch.delenv(name, raising=False)
    keys_file = write(tmp_path / "keys", "a=ka rps=3\n")
    assert keys_sync_main(["--keys-dir", str(tmp_path / "out"), "--keys-file", str(keys_file)]) == 0
    assert credentials(tmp_path / "out") == {"a": "ka"}
    assert keys_sync_main(["--keys-dir", str(tmp_path / "out"), "--keys-file", str(tmp_path / "missing")]) == 2
    assert "cannot read API keys file" in capsys.readouterr().err


def test_key_config_equality_ignores_nothing() -> None:
    assert KeyConfig({"a": "1"}) != KeyConfig({"a": "2"})  # repr hides keys; comparison still sees them
