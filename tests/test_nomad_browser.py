"""The Nomad spawner in a real browser: Nomad's steps on the spawn page, a placement
failure's message where the researcher is looking, JupyterLab at the end.

Uses the hub of ``test_nomad_hub`` (a real JupyterHub with NomadSpawner against the Nomad
double; servers are real ``jupyterhub-singleuser`` processes run as raw_exec tasks).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_nomad_hub import Hub, hub, nomad  # noqa: F401 - the module's fixtures

pytestmark = [pytest.mark.browser, pytest.mark.hub]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def log_in(page, hub: Hub, user: str) -> None:  # noqa: ANN001 - a Playwright page, F811
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", "any")
    page.click("#login_submit")
    page.wait_for_url(re.compile(r"/hub/spawn"))


def test_spawn_page_shows_nomad_progress_then_jupyterlab(new_page, hub: Hub) -> None:  # noqa: ANN001, F811
    page = new_page
    log_in(page, hub, "bo")
    page.select_option("#wb-project", "magi")
    page.check("input[name=profile][value=cpu-small]")
    page.click("#spawn_form button[type=submit]")
    page.wait_for_function(
        "(document.querySelector('#progress-log') || {textContent: ''}).textContent"
        ".includes('Submitted to Nomad as job jupyter--bo')", timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "nomad-spawn-progress.png"))
    page.wait_for_url(re.compile(r"/user/bo/"), timeout=120_000)
    log_text = page.context.request.get(f"{hub.url}/hub/api/users/bo/server/progress").text()
    assert "Server ready" in log_text


def test_placement_failure_message_shows_in_the_browser(new_page, hub: Hub) -> None:  # noqa: ANN001, F811
    page = new_page
    log_in(page, hub, "cy")
    page.check("input[name=profile][value=h100]")
    page.click("#spawn_form button[type=submit]")
    page.wait_for_function(
        "!!document.body && document.body.innerText.includes(\"No node can start the profile 'One H100' right now\")",
        timeout=60_000)
    text = page.inner_text("body")
    assert "have no GPU of the kind this profile asks for" in text
    assert "Traceback" not in text and "FailedTGAllocs" not in text
    page.screenshot(path=str(ARTIFACTS / "nomad-placement-failure.png"))
