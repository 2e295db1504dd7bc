"""Teaching sessions as pure rules: model, window, login, selection, hub roles and groups, the
reconciler's plan, the quota budget; idle culling's per-profile timeouts and busy kernels."""

from __future__ import annotations

import asyncio
import json
import datetime as dt
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import pytest

from extensions import busy_activity
from hub_config.loader import ConfigError, load_config, parse_config
from services.culler.policy import make_arbiter, shortest_timeout, timeout_seconds
from services.quota.budgets import Limit, Request, Usage, budget_window, check_request
from services.teaching import rules
from services.teaching.course import hand_out
from services.teaching.quota import teaching_accounts
from services.teaching.reconciler import Action, plan
from spawners.form import render_options_form
from spawners.selection import SelectionRefused, choices_for, resolve_selection

CPH = ZoneInfo("Europe/Copenhagen")
TEXT = """\
profiles:
  - {slug: small, name: Small, cpu: 1, memory: 1G, idle_timeout_minutes: 30}
  - {slug: big, name: Big, cpu: 4, memory: 8G, idle_timeout_minutes: 120}
  - {slug: none, name: No timeout, cpu: 1, memory: 1G}
projects:
  - id: alpha
    title: Alpha
    members: [ada]
    approval: {reference: P-A, expires: 2030-01-31}
datasets:
  - {id: open, title: Open, path: datasets/open, owner: Unit, kind: imaging, sensitivity: public,
     legal_basis: Public, approval: {reference: O, expires: 2030-01-31}, projects: "*"}
teaching:
  - id: intro
    title: Intro to AI
    teachers: [tina]
    students: [sam, sara, ada]
    starts: 2026-12-07T09:00
    ends: 2026-12-07T16:00
    profile: small
    budget: {per_user_cpu_core_hours: 4, max_concurrent_servers: 20}
    notebooks: {folder: courses/intro-ai, open: 01-welcome.ipynb}
    datasets: [open]
  - id: gitcourse
    title: Git course
    teachers: [tom]
    students: [sam]
    starts: 2026-12-08T09:00+01:00
    ends: 2026-12-08T12:00+01:00
    profile: small
    notebooks: {git: {repo: "https://git.example/course.git", branch: "2026"}, open: "week 1/intro.ipynb"}
"""
CONFIG = parse_config(TEXT)
INTRO = CONFIG.session("intro")
BEFORE = dt.datetime(2026, 12, 7, 8, 59, tzinfo=CPH)
DURING = dt.datetime(2026, 12, 7, 12, 0, tzinfo=CPH)
AFTER = dt.datetime(2026, 12, 7, 16, 0, tzinfo=CPH)  # the end is not inside the window
TODAY = dt.date(2026, 12, 7)


# Model -------------------------------------------------------------------------------------
def test_demo_session_is_valid() -> None:
    config = load_config(Path(__file__).resolve().parent.parent / "hub_config" / "workbench.yaml")
    session = config.teaching[0]
    assert session.notebooks.folder and (Path("notebooks") / session.notebooks.folder / session.notebooks.open).exists()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("students: [sam, sara, ada]", "students: [sam, tina]"),
         "teaching[0].students = ['sam', 'tina']: tina cannot be both teacher and student"),
        (("ends: 2026-12-07T16:00", "ends: 2026-12-07T08:00"),
         "teaching[0].ends = '2026-12-07T08:00': a teaching session must end after it starts"),
        (("    profile: small\n    budget", "    profile: huge\n    budget"),
         "teaching[0].profile = 'huge': profile 'huge' is not defined"),
        (("  - id: gitcourse", "  - id: alpha"),
         "teaching[1].id = 'alpha': 'alpha' is already a project id"),
        (("max_concurrent_servers: 20}", "max_concurrent_servers: 20, timezone: UTC}"),
         "teaching[0].budget.timezone = 'UTC': set the session's timezone"),
        (("{folder: courses/intro-ai, open: 01-welcome.ipynb}", "{folder: ../secrets}"),
         "teaching[0].notebooks.folder = '../secrets': folder must stay inside notebooks/"),
        (("{folder: courses/intro-ai, open: 01-welcome.ipynb}", "{open: 01-welcome.ipynb}"),
         "teaching[0].notebooks = {'open': '01-welcome.ipynb'}: give exactly one of folder"),
        (("teachers: [tina]", "teachers: []"), "teaching[0].teachers = []"),
    ],
)
def test_session_mistakes_are_named(edit: tuple[str, str], expected: str) -> None:
    text = TEXT.replace(*edit)
    assert text != TEXT
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "wb.yaml")
    problems = [str(p).split(": ", 1)[1] for p in caught.value.problems]
    assert any(p.startswith(expected) for p in problems), problems


