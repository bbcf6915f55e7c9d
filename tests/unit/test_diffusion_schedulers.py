"""The scheduler table: every name builds from both families' configs and is recognised back;
unknown or unavailable names answer InvalidArgument naming `scheduler`."""

from __future__ import annotations

import importlib.util
import json

import pytest

from genmesh.errors import InvalidArgument
from servers.diffusion.configs import bundled_config_dir
from servers.diffusion.schedulers import SCHEDULER_NAMES, SCHEDULERS, make_scheduler, scheduler_label, scheduler_name

PROTO_NAMES = {
    "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_2m_sde", "dpmpp_2m_sde_karras", "dpmpp_sde",
    "dpmpp_sde_karras", "ddim", "unipc", "lms", "lms_karras", "pndm", "heun", "deis",
}  # fmt: skip


def base_config(family: str) -> dict:
    return json.loads((bundled_config_dir(family) / "scheduler" / "scheduler_config.json").read_text())


def available(name: str) -> bool:
    needs = SCHEDULERS[name].needs
    return needs is None or importlib.util.find_spec(needs) is not None


def test_the_table_covers_the_proto_enum() -> None:
    assert set(SCHEDULER_NAMES) == PROTO_NAMES


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_each_name_builds_and_is_recognised(family: str, name: str) -> None:
    if not available(name):
        pytest.skip(f"{SCHEDULERS[name].needs} not installed (covered by the unavailable test)")
    scheduler = make_scheduler(name, base_config(family), seeds=[1, 2])
    assert type(scheduler).__name__ == SCHEDULERS[name].class_name
    scheduler.set_timesteps(4)
    assert scheduler_name(scheduler) == name
    assert scheduler.config.beta_schedule == "scaled_linear"  # the model's own training schedule is kept


def test_karras_does_not_leak_into_plain_variants() -> None:
    karras = make_scheduler("dpmpp_2m_sde_karras", base_config("sd15"))
    plain = make_scheduler("dpmpp_2m", karras.config)
    assert plain.config.use_karras_sigmas is False and plain.config.algorithm_type == "dpmsolver++"
    assert scheduler_name(plain) == "dpmpp_2m"


def test_labels_are_a1111_names() -> None:
    assert scheduler_label("euler_a") == "Euler a" and scheduler_label("dpmpp_2m_karras") == "DPM++ 2M Karras"


def test_unknown_name_lists_the_allowed_ones() -> None:
    with pytest.raises(InvalidArgument) as error:
        make_scheduler("k_dpm_2", base_config("sd15"))
    assert error.value.field == "scheduler"
    assert "dpmpp_2m_karras" in str(error.value) and "euler_a" in str(error.value)


def test_missing_optional_dependency_is_invalid_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    import diffusers

    class Placeholder:  # what diffusers exports when a backend such as torchsde is missing
        @classmethod
        def from_config(cls, *args, **kwargs):
            raise ImportError("DPMSolverSDEScheduler requires the torchsde library")

    monkeypatch.setattr(diffusers, "DPMSolverSDEScheduler", Placeholder)
    with pytest.raises(InvalidArgument) as error:
        make_scheduler("dpmpp_sde", base_config("sd15"))
    assert error.value.field == "scheduler" and "torchsde" in str(error.value)
