"""A real JupyterHub (proxy, managed sample gateway, local workbench spawner) end to end."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from demo.hub import HUB_CONFIG, HubProcess
from spawners.workbench import STATE_VERSION
from tests.fixtures.workbench import RunningHub

pytestmark = [pytest.mark.hub, pytest.mark.orthanc]


def wait_ready(hub: RunningHub, user: str, server: str = "", timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    with hub.api() as api:
        while time.monotonic() < deadline:
            model = api.get(f"users/{user}").json()
            entry = model["servers"].get(server)
            if entry and entry["ready"]:
                return entry
            time.sleep(0.3)
    raise AssertionError(f"server {user}/{server} not ready in {timeout} s:\n{hub.process.log_tail()}")


def stop(hub: RunningHub, user: str, server: str = "") -> None:
    with hub.api() as api:
        path = f"users/{user}/server" if not server else f"users/{user}/servers/{server}"
        api.delete(path, params={"remove": "true"} if server else None)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if server not in api.get(f"users/{user}").json()["servers"]:
                return
            time.sleep(0.3)


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_spawn_through_the_api_runs_a_real_server_for_the_project(hub: RunningHub) -> None:
    with hub.api() as api:
        api.post("users/anna")
        response = api.post("users/anna/server", json={"project": "magi", "profile": "cpu-large"})
        assert response.status_code in (201, 202), response.text
    entry = wait_ready(hub, "anna")
    assert entry["user_options"] == {"project": "magi", "profile": "cpu-large"}
    saved = entry["state"]["workbench"]
    assert (saved["project"], saved["profile"], saved["version"]) == ("magi", "cpu-large", STATE_VERSION)
    # The server answers through the proxy.
    status = httpx.get(f"{hub.url}/user/anna/api/status", headers={"Authorization": f"token {hub.token}"})
    assert status.status_code == 200 and "started" in status.json()
    # Its environment names project and profile, the gateway, the limits; no archive secret.
    env = environ_of(entry["state"]["pid"])
    assert env["WORKBENCH_PROJECT"] == "magi" and env["WORKBENCH_PROFILE"] == "cpu-large"
    assert env["WORKBENCH_GATEWAY_URL"] == f"{hub.url}/services/sample-gateway/"
    assert env["WORKBENCH_CPU_LIMIT"] == "2" and env["MEM_LIMIT"] == str(2 * 1024**3)
    assert env["WORKBENCH_DATASETS"] == "phantoms"
    assert not any("archive" in key.lower() or "orthanc" in value.lower() for key, value in env.items())
    credentials = (hub.files.data_dir / "secrets" / "archive-credentials").read_text().split(":")[1].strip()
    assert credentials not in "\0".join(env.values())
    # The workspace: project folder linked into the home, dataset linked, starter notebooks.
    home = hub.files.storage.home("anna")
    assert (home / "projects" / "magi").resolve() == hub.files.storage.project_dir("magi").resolve()
    assert (home / "datasets" / "phantoms" / "README.txt").exists()
    assert (home / "examples" / "01-sample-pull.ipynb").exists()
    assert hub.process.log_path.stat().st_mode & 0o077 == 0, "the hub's log is the hub's alone"
    # No false alarms in it for an admin to chase (a new user's trial found both).
    log = hub.process.log_path.read_text(errors="replace")
    assert "unhandled user_options" not in log and "No allow config found" not in log
    # A JupyterLab terminal is an interactive, not a login, shell (Debian's /etc/profile would
    # reset PATH) and finds the workbench's Python first: `python -m extensions.runs` works.
    terminal = httpx.post(f"{hub.url}/user/anna/api/terminals", headers={"Authorization": f"token {hub.token}"})
    assert terminal.status_code == 200, terminal.text
    shells = [p for p in psutil.Process(entry["state"]["pid"]).children(recursive=True)
              if Path(p.exe()).name in ("bash", "sh")]
    assert shells, "the terminal's shell runs under the server"
    assert not {"-l", "--login"} & set(shells[0].cmdline()), shells[0].cmdline()
    path = environ_of(shells[0].pid)["PATH"]
    assert Path(shutil.which("python", path=path)).parent == Path(sys.executable).parent, path
    stop(hub, "anna")


@pytest.mark.parametrize(
    ("user", "options", "message"),
    [
        ("bo", {"project": "magi"}, "You are not a member of a project called 'magi'. Your projects: kina."),
        ("carla", {"project": "oldproj"}, "The approval for project oldproj (TEST-3) expired on 2020-01-31"),
        ("bo", {"project": "kina", "profile": "cpu-large"}, "Project kina may not use the profile 'cpu-large'"),
        ("anna", {"project": "magi", "profile": "gpu-1"}, "needs 1 GPU(s); this workbench runs servers on one machine with 0"),
        ("anna", {"project": "magi", "image": "anything:latest"}, "Unknown server option(s): image"),
    ],
)
def test_api_spawn_refusals_are_clear_and_start_nothing(hub: RunningHub, user: str, options: dict, message: str) -> None:
    with hub.api() as api:
        api.post(f"users/{user}")
        response = api.post(f"users/{user}/server", json=options)
        assert response.status_code == 400, response.text
        assert message in response.json()["message"]
        model = api.get(f"users/{user}").json()
        assert model["servers"] == {} and model["pending"] is None


def test_named_servers_for_two_projects(hub: RunningHub) -> None:
    with hub.api() as api:
        api.post("users/anna")
        first = api.post("users/anna/servers/ct-work", json={"project": "magi", "profile": "cpu-small"})
        second = api.post("users/anna/servers/other", json={"project": "noarchive"})
        assert first.status_code in (201, 202) and second.status_code in (201, 202), (first.text, second.text)
    assert wait_ready(hub, "anna", "ct-work")["user_options"]["project"] == "magi"
    other = wait_ready(hub, "anna", "other")
    assert environ_of(other["state"]["pid"])["WORKBENCH_PROJECT"] == "noarchive"
    stop(hub, "anna", "ct-work")
    stop(hub, "anna", "other")


async def _events(client: httpx.AsyncClient, url: str, into: list[dict]) -> None:
    async with client.stream("GET", url) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                into.append(event)
                if event.get("ready") or event.get("failed"):
                    return


async def test_progress_events_are_replayed_to_late_listeners(hub: RunningHub) -> None:
    headers = {"Authorization": f"token {hub.token}"}
    api = f"{hub.url}/hub/api"
    async with httpx.AsyncClient(headers=headers, timeout=90) as client:
        await client.post(f"{api}/users/bo")
        spawn = asyncio.create_task(client.post(f"{api}/users/bo/server", json={"project": "kina"}))
        early: list[dict] = []
        late: list[dict] = []
        await asyncio.sleep(0.3)
        first = asyncio.create_task(_events(client, f"{api}/users/bo/server/progress", early))
        await asyncio.sleep(2.0)
        second = asyncio.create_task(_events(client, f"{api}/users/bo/server/progress", late))
        await asyncio.wait_for(asyncio.gather(first, second, spawn), 90)
    messages_late = [e.get("message", "") for e in late]
    assert any("Project kina: approval TEST-2 valid until 2099-12-31" in m for m in messages_late), messages_late
    assert any("Starting JupyterLab" in m for m in messages_late)
    assert late[-1].get("ready") is True
    progress = [e["progress"] for e in late if "progress" in e]
    assert progress == sorted(progress) and progress[-1] == 100
    stop(hub, "bo")


def test_gateway_service_needs_a_hub_token_with_access(hub: RunningHub) -> None:
    url = f"{hub.url}/services/sample-gateway/api/"
    assert httpx.get(url + "health").json() == {"status": "ok"}
    # The hub's minute-by-minute health check of its services hits the root: no 404s in the log.
    assert httpx.get(f"{hub.url}/services/sample-gateway/").json() == {"status": "ok"}
    anonymous = httpx.post(url + "search", json={"project": "magi"})
    assert anonymous.status_code == 401 and "no valid hub token" in anonymous.json()["error"]["message"]
    narrow = hub.user_token("anna", scopes=["read:users:name!user"])
    denied = httpx.post(url + "search", json={"project": "magi"}, headers={"Authorization": f"token {narrow}"})
    assert denied.status_code == 401
    anna = hub.user_token("anna", scopes=["access:services!service=sample-gateway"])
    found = httpx.post(url + "search", json={"project": "magi", "criteria": {"modality": "CT"}},
                       headers={"Authorization": f"token {anna}"}, timeout=30)
    assert found.status_code == 200, found.text
    assert {s["modalities"][0] for s in found.json()["studies"]} == {"CT"}
    bo = hub.user_token("bo", scopes=["access:services!service=sample-gateway"])
    other = httpx.post(url + "search", json={"project": "magi"}, headers={"Authorization": f"token {bo}"})
    assert other.status_code == 403 and other.json()["error"]["reason"] == "not_member"
    bad = httpx.post(url + "search", json={"project": "magi", "criteria": {"modality": "C T;"}},
                     headers={"Authorization": f"token {anna}"})
    assert bad.status_code == 422 and "modality" in bad.json()["error"]["message"]
    unnamed = httpx.get(url + "pulls", headers={"Authorization": f"token {anna}"})
    assert unnamed.status_code == 422 and "'project' is missing" in unnamed.json()["error"]["message"]
    listed = httpx.get(url + "pulls?project=magi", headers={"Authorization": f"token {anna}"})
    assert listed.status_code == 200 and "pulls" in listed.json()


def test_hub_refuses_to_start_with_an_invalid_configuration(tmp_path: Path) -> None:
    bad = tmp_path / "workbench.yaml"
    bad.write_text("profiles:\n  - {slug: s, name: S, cpu: 1, memory: 1G}\nprojects:\n  - id: x\n    title: X\n"
                   "    approval: {reference: R, expires: 2026-02-31}\n")
    env = dict(os.environ, WORKBENCH_CONFIG=str(bad), WORKBENCH_DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run(
        [str(Path(sys.executable).with_name("jupyterhub")), "-f", str(HUB_CONFIG)],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert f"{bad}:6: projects[0].approval.expires = '2026-02-31'" in result.stderr


def test_hub_restart_keeps_running_servers_and_their_project(hub: RunningHub) -> None:
    with hub.api() as api:
        api.post("users/bo")
        assert api.post("users/bo/server", json={"project": "kina"}).status_code in (201, 202)
    before = wait_ready(hub, "bo")
    hub.process.kill_hub_only()  # a crash: no clean-up runs
    hub.process.start(timeout=90)
    after = wait_ready(hub, "bo", timeout=30)
    assert after["state"]["pid"] == before["state"]["pid"]
    saved = after["state"]["workbench"]
    assert (saved["project"], saved["profile"]) == ("kina", "cpu-small")
    status = httpx.get(f"{hub.url}/user/bo/api/status", headers={"Authorization": f"token {hub.token}"})
    assert status.status_code == 200
    stop(hub, "bo")


def test_hub_without_an_archive_runs_without_the_gateway(tmp_path: Path) -> None:
    yaml_path = tmp_path / "workbench.yaml"
    yaml_path.write_text("profiles:\n  - {slug: s, name: S, cpu: 1, memory: 1G}\n")
    process = HubProcess(data_dir=tmp_path / "data", workbench_yaml=yaml_path)
    process.start(timeout=90)
    try:
        assert httpx.get(f"{process.url}/hub/api/").status_code == 200
        # No such service: the proxy has no route, so the hub answers (a redirect), not a gateway.
        assert httpx.get(f"{process.url}/services/sample-gateway/api/health").status_code in (302, 404)
    finally:
        process.stop()


def test_local_servers_run_unprivileged_and_cannot_read_the_hubs_secrets(hub: RunningHub) -> None:
    import pwd

    from spawners.local import _usable_server_account

    command = str(Path(sys.executable).with_name("jupyterhub-singleuser"))
    if not _usable_server_account("workbench", command, hub.files.data_dir):
        pytest.skip("servers run as the hub's user here: not root, no 'workbench' account, or this "
                    "environment's Python lives where that account cannot run it (scripts/setup "
                    "builds .venv from /usr/bin/python3 as root for that reason)")
    with hub.api() as api:
        api.post("users/anna")
        assert api.post("users/anna/server", json={"project": "magi"}).status_code in (201, 202)
    entry = wait_ready(hub, "anna")
    account = pwd.getpwnam("workbench")
    assert Path(f"/proc/{entry['state']['pid']}").stat().st_uid == account.pw_uid
    # Its root folder is anna's workbench home (not the account's nonexistent home, nor a temp dir).
    assert Path(f"/proc/{entry['state']['pid']}/cwd").resolve() == hub.files.storage.home("anna").resolve()

    def as_server(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", "workbench", "--", *command], capture_output=True, text=True)

    data = hub.files.data_dir
    assert as_server("cat", str(data / "secrets" / "archive-credentials")).returncode != 0
    assert as_server("ls", str(data / "gateway")).returncode != 0
    assert as_server("ls", str(data / "hub")).returncode != 0
    assert as_server("cat", str(hub.process.log_path)).returncode != 0  # everyone's logins
    # What the server needs stays reachable: its home, the project's workspace, samples.
    assert as_server("touch", str(hub.files.storage.home("anna") / "scratch.txt")).returncode == 0
    assert as_server("touch", str(hub.files.storage.project_dir("magi") / "shared.txt")).returncode == 0
    assert as_server("ls", str(hub.files.storage.samples_dir("magi"))).returncode == 0
    # Approved datasets are read-only for it; one whose approval lapsed is closed to it, and
    # the datasets folder cannot be listed.
    assert as_server("touch", str(data / "datasets" / "phantoms" / "new.txt")).returncode != 0
    assert as_server("ls", str(data / "datasets" / "phantoms")).returncode == 0
    assert as_server("ls", str(data / "datasets" / "old-scans")).returncode != 0
    assert as_server("ls", str(data / "datasets")).returncode != 0
    stop(hub, "anna")