# Window and login --------------------------------------------------------------------------
def test_window_states_in_the_sessions_time_zone() -> None:
    assert [rules.window_state(INTRO, t) for t in (BEFORE, DURING, AFTER)] == ["upcoming", "open", "ended"]
    git = CONFIG.session("gitcourse")
    assert rules.window_state(git, dt.datetime(2026, 12, 8, 8, 30, tzinfo=dt.timezone.utc)) == "open"


def test_login_follows_the_window_for_students_only() -> None:
    decide = rules.login_decision
    assert (decide(CONFIG, "sam", BEFORE).allowed, decide(CONFIG, "sam", DURING).reason) == (False, "student")
    late = decide(CONFIG, "sara", AFTER)
    assert not late.allowed and late.reason == "outside_window" and "ended on 2026-12-07 16:00 CET" in late.message
    assert "runs from 2026-12-07 09:00 CET to 2026-12-07 16:00 CET" in decide(CONFIG, "sara", BEFORE).message
    assert decide(CONFIG, "tina", BEFORE).allowed and not decide(CONFIG, "tina", AFTER).allowed
    assert decide(CONFIG, "ada", AFTER).reason == "member"  # a project member as well
    assert decide(CONFIG, "eve", DURING) == rules.LoginDecision(False, "unknown")


# Selection and the form -----------------------------------------------------------------------
def test_student_gets_the_session_profile_datasets_and_course_url() -> None:
    selection = resolve_selection(CONFIG, "sara", {}, TODAY, now=DURING)
    assert selection.session is INTRO and selection.project.id == "intro"
    assert selection.profile.slug == "small" and [d.id for d in selection.datasets] == ["open"]
    assert selection.project.members == ["ada", "sam", "sara", "tina"]
    assert rules.course_url(INTRO) == "/lab/tree/intro/01-welcome.ipynb"


@pytest.mark.parametrize(
    ("user", "options", "now", "reason", "words"),
    [
        ("sara", {}, BEFORE, "session_closed", "servers can start only inside that window"),
        ("sara", {"project": "intro"}, AFTER, "session_closed", "ended on 2026-12-07 16:00 CET"),
        ("sara", {"project": "intro", "profile": "big"}, DURING, "profile_not_allowed", "runs on the profile 'small'"),
        ("sara", {"project": "alpha"}, DURING, "not_member", "not a member of a project called 'alpha'"),
        ("sam", {}, DURING, "bad_options", "Choose a project: you are a member of intro."),
    ],
)
def test_session_refusals(user: str, options: dict, now: dt.datetime, reason: str, words: str) -> None:
    if user == "sam":  # sam has intro open and gitcourse upcoming: only one usable choice
        assert resolve_selection(CONFIG, "sam", {}, TODAY, now=now).session is INTRO
        return
    with pytest.raises(SelectionRefused) as caught:
        resolve_selection(CONFIG, user, options, TODAY, now=now)
    assert caught.value.reason == reason and words in caught.value.message


def test_teacher_may_start_before_the_window_but_not_after() -> None:
    assert resolve_selection(CONFIG, "tina", {"project": "intro"}, TODAY, now=BEFORE).session is INTRO
    with pytest.raises(SelectionRefused):
        resolve_selection(CONFIG, "tina", {"project": "intro"}, TODAY, now=AFTER)


