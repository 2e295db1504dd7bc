"""Teaching sessions through the real hub: the student's server, teacher and student scopes,
the end of the window (the managed reconciler), logins outside the window."""

from __future__ import annotations

import os
import re
import time

import httpx
import pytest

from tests.fixtures.workbench import RunningHub
from tests.test_hub import environ_of, stop, wait_ready

pytestmark = [pytest.mark.hub, pytest.mark.orthanc]


def log_in(hub: RunningHub, user: str) -> httpx.Response:
    with httpx.Client(base_url=hub.url, timeout=30) as client:
        client.get("/hub/login")
        return client.post("/hub/login", data={"username": user, "password": hub.passwords["user"],
                                               "_xsrf": client.cookies.get("_xsrf", "")})


def spawn(hub: RunningHub, user: str, options: dict | None = None) -> dict:
    with hub.api() as api:
        api.post(f"users/{user}")
        response = api.post(f"users/{user}/server", json=options or {})
        running = response.status_code == 400 and "already running" in response.text
        assert response.status_code in (201, 202) or running, response.text
    return wait_ready(hub, user)


def test_student_server_runs_for_the_session_with_the_course(hub: RunningHub) -> None:
    entry = spawn(hub, "sam")  # no options: the student's one choice is the session
    assert entry["user_options"] == {"project": "course", "profile": "cpu-small"}
    env = environ_of(entry["state"]["pid"])
    assert env["WORKBENCH_SESSION"] == env["WORKBENCH_PROJECT"] == "course"
    assert env["WORKBENCH_DATASETS"] == "phantoms"
    home = hub.files.storage.home("sam")
    assert (home / "course" / "01-welcome.ipynb").exists() and not (home / "projects").exists()
    token = {"Authorization": f"token {hub.token}"}
    landing = httpx.get(f"{hub.url}/user/sam/", headers=token, timeout=30)
    assert landing.status_code == 302
    assert landing.headers["Location"].split("?")[0].endswith("/user/sam/lab/tree/course/01-welcome.ipynb")
    with hub.api() as api:
        assert sorted(api.get("groups/teaching-course").json()["users"]) == ["sam", "sara", "sofie"]


def test_teacher_reaches_students_servers_students_do_not(hub: RunningHub) -> None:
    spawn(hub, "sam")
    spawn(hub, "anna", {"project": "magi", "profile": "cpu-small"})
    tina = {"Authorization": f"token {hub.user_token('tina')}"}
    sara = {"Authorization": f"token {hub.user_token('sara')}"}
    api = f"{hub.url}/hub/api"
    with httpx.Client(timeout=30) as client:
        # Inside the student's server: the teacher yes, another student no.
        assert client.get(f"{hub.url}/user/sam/api/status", headers=tina).status_code == 200
        assert client.get(f"{hub.url}/user/sam/api/status", headers=sara).status_code == 403
        # Outside the session's group: nothing for the teacher either.
        assert client.get(f"{hub.url}/user/anna/api/status", headers=tina).status_code == 403
        # The hub's API, limited to the group.
        assert client.get(f"{api}/users/sam", headers=tina).status_code == 200
        assert client.get(f"{api}/users/sam", headers=sara).status_code == 404
        assert client.get(f"{api}/users/anna", headers=tina).status_code == 404
        assert client.delete(f"{api}/users/anna/server", headers=tina).status_code in (403, 404)
        # The teacher can stop a student's server (and start it again).
        assert client.delete(f"{api}/users/sam/server", headers=tina).status_code in (202, 204)
    stop(hub, "anna")


def _set_session_end(yaml_path: os.PathLike, session: str, ends: str) -> str:
    text = open(yaml_path).read()
    block = re.compile(rf"(  - id: {session}\n(?:    .*\n)*?    ends: )([^\n]+)")
    edited, count = block.subn(lambda m: m.group(1) + ends, text)
    assert count == 1
    tmp = f"{yaml_path}.tmp"
    with open(tmp, "w") as handle:
        handle.write(edited)
    os.replace(tmp, yaml_path)  # readers see the old file or the new one, never half
    return text


def test_end_of_the_window_stops_servers_and_ends_access(hub: RunningHub) -> None:
    assert log_in(hub, "una").status_code == 302
    spawn(hub, "una")
    with hub.api() as api:
        assert api.get("groups/teaching-ending").json()["users"] == ["una"]
    original = _set_session_end(hub.files.yaml, "ending", "2001-01-01T00:00")
    try:
        deadline = time.monotonic() + 30
        with hub.api() as api:
            while time.monotonic() < deadline:
                model = api.get("users/una").json()
                members = api.get("groups/teaching-ending").json()["users"]
                if not model["servers"] and members == []:
                    break
                time.sleep(0.5)
            assert model["servers"] == {} and members == [], (model, members, hub.process.log_tail())
            refused = api.post("users/una/server", json={})
            assert refused.status_code == 400 and "ended on 2001-01-01" in refused.json()["message"]
        assert log_in(hub, "una").status_code == 403
    finally:
        with open(hub.files.yaml, "w") as handle:
            handle.write(original)


def test_no_login_or_server_before_the_window(hub: RunningHub) -> None:
    response = log_in(hub, "vic")
    assert response.status_code == 403
    with hub.api() as api:
        api.post("users/vic")
        refused = api.post("users/vic/server", json={})
        assert refused.status_code == 400
        assert "runs from 2098-01-05 08:00 CET" in refused.json()["message"]
    assert log_in(hub, "tom").status_code == 302  # its teacher may come in to prepare
