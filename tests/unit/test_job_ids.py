"""Replicas (issue 9): owner-tagged job ids, the peer list, the replica index from settings, and
which RPCs the forwarding interceptor treats as being about a job."""

from __future__ import annotations

import re

import pytest

# The descriptor pool knows a service only once its generated module is imported.
from genmesh.agent.v1 import agent_pb2  # noqa: F401
from genmesh.image.v1 import image_pb2  # noqa: F401
from genmesh.text.v1 import text_pb2  # noqa: F401
from genmesh.training.v1 import training_pb2  # noqa: F401
from genmesh.video.v1 import video_pb2  # noqa: F401
from servers.runtime import job_ids as job_ids_module
from servers.runtime.forwarding import addresses_job
from servers.runtime.job_ids import BOOT_ID, MAX_REPLICAS, JobIds, Owner, job_owner
from servers.runtime.peers import Peers
from servers.runtime.settings import ServerSettings, parse_settings

BOOT = "deadbeef"
OTHER_BOOT = "0badf00d"
RANDOM = "0123456789ab"


# ------------------------------------------------------------------------------------------------
# JobIds and job_owner


def test_new_ids_name_replica_and_boot() -> None:
    ids = JobIds(replica=3, boot=BOOT)
    first, second = ids.new("txt"), ids.new("txt")
    for job_id in (first, second):
        assert re.fullmatch(r"txt-3-deadbeef[0-9a-f]{12}", job_id), job_id
        assert job_owner(job_id) == Owner(3, BOOT)
    assert first != second  # the random part differs


def test_default_ids_are_replica_zero_of_this_process() -> None:
    ids = JobIds()
    assert ids.replica == 0
    assert ids.boot == BOOT_ID
    assert re.fullmatch(rf"[0-9a-f]{{{job_ids_module.BOOT_HEX}}}", BOOT_ID)
    assert job_owner(ids.new("img")) == Owner(0, BOOT_ID)


@pytest.mark.parametrize("replica", [0, 1, 9, 10, 99, 100, MAX_REPLICAS - 1])
def test_every_replica_index_round_trips(replica: int) -> None:
    job_id = JobIds(replica=replica, boot=BOOT).new("vid")
    assert job_id.startswith(f"vid-{replica}-{BOOT}")
    assert job_owner(job_id) == Owner(replica, BOOT)


@pytest.mark.parametrize("prefix", ["txt", "img", "vid", "trn", "tsk", "agt"])
def test_every_service_prefix(prefix: str) -> None:
    assert job_owner(JobIds(replica=2, boot=BOOT).new(prefix)) == Owner(2, BOOT)


@pytest.mark.parametrize(
    "job_id",
    [
        pytest.param("txt-3f9c1a0b2d4e5f6a", id="old-style-16-hex"),
        pytest.param("img-3f9c1a0b2d4e", id="old-style-12-hex"),
        pytest.param("", id="empty"),
        pytest.param("txt", id="prefix-only"),
        pytest.param("txt-1-", id="no-boot"),
        pytest.param(f"txt-1-{BOOT}", id="no-random"),
        pytest.param(f"txt-1-{BOOT}{RANDOM}0", id="random-too-long"),
        pytest.param(f"txt-1-{BOOT}{RANDOM[:-1]}", id="random-too-short"),
        pytest.param(f"txt-01-{BOOT}{RANDOM}", id="leading-zero"),
        pytest.param(f"txt-1000-{BOOT}{RANDOM}", id="four-digit-replica"),
        pytest.param(f"txt--1-{BOOT}{RANDOM}", id="negative-replica"),
        pytest.param(f"txt-x-{BOOT}{RANDOM}", id="replica-not-a-number"),
        pytest.param(f"txt-1-DEADBEEF{RANDOM}", id="uppercase-hex"),
        pytest.param(f"TXT-1-{BOOT}{RANDOM}", id="uppercase-prefix"),
        pytest.param(f"-1-{BOOT}{RANDOM}", id="no-prefix"),
        pytest.param(f"txt-1-{BOOT}{RANDOM}\n", id="trailing-newline"),
        pytest.param(f" txt-1-{BOOT}{RANDOM}", id="leading-space"),
        pytest.param(f"txt-1-{BOOT}-{RANDOM}", id="extra-dash"),
        pytest.param(f"../txt-1-{BOOT}{RANDOM}", id="path"),
        pytest.param(f"txt-1-{BOOT[:-1]}g{RANDOM}", id="not-hex"),
    ],
)
def test_ids_that_name_no_owner(job_id: str) -> None:
    assert job_owner(job_id) is None