def test_member_student_chooses_and_form_shows_sessions() -> None:
    with pytest.raises(SelectionRefused, match="Choose a project: you are a member of alpha, intro"):
        resolve_selection(CONFIG, "ada", {}, TODAY, now=DURING)
    choices = choices_for(CONFIG, "sam", TODAY, BEFORE)
    assert [(c.project.id, c.unavailable_label if c.unavailable else "") for c in choices] == [
        ("intro", "session not started"), ("gitcourse", "session not started")]
    # Nothing can start yet: the form says why for each session (and disables Start).
    html = render_options_form(choices)
    assert "The teaching session Intro to AI (intro) runs from 2026-12-07 09:00 CET" in html
    assert "None of your projects can start a server now." in html
    html = render_options_form(choices_for(CONFIG, "sam", TODAY, DURING))
    assert "Git course (teaching) (gitcourse) - session not started" in html
    assert "Teaching session (student), 2026-12-07 09:00 CET to 2026-12-07 16:00 CET." in html


# Course notebooks ------------------------------------------------------------------------------
def test_nbgitpuller_link_for_git_courses() -> None:
    url = urlparse(rules.course_url(CONFIG.session("gitcourse")))
    assert url.path == "/git-pull"
    assert parse_qs(url.query) == {"repo": ["https://git.example/course.git"], "branch": ["2026"],
                                   "targetpath": ["gitcourse"], "urlpath": ["lab/tree/gitcourse/week 1/intro.ipynb"]}


def test_handing_out_never_overwrites_a_students_work(tmp_path: Path) -> None:
    source = tmp_path / "course"
    (source / "data").mkdir(parents=True)
    (source / "01.ipynb").write_text("{}")
    (source / "data" / "x.csv").write_text("a\n")
    (source / ".git").mkdir()
    target = tmp_path / "home" / "intro"
    assert hand_out(source, target) == ["01.ipynb", "data/x.csv"]
    (target / "01.ipynb").write_text("my answers")
    assert hand_out(source, target) == []
    assert (target / "01.ipynb").read_text() == "my answers" and not (target / ".git").exists()


# Hub roles, groups, the reconciler's plan ----------------------------------------------------
def test_teachers_scopes_are_limited_to_the_sessions_group() -> None:
    role = rules.teacher_role(INTRO)
    assert role["users"] == ["tina"] and role["name"] == "teaching-intro-teachers"
    assert all(s == "admin-ui" or s.endswith("!group=teaching-intro") for s in role["scopes"])
    assert "access:servers!group=teaching-intro" in role["scopes"]
    # ada is also a member of alpha: no teacher scope may reach her (test_teaching_attack.py)
    assert rules.hub_groups(CONFIG, DURING)["teaching-intro"]["users"] == ["sam", "sara"]
    assert rules.hub_groups(CONFIG, AFTER)["teaching-intro"]["users"] == []


def _server(project: str, **extra: object) -> dict:
    return {"user_options": {"project": project, "profile": "small"}, "ready": True, **extra}


def test_plan_fills_groups_then_ends_sessions() -> None:
    assert plan(CONFIG, DURING, [], {"teaching-intro": None, "teaching-gitcourse": set()}) == [
        Action("create_group", "intro", "teaching-intro"),
        Action("add_to_group", "intro", "teaching-intro", ("sam", "sara")),
        Action("add_to_group", "gitcourse", "teaching-gitcourse", ("sam",)),
    ]
    users = [
        {"name": "sam", "servers": {"": _server("intro")}},
        {"name": "ada", "servers": {"": _server("alpha"), "lab": _server("intro")}},
        {"name": "sara", "servers": {"": _server("intro", pending="stop")}},
        {"name": "tina", "servers": {"": _server("intro")}},
    ]
    groups = {"teaching-intro": {"ada", "sam", "sara"}, "teaching-gitcourse": {"sam"}}
    actions = plan(CONFIG, AFTER, users, groups)
    assert actions == [
        Action("remove_from_group", "intro", "teaching-intro", ("ada", "sam", "sara")),
        Action("stop_server", "intro", user="sam", server=""),
        Action("stop_server", "intro", user="ada", server="lab"),
        Action("stop_server", "intro", user="tina", server=""),
    ]
    assert str(actions[2]) == "stop server ada/lab (session intro ended)"
    assert plan(CONFIG, AFTER, [], {"teaching-intro": set(), "teaching-gitcourse": {"sam"}}) == []


