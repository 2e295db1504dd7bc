"""The Nomad spawn benchmark still runs (tiny sizes; the figures come from the full run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_smoke() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "nomad_spawn.py"),
            "--spawns",
            "2",
            "--concurrent",
            "3",
            "--poll-interval",
            "0.2",
            "--validate",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "ratio baseline/ours (median)" in result.stdout
    assert "spawner overhead (ms)" in result.stdout
    assert "API mismatches" not in result.stdout
