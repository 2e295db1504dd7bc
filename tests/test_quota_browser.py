"""In Chromium: the admin page (usage against budget, the plot, the per-user breakdown) behind
hub OAuth, refused to a non-admin; the remaining budget shown on the spawn form; and a quota
notice shown inside JupyterLab by the quota-notices labextension.

Screenshots go to test-artifacts/quota-admin.png, quota-spawn-form.png and
quota-jupyterlab-notice.png.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from services.quota.ledger import Ledger
from tests.fixtures.quota import ARTIFACTS, QuotaHub, launch_chromium

pytestmark = [pytest.mark.browser, pytest.mark.hub]


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    # Module-scoped: Playwright's sync loop must not outlive these tests (async tests follow).
    playwright, browser = launch_chromium()
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()


@pytest.fixture(scope="module")
def gpu_server_running(quota_hub: QuotaHub) -> Iterator[None]:
    """ulla runs a 1-GPU server of project vision, so there is use to show."""
    with quota_hub.api() as api:
        api.post("users/ulla")
        assert api.post("users/ulla/server", json={"project": "vision", "profile": "gpu-1"}).status_code in (201, 202)
    quota_hub.wait_ready("ulla")
    yield
    with quota_hub.api() as api:
        api.delete("users/ulla/server")
    quota_hub.wait_stopped("ulla")


def signed_in(chromium, hub: QuotaHub, user: str):
    context = chromium.new_context(viewport={"width": 1300, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", hub.passwords["admin" if user == "qadmin" else "user"])
    page.click("#login_submit")
    # users with a running server land in JupyterLab: do not wait for it to load
    page.wait_for_url(lambda url: "/login" not in url, wait_until="commit")
    return context, page


def test_admin_page_shows_usage_plot_and_users(chromium, quota_hub: QuotaHub, gpu_server_running) -> None:
    context, page = signed_in(chromium, quota_hub, "qadmin")
    try:
        page.goto(f"{quota_hub.url}/services/quota/")  # hub OAuth, no confirmation page
        page.wait_for_selector("#quota-summary")
        row = page.locator('tr[data-account="vision"]')
        assert row.locator("td.max_concurrent_gpus").inner_text().startswith("1 of 2")
        assert "of 500.0" in row.locator("td.gpu_hours").inner_text()
        assert page.locator('tr[data-account="tiny"]').count() == 1
        section = page.locator("#account-vision")
        assert section.locator("figure.usage-plot svg").count() == 1
        assert section.locator('table.per-user tr[data-user="ulla"]').count() == 1
        assert "gpu-1" in section.locator("table.active").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "quota-admin.png"), full_page=True)
    finally:
        context.close()
    context, page = signed_in(chromium, quota_hub, "ulla")
    try:
        answer = page.goto(f"{quota_hub.url}/services/quota/")
        assert answer.status == 403
        assert "ulla is not a workbench admin" in page.inner_text("body")
    finally:
        context.close()


def test_spawn_form_shows_the_remaining_budget(chromium, quota_hub: QuotaHub, gpu_server_running) -> None:
    context, page = signed_in(chromium, quota_hub, "r49")
    try:
        page.goto(f"{quota_hub.url}/hub/spawn")
        note = page.locator('.wb-project-note[data-project="vision"]')
        note.wait_for()
        text = note.inner_text()
        assert "GPU-hours left" in text and "1 of 2 GPUs free now" in text
        assert "Resets on " in text
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "quota-spawn-form.png"), full_page=True)
    finally:
        context.close()


def test_jupyterlab_shows_the_quota_notice(chromium, quota_hub: QuotaHub) -> None:  # noqa: ANN001
    """Project warm's 0.002 CPU-core-hours are used up in ~7 s; its grace is an hour."""
    with quota_hub.api() as api:
        api.post("users/wendy")
        assert api.post("users/wendy/server", json={"project": "warm", "profile": "cpu-small"}).status_code in (201, 202)
    quota_hub.wait_ready("wendy")
    ledger = Ledger(quota_hub.ledger_url)
    deadline = time.monotonic() + 60
    while not [n for n in ledger.notices(accounts=["warm"]) if n.level == 100]:
        assert time.monotonic() < deadline, quota_hub.process.log_tail(40)
        time.sleep(0.5)
    context, page = signed_in(chromium, quota_hub, "wendy")
    try:
        page.wait_for_url("**/user/wendy/lab**", wait_until="commit")
        toast = page.get_by_text("has used all of its 0.002 CPU-core-hours", exact=False).first
        toast.wait_for(timeout=90_000)
        assert "save your work, running servers stop at" in toast.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.wait_for_timeout(1500)  # let the toast finish sliding in
        page.screenshot(path=str(ARTIFACTS / "quota-jupyterlab-notice.png"))
    finally:
        context.close()
        with quota_hub.api() as api:
            api.delete("users/wendy/server")
        quota_hub.wait_stopped("wendy")
