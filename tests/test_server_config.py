"""What every workbench server loads from ``extensions/busy_activity_config`` (JUPYTER_CONFIG_PATH)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from extensions import busy_activity

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json
from jupyter_server.serverapp import ServerApp
app = ServerApp()
app.load_config_file()
print(json.dumps({"terminado": app.terminado_settings,
                  "extensions": app.config.ServerApp.get("jpserver_extensions", {})}))
"""


def server_config(tmp_path: Path) -> dict:
    env = dict(os.environ, JUPYTER_CONFIG_PATH=str(busy_activity.jupyter_config_dir()),
               JUPYTER_CONFIG_DIR=str(tmp_path / "user-config"))
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True,
                          text=True, check=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_terminals_are_interactive_shells_not_login_shells(tmp_path: Path) -> None:
    """A login shell runs /etc/profile, which resets PATH on Debian: `python` would then not be
    the workbench's Python in a JupyterLab terminal (`python -m extensions.runs` fails)."""
    shell = server_config(tmp_path)["terminado"].get("shell_command")
    assert shell and "-l" not in shell and "--login" not in shell, shell


def test_busy_activity_extension_is_switched_on() -> None:
    switches = busy_activity.jupyter_config_dir() / "jupyter_server_config.d"
    enabled = {}
    for path in switches.glob("*.json"):
        enabled.update(json.loads(path.read_text())["ServerApp"]["jpserver_extensions"])
    assert enabled.get("extensions.busy_activity") is True
