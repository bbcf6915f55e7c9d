"""Whether `genmesh up`'s model servers share one GPU (then the agent asks them to unload after each stage)."""

from __future__ import annotations

from pathlib import Path

from servers.mesh.gpus import gpu_visible, share_one_gpu


def test_a_gpu_is_visible_when_its_device_node_exists_and_nothing_hides_it(tmp_path: Path) -> None:
    node = tmp_path / "kfd"
    assert not gpu_visible({}, (node,))
    node.touch()
    assert gpu_visible({}, (node,))
    assert gpu_visible({"CUDA_VISIBLE_DEVICES": "0"}, (node,))
    for hidden in ({"CUDA_VISIBLE_DEVICES": ""}, {"HIP_VISIBLE_DEVICES": "-1"}, {"GENMESH_DEVICE": " CPU "}):
        assert not gpu_visible(hidden, (node,)), hidden


def test_two_model_services_on_a_visible_gpu_share_it(tmp_path: Path) -> None:
    node = tmp_path / "nvidia0"
    node.touch()
    assert share_one_gpu(("text", "image", "video", "agent"), {}, (node,))
    assert share_one_gpu(["image", "video"], {}, (node,))
    assert not share_one_gpu(("image", "training", "agent"), {}, (node,))  # one model service
    assert not share_one_gpu(("text", "image", "video"), {}, (tmp_path / "none",))  # CPU only
