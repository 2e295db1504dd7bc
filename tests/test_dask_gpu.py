"""The GPU paths' logic on a CPU machine: devices, LocalCUDACluster options, array dispatch."""

from __future__ import annotations

import sys

import dask.array as da
import numpy as np
import pytest

from extensions.compute import gpu
from extensions.compute.gpu import GpuOptions, GpuUnavailable
from extensions.compute.sizing import Allocation, GiB


@pytest.mark.parametrize(("env", "count", "devices"), [
    ({"CUDA_VISIBLE_DEVICES": "2,3"}, 8, ["2", "3"]),
    ({"CUDA_VISIBLE_DEVICES": "GPU-5f1c,GPU-77aa"}, None, ["GPU-5f1c", "GPU-77aa"]),
    ({"CUDA_VISIBLE_DEVICES": ""}, 4, []),
    ({"NVIDIA_VISIBLE_DEVICES": "all"}, 2, ["0", "1"]),
    ({"NVIDIA_VISIBLE_DEVICES": "none"}, 2, []),
    ({"NVIDIA_VISIBLE_DEVICES": "1"}, 2, ["1"]),
    ({}, 3, ["0", "1", "2"]),
    ({}, None, []),
])
def test_visible_devices(env: dict[str, str], count: int | None, devices: list[str]) -> None:
    assert gpu.visible_devices(env, device_count=count) == devices


def test_one_worker_per_allowed_gpu_with_a_share_of_host_memory_and_cpus() -> None:
    allocation = Allocation(8.0, 32 * GiB, 2, {"gpus": "profile"})
    kwargs = gpu.cuda_cluster_kwargs(allocation, ["0", "1", "2", "3"])
    reserve = int(32 * GiB * 0.15)
    assert kwargs == {
        "CUDA_VISIBLE_DEVICES": "0,1",  # the profile allows 2 of the 4 visible
        "n_workers": 2,
        "threads_per_worker": 4,
        "memory_limit": (32 * GiB - reserve) // 2,
        "dashboard_address": "127.0.0.1:0",
    }


def test_pool_and_spilling_options_are_passed_through() -> None:
    options = GpuOptions(rmm_pool_size="24GB", rmm_managed_memory=True, device_memory_limit=0.8,
                         protocol="ucx")
    kwargs = gpu.cuda_cluster_kwargs(Allocation(4.0, 16 * GiB, 1), ["0"], options)
    assert kwargs["rmm_pool_size"] == "24GB" and kwargs["rmm_managed_memory"] is True
    assert kwargs["device_memory_limit"] == 0.8 and kwargs["protocol"] == "ucx"
    assert "rmm_async" not in kwargs and "enable_cudf_spill" not in kwargs
    assert gpu.worker_cli_args(options) == [
        "--rmm-pool-size", "24GB", "--device-memory-limit", "0.8", "--protocol", "ucx", "--rmm-managed-memory"]
    assert gpu.worker_cli_args(GpuOptions(rmm_async=True, enable_cudf_spill=True)) == [
        "--rmm-async", "--enable-cudf-spill"]


def test_contradictory_options_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        GpuOptions(rmm_async=True, rmm_pool_size="10GB")
    with pytest.raises(ValueError, match="enable_cudf_spill replaces"):
        GpuOptions(enable_cudf_spill=True, device_memory_limit="10GB")


def test_no_gpu_in_the_share_is_an_explained_error() -> None:
    with pytest.raises(GpuUnavailable, match="0 GPU"):
        gpu.cuda_cluster_kwargs(Allocation(4.0, 8 * GiB, 0, {"gpus": "profile"}), ["0"])
    with pytest.raises(GpuUnavailable, match="0 device"):
        gpu.cuda_cluster_kwargs(Allocation(4.0, 8 * GiB, 1), [])


def test_dask_cuda_is_imported_only_when_a_gpu_cluster_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    import extensions.compute  # noqa: F401 - the whole package
    from extensions.compute import cluster, nomad  # noqa: F401

    assert "dask_cuda" not in sys.modules and "cupy" not in sys.modules
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # as on a CPU install
    with pytest.raises(GpuUnavailable, match=r"'gpu' extra"):
        gpu.make_cuda_cluster({"n_workers": 1})


def test_array_helpers_dispatch_on_numpy_without_cupy() -> None:
    image = np.arange(25, dtype=np.float32).reshape(5, 5)
    assert gpu.array_module(image) is np
    assert gpu.ndimage_module(image).__name__ == "scipy.ndimage"
    assert gpu.to_device(image, "cpu") is image
    lazy = da.from_array(image, chunks=(5, 5))
    moved = gpu.to_device(lazy, "cpu")
    assert isinstance(moved, da.Array) and np.array_equal(moved.compute(), image)
    with pytest.raises(ValueError, match="'cpu' or 'gpu'"):
        gpu.to_device(image, "tpu")


def test_device_count_is_zero_without_a_driver() -> None:
    assert gpu.device_count() >= 0