def test_owns_and_lost() -> None:
    me = JobIds(replica=1, boot=BOOT)
    mine_now = f"txt-1-{BOOT}{RANDOM}"
    mine_before = f"txt-1-{OTHER_BOOT}{RANDOM}"
    theirs = f"txt-2-{BOOT}{RANDOM}"
    theirs_other_boot = f"txt-0-{OTHER_BOOT}{RANDOM}"
    old_style = "txt-3f9c1a0b2d4e5f6a"
    junk = "not-a-job"

    assert me.owns(mine_now) and not me.lost(mine_now)
    assert me.owns(mine_before) and me.lost(mine_before)  # made by an earlier life of replica 1
    assert not me.owns(theirs) and not me.lost(theirs)
    assert not me.owns(theirs_other_boot) and not me.lost(theirs_other_boot)
    # An id without an owner is answered wherever it lands, and never reported as lost.
    for untagged in (old_style, junk, ""):
        assert me.owns(untagged)
        assert not me.lost(untagged)


def test_lost_is_per_boot_of_the_same_replica() -> None:
    before, after = JobIds(replica=4, boot=OTHER_BOOT), JobIds(replica=4, boot=BOOT)
    job_id = before.new("img")
    assert before.owns(job_id) and not before.lost(job_id)
    assert after.owns(job_id) and after.lost(job_id)


@pytest.mark.parametrize("replica", [-1, -100, MAX_REPLICAS, MAX_REPLICAS + 1, 10**6])
def test_replica_out_of_range(replica: int) -> None:
    with pytest.raises(ValueError, match=r"replica must be 0\.\.999"):
        JobIds(replica=replica)


# ------------------------------------------------------------------------------------------------
# Peers


def test_peers_empty_means_single_replica() -> None:
    for text in ("", "   ", "\n"):
        peers = Peers.parse(text)
        assert not peers.configured
        assert peers.addresses == () and peers.template == ""
        assert peers.address(0) is None
        assert peers.address(1) is None


def test_peers_list_in_replica_order() -> None:
    peers = Peers.parse(" 127.0.0.1:50061, 127.0.0.1:50062 ,text-2.text-peers.genmesh.svc:50051,[::1]:7000")
    assert peers.configured
    assert peers.count() == 4
    assert peers.addresses == (
        "127.0.0.1:50061",
        "127.0.0.1:50062",
        "text-2.text-peers.genmesh.svc:50051",
        "[::1]:7000",
    )
    assert [peers.address(n) for n in range(4)] == list(peers.addresses)
    # Out of bounds: nothing to forward to (never an error, never a guess).
    assert peers.address(4) is None
    assert peers.address(-1) is None
    assert peers.address(MAX_REPLICAS) is None


def test_peers_single_address_list() -> None:
    peers = Peers.parse("localhost:1")
    assert peers.configured and peers.count() == 1
    assert peers.address(0) == "localhost:1"
    assert peers.address(1) is None


def test_peers_template() -> None:
    peers = Peers.parse("text-{n}.text-peers:50051")
    assert peers.configured
    assert peers.count() is None  # a StatefulSet may be scaled: no fixed count
    assert peers.address(0) == "text-0.text-peers:50051"
    assert peers.address(7) == "text-7.text-peers:50051"
    assert peers.address(MAX_REPLICAS - 1) == f"text-{MAX_REPLICAS - 1}.text-peers:50051"
    assert peers.address(MAX_REPLICAS) is None
    assert peers.address(-1) is None


