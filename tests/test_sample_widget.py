"""The SamplePicker form driven through its buttons, with a fake gateway object."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from extensions.sample_client import (
    GatewayRefused,
    Pull,
    SearchResults,
    Study,
    Thumbnail,
)
from extensions.sample_widget import COMMON_MODALITIES, SamplePicker


def study(n: int, **changes: Any) -> Study:
    values: dict[str, Any] = {
        "study_key": f"2.25.{n}", "patient": f"P{n:010d}", "age": "45 years",
        "study_date": "2014-11-02", "description": "CT THORAX", "modalities": ["CT"],
        "series": 2, "instances": 40,
    }
    values.update(changes)
    return Study(**values)


@dataclass
class FakeGateway:
    project: str = "magi"
    project_list: list[dict[str, Any]] | GatewayRefused = field(default_factory=lambda: [
        {"id": "other", "title": "Other"},
        {"id": "magi", "title": "MAGI <lung>", "modalities": ["CT", "MR"],
         "limits": {"max_studies_per_pull": 3, "max_instances_per_pull": 120, "max_studies_per_day": 10},
         "studies_pulled_today": 4},
    ])
    pages: list[tuple[list[Study], str | None] | SearchResults | GatewayRefused] = field(default_factory=list)
    previews: dict[str, Thumbnail] | GatewayRefused = field(default_factory=dict)
    thumbnail_requests: list[list[str]] = field(default_factory=list)
    pull_steps: list[Pull] = field(default_factory=list)
    pull_result: Pull | GatewayRefused | None = None
    searches: list[dict[str, Any]] = field(default_factory=list)
    pulls: list[list[str]] = field(default_factory=list)
    progress_seen: list[tuple[int, int, str]] = field(default_factory=list)
    picker: SamplePicker | None = None

    def projects(self) -> list[dict[str, Any]]:
        if isinstance(self.project_list, GatewayRefused):
            raise self.project_list
        return self.project_list

    def search_results(self, **criteria: Any) -> SearchResults:
        self.searches.append(criteria)
        page = self.pages.pop(0)
        if isinstance(page, GatewayRefused):
            raise page
        if isinstance(page, SearchResults):
            return page
        return SearchResults(page[0], page[1])

    def thumbnails(self, keys: list[str]) -> dict[str, Thumbnail]:
        self.thumbnail_requests.append(list(keys))
        if isinstance(self.previews, GatewayRefused):
            raise self.previews
        return {k: v for k, v in self.previews.items() if k in keys}

    def pull(self, keys: list[str], *, progress: Any = None) -> Pull:
        self.pulls.append(list(keys))
        assert self.picker is not None
        assert self.picker.pull_button.disabled  # no second pull while one runs
        for step in self.pull_steps:
            progress(step)
            bar = self.picker.progress
            self.progress_seen.append((bar.value, bar.max, bar.description))
        if isinstance(self.pull_result, GatewayRefused):
            raise self.pull_result
        assert self.pull_result is not None
        return self.pull_result


def make(fake: FakeGateway) -> SamplePicker:
    picker = SamplePicker(gateway=fake)  # type: ignore[arg-type]
    fake.picker = picker
    return picker


def labels(picker: SamplePicker) -> list[str]:
    return [row.description for row in picker.results.children]


def running(done: int, total: int = 80) -> Pull:
    return Pull(id="p1", project="magi", status="running", instances_total=total, instances_done=done)


DONE = Pull(id="p1", project="magi", status="done", instances_total=80, instances_done=80,
            path=Path("/home/anna/projects/magi/samples/p1"))


# -- form ----------------------------------------------------------------------------------

def test_header_and_modalities_come_from_the_project() -> None:
    picker = make(FakeGateway())
    assert picker.header.value == (
        "<b>Archive samples for MAGI &lt;lung&gt;</b><br>up to 3 studies and 120 images per pull; "
        "4 of 10 studies pulled today"
    )
    assert list(picker.modality.options) == [("any", ""), ("CT", "CT"), ("MR", "MR")]
    assert picker.pull_button.disabled
    assert picker.next_button.layout.display == "none" and picker.previous_button.layout.display == "none"
    assert picker.progress.layout.visibility == "hidden"
    assert picker.status.value == ""


def test_header_when_projects_cannot_be_listed() -> None:
    picker = make(FakeGateway(project_list=GatewayRefused("down", "unreachable")))
    assert picker.header.value == "<b>Archive samples for magi</b>"
    assert [value for _, value in picker.modality.options] == [""] + COMMON_MODALITIES


def test_header_says_why_not_escaped() -> None:
    fake = FakeGateway(project_list=[{"id": "magi", "why_not": "Approval <expired> & gone"}])
    assert make(fake).header.value == (
        "<b>Archive samples for magi</b><br>"
        "<span style='color:#b00'>Approval &lt;expired&gt; &amp; gone</span>"
    )


# -- search --------------------------------------------------------------------------------

def test_search_fills_rows_with_what_the_gateway_shows() -> None:
    fake = FakeGateway(pages=[([study(1), study(2, age="", modalities=["CT", "SR"], instances=None)], None)])
    picker = make(fake)
    picker.search_button.click()
    assert fake.searches == [{"modality": None, "date_from": None, "date_to": None,
                              "description": None, "limit": 20}]
    assert labels(picker) == [
        "P0000000001 · 45 years · 2014-11-02 · CT · CT THORAX · 40 images",
        "P0000000002 · 2014-11-02 · CT/SR · CT THORAX",
    ]
    assert [row.study_key for row in picker.results.children] == ["2.25.1", "2.25.2"]
    assert [row.value for row in picker.results.children] == [False, False]
    assert not picker.pull_button.disabled
    assert picker.next_button.layout.display == "none"
    assert picker.status.value == "<div class='workbench-status' style='color:inherit'>2 studies found.</div>"
    assert picker.studies == [study(1), study(2, age="", modalities=["CT", "SR"], instances=None)]


def test_search_sends_the_form_values() -> None:
    fake = FakeGateway(pages=[([study(1)], None)])
    picker = make(fake)
    picker.modality.value = "MR"
    picker.description.value = "knee"
    picker.date_from.value = dt.date(2020, 1, 1)
    picker.date_to.value = dt.date(2020, 12, 31)
    picker.search_button.click()
    assert fake.searches == [{"modality": "MR", "date_from": dt.date(2020, 1, 1),
                              "date_to": dt.date(2020, 12, 31), "description": "knee", "limit": 20}]
    assert "1 study found." in picker.status.value


def test_no_results() -> None:
    picker = make(FakeGateway(pages=[([], None)]))
    picker.search_button.click()
    assert picker.results.children == ()
    assert picker.pull_button.disabled
    assert "No studies match; widen the dates or the description." in picker.status.value


def keys_of(picker: SamplePicker) -> list[str]:
    return [row.study_key for row in picker.results.children]


def test_pages_forward_and_back_keeping_ticks() -> None:
    fake = FakeGateway(pages=[([study(1), study(2)], "0.2.1.ab"), ([study(3)], None), ([study(9)], "x")])
    picker = make(fake)
    picker.search_button.click()
    assert picker.next_button.layout.display == "" and picker.previous_button.layout.display == "none"
    assert picker.page_label.value == "page 1" and "2 studies on this page." in picker.status.value
    picker.results.children[0].value = True
    picker.next_button.click()
    assert fake.searches[1]["page"] == "0.2.1.ab" and fake.searches[1]["limit"] == 20
    assert keys_of(picker) == ["2.25.3"] and picker.page_label.value == "page 2"
    assert picker.next_button.layout.display == "none" and picker.previous_button.layout.display == ""
    picker.results.children[0].value = True
    assert picker.selected_keys() == ["2.25.1", "2.25.3"] and picker.selection.value == "2 selected"
    picker.previous_button.click()  # from memory, not the gateway
    assert len(fake.searches) == 2 and keys_of(picker) == ["2.25.1", "2.25.2"]
    assert [row.value for row in picker.results.children] == [True, False]
    picker.next_button.click()
    assert len(fake.searches) == 2 and keys_of(picker) == ["2.25.3"]
    # A new search starts again from the first page, without the old ticks.
    picker.search_button.click()
    assert "page" not in fake.searches[2] and keys_of(picker) == ["2.25.9"]
    assert picker.selected_keys() == [] and picker.next_button.layout.display == ""


def test_notices_about_incomplete_results_are_shown() -> None:
    notice = "RIPA ignores requests for further results, so only its first answer could be read."
    fake = FakeGateway(pages=[SearchResults([study(1)], None, False, [notice + " <b>"])])
    picker = make(fake)
    picker.search_button.click()
    assert picker.notices.value == (
        "<div class='workbench-notice' style='color:#8a5a00'>" + notice + " &lt;b&gt;</div>")


def test_thumbnails_come_per_page_and_say_why_not() -> None:
    png = b"\x89PNG\r\n\x1a\n-fake"
    fake = FakeGateway(pages=[([study(1), study(2)], "t"), ([study(3)], None)], previews={
        "2.25.1": Thumbnail(png), "2.25.2": Thumbnail(None, "No preview: may show <text>."),
        "2.25.3": Thumbnail(png)})
    picker = make(fake)
    picker.search_button.click()
    first, second = picker.results.children
    assert first.thumb.value == png and "workbench-thumbnail" in first.thumb._dom_classes
    assert "No preview: may show &lt;text&gt;." in second.thumb.value
    picker.next_button.click()
    picker.previous_button.click()
    assert fake.thumbnail_requests == [["2.25.1", "2.25.2"], ["2.25.3"]]  # cached after that


def test_thumbnails_that_fail_do_not_break_the_search() -> None:
    fake = FakeGateway(pages=[([study(1)], None)], previews=GatewayRefused("The gateway is busy.", "busy"))
    picker = make(fake)
    picker.search_button.click()
    [row] = picker.results.children
    assert "no preview" in row.thumb.value and "The gateway is busy." in row.thumb.value
    assert "1 study found." in picker.status.value


def test_refusal_shows_its_message_as_an_error() -> None:
    refusal = GatewayRefused("Project magi is approved for CT, MR only, not <US>.", "modality_not_approved", 403)
    fake = FakeGateway(pages=[([study(1)], None), refusal])
    picker = make(fake)
    picker.search_button.click()
    picker.search_button.click()
    assert picker.status.value == (
        "<div class='workbench-error' style='color:#b00'>"
        "Project magi is approved for CT, MR only, not &lt;US&gt;.</div>"
    )
    assert labels(picker) == ["P0000000001 · 45 years · 2014-11-02 · CT · CT THORAX · 40 images"]


def test_labels_are_plain_text() -> None:
    fake = FakeGateway(pages=[([study(1, description="<img src=x onerror=alert(1)>")], None)])
    picker = make(fake)
    picker.search_button.click()
    [row] = picker.results.children
    assert row.checkbox.description_allow_html is False
    assert row.description.endswith("<img src=x onerror=alert(1)> · 40 images")


# -- pull ----------------------------------------------------------------------------------

def test_pull_with_nothing_ticked_says_so() -> None:
    fake = FakeGateway(pages=[([study(1)], None)])
    picker = make(fake)
    picker.search_button.click()
    assert picker.pull() is None
    assert fake.pulls == []
    assert picker.status.value == (
        "<div class='workbench-error' style='color:#b00'>Tick one or more studies first.</div>"
    )
    assert picker.progress.layout.visibility == "hidden"


def test_pull_ticked_rows_shows_progress_and_path() -> None:
    fake = FakeGateway(pages=[([study(1), study(2), study(3)], None)],
                       pull_steps=[running(0, 0), running(0), running(30), running(80)], pull_result=DONE)
    picker = make(fake)
    picker.search_button.click()
    picker.results.children[0].value = True
    picker.results.children[2].value = True
    assert picker.selected_keys() == ["2.25.1", "2.25.3"]
    picker.pull_button.click()
    assert fake.pulls == [["2.25.1", "2.25.3"]]
    assert fake.progress_seen == [(0, 1, "0/0"), (0, 80, "0/80"), (30, 80, "30/80"), (80, 80, "80/80")]
    assert picker.progress.layout.visibility == "visible"
    assert picker.progress.bar_style == "success"
    assert not picker.pull_button.disabled
    assert picker.last_pull is DONE
    assert "4 of 10 studies pulled today" in picker.header.value
    fake.project_list[1]["studies_pulled_today"] = 6  # type: ignore[index]
    picker.results.children[0].value = True
    picker.pull_button.click()
    assert "6 of 10 studies pulled today" in picker.header.value  # refreshed after the pull
    assert picker.status.value == (
        "<div class='workbench-status' style='color:inherit'>Pulled 80 de-identified images into "
        "<code>/home/anna/projects/magi/samples/p1</code>. Open a series with "
        "<code>open_series(picker.last_pull.series_paths()[0])</code>.</div>"
    )


def test_pull_reports_refused_images_and_escapes_the_path() -> None:
    result = Pull(id="p1", project="magi", status="done", instances_total=5, instances_done=3,
                  instances_refused=2, path=Path("/tmp/<b>&x"))
    fake = FakeGateway(pages=[([study(1)], None)], pull_result=result)
    picker = make(fake)
    picker.search_button.click()
    picker.results.children[0].value = True
    assert picker.pull() is result
    assert "<code>/tmp/&lt;b&gt;&amp;x</code>. 2 refused (see manifest). Open a series" in picker.status.value
    assert "<b>" not in picker.status.value


def test_failed_pull_shows_the_gateways_message() -> None:
    refusal = GatewayRefused("The pull passed this project's limit of 2.0 GiB per pull <after 2.1 GiB>.",
                             "max_bytes_per_pull")
    fake = FakeGateway(pages=[([study(1)], None)], pull_steps=[running(10)], pull_result=refusal)
    picker = make(fake)
    picker.search_button.click()
    picker.results.children[0].value = True
    picker.pull_button.click()
    assert picker.last_pull is None
    assert picker.progress.bar_style == "danger"
    assert not picker.pull_button.disabled
    assert picker.status.value == (
        "<div class='workbench-error' style='color:#b00'>The pull passed this project&#x27;s limit of "
        "2.0 GiB per pull &lt;after 2.1 GiB&gt;.</div>"
    )


def test_a_later_pull_resets_the_bar_style() -> None:
    fake = FakeGateway(pages=[([study(1)], None)], pull_result=GatewayRefused("no"))
    picker = make(fake)
    picker.search_button.click()
    picker.results.children[0].value = True
    picker.pull_button.click()
    assert picker.progress.bar_style == "danger"
    styles: list[str] = []
    fake.pull_result = DONE
    fake.pull_steps = [running(1)]
    original = fake.pull

    def watching(keys: list[str], *, progress: Any = None) -> Pull:
        styles.append(picker.progress.bar_style)
        return original(keys, progress=progress)

    fake.pull = watching  # type: ignore[method-assign]
    picker.pull_button.click()
    assert styles == [""]
    assert picker.progress.bar_style == "success"


@pytest.mark.parametrize(("count", "words"), [(1, "Pulling 1 study…"), (2, "Pulling 2 studies…")])
def test_pulling_message_while_running(count: int, words: str) -> None:
    fake = FakeGateway(pages=[([study(n) for n in range(count)], None)], pull_result=DONE)
    picker = make(fake)
    picker.search_button.click()
    for row in picker.results.children:
        row.value = True
    messages: list[str] = []
    original = fake.pull

    def watching(keys: list[str], *, progress: Any = None) -> Pull:
        messages.append(picker.status.value)
        return original(keys, progress=progress)

    fake.pull = watching  # type: ignore[method-assign]
    picker.pull_button.click()
    assert messages == [f"<div class='workbench-status' style='color:inherit'>{words}</div>"]
