"""A call that needs a service the agent lacks, or one that does not answer, is UNAVAILABLE naming it."""

from __future__ import annotations

import pytest

from genmesh import errors
from servers.agent.settings import AgentSettings
from servers.agent.upstreams import Upstreams
from servers.mesh.processes import free_port
from servers.runtime.settings import parse_settings


def test_missing_and_silent_services_are_unavailable_by_name() -> None:
    port = free_port()  # nothing listens there
    upstreams = Upstreams({"text": f"127.0.0.1:{port}"})
    try:
        with pytest.raises(errors.Unavailable, match=r"the image service is not configured.*GENMESH_AGENT_IMAGE_URL"):
            upstreams.require_configured(["text", "image"])
        upstreams.require_configured(["text"])
        with pytest.raises(errors.Unavailable, match=r"the video service is not configured"):
            upstreams.require_serving("video")
        with pytest.raises(errors.Unavailable, match=rf"the text service at 127.0.0.1:{port} is not available"):
            upstreams.require_serving("text")
        assert upstreams.not_serving() == {"text": "no answer: UNAVAILABLE"}
    finally:
        upstreams.close()


def test_settings_name_the_services_by_flag_and_environment() -> None:
    settings = parse_settings(
        AgentSettings, ["--text-url", "127.0.0.1:1"], {"GENMESH_AGENT_VIDEO_URL": " 10.0.0.2:50053 "}
    )
    assert settings.upstream_urls() == {"text": "127.0.0.1:1", "video": "10.0.0.2:50053"}
    assert settings.port == 50055 and settings.keep_alive_seconds is None
    assert parse_settings(AgentSettings, [], {"GENMESH_AGENT_KEEP_ALIVE_SECONDS": "0"}).keep_alive_seconds == 0