def test_peers_at_most_max_replicas() -> None:
    at_limit = ",".join(f"127.0.0.1:{1000 + n}" for n in range(MAX_REPLICAS))
    assert Peers.parse(at_limit).count() == MAX_REPLICAS
    with pytest.raises(ValueError, match="GENMESH_PEERS"):
        Peers.parse(f"{at_limit},127.0.0.1:9")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("127.0.0.1", id="no-port"),
        pytest.param("127.0.0.1:", id="empty-port"),
        pytest.param("127.0.0.1:0", id="port-zero"),
        pytest.param("127.0.0.1:65536", id="port-too-big"),
        pytest.param("127.0.0.1:123456", id="port-six-digits"),
        pytest.param("127.0.0.1:http", id="port-name"),
        pytest.param("127.0.0.1:1,", id="trailing-comma"),
        pytest.param("127.0.0.1:1,,127.0.0.1:2", id="empty-entry"),
        pytest.param("http://127.0.0.1:1", id="scheme"),
        pytest.param("host name:1", id="space"),
        pytest.param("host/x:1", id="slash"),
        pytest.param("-host:1", id="leading-dash"),
        pytest.param("::1:7000", id="bare-ipv6"),
        pytest.param("text-{n}-{n}.peers:1", id="template-two-placeholders"),
        pytest.param("text-{n}.peers:1,text-{n}.other:1", id="template-in-a-list"),
        pytest.param("text-{n}.peers", id="template-no-port"),
        pytest.param("text-{n}.peers:0", id="template-port-zero"),
        pytest.param("text-{m}.peers:1", id="wrong-placeholder"),
    ],
)
def test_peers_bad_inputs_name_the_setting(text: str) -> None:
    with pytest.raises(ValueError, match="GENMESH_PEERS"):
        Peers.parse(text)


# ------------------------------------------------------------------------------------------------
# ServerSettings: the replica index


@pytest.mark.parametrize(
    ("fields", "replica"),
    [
        pytest.param({}, 0, id="default"),
        pytest.param({"pod_name": "text-3"}, 3, id="statefulset-ordinal"),
        pytest.param({"pod_name": "image-0"}, 0, id="ordinal-zero"),
        pytest.param({"pod_name": "my-text-12"}, 12, id="dashes-in-name"),
        pytest.param({"pod_name": "text"}, 0, id="no-ordinal"),
        pytest.param({"pod_name": "text-abc"}, 0, id="non-numeric-suffix"),
        pytest.param({"pod_name": "text-3-x"}, 0, id="ordinal-not-last"),
        pytest.param({"replica": 2}, 2, id="explicit"),
        pytest.param({"replica": 1, "pod_name": "text-3"}, 1, id="explicit-wins-over-pod"),
        pytest.param({"replica": 0, "pod_name": "text-3"}, 0, id="explicit-zero-wins"),
        pytest.param({"replica": -1, "pod_name": "text-5"}, 5, id="minus-one-means-from-pod"),
    ],
)
def test_replica_index(fields: dict, replica: int) -> None:
    settings = ServerSettings(**fields)
    assert settings.replica_index() == replica
    assert settings.job_ids().replica == replica
    assert job_owner(settings.job_ids().new("txt")) == Owner(replica, BOOT_ID)


def test_replica_index_within_the_peer_list() -> None:
    peers = "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"
    assert ServerSettings(replica=2, peers=peers).replica_index() == 2
    assert ServerSettings(pod_name="text-2", peers=peers).peer_addresses().count() == 3
    with pytest.raises(ValueError, match=r"GENMESH_REPLICA: 3 is not one of the 3 GENMESH_PEERS"):
        ServerSettings(replica=3, peers=peers)
    with pytest.raises(ValueError, match=r"GENMESH_REPLICA: 5 is not one of the 3 GENMESH_PEERS"):
        ServerSettings(pod_name="text-5", peers=peers)


