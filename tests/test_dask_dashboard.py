"""The Dask dashboard of a server's cluster opens through the hub, behind its login.

A real hub spawns dan's server; a process with that server's environment (what its kernel
sees) calls ``get_cluster()``; the dashboard link Dask builds from the spawner's
``DASK_DISTRIBUTED__DASHBOARD__LINK`` is ``/user/dan/proxy/PORT/status``, and Chromium logged
in as dan sees the live dashboard there, while a browser without a login is sent to the hub.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.workbench import RunningHub
from tests.test_hub import environ_of, stop, wait_ready

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.orthanc]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
USER = "dan"

KERNEL = """\
import json, sys
from extensions.compute import get_cluster
cluster = get_cluster(n_workers=1)
print(json.dumps({"link": cluster.dashboard_link, "kind": type(cluster).__name__}), flush=True)
sys.stdin.read()  # until the test closes stdin
cluster.close()
"""


@pytest.fixture
def server_kernel(hub: RunningHub) -> Iterator[dict[str, str]]:
    with hub.api() as api:
        api.post(f"users/{USER}")
        answer = api.post(f"users/{USER}/server", json={"project": "noarchive", "profile": "cpu-small"})
        assert answer.status_code in (201, 202), answer.text
    entry = wait_ready(hub, USER)
    env = environ_of(entry["state"]["pid"])
    process = subprocess.Popen([sys.executable, "-c", KERNEL], env=env, cwd=ROOT, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, f"the kernel stand-in failed (exit {process.poll()})"
        yield {**json.loads(line), "prefix": env["JUPYTERHUB_SERVICE_PREFIX"]}
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=60)
        stop(hub, USER)


def test_dashboard_through_the_hub(new_page, hub: RunningHub, server_kernel: dict[str, str]) -> None:
    link = server_kernel["link"]
    assert server_kernel["kind"] == "LocalCluster"
    assert re.fullmatch(rf"/user/{USER}/proxy/\d+/status", link), link
    assert server_kernel["prefix"] == f"/user/{USER}/"

    # Without a login the proxied dashboard is not reachable: the hub asks for one.
    anonymous = httpx.get(hub.url + link, follow_redirects=False, timeout=30)
    assert anonymous.status_code in (302, 303), anonymous.status_code
    assert "/hub/login" in anonymous.headers["location"] or "/hub/api/oauth2" in anonymous.headers["location"]

    page = new_page
    page.goto(f"{hub.url}/hub/login?next={link}")
    page.fill("#username_input", USER)
    page.fill("#password_input", hub.passwords["user"])
    page.click("#login_submit")
    page.wait_for_url(re.compile(re.escape(link)), timeout=60_000)
    # Bokeh renders the dashboard's plots; the page title and a plot element prove it is live.
    page.wait_for_function("document.title.includes('Dask')", timeout=60_000)
    page.wait_for_selector(".bk-Canvas, .bk-root, .bk-Figure, canvas", state="attached", timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dask-dashboard-through-hub.png"))
    # The dashboard's own JSON endpoints answer through the proxy too (what the labextension reads).
    answer = page.request.get(f"{hub.url}/user/{USER}/proxy/{link.split('/')[4]}/json/identity.json")
    assert answer.ok and answer.json()["type"] == "Scheduler"
