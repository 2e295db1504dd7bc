"""A real JupyterHub with NomadSpawner against the Nomad double, driven through the REST API.

The hub, the proxy (configurable-http-proxy) and the orphan reconciler service run as
processes; single-user servers are real ``jupyterhub-singleuser`` processes started by the
double as ``raw_exec`` tasks. Checked here: a REST spawn reaches a server that answers
through the proxy with the token it got from the Nomad Variable; the progress stream
carries Nomad's steps; a placement failure comes back with its reason; after a hub restart
the running server is kept and a job the hub does not know is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hub_config.model import Profile, Project
from spawners.nomad import objects
from tests.nomad_double import NomadDouble
from tests.nomad_double.fixtures import cluster_nodes

pytestmark = pytest.mark.hub

ROOT = Path(__file__).resolve().parent.parent
CHP = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
SINGLEUSER = Path(sys.executable).with_name("jupyterhub-singleuser")
ADMIN_TOKEN = "test-admin-token-" + "0" * 24

WORKBENCH = """\
profiles:
  - {slug: cpu-small, name: Small CPU, cpu: 1, memory: 1G}
  - slug: h100
    name: One H100
    cpu: 4
    memory: 8G
    gpus: 1
    nomad: {gpu: {model: NVIDIA H100 80GB HBM3}}
projects:
  - id: magi
    title: MAGI
    members: [anna, bo, cy]
    approval: {reference: R-1, expires: 2030-01-01}
"""

CONFIG = """\
import sys
from spawners.nomad.orphans import service_config

c = get_config()  # noqa: F821
c.JupyterHub.bind_url = "http://127.0.0.1:{public_port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.pid_file = {pid_file!r}
c.JupyterHub.db_url = "sqlite:///{db}"
c.JupyterHub.cookie_secret_file = {cookie!r}
c.JupyterHub.cleanup_servers = False
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}  # POST answers 202 at once
c.JupyterHub.allow_named_servers = True
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True

c.JupyterHub.spawner_class = "spawners.nomad.spawner.NomadSpawner"
c.NomadSpawner.nomad_address = {nomad!r}
c.NomadSpawner.driver = "raw_exec"
c.NomadSpawner.cmd = [{singleuser!r}]
c.NomadSpawner.args = {args!r}
c.NomadSpawner.workbench_config_file = {workbench!r}
c.NomadSpawner.data_dir = {data!r}
c.NomadSpawner.start_timeout = 120
c.NomadSpawner.http_timeout = 120

orphans, orphans_role = service_config(
    hub_id="jupyterhub", job_prefix="jupyter", namespaces=["default"], interval_s=1,
    grace_s=1, environment={{"NOMAD_ADDR": {nomad!r}}},
)
c.JupyterHub.services = [
    {{"name": "test-admin", "api_token": {token!r}}},
    orphans,
]
c.JupyterHub.load_roles = [
    {{
        "name": "test-admin",
        "scopes": ["admin:users", "admin:servers", "access:servers", "read:users"],
        "services": ["test-admin"],
    }},
    orphans_role,
]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Hub:
    directory: Path
    config: Path
    public_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url + "/hub/api",
            headers={"Authorization": f"token {ADMIN_TOKEN}"},
            timeout=30,
        )

    def start(self) -> None:
        log = open(self.directory / "hub.log", "ab")  # noqa: SIM115 - the child writes to it
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("jupyterhub")), "-f", str(self.config)],
            cwd=self.directory,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("hub exited:\n" + self.log_tail())
            try:
                answer = httpx.get(self.url + "/hub/api/", timeout=2)
                if answer.status_code == 200 and "version" in answer.json():
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError("hub not ready:\n" + self.log_tail())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def log_tail(self, lines: int = 60) -> str:
        path = self.directory / "hub.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def nomad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NomadDouble]:
    if not CHP.exists() or not SINGLEUSER.exists():
        pytest.skip("configurable-http-proxy or jupyterhub-singleuser is not installed")
    root = tmp_path_factory.mktemp("nomad")
    with NomadDouble(cluster_nodes(root)) as double:
        yield double
        assert double.violations == []


def hub_for(directory: Path, nomad: NomadDouble, workbench_yaml: str = WORKBENCH, extra: str = "") -> Hub:
    """A hub (not started) in ``directory`` on the Nomad double; ``extra``: more config lines."""
    workbench = directory / "workbench.yaml"
    workbench.write_text(workbench_yaml)
    config = directory / "jupyterhub_config.py"
    public_port = free_port()
    config.write_text(
        CONFIG.format(
            public_port=public_port,
            hub_port=free_port(),
            proxy_port=free_port(),
            chp=str(CHP),
            pid_file=str(directory / "proxy.pid"),
            db=directory / "hub.sqlite",
            cookie=str(directory / "cookie_secret"),
            nomad=nomad.address,
            singleuser=str(SINGLEUSER),
            args=["--allow-root"] if os.geteuid() == 0 else [],
            workbench=str(workbench),
            data=str(directory / "data"),
            token=ADMIN_TOKEN,
        )
        + extra
    )
    return Hub(directory, config, public_port)