def test_a_template_accepts_any_ordinal() -> None:
    settings = ServerSettings(pod_name="text-42", peers="text-{n}.text-peers:50051")
    assert settings.replica_index() == 42
    assert settings.peer_addresses().address(42) == "text-42.text-peers:50051"


def test_bad_peers_stop_the_settings() -> None:
    with pytest.raises(ValueError, match="GENMESH_PEERS"):
        ServerSettings(peers="nonsense")


def test_parse_settings_exits_naming_the_replica(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"GENMESH_PEERS": "127.0.0.1:1,127.0.0.1:2", "GENMESH_POD_NAME": "text-2"}
    with pytest.raises(SystemExit):
        parse_settings(ServerSettings, [], env)
    assert "GENMESH_REPLICA: 2 is not one of the 2 GENMESH_PEERS" in capsys.readouterr().err
    # The flag overrides the pod name: replica 1 of 2 is fine.
    settings = parse_settings(ServerSettings, ["--replica", "1"], env)
    assert settings.replica_index() == 1
    assert settings.peer_addresses().address(1) == "127.0.0.1:2"


def test_parse_settings_exits_naming_bad_peers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(ServerSettings, ["--peers", "127.0.0.1:0"], {})
    assert "GENMESH_PEERS" in capsys.readouterr().err


def test_out_of_range_replica_names_the_setting() -> None:
    # Without a peer list the index is checked when the ids are made (the server's start).
    with pytest.raises(ValueError, match=r"GENMESH_REPLICA: replica must be 0\.\.999"):
        ServerSettings(replica=MAX_REPLICAS).job_ids()
    with pytest.raises(ValueError, match="GENMESH_REPLICA"):
        ServerSettings(replica=MAX_REPLICAS, peers="127.0.0.1:1")


# ------------------------------------------------------------------------------------------------
# forwarding.addresses_job: which RPCs are about one job


@pytest.mark.parametrize(
    "method",
    [
        "/genmesh.text.v1.TextService/GetJob",
        "/genmesh.text.v1.TextService/CancelJob",
        "/genmesh.image.v1.ImageService/GetJob",
        "/genmesh.image.v1.ImageService/CancelJob",
        "/genmesh.video.v1.VideoService/GetJob",
        "/genmesh.video.v1.VideoService/CancelJob",
        "/genmesh.agent.v1.AgentService/GetJob",
        "/genmesh.agent.v1.AgentService/CancelJob",
        "/genmesh.training.v1.TrainingService/GetTrainingJob",
        "/genmesh.training.v1.TrainingService/CancelTrainingJob",
        "/genmesh.training.v1.TrainingService/WatchTrainingJob",
        "/genmesh.training.v1.TrainingService/GetTrainingReport",
    ],
)
def test_rpcs_about_a_job_are_forwarded(method: str) -> None:
    assert addresses_job(method) is True


@pytest.mark.parametrize(
    "method",
    [
        "/genmesh.text.v1.TextService/Generate",
        "/genmesh.text.v1.TextService/Chat",
        "/genmesh.text.v1.TextService/ListModels",
        "/genmesh.image.v1.ImageService/GenerateImage",
        "/genmesh.image.v1.ImageService/ListModels",
        "/genmesh.video.v1.VideoService/GenerateVideo",
        "/genmesh.agent.v1.AgentService/CreateCharacter",
        "/genmesh.training.v1.TrainingService/CreateTrainingJob",  # resume_job_id is not job_id
        "/genmesh.training.v1.TrainingService/ListTrainingJobs",
        "/genmesh.training.v1.TrainingService/ListModels",
        "/genmesh.training.v1.TrainingService/RestoreImage",
        "/genmesh.training.v1.TrainingService/GenerateSyntheticData",
        "/grpc.health.v1.Health/Check",
        "/genmesh.text.v1.TextService/NoSuchMethod",
        "/genmesh.nothing.v1.Nothing/GetJob",
        "",
        "garbage",
    ],
)
def test_other_rpcs_are_answered_locally(method: str) -> None:
    assert addresses_job(method) is False
