"""Teachers against the research side (finding of an adversarial test).

A teacher held ``servers!group=teaching-<id>`` and so could start any server of a student in
the group: ``POST /hub/api/users/erik/servers/spy {"project": "magi"}`` by teacher tina
started a server of erik's research project, charged to magi's quota with magi's datasets
mounted. Now a teacher starts the session's server only (the spawner's check), and a student
with research access is kept out of the session's group altogether, because stopping and
opening servers cannot be narrowed per server by JupyterHub's scopes.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import types
from pathlib import Path

import httpx
import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.scopes import Scope
from jupyterhub.spawner import SpawnException
from jupyterhub.utils import maybe_future

from services.teaching import rules
from services.teaching.reconciler import Action, plan, warn_once
from spawners.selection import SelectionRefused, resolve_selection_for
from tests.test_quota_spawner import FakeServerSpawner
from tests.test_teaching import BEFORE, CONFIG, DURING, TEXT, TODAY

# Pure rule ---------------------------------------------------------------------------------------
# In CONFIG, ada is a member of project alpha and a student of intro (taught by tina); sam is a
# student of intro and of gitcourse (taught by tom).


def test_teacher_starts_the_session_server_not_the_students_project() -> None:
    with pytest.raises(SelectionRefused) as caught:
        resolve_selection_for(CONFIG, "ada", "tina", {"project": "alpha"}, TODAY, now=DURING)
    assert caught.value.reason == "not_owner"
    assert "alpha" not in caught.value.message  # the student's projects are not revealed
    assert "only for a teaching session that tina teaches and ada attends (intro)" in caught.value.message
    assert resolve_selection_for(CONFIG, "ada", "tina", {}, TODAY, now=DURING).session.id == "intro"
    chosen = resolve_selection_for(CONFIG, "ada", "tina", {"project": "intro"}, TODAY, now=DURING)
    assert (chosen.project.id, chosen.profile.slug) == ("intro", "small")


@pytest.mark.parametrize(
    ("owner", "requester", "options", "now", "reason"),
    [
        ("ada", "tina", {"project": "intro", "profile": "big"}, DURING, "profile_not_allowed"),
        ("sam", "tina", {"project": "gitcourse"}, DURING, "not_owner"),  # tom's session
        ("sam", "tom", {"project": "intro"}, DURING, "not_owner"),
        ("sam", "tina", {}, BEFORE, "session_closed"),  # the student's window applies
        ("tina", "sam", {"project": "intro"}, DURING, "not_owner"),  # not the other way round
        ("ada", "", {"project": "alpha"}, DURING, "not_owner"),  # nobody known
    ],
)
def test_teacher_start_refusals(owner: str, requester: str, options: dict, now: dt.datetime,
                                reason: str) -> None:
    with pytest.raises(SelectionRefused) as caught:
        resolve_selection_for(CONFIG, owner, requester, options, TODAY, now=now)
    assert caught.value.reason == reason


# The spawner's pre-spawn check, with the requesting handler as JupyterHub passes it ----------------
def _handler(name: str, scopes: dict, kind: str = "user") -> types.SimpleNamespace:
    return types.SimpleNamespace(current_user=types.SimpleNamespace(name=name, kind=kind),
                                 parsed_scopes=scopes)


TEACHER = {"start:servers": {"group": {"teaching-intro"}}, "servers": {"group": {"teaching-intro"}}}


def _spawner(tmp_path: Path, owner: str, handler: object) -> FakeServerSpawner:
    (tmp_path / "wb.yaml").write_text(TEXT)
    spawner = FakeServerSpawner(
        user=types.SimpleNamespace(name=owner, url=f"/user/{owner}/", escaped_name=owner, id=1),
        hub=Hub(), orm_spawner=orm.Spawner(name="spy"), workbench_config_file=str(tmp_path / "wb.yaml"),
        quota_db_url="",
    )
    spawner.now = lambda: DURING
    spawner.today = lambda: TODAY
    spawner.handler = handler
    return spawner


async def _pre_spawn(spawner: FakeServerSpawner, options: dict) -> None:
    spawner.user_options = options
    await maybe_future(spawner.run_pre_spawn_hook())


async def test_spawner_refuses_a_teacher_starting_a_research_server(tmp_path: Path) -> None:
    spawner = _spawner(tmp_path, "ada", _handler("tina", TEACHER))
    with pytest.raises(SpawnException) as caught:
        await _pre_spawn(spawner, {"project": "alpha"})
    assert caught.value.status_code == 403 and caught.value.reason == "not_owner"
    assert "tina may start ada's servers only for a teaching session" in caught.value.jupyterhub_message
    await _pre_spawn(spawner, {})
    assert spawner.user_options == {"project": "intro", "profile": "small"}


@pytest.mark.parametrize(
    "handler",
    [None,  # a start with no request behind it
     _handler("ada", {}),  # the owner, by cookie or by token alike
     _handler("root", {"start:servers": Scope.ALL}),  # an admin
     _handler("test-admin", {"start:servers": Scope.ALL}, kind="service")],
)
async def test_owner_admins_and_services_start_any_project(tmp_path: Path, handler: object) -> None:
    spawner = _spawner(tmp_path, "ada", handler)
    await _pre_spawn(spawner, {"project": "alpha"})
    assert spawner.selection.project.id == "alpha"


async def test_a_service_named_like_the_owner_is_not_the_owner(tmp_path: Path) -> None:
    spawner = _spawner(tmp_path, "ada", _handler("ada", TEACHER, kind="service"))
    with pytest.raises(SpawnException):
        await _pre_spawn(spawner, {"project": "alpha"})


# Groups: what cannot be narrowed is not granted ---------------------------------------------------
def test_students_with_research_access_are_kept_out_of_the_group() -> None:
    assert rules.group_members(CONFIG, CONFIG.session("intro"), DURING) == ["sam", "sara"]
    # A group made before (with ada) loses her at the next round, during the window.
    assert plan(CONFIG, DURING, [], {"teaching-intro": {"ada", "sam", "sara"},
                                     "teaching-gitcourse": {"sam"}}) == [
        Action("remove_from_group", "intro", "teaching-intro", ("ada",))]
    [warning] = rules.member_students(CONFIG)
    assert warning.startswith("ada is a student of teaching session intro and has research access (alpha)")
    assert "cannot open, stop or start any of ada's servers" in warning


def test_the_warning_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="teaching")
    said = warn_once(rules.member_students(CONFIG), set())
    said = warn_once(rules.member_students(CONFIG), said)
    assert len(caplog.records) == 1 and "ada" in caplog.records[0].getMessage()


# Through the real hub ------------------------------------------------------------------------------
def _add_student(yaml_path: Path, session: str, student: str) -> str:
    text = yaml_path.read_text()
    block = re.compile(rf"(  - id: {session}\n(?:    .*\n)*?    students: \[)([^\]]*)\]")
    edited, count = block.subn(lambda m: f"{m.group(1)}{m.group(2)}, {student}]", text)
    assert count == 1
    tmp = yaml_path.with_suffix(".tmp")
    tmp.write_text(edited)
    tmp.replace(yaml_path)
    return text


@pytest.mark.hub
@pytest.mark.orthanc
def test_teacher_cannot_start_or_stop_a_research_members_servers(hub) -> None:  # noqa: ANN001
    """The tester's request: tina, teacher of 'course', starts a magi server for erik (a magi
    member made a student of 'course')."""
    from tests.test_hub import stop, wait_ready

    original = _add_student(Path(hub.files.yaml), "course", "erik")
    tina = {"Authorization": f"token {hub.user_token('tina')}"}
    api = f"{hub.url}/hub/api"
    try:
        time.sleep(3)  # reconciler rounds (1 s in the test hub) see the edit
        with hub.api() as admin:
            assert "erik" not in admin.get("groups/teaching-course").json()["users"]
            admin.post("users/erik")
            assert admin.post("users/erik/server", json={"project": "magi", "profile": "cpu-small"}
                              ).status_code in (201, 202)  # erik's own research server
        wait_ready(hub, "erik")
        with httpx.Client(timeout=60) as client:
            started = client.post(f"{api}/users/erik/servers/spy", headers=tina, json={"project": "magi"})
            assert started.status_code in (403, 404), started.text
            assert client.delete(f"{api}/users/erik/server", headers=tina).status_code in (403, 404)
            assert client.get(f"{hub.url}/user/erik/api/status", headers=tina).status_code == 403
        with hub.api() as admin:
            servers = admin.get("users/erik").json()["servers"]
            assert list(servers) == [""] and servers[""]["user_options"]["project"] == "magi"
    finally:
        Path(hub.files.yaml).write_text(original)
        stop(hub, "erik")


@pytest.mark.hub
@pytest.mark.orthanc
def test_teacher_starts_a_students_course_server_only(hub) -> None:  # noqa: ANN001
    """The spawner's check behind the hub's own handler (token request): tina may start
    sofie's course server (options left out: the session is implied), nothing else."""
    from tests.test_hub import stop, wait_ready

    tina = {"Authorization": f"token {hub.user_token('tina')}"}
    api = f"{hub.url}/hub/api"
    with httpx.Client(timeout=60) as client:
        refused = client.post(f"{api}/users/sofie/servers/lab", headers=tina, json={"project": "magi"})
        assert refused.status_code == 403, refused.text
        assert "tina may start sofie's servers only for a teaching session" in refused.json()["message"]
        started = client.post(f"{api}/users/sofie/server", headers=tina, json={})
        assert started.status_code in (201, 202), started.text
    try:
        assert wait_ready(hub, "sofie")["user_options"] == {"project": "course", "profile": "cpu-small"}
    finally:
        stop(hub, "sofie")
