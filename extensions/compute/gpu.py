"""GPU servers: LocalCUDACluster options and array helpers that also run without a GPU.

``dask-cuda`` and ``cupy`` are in the ``gpu`` extra only (dask-cuda pins dask through
``rapids-dask-dependency``): nothing here imports them at module level. The decisions (which
devices, how many workers, pool and spilling settings) are pure functions of the environment
and the server's :class:`~.sizing.Allocation`, so CPU-only tests cover them; only
:func:`make_cuda_cluster` and :func:`array_module` touch the GPU libraries, at call time.

Devices: ``CUDA_VISIBLE_DEVICES`` when the container runtime or Nomad's device plugin set it
(``NVIDIA_VISIBLE_DEVICES`` otherwise, "all"/"none" understood), capped at the profile's GPU
count. One worker per device, as dask-cuda intends; each gets an equal share of the server's
host memory and CPU threads.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .sizing import Allocation, MiB

_NONE = {"", "none", "void", "nodevfiles"}


class GpuUnavailable(RuntimeError):
    """A GPU cluster was asked for where it cannot run; the message says what is missing."""


@dataclass(frozen=True)
class GpuOptions:
    """Memory-pool and spilling options of a LocalCUDACluster (``None`` leaves dask-cuda's default).

    ``rmm_pool_size`` pre-allocates GPU memory per worker ("24GB" or a fraction such as 0.9),
    ``rmm_managed_memory`` lets the pool oversubscribe device memory, ``rmm_async`` uses CUDA's
    async allocator. ``device_memory_limit`` is where a worker starts spilling device memory
    to host ("default", "auto", 0.8, "30GB"; 0 turns spilling off); ``enable_cudf_spill``
    uses cuDF's own spilling instead (better for dataframes). ``protocol`` "ucx" uses
    NVLink/InfiniBand when distributed-ucxx is installed.
    """

    rmm_pool_size: str | float | None = None
    rmm_maximum_pool_size: str | float | None = None
    rmm_managed_memory: bool = False
    rmm_async: bool = False
    device_memory_limit: str | float | int | None = None
    enable_cudf_spill: bool = False
    protocol: str | None = None
    local_directory: str | None = None

    def __post_init__(self) -> None:
        if self.rmm_async and self.rmm_pool_size is not None:
            raise ValueError("rmm_async and rmm_pool_size exclude each other: choose one allocator")
        if self.enable_cudf_spill and self.device_memory_limit not in (None, 0):
            raise ValueError(
                "enable_cudf_spill replaces dask-cuda's device spilling: leave device_memory_limit unset"
            )


def _device_list(value: str) -> list[str] | None:
    text = value.strip()
    if text.lower() in _NONE:
        return []
    if text.lower() == "all":
        return None  # every device on the machine: count them another way
    return [part.strip() for part in text.split(",") if part.strip()]


def visible_devices(env: Mapping[str, str], *, device_count: int | None = None) -> list[str]:
    """Ids of the GPUs this process may use, in order.

    ``device_count`` is what the driver reports (NVML); it is only used when the environment
    says "all" or nothing at all.
    """
    for key in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        if key in env:
            devices = _device_list(env[key])
            if devices is not None:
                return devices
            break
    return [str(i) for i in range(device_count or 0)]


def cuda_cluster_kwargs(
    allocation: Allocation,
    devices: list[str],
    options: GpuOptions = GpuOptions(),
    *,
    dashboard_address: str = "127.0.0.1:0",
) -> dict[str, Any]:
    """Keyword arguments of ``dask_cuda.LocalCUDACluster`` for this server (pure).

    One worker per device, never more devices than the allocation's GPUs.
    """
    usable = devices[: allocation.gpus] if allocation.gpus else []
    if not usable:
        raise GpuUnavailable(
            f"no GPU to use: the server's share has {allocation.gpus} GPU(s) "
            f"({allocation.why.get('gpus', '?')}) and {len(devices)} device(s) are visible"
        )
    workers = len(usable)
    threads = max(1, math.floor(allocation.cpus / workers))
    reserve = min(max(int(allocation.memory * 0.15), 512 * MiB), allocation.memory // 2)
    kwargs: dict[str, Any] = {
        "CUDA_VISIBLE_DEVICES": ",".join(usable),
        "n_workers": workers,
        "threads_per_worker": threads,
        "memory_limit": (allocation.memory - reserve) // workers,
        "dashboard_address": dashboard_address,
    }
    for name in ("rmm_pool_size", "rmm_maximum_pool_size", "device_memory_limit", "protocol",
                 "local_directory"):
        value = getattr(options, name)
        if value is not None:
            kwargs[name] = value
    for name in ("rmm_managed_memory", "rmm_async", "enable_cudf_spill"):
        if getattr(options, name):
            kwargs[name] = True
    return kwargs


def worker_cli_args(options: GpuOptions) -> list[str]:
    """The same options for ``dask cuda worker`` (GPU workers placed by Nomad)."""
    args: list[str] = []
    for name in ("rmm_pool_size", "rmm_maximum_pool_size", "device_memory_limit", "protocol"):
        value = getattr(options, name)
        if value is not None:
            args += ["--" + name.replace("_", "-"), str(value)]
    if options.rmm_managed_memory:
        args.append("--rmm-managed-memory")
    if options.rmm_async:
        args.append("--rmm-async")
    if options.enable_cudf_spill:
        args.append("--enable-cudf-spill")
    return args


def _import(name: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise GpuUnavailable(
            f"{purpose} needs the '{name}' package, which is in the workbench's 'gpu' extra "
            f"(pip install 'research-workbench[gpu]'): {exc}"
        ) from None


def make_cuda_cluster(kwargs: Mapping[str, Any], **extra: Any) -> Any:
    """``LocalCUDACluster(**kwargs)``, imported only now."""
    dask_cuda = _import("dask_cuda", "A GPU cluster")
    return dask_cuda.LocalCUDACluster(**{**kwargs, **extra})


def device_count() -> int:
    """GPUs the driver reports (0 without a driver or without NVML bindings)."""
    try:
        pynvml = importlib.import_module("pynvml")
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, no library, no device: all mean 0
        return 0


# Arrays on either device ---------------------------------------------------------------------
def array_module(array: Any) -> ModuleType:
    """``cupy`` for a CuPy array, ``numpy`` otherwise (without importing cupy for numpy data)."""
    if type(array).__module__.split(".")[0] == "cupy":
        return importlib.import_module("cupy")
    return importlib.import_module("numpy")


def ndimage_module(array: Any) -> ModuleType:
    """``cupyx.scipy.ndimage`` for CuPy arrays, ``scipy.ndimage`` otherwise."""
    if type(array).__module__.split(".")[0] == "cupy":
        return importlib.import_module("cupyx.scipy.ndimage")
    return importlib.import_module("scipy.ndimage")


def to_device(array: Any, device: str) -> Any:
    """Move a NumPy/CuPy (or dask) array to "gpu" or "cpu"; dask arrays stay lazy."""
    if device not in {"cpu", "gpu"}:
        raise ValueError(f"device must be 'cpu' or 'gpu', not {device!r}")
    if hasattr(array, "map_blocks") and hasattr(array, "dask"):
        return array.map_blocks(to_device, device, dtype=array.dtype)
    if device == "gpu":
        return _import("cupy", "Moving data to the GPU").asarray(array)
    if type(array).__module__.split(".")[0] == "cupy":
        return array.get()
    return array
