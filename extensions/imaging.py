"""Per-slice statistics and filters of a dask-backed volume, on CPU or GPU alike.

The volume comes from :func:`extensions.loading.open_series` with ``chunks=`` (one dask task
per slice read). Everything here works block by block (``map_blocks``), so a Dask cluster
computes slices in parallel, and dispatches on the block's array type: NumPy blocks use
``scipy.ndimage``, CuPy blocks (after ``extensions.compute.gpu.to_device(volume.data,
"gpu")``) use ``cupyx.scipy.ndimage`` with the same code.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from extensions.compute.gpu import array_module, ndimage_module

STATS = ("min", "max", "mean", "std", "p01", "p99")


def _block_stats(block: Any) -> Any:
    xp = array_module(block)
    flat = block.reshape(block.shape[0], -1).astype(xp.float64)
    p01, p99 = xp.percentile(flat, [1, 99], axis=1)
    out = xp.stack([flat.min(axis=1), flat.max(axis=1), flat.mean(axis=1), flat.std(axis=1), p01, p99], axis=1)
    return out


def slice_stats(volume: xr.DataArray, dim: str | None = None) -> xr.DataArray:
    """min, max, mean, std and 1st/99th percentiles of every slice along ``dim`` (lazy).

    The in-plane dims must be in one chunk each (``open_series(chunks=...)`` does that).
    """
    dim = dim or volume.dims[0]
    data = volume.transpose(dim, ...).data
    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=(1, *data.shape[1:]))
    data = data.rechunk({i: -1 for i in range(1, data.ndim)})
    stats = data.map_blocks(
        _block_stats, dtype=np.float64, chunks=(data.chunks[0], (len(STATS),)),
        drop_axis=list(range(2, data.ndim)), new_axis=None,
    )
    return xr.DataArray(stats, dims=(dim, "stat"), coords={dim: volume[dim], "stat": list(STATS)},
                        name="slice_stats", attrs={"units": volume.attrs.get("units", "")})


def _smooth_block(block: Any, sigma: float) -> Any:
    ndimage = ndimage_module(block)
    # Filter each slice on its own (sigma 0 across slices): slices stay independent tasks.
    return ndimage.gaussian_filter(block.astype("float32"), sigma=(0,) + (sigma,) * (block.ndim - 1))


def smooth_slices(volume: xr.DataArray, sigma: float = 1.5) -> xr.DataArray:
    """Gaussian filter of every slice in its plane (lazy; one task per chunk of slices)."""
    data = volume.data
    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=(1, *data.shape[1:]))
    data = data.rechunk({i: -1 for i in range(1, data.ndim)})
    filtered = data.map_blocks(_smooth_block, sigma, dtype=np.float32)
    return volume.copy(data=filtered).rename(f"{volume.name or 'volume'}_smoothed")


def sequential_job(paths: list[str], sigma: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """The same job with plain pydicom + NumPy, one slice after the other (the baseline).

    Returns (stats per slice, smoothed volume) in file order.
    """
    import pydicom
    from scipy import ndimage

    stats, smoothed = [], []
    for path in paths:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
            getattr(ds, "RescaleIntercept", 0) or 0)
        stats.append(_block_stats(pixels[None])[0])
        smoothed.append(ndimage.gaussian_filter(pixels, sigma=sigma))
    return np.stack(stats), np.stack(smoothed)
