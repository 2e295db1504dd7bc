"""Command-line tools end quietly when their reader goes away (``tool | head``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LISTING = textwrap.dedent("""
    import sys
    from hub_config.console import run_tool

    def main() -> int:
        for n in range(200_000):
            print(f"row {n}")
        return 0

    sys.exit(run_tool(main))
""")


def piped_to_head(script: str) -> tuple[int, str, bytes]:
    tool = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-n", "1"], stdin=tool.stdout, capture_output=True, check=True)
    assert tool.stdout is not None
    tool.stdout.close()
    _, err = tool.communicate(timeout=60)
    return tool.returncode, head.stdout.decode(), err


def test_a_closed_pipe_ends_the_tool_without_a_traceback() -> None:
    status, first, err = piped_to_head(LISTING)
    assert first == "row 0\n"
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err
    assert status == 141


def test_without_run_tool_python_prints_a_traceback() -> None:
    """The case run_tool exists for (if Python ever stops doing this, the wrapper can go)."""
    status, _, err = piped_to_head(LISTING.replace("sys.exit(run_tool(main))", "sys.exit(main())"))
    assert b"BrokenPipeError" in err and status != 0


def test_the_status_of_main_is_kept() -> None:
    done = subprocess.run([sys.executable, "-c", "import sys; from hub_config.console import run_tool; "
                           "sys.exit(run_tool(lambda: 3))"], cwd=ROOT, capture_output=True)
    assert done.returncode == 3 and done.stderr == b""
