import sys

from hub_config.console import run_tool

from .cli import main

sys.exit(run_tool(main))
