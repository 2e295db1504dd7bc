"""Stopping the workbench's hub ends everything it started, even when the hub is slow to."""

from __future__ import annotations

import time

import httpx
import psutil
import pytest

from tests.fixtures.workbench import WorkbenchFiles

pytestmark = [pytest.mark.hub, pytest.mark.orthanc]


def test_stop_leaves_no_proxy_server_or_kernel_behind(workbench_files: WorkbenchFiles, tmp_path) -> None:  # noqa: ANN001
    import secrets
    import textwrap

    from demo.hub import HubProcess

    token = secrets.token_hex(16)
    extra = tmp_path / "extra.py"
    extra.write_text(textwrap.dedent(f"""\
        c.JupyterHub.services.append({{"name": "stoptest", "api_token": {token!r}}})
        c.JupyterHub.load_roles.append({{"name": "stoptest", "services": ["stoptest"],
                                         "scopes": ["admin:users", "admin:servers", "read:users"]}})
        """))
    hub = HubProcess(data_dir=tmp_path / "data", workbench_yaml=workbench_files.yaml, extra_config=extra)
    (tmp_path / "data" / "secrets").mkdir(parents=True)
    (tmp_path / "data" / "secrets" / "archive-credentials").write_text(
        (workbench_files.data_dir / "secrets" / "archive-credentials").read_text())
    hub.start(timeout=90)
    api = httpx.Client(base_url=f"{hub.url}/hub/api/", headers={"Authorization": f"token {token}"}, timeout=60)
    for user, project in (("anna", "magi"), ("bo", "kina")):
        api.post(f"users/{user}")
        assert api.post(f"users/{user}/server", json={"project": project}).status_code in (201, 202)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
        (api.get(f"users/{u}").json()["servers"].get("") or {}).get("ready") for u in ("anna", "bo")
    ):
        time.sleep(0.3)
    started = psutil.Process(hub.process.pid).children(recursive=True)
    names = " ".join(" ".join(p.cmdline()) for p in started)
    assert "configurable-http-proxy" in names and names.count("jupyterhub-singleuser") == 2
    # A hub that cannot finish its clean-up in time (here: no time at all) still leaves nothing.
    hub.stop(timeout=0.5)
    time.sleep(0.5)
    left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], [" ".join(p.cmdline()) for p in left]


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_demo_started_in_the_background_gives_its_children_ctrl_c_back() -> None:
    """A script's background job inherits SIGINT ignored; the demo's hub and services did
    too, so each waited out the hub's stop timeouts (a new user timed 33-36 s to stop)."""
    import signal
    import subprocess
    import sys

    probe = ("import subprocess, sys; {setup}"
             "out = subprocess.run(['grep', 'SigIgn', '/proc/self/status'], capture_output=True, text=True);"
             "print(int(out.stdout.split()[1], 16) & 2)")

    def ignored_in_child(setup: str) -> bool:
        result = subprocess.run([sys.executable, "-c", probe.format(setup=setup)], capture_output=True,
                                text=True, check=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        return result.stdout.strip() != "0"

    assert ignored_in_child("")  # the control: ignored SIGINT is inherited
    assert not ignored_in_child("from demo.run import _stop_on_signals; _stop_on_signals();")
