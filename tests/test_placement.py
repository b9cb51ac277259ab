"""The placement policy decides from plain data: no cluster needed."""
from __future__ import annotations

import pytest

from trainflow.distributors.placement import NodeResources
from trainflow.distributors.placement import Placement, ScalingRequest, decide_placement
from trainflow.distributors.torch_device import backend_for, device_for
from trainflow.errors import ConfigError, ResourceError

ONE_NODE = [NodeResources("a", cpus=8, gpus=0)]
TWO_NODES = [NodeResources("a", cpus=8, gpus=0), NodeResources("b", cpus=4, gpus=0)]
GPU_NODES = [NodeResources("a", cpus=16, gpus=4), NodeResources("b", cpus=16, gpus=4)]


@pytest.mark.parametrize(
    "request_, nodes, expected",
    [
        (ScalingRequest(), ONE_NODE, Placement(1, 8, False)),  # one worker with every core
        (ScalingRequest(), TWO_NODES, Placement(2, 4, False)),  # one per node, the smaller node's CPUs
        (ScalingRequest(num_workers=2), ONE_NODE, Placement(2, 4, False)),
        (ScalingRequest(num_workers=3, num_cpu_per_worker=2), ONE_NODE, Placement(3, 2, False)),
        (ScalingRequest(), GPU_NODES, Placement(8, 4, True)),  # one worker per GPU
        (ScalingRequest(use_gpu=False), GPU_NODES, Placement(2, 16, False)),
        (ScalingRequest(num_workers=2, use_gpu=True), GPU_NODES, Placement(2, 4, True)),
    ],
)
def test_decisions(request_, nodes, expected):
    assert decide_placement(request_, nodes) == expected


@pytest.mark.parametrize(
    "request_, nodes, error, match",
    [
        (ScalingRequest(use_gpu=True), ONE_NODE, ResourceError, "no GPUs"),
        (ScalingRequest(num_workers=9, use_gpu=True), GPU_NODES, ResourceError, "needs 9 GPUs"),
        (ScalingRequest(num_workers=5, num_cpu_per_worker=4), TWO_NODES, ResourceError, "Cannot place 5"),
        (ScalingRequest(num_cpu_per_worker=16), TWO_NODES, ResourceError, "16 CPU"),
        (ScalingRequest(num_workers=0), ONE_NODE, ConfigError, "num_workers=0"),
        (ScalingRequest(num_cpu_per_worker=-3), ONE_NODE, ConfigError, "num_cpu_per_worker=-3"),
        (ScalingRequest(use_gpu="yes"), ONE_NODE, ConfigError, "use_gpu"),
        (ScalingRequest(), [], ResourceError, "no alive nodes"),
    ],
)
def test_refusals_name_the_problem(request_, nodes, error, match):
    with pytest.raises(error, match=match):
        decide_placement(request_, nodes)


def test_gpu_placement_ray_config_requests_one_gpu_per_worker():
    config = Placement(2, 3, True).ray_scaling_config()
    assert config.num_workers == 2 and config.use_gpu
    assert config.resources_per_worker == {"CPU": 3, "GPU": 1}


# ----------------------------------------------------------------- PyTorch device/backend (no cluster)
@pytest.mark.parametrize(
    "gpus, backend", [(0, "gloo"), (0.5, "gloo"), (1, "nccl"), (2, "nccl")],
    ids=["cpu", "shared-gpu", "one-gpu", "two-gpus"],
)
def test_gpu_torch_backend(gpus, backend):
    assert backend_for(gpus) == backend


@pytest.mark.parametrize(
    "gpu_ids, visible, device",
    [([], None, "cpu"), (["1"], "0,1", "cuda:1"), ([0], "0,1", "cuda:0"), (["3"], "3", "cuda:0"),
     (["2"], None, "cuda:2")],
    ids=["no-gpu", "second-of-two", "int-id", "only-own-visible", "visibility-unset"],
)
def test_gpu_torch_device_is_local_index_of_own_gpu(gpu_ids, visible, device):
    assert str(device_for(gpu_ids, visible)) == device
