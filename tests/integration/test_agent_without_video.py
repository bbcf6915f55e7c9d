"""An agent whose Video server is down: it still starts and answers (overall health SERVING), its
AgentService health says NOT_SERVING until the video address answers, and a character call fails at the
video stage with UNAVAILABLE naming the service, keeping the sheet and portrait it made first."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from genmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from servers.mesh.launcher import Mesh
from servers.mesh.processes import ManagedProcess, free_port, wait_until
from storage.object_store import ObjectStore

pytestmark = pytest.mark.integration

AGENT_SERVICE = "genmesh.agent.v1.AgentService"
VIDEO_SERVICE = "genmesh.video.v1.VideoService"


def health_of(channel: grpc.Channel, service: str) -> int:
    try:
        return (
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
        )
    except grpc.RpcError:
        return -1


@pytest.fixture(scope="module")
def video_port() -> int:
    return free_port()  # nothing listens there until a test says so


@pytest.fixture(scope="module")
def agent(mesh: Mesh, video_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    port = free_port()
    argv = [
        sys.executable, "-m", "servers", "agent", "--port", str(port), "--health-poll-seconds", "0.2",
        f"--text-url=127.0.0.1:{mesh.server_ports['text']}", f"--image-url=127.0.0.1:{mesh.server_ports['image']}",
        f"--video-url=127.0.0.1:{video_port}",
    ]  # fmt: skip
    log_path = tmp_path_factory.mktemp("agent-without-video") / "agent.log"
    process = ManagedProcess("agent-without-video", argv, log_path=log_path, env=mesh.service_env()).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        wait_until(
            lambda: health_of(channel, "") == health_pb2.HealthCheckResponse.SERVING,
            timeout=120,
            what="the agent to start",
            process=process,
        )
        yield channel
    finally:
        channel.close()
        process.stop()


def test_a_down_video_server_fails_the_video_stage_by_name_and_keeps_the_earlier_stages(
    agent: grpc.Channel, video_port: int, object_store: ObjectStore
) -> None:
    request = agent_pb2.CreateCharacterRequest(
        idea="a beekeeper on the moon", seed=11, steps=2, image=agent_pb2.ImageStageOptions(width=64, height=64)
    )
    events = []
    with pytest.raises(grpc.RpcError) as status:  # the error event, then the same error as the call's status
        for event in agent_pb2_grpc.AgentServiceStub(agent).CreateCharacter(request, timeout=600):
            events.append(event)
    assert status.value.code() == grpc.StatusCode.UNAVAILABLE and "video" in status.value.details()
    error = events[-1].error
    assert error.code == "UNAVAILABLE" and error.stage == agent_pb2.STAGE_VIDEO, error
    assert f"the video service at 127.0.0.1:{video_port} is not available" in error.message
    assert "video stage failed" in error.message
    assert [stage.stage for stage in error.completed_stages] == [agent_pb2.STAGE_TEXT, agent_pb2.STAGE_IMAGE]
    for stage in error.completed_stages:
        assert object_store.exists("outputs", stage.artifact.key)


def test_the_agent_service_health_follows_its_upstreams(agent: grpc.Channel, video_port: int) -> None:
    assert health_of(agent, "") == health_pb2.HealthCheckResponse.SERVING
    assert health_of(agent, AGENT_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    # Something answers SERVING for the Video service at its address: the agent's status follows.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set(VIDEO_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{video_port}")
    server.start()
    try:
        wait_until(
            lambda: health_of(agent, AGENT_SERVICE) == health_pb2.HealthCheckResponse.SERVING,
            timeout=30,
            what="the agent's health to follow the video server",
        )
        servicer.set(VIDEO_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)  # e.g. draining
        wait_until(
            lambda: health_of(agent, AGENT_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING,
            timeout=30,
            what="the agent's health to see the video server drain",
        )
    finally:
        server.stop(grace=0)