@pytest.fixture(scope="module")
def hub(nomad: NomadDouble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    directory = tmp_path_factory.mktemp("hub")
    running = hub_for(directory, nomad)
    running.start()
    yield running
    running.stop()
    shutil.rmtree(directory / "data", ignore_errors=True)


def progress_events(hub: Hub, user: str, timeout: float = 120) -> list[dict]:
    events = []
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream(
            "GET",
            f"{hub.url}/hub/api/users/{user}/server/progress",
            headers={"Authorization": f"token {ADMIN_TOKEN}"},
        ) as stream,
    ):
        for line in stream.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                events.append(event)
                if event.get("ready") or event.get("failed"):
                    break
    return events


def wait_ready(hub: Hub, user: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    with hub.api as api:
        while time.monotonic() < deadline:
            model = api.get(f"/users/{user}").json()
            server = (model.get("servers") or {}).get("")
            if server and server.get("ready"):
                return server
            time.sleep(0.5)
    raise TimeoutError(f"{user}'s server not ready:\n{hub.log_tail()}")


def spawn(hub: Hub, user: str, profile: str) -> httpx.Response:
    with hub.api as api:
        api.post(f"/users/{user}")
        return api.post(f"/users/{user}/server", json={"project": "magi", "profile": profile})


def test_rest_spawn_reaches_a_real_server_through_the_proxy(hub: Hub, nomad: NomadDouble) -> None:
    answer = spawn(hub, "anna", "cpu-small")
    assert answer.status_code in (201, 202), answer.text
    events = progress_events(hub, "anna")
    messages = [e["message"] for e in events]
    assert "Submitted to Nomad as job jupyter--anna (default)" in messages
    assert "Nomad placed the server on node cpu-1" in messages
    assert events[-1]["ready"] is True, hub.log_tail()
    wait_ready(hub, "anna")
    # the single-user server checks this token with the hub, using the hub API token it got
    # from the Nomad Variable (not from the job's Env)
    status = httpx.get(
        f"{hub.url}/user/anna/api/status",
        headers={"Authorization": f"token {ADMIN_TOKEN}"},
        timeout=30,
    )
    assert status.status_code == 200, status.text
    job = nomad.job("jupyter--anna")
    assert "JUPYTERHUB_API_TOKEN" not in job["TaskGroups"][0]["Tasks"][0]["Env"]
    assert nomad.variable("nomad/jobs/jupyter--anna") is not None


def test_placement_failure_reaches_the_user(hub: Hub) -> None:
    answer = spawn(hub, "cy", "h100")
    if answer.status_code >= 400:
        message = answer.json()["message"]
    else:
        # 202: the spawn goes on; on a loaded machine the progress stream may not be open
        # yet at the first try (the hub answers 400 "not starting" then), so look again.
        events: list[dict] = []
        for _ in range(10):
            events = progress_events(hub, "cy")
            if events:
                break
            time.sleep(0.5)
        assert events, "a 202 answer means the failure must show in the progress stream"
        message = events[-1]["message"]
    assert "No node can start the profile 'One H100' right now" in message
    assert "have no GPU of the kind this profile asks for" in message
    assert "placement failed" not in message  # the log's details stay in the log


def test_hub_restart_keeps_servers_and_removes_orphans(hub: Hub, nomad: NomadDouble) -> None:
    if nomad.job("jupyter--anna") is None:
        spawn(hub, "anna", "cpu-small")
    wait_ready(hub, "anna")
    hub.stop()
    # while the hub is down, a job appears that no hub server owns (e.g. a crash mid-start)
    project = Project.model_validate(
        {"id": "magi", "title": "MAGI", "approval": {"reference": "R", "expires": "2030-01-01"}}
    )
    profile = Profile.model_validate({"slug": "cpu-small", "name": "S", "cpu": 1, "memory": "1G"})
    ghost = objects.build_job(
        objects.ServerSpec("ghost", "", project, profile, (), {}, "/user/ghost/"),
        objects.JobSettings(driver="raw_exec", command=("/bin/sleep", "600")),
    )
    httpx.post(f"{nomad.address}/v1/jobs", json={"Job": ghost}).raise_for_status()
    time.sleep(1.5)  # older than the reconciler's grace
    hub.start()
    deadline = time.monotonic() + 30
    while nomad.job("jupyter--ghost") is not None and time.monotonic() < deadline:
        time.sleep(0.3)
    assert nomad.job("jupyter--ghost") is None, hub.log_tail()
    assert "orphan removed: job jupyter--ghost of ghost/(default)" in hub.log_tail(400)
    assert nomad.job("jupyter--anna")["Status"] == "running"
    status = httpx.get(
        f"{hub.url}/user/anna/api/status",
        headers={"Authorization": f"token {ADMIN_TOKEN}"},
        timeout=30,
    )
    assert status.status_code == 200, hub.log_tail()
    with hub.api as api:
        api.delete("/users/anna/server")

    def stopped() -> bool:  # dead, or already purged (by the stop or the orphan reconciler)
        job = nomad.job("jupyter--anna")
        return job is None or job["Status"] == "dead"

    deadline = time.monotonic() + 30
    while not stopped() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert stopped()