# Budget (the quota service's TeachingBudget) ----------------------------------------------------
def test_session_budget_is_a_window_budget_in_the_sessions_zone() -> None:
    account = teaching_accounts(CONFIG)["session:intro"]
    assert account.members == frozenset({"tina", "sam", "sara", "ada"})
    window = budget_window(account.budget, DURING.timestamp())
    expected = (DURING.replace(hour=9).timestamp(), AFTER.timestamp(), False)
    assert (window.start, window.end, window.resets) == expected
    def check(at: dt.datetime):  # noqa: ANN202
        return check_request(account.budget, window, Usage(), Request("sam", cpu=1), at.timestamp(), account.label)

    assert check(AFTER).limit is Limit.SESSION_WINDOW
    assert check(DURING) is None
    assert teaching_accounts(CONFIG)["session:gitcourse"].budget is None


def test_the_quota_cli_lists_the_sessions_as_the_admin_page_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.quota.cli import main as quota_cli

    yaml = tmp_path / "workbench.yaml"
    yaml.write_text(TEXT)
    monkeypatch.delenv("WORKBENCH_QUOTA_EXTRA_ACCOUNTS", raising=False)
    args = ["--config", str(yaml), "--db", f"sqlite:///{tmp_path / 'ledger.sqlite'}"]
    assert quota_cli([*args, "show", "--json"]) == 0
    shown = {row["account"] for row in json.loads(capsys.readouterr().out)}
    assert {"session:intro", "session:gitcourse"} <= shown
    assert quota_cli([*args, "show", "session:intro"]) == 0
    assert "session:intro" in capsys.readouterr().out


# Idle culling -----------------------------------------------------------------------------------
def test_culler_uses_each_profiles_timeout() -> None:
    assert timeout_seconds(CONFIG, {"user_options": {"project": "alpha", "profile": "big"}}, 3600) == 7200
    assert timeout_seconds(CONFIG, {"user_options": {"project": "intro"}}, 3600) == 1800  # the session's
    assert timeout_seconds(CONFIG, {"user_options": {"profile": "none"}}, 3600) == 3600
    assert timeout_seconds(CONFIG, {"user_options": {}}, 3600) == 3600
    assert shortest_timeout(CONFIG, 3600) == 1800
    arbiter = make_arbiter(lambda: CONFIG, 3600)
    big = {"user_options": {"profile": "big"}}
    assert not arbiter(inactive=dt.timedelta(minutes=90), inactive_limit=3600, server=big)
    assert arbiter(inactive=dt.timedelta(minutes=121), inactive_limit=3600, server=big)


def test_busy_kernel_marks_the_server_active() -> None:
    kernels = {"a": SimpleNamespace(execution_state="idle"), "b": SimpleNamespace(execution_state="busy")}
    manager = SimpleNamespace(list_kernel_ids=lambda: list(kernels), get_kernel=lambda k: kernels[k])
    app = SimpleNamespace(kernel_manager=manager, web_app=SimpleNamespace(settings={}))
    now = dt.datetime(2026, 12, 7, 12, tzinfo=dt.timezone.utc)
    assert busy_activity.mark_if_busy(app, now) and app.web_app.settings[busy_activity.SETTING] == now
    kernels["b"].execution_state = "idle"
    app.web_app.settings.clear()
    assert not busy_activity.mark_if_busy(app, now) and app.web_app.settings == {}


async def test_jupyter_server_reports_a_silent_computation_as_busy() -> None:
    """The assumption under extensions.busy_activity, against jupyter_server's kernel manager:
    a cell computing without output leaves the kernel 'busy' and sends nothing more."""
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    manager = MappingKernelManager()
    kernel_id = await manager.start_kernel(kernel_name="python3")
    try:
        client = manager.get_kernel(kernel_id).client()
        client.start_channels()
        await asyncio.wait_for(client._async_wait_for_ready(), 60)
        client.execute("import time; time.sleep(4)")
        for _ in range(60):
            if busy_activity.busy_kernels(manager) == [kernel_id]:
                break
            await asyncio.sleep(0.1)
        assert busy_activity.busy_kernels(manager) == [kernel_id]
        quiet_since = manager.get_kernel(kernel_id).last_activity
        await asyncio.sleep(1.5)
        assert manager.get_kernel(kernel_id).last_activity == quiet_since  # no activity while busy
        client.stop_channels()
    finally:
        await manager.shutdown_kernel(kernel_id, now=True)
