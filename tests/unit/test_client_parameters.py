"""A library output's parameters as people read them: the REST shape (proto JSON in a Struct: an
int64 seed is a string, every number a double) typed again from the descriptors of the RPC that
made the output, and `genmesh outputs`' name=value line."""

from __future__ import annotations

from google.protobuf import struct_pb2

import genmesh.client  # noqa: F401  (loads every service's descriptors)
from genmesh.cli.jobs import parameter_text
from genmesh.client.parameters import parameters_type, typed_parameters


def struct(values: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def test_integers_of_the_parameters_message_come_back_as_numbers_in_its_order() -> None:
    image = struct({
        "seed": "18446744073709551615", "steps": 4.0, "guidance_scale": 7.0, "prompt": "42", "model": "tiny",
        "init_image": {"bucket": "outputs", "key": "a/b.png"}, "loras": [{"name": "ink", "weight": 0.5}],
    })  # fmt: skip
    typed = typed_parameters("genmesh.image.v1.ImageService/GenerateImage", image)
    assert typed["seed"] == 18446744073709551615 and typed["steps"] == 4 and isinstance(typed["steps"], int)
    assert typed["guidance_scale"] == 7.0 and isinstance(typed["guidance_scale"], float)  # a float field stays one
    assert typed["prompt"] == "42"  # a string field stays a string, whatever it holds
    assert list(typed)[:3] == ["model", "prompt", "steps"]  # as ImageParameters declares them
    character = typed_parameters("genmesh.agent.v1.AgentService/CreateCharacter", {"seed": "7", "steps": 4.0})
    assert character == {"seed": 7, "steps": 4}
    # Text's sampling is nested; its model and seed are added beside the message's fields.
    chat = typed_parameters(
        "genmesh.text.v1.TextService/Chat", {"seed": 3.0, "sampling": {"seed": "3", "max_tokens": 8.0}}
    )
    assert chat == {"seed": 3, "sampling": {"seed": 3, "max_tokens": 8}}
    assert parameters_type("genmesh.video.v1.VideoService/GenerateVideo").name == "VideoParameters"
    assert parameters_type("no.such.Service/Nope") is None
    assert typed_parameters("no.such.Service/Nope", {"a": 2.0, "b": "3"}) == {"a": 2, "b": "3"}


def test_the_cli_line_shows_name_value_pairs_and_leaves_empty_ones_out() -> None:
    shown = {"model": "tiny", "prompt": "a dot", "negative_prompt": "", "seed": 1, "loras": [], "hires": True}
    line = parameter_text({**shown, "init_image": {"bucket": "o", "key": "k"}})
    assert line == 'model=tiny prompt="a dot" seed=1 hires=true init_image={"bucket":"o","key":"k"}'
    assert parameter_text({"prompt": "x" * 300}, width=20) == "prompt=" + "x" * 12 + "…"
