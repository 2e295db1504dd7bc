"""The Dask notebooks run top to bottom with papermill, on a one-worker cluster sized from the env."""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from demo.archive import DemoArchive
from extensions.vcf import open_vcf, shipped_example, variant_stats
from tests.fixtures.notebook_output import shown_text

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def workbench_kernel() -> str:
    if "workbench" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("the 'workbench' kernelspec is not installed: run scripts/setup")
    return "workbench"


@pytest.fixture
def small_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a one-core profile's server sees (the cluster sizes itself from it)."""
    monkeypatch.setenv("WORKBENCH_CPU_LIMIT", "1")
    monkeypatch.setenv("WORKBENCH_MEM_LIMIT", "1G")
    monkeypatch.setenv("WORKBENCH_GPUS", "0")


def _outputs(path: Path) -> tuple[str, list[dict]]:
    executed = nbformat.read(path, as_version=4)
    outputs = [out for cell in executed.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    text = shown_text(executed)
    return text, outputs


def test_imaging_notebook(workbench_kernel: str, small_server: None, demo_archive: DemoArchive,
                          tmp_path: Path) -> None:
    series = (demo_archive.root / demo_archive.benchmark_series()[0].path).parent
    ARTIFACTS.mkdir(exist_ok=True)
    output = ARTIFACTS / "02-imaging-dask.executed.ipynb"
    papermill.execute_notebook(NOTEBOOKS / "02-imaging-dask.ipynb", output, kernel_name=workbench_kernel,
                               parameters={"series_dir": str(series), "sigma": 1.0}, cwd=str(tmp_path),
                               progress_bar=False)
    text, outputs = _outputs(output)
    assert "local cluster" in text and "1 CPU (profile)" in text
    assert "('z', 'y', 'x') (50, 128, 128) HU" in text
    assert "50 slices" in text
    assert "parallel and sequential per-slice means agree: True" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the slices were plotted"


def test_genomics_notebook(workbench_kernel: str, small_server: None, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    output = ARTIFACTS / "03-genomics-dask.executed.ipynb"
    papermill.execute_notebook(NOTEBOOKS / "03-genomics-dask.ipynb", output, kernel_name=workbench_kernel,
                               parameters={"chunk_variants": 3}, cwd=str(tmp_path), progress_bar=False)
    text, outputs = _outputs(output)
    assert "9 variants x 3 samples, ploidy 2, 3 dask blocks" in text
    assert "variants with missing calls: 2" in text
    assert "0.333, 0.667" in text  # 20:1110696 G>A,T: matches the file's own AF=0.333,0.667
    assert any("image/png" in o.get("data", {}) for o in outputs)


# The loader itself, on both VCFs the package ships -------------------------------------------
def test_vcf_in_sgkit_layout_with_fill_and_missing() -> None:
    ds = open_vcf(shipped_example(), chunk_variants=4)
    assert ds.attrs["vcf_chunks"] == 3 and ds.attrs["contigs"] == ["19", "20", "X"]
    gt = ds.call_genotype.values
    assert gt[-1].tolist() == [[0, -2], [0, 1], [0, 2]]  # X:10, a haploid call padded with fill
    assert gt[6, 2].tolist() == [-1, -1]  # ./.
    assert ds.call_genotype_phased.values[2].tolist() == [True, True, False]
    assert ds.variant_allele.values[-1].tolist() == ["AC", "A", "ATG", "C"]
    assert list(ds.sample_id.values) == ["NA00001", "NA00002", "NA00003"]
    stats = variant_stats(ds).compute()
    assert np.allclose(stats.variant_allele_frequency.values[-1], [0.6, 0.2, 0.2, 0.0])  # 5 called alleles
    assert stats.variant_missingness.values.tolist() == pytest.approx([0] * 6 + [1 / 3, 1 / 3, 0])


def test_vcf_chunks_do_not_change_the_answer() -> None:
    path = shipped_example("test32.vcf")
    one = variant_stats(open_vcf(path, chunk_variants=100)).compute()
    many = variant_stats(open_vcf(path, chunk_variants=2)).compute()
    assert one.sizes == {"variants": 11, "alleles": 3}
    assert np.allclose(one.variant_allele_frequency, many.variant_allele_frequency, equal_nan=True)
    assert np.allclose(one.variant_missingness, many.variant_missingness)
