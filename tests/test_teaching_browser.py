"""A teaching session in a real browser: a student's first login lands in the course notebook;
the teacher opens that student's server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fixtures.workbench import RunningHub
from tests.test_browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.orthanc]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
COURSE_NOTEBOOK = "/user/sofie/lab/tree/course/01-welcome.ipynb"


def test_student_lands_in_the_course_and_the_teacher_opens_her_server(browser, hub: RunningHub) -> None:  # noqa: ANN001
    ARTIFACTS.mkdir(exist_ok=True)
    student = browser.new_context(viewport={"width": 1400, "height": 1000})
    student.set_default_timeout(60_000)
    page = student.new_page()
    try:
        # First login: no form (the session is her one choice), straight to the course notebook.
        log_in(page, hub, "sofie")
        page.wait_for_url(re.compile(re.escape(COURSE_NOTEBOOK)), timeout=120_000)
        page.locator(".jp-RenderedMarkdown h1", has_text="Welcome to").wait_for(timeout=90_000)
        page.get_by_text(re.compile(r"Workbench \(Python 3\) \| Idle")).wait_for(timeout=90_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        catalogue = page.locator(".workbench-catalogue")
        catalogue.wait_for(timeout=120_000)
        assert "seen from course" in catalogue.inner_text()
        assert catalogue.locator("tr.wb-dataset[data-id='phantoms']").inner_text().strip().endswith("mounted")
        page.screenshot(path=str(ARTIFACTS / "teaching-student-course.png"))
        page.keyboard.press("Control+s")  # saved: the teacher opens the same file
        saved = hub.files.storage.home("sofie") / "course" / "01-welcome.ipynb"
        for _ in range(100):
            if "mean intensity" in saved.read_text():
                break
            page.wait_for_timeout(200)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "FAILED-teaching-student.png"), full_page=True)
        raise

    teacher = browser.new_context(viewport={"width": 1400, "height": 1000})
    teacher.set_default_timeout(60_000)
    view = teacher.new_page()
    try:
        log_in(view, hub, "tina")
        view.wait_for_url(re.compile(r"/hub/"))
        # The teacher opens the student's server: the hub asks her to confirm, once.
        view.goto(f"{hub.url}{COURSE_NOTEBOOK}")
        view.get_by_role("button", name="Authorize").click()
        view.wait_for_url(re.compile(re.escape(COURSE_NOTEBOOK)), timeout=60_000)
        view.locator(".jp-RenderedMarkdown h1", has_text="Welcome to").wait_for(timeout=90_000)
        assert "mean intensity: 0.25" in view.locator(".jp-OutputArea").first.inner_text()
        view.screenshot(path=str(ARTIFACTS / "teaching-teacher-in-student-server.png"))
    except Exception:
        view.screenshot(path=str(ARTIFACTS / "FAILED-teaching-teacher.png"), full_page=True)
        raise
    finally:
        teacher.close()
        student.close()
