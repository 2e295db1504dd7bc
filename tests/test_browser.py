"""A researcher's main job in a real browser: log in, choose, spawn, pull, look."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fixtures.workbench import RunningHub
from tests.test_hub import stop

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.orthanc]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def log_in(page, hub: RunningHub, user: str) -> None:  # noqa: ANN001 - a Playwright page
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", hub.passwords["user"])
    page.click("#login_submit")


def test_researcher_logs_in_spawns_and_pulls_a_sample(new_page, hub: RunningHub) -> None:  # noqa: ANN001
    try:
        _spawn_and_pull(new_page, hub)
    finally:  # later tests start their own servers for erik: leave none behind, pass or fail
        stop(hub, "erik")


def _spawn_and_pull(page, hub: RunningHub) -> None:  # noqa: ANN001 - a Playwright page
    log_in(page, hub, "erik")

    # The options form offers only erik's project and the profiles it may use.
    page.wait_for_url(re.compile(r"/hub/spawn"))
    projects = page.locator("#wb-project option").all_inner_texts()
    assert projects == ["MAGI test (magi)"]
    assert "Approval TEST-1, valid until 2099-12-31." in page.inner_text(".wb-project-note")
    assert page.locator(".wb-profile.wb-unavailable").inner_text().count("needs 1 GPU") == 1
    page.check("input[name=profile][value=cpu-small]")
    page.click("#spawn_form button[type=submit]")

    # Progress from the spawner shows on the pending page.
    page.wait_for_function(
        "(document.querySelector('#progress-log') || {textContent: ''}).textContent"
        ".includes('Project magi: approval TEST-1')", timeout=30_000)
    assert "Starting JupyterLab" in page.text_content("#progress-log") or "/lab" in page.url
    page.screenshot(path=str(ARTIFACTS / "spawn-progress.png"))

    # JupyterLab, then the sample-pull notebook run from top to bottom.
    page.wait_for_url(re.compile(r"/user/erik/lab"), timeout=120_000)
    page.goto(f"{hub.url}/user/erik/lab/tree/examples/01-sample-pull.ipynb?reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.get_by_text(re.compile(r"Workbench \(Python 3\) \| Idle")).wait_for(timeout=90_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()

    picker = page.locator(".workbench-sample-picker")
    picker.wait_for(timeout=180_000)
    assert page.locator(".jp-OutputArea-output img").count() >= 1, "the slice plot rendered"

    # The widget: search, tick a study, pull.
    picker.locator("input[type=text]").first.fill("thorax")
    picker.get_by_role("button", name="Search").click()
    rows = picker.locator(".workbench-study")
    rows.first.wait_for(timeout=60_000)
    labels = rows.all_inner_texts()
    assert labels and all("FICTIVE" not in label and "DEMO-" not in label for label in labels)
    assert all(re.search(r"P[A-Z2-7]{10} · \d+ years · \d{4}-\d{2}-\d{2}", label) for label in labels), labels
    rows.first.locator("input[type=checkbox]").check()
    picker.get_by_role("button", name="Pull selected").click()
    picker.locator(".workbench-status", has_text="Pulled").wait_for(timeout=120_000)
    status = picker.locator(".workbench-status").inner_text()
    assert re.search(r"Pulled \d+ de-identified images into .*projects/magi/samples/", status), status
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sample-pull-widget.png"), full_page=False)


def test_expired_project_says_why_and_start_is_disabled(new_page, hub: RunningHub) -> None:  # noqa: ANN001
    page = new_page
    log_in(page, hub, "carla")
    page.wait_for_url(re.compile(r"/hub/spawn"))
    assert "expired on 2020-01-31" in page.inner_text(".wb-refusal")
    assert "None of your projects can start a server now." in page.inner_text("#wb-no-project")
    assert page.locator("#spawn_form button[type=submit]").is_disabled()
    page.screenshot(path=str(ARTIFACTS / "spawn-form-expired.png"))
