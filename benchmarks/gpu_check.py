"""GPU check for a lent GPU machine: the GPU paths of extensions.compute, end to end, short.

Needs the ``gpu`` extra (``pip install -e '.[gpu]'``: dask-cuda, cupy). Steps, each reported
as ok/failed with its figure, and written as JSON to ``$OUT/gpu_check.json`` when ``$OUT`` is set:

1. devices: what NVML reports and what ``visible_devices`` makes of the environment;
2. plan: ``get_cluster`` with a one-GPU profile's environment chooses a LocalCUDACluster;
3. cupy: the per-slice Gaussian filter and stats of a synthetic volume on the GPU agree with
   the CPU (``scipy.ndimage``) to float32 precision; timings of both;
4. cluster: ``get_cluster()`` starts a LocalCUDACluster (one worker per GPU, RMM pool and
   spilling options passed), runs the filter on CuPy blocks on the workers, closes.

    .venv/bin/python benchmarks/gpu_check.py [--slices 64 --size 512]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from extensions.compute import gpu, plan
from extensions.compute.sizing import GiB, Limits

RESULTS: dict[str, dict[str, object]] = {}


def step(name: str):
    def wrap(fn):
        start = time.perf_counter()
        try:
            detail = fn() or {}
            RESULTS[name] = {"ok": True, "seconds": round(time.perf_counter() - start, 3), **detail}
        except Exception as exc:  # noqa: BLE001 - report every step, go on with the next
            RESULTS[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                             "trace": traceback.format_exc(limit=4)}
        print(f"{name}: {json.dumps(RESULTS[name], default=str)[:600]}", flush=True)
        return fn

    return wrap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 100, size=(args.slices, args.size, args.size)).astype(np.float32)

    @step("devices")
    def _devices() -> dict[str, object]:
        count = gpu.device_count()
        return {"nvml_devices": count, "visible": gpu.visible_devices(os.environ, device_count=count),
                "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}

    @step("plan")
    def _plan() -> dict[str, object]:
        env = {**os.environ, "WORKBENCH_CPU_LIMIT": "4", "WORKBENCH_MEM_LIMIT": "16G", "WORKBENCH_GPUS": "1"}
        chosen = plan(environ=env, limits=[Limits("profile", 4.0, 16 * GiB, 1)])
        assert chosen.kind == "cuda", str(chosen)
        return {"plan": str(chosen), "kwargs": dict(chosen.kwargs)}

    @step("cupy_filter_matches_cpu")
    def _cupy() -> dict[str, object]:
        from extensions.imaging import _block_stats, _smooth_block

        cupy = gpu._import("cupy", "The GPU check")
        start = time.perf_counter()
        cpu_out, cpu_stats = _smooth_block(volume, 2.0), _block_stats(volume)
        cpu_s = time.perf_counter() - start
        device = gpu.to_device(volume, "gpu")
        _smooth_block(device, 2.0)
        cupy.cuda.Device().synchronize()
        start = time.perf_counter()
        gpu_out, gpu_stats = _smooth_block(device, 2.0), _block_stats(device)
        cupy.cuda.Device().synchronize()
        gpu_s = time.perf_counter() - start
        assert gpu.array_module(gpu_out) is cupy
        assert np.allclose(gpu.to_device(gpu_out, "cpu"), cpu_out, atol=1e-3)
        assert np.allclose(gpu.to_device(gpu_stats, "cpu"), cpu_stats, rtol=1e-4, atol=1e-3)
        return {"cpu_s": round(cpu_s, 4), "gpu_s": round(gpu_s, 4), "speedup": round(cpu_s / gpu_s, 1),
                "shape": list(volume.shape)}

    @step("local_cuda_cluster")
    def _cluster() -> dict[str, object]:
        import dask.array as da
        import xarray as xr
        from distributed import Client

        from extensions.compute import get_cluster
        from extensions.compute.gpu import GpuOptions
        from extensions.imaging import smooth_slices

        start = time.perf_counter()
        cluster = get_cluster("cuda", gpu_options=GpuOptions(rmm_pool_size="2GB", device_memory_limit=0.8),
                              environ={**os.environ, "WORKBENCH_GPUS": str(max(1, gpu.device_count()))})
        started = time.perf_counter() - start
        try:
            with Client(cluster) as client:
                workers = len(client.scheduler_info()["workers"])
                lazy = xr.DataArray(gpu.to_device(da.from_array(volume, chunks=(8, -1, -1)), "gpu"),
                                    dims=("z", "y", "x"), name="volume")
                start = time.perf_counter()
                total = float(smooth_slices(lazy, 2.0).sum().compute())
                compute_s = time.perf_counter() - start
                kinds = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        finally:
            cluster.close()
        assert abs(total - float(gpu.ndimage_module(volume).gaussian_filter(
            volume, sigma=(0, 2.0, 2.0)).sum())) < abs(total) * 1e-3 + 1
        return {"cluster": type(cluster).__name__, "workers": workers, "start_s": round(started, 2),
                "compute_s": round(compute_s, 3), "worker_devices": kinds}

    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_check.json").write_text(json.dumps(RESULTS, indent=2, default=str))
    failed = [name for name, result in RESULTS.items() if not result["ok"]]
    print("GPU check:", "all steps ok" if not failed else f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
