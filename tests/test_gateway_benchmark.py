"""The gateway benchmark still runs (one repeat, no DIMSE; the figures come from the full
run): it drives the gateway's internals (the pipeline it patches for the "files prepared"
row, the workers it profiles) and broke silently once when those moved."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("dicognito") is None,
                    reason="dicognito (the naive baseline) is not installed: pip install -e '.[test]'")
def test_gateway_benchmark_smoke() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gateway_pull.py"), "--repeat", "1",
         "--workers", "0", "2", "--no-dimse", "--profile"],
        check=False, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    out = result.stdout
    issue_study, full_size = out.split("\nfull-size ", 1)
    for section in (issue_study, full_size):
        for row in ("gateway workers=0", "gateway workers=2", "pull, files prepared"):
            assert re.search(rf"{row}\s+[\d.]+ s\s+\d+ files/s\s+\d+% of the REST ceiling", section), row
        assert re.search(r"ceiling REST, stored\s+[\d.]+ s", section)
        assert re.search(r"share of the REST download written and synced .*: gateway workers=0 \d+%", section)
    assert "50 slices of 512x512 CT" in full_size and "26.3 MB" in full_size
    assert re.search(r"full-size: de-identification alone, .* series memo \d+ files/s .* dicognito \d+", out)
    assert "70 % of the REST ceiling is" in out and "cine gateway: WADO-RS retrieval" in out
    assert re.search(r"ratio gateway, series memo / dicognito: [\d.]+x", out)
    assert "event loop thread:" in out and "de-identification thread:" in out
    assert "full-size event loop thread:" in out


def test_commit_beside_writer_benchmark_smoke() -> None:
    """The commit benchmark runs and reports both conditions (it swaps the gateway's
    SYNCFS_OTHERS_LIMIT; a rename there would break it silently otherwise)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gateway_commit_beside_writer.py"), "--repeat", "1",
         "--other-mb", "40"],
        check=False, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    for condition in ("quiet disk:", "beside 40 MB unwritten:"):
        section = result.stdout.split(condition, 1)[1]
        assert re.search(r"the gateway's choice\s+[\d.]+ ms", section)
        assert re.search(r"ratio syncfs always / the gateway's choice: [\d.]+", section)
