"""How the workbench's command-line tools end when their reader goes away.

``python -m services.quota.cli report | head`` closes the pipe early; Python would then print
a BrokenPipeError traceback (and another at exit, flushing stdout). Tools listing data end
quietly instead, with the status a shell gives a process killed by SIGPIPE.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

SIGPIPE_STATUS = 141


def run_tool(main: Callable[[], int]) -> int:
    """``main()``'s status; a closed stdout ends the tool quietly instead of with a traceback."""
    try:
        status = main()
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's own flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return SIGPIPE_STATUS
