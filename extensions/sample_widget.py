"""An ipywidgets form to search the archive and pull a small de-identified sample.

    from extensions.sample_widget import SamplePicker
    picker = SamplePicker()      # uses the server's project and hub token
    picker                       # shows the form
    picker.last_pull.path        # after a pull: where the files are

A search shows one page of studies at a time, each row with a thumbnail the gateway
rendered from de-identified pixels (or why there is none) and a tick box; "Next" and
"Previous" page through the results, and ticks are kept across pages. "Pull selected"
pulls every ticked study with a progress bar. Everything shown comes from the gateway:
pseudonyms, ages, shifted dates. Errors (a refusal, a limit, an archive that is down) and
what the gateway says about a search (results that may be incomplete) appear in the form
itself, in words.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from .sample_client import (
    GatewayRefused,
    Pull,
    SampleGateway,
    SearchResults,
    Study,
    Thumbnail,
)

COMMON_MODALITIES = ["CT", "MR", "US", "CR", "DX", "MG", "PT", "NM", "OT"]
THUMB_SIZE = 64


class StudyRow(w.HBox):
    """One study: thumbnail, tick box with a plain-text label."""

    def __init__(self, study: Study, selected: bool) -> None:
        self.study = study
        self.study_key = study.study_key
        self.checkbox = w.Checkbox(value=selected, description=_label(study), indent=False,
                                   layout=w.Layout(width="auto"))
        self.thumb: w.Widget = _placeholder("…", "loading the preview")
        super().__init__([self.thumb, self.checkbox], layout=w.Layout(align_items="center"))
        self.add_class("workbench-study")

    @property
    def value(self) -> bool:
        return bool(self.checkbox.value)

    @value.setter
    def value(self, ticked: bool) -> None:
        self.checkbox.value = ticked

    @property
    def description(self) -> str:
        return str(self.checkbox.description)

    def show_thumbnail(self, thumbnail: Thumbnail | None) -> None:
        if thumbnail is not None and thumbnail.png:
            image = w.Image(value=thumbnail.png, format="png",
                            layout=w.Layout(width=f"{THUMB_SIZE}px", height="auto"))
            image.add_class("workbench-thumbnail")
            self.thumb = image
        else:
            why = thumbnail.message if thumbnail and thumbnail.message else "no preview"
            self.thumb = _placeholder("no preview", why)
        self.children = (self.thumb, self.checkbox)


class SamplePicker(w.VBox):
    def __init__(self, gateway: SampleGateway | None = None, page_size: int = 20, **kwargs: Any) -> None:
        self.gateway = gateway or SampleGateway.from_env()
        self.page_size = page_size
        self.studies: list[Study] = []  # the page on show
        self.last_pull: Pull | None = None
        self._criteria: dict[str, Any] = {}
        self._pages: list[SearchResults] = []
        self._page = 0
        self._selected: dict[str, Study] = {}
        self._thumbnails: dict[str, Thumbnail] = {}

        info = self._project_info()
        modalities = info.get("modalities") or COMMON_MODALITIES
        self.header = w.HTML(self._header_html(info))
        self.description = w.Text(description="Description", placeholder="words, e.g. thorax")
        self.modality = w.Dropdown(options=[("any", "")] + [(m, m) for m in modalities],
                                   description="Modality")
        # Searched as shown: every patient's dates are shifted, and so is this range.
        self.date_from = w.DatePicker(description="From", tooltip="a shifted date, as the results show")
        self.date_to = w.DatePicker(description="To", tooltip="a shifted date, as the results show")
        self.search_button = w.Button(description="Search", button_style="primary", icon="search")
        self.results = w.VBox()
        self.results.add_class("workbench-results")
        self.notices = w.HTML()
        self.previous_button = w.Button(description="Previous", icon="arrow-left",
                                        layout=w.Layout(display="none"))
        self.next_button = w.Button(description="Next", icon="arrow-right", layout=w.Layout(display="none"))
        self.page_label = w.HTML()
        self.selection = w.HTML()
        self.pull_button = w.Button(description="Pull selected", button_style="success",
                                    icon="download", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, description="Pull",
                                      layout=w.Layout(visibility="hidden"))
        self.status = w.HTML()

        self.search_button.on_click(lambda _: self.search())
        self.next_button.on_click(lambda _: self.next_page())
        self.previous_button.on_click(lambda _: self.previous_page())
        self.pull_button.on_click(lambda _: self.pull())

        form = w.HBox([w.VBox([self.description, self.modality]), w.VBox([self.date_from, self.date_to])])
        pager = w.HBox([self.previous_button, self.page_label, self.next_button])
        super().__init__(
            [self.header, form, self.search_button, self.notices, self.results, pager,
             w.HBox([self.pull_button, self.selection, self.progress]), self.status],
            **kwargs,
        )
        self.add_class("workbench-sample-picker")

    # -- search and pages -------------------------------------------------------------------
    def search(self) -> list[Study]:
        """A new search with the form's values: its first page."""
        criteria = {
            "modality": self.modality.value or None,
            "date_from": self.date_from.value, "date_to": self.date_to.value,
            "description": self.description.value or None, "limit": self.page_size,
        }
        results = self._fetch(criteria, None)
        if results is None:
            return self.studies
        self._criteria, self._pages, self._page = criteria, [results], 0
        self._selected.clear()
        self._show()
        return self.studies

    def next_page(self) -> list[Study]:
        if self._page + 1 < len(self._pages):
            self._page += 1
        else:
            token = self._pages[self._page].next_page if self._pages else None
            if token is None:
                return self.studies
            results = self._fetch(self._criteria, token)
            if results is None:
                return self.studies
            self._pages.append(results)
            self._page += 1
        self._show()
        return self.studies

    def previous_page(self) -> list[Study]:
        if self._page > 0:
            self._page -= 1
            self._show()
        return self.studies

    def selected_keys(self) -> list[str]:
        return list(self._selected)

    def _fetch(self, criteria: dict[str, Any], token: str | None) -> SearchResults | None:
        self._say("Searching the archive…")
        try:
            return self.gateway.search_results(**criteria, **({"page": token} if token else {}))
        except GatewayRefused as refusal:
            self._say(refusal.message, error=True)
            return None

    def _show(self) -> None:
        page = self._pages[self._page]
        self.studies = list(page.studies)
        rows = [StudyRow(study, study.study_key in self._selected) for study in self.studies]
        for row in rows:
            row.checkbox.observe(lambda change, row=row: self._tick(row, change["new"]), names="value")
        self.results.children = rows
        self.notices.value = "".join(
            f"<div class='workbench-notice' style='color:#8a5a00'>{html.escape(n)}</div>" for n in page.notices
        )
        more = page.next_page is not None or self._page + 1 < len(self._pages)
        self.next_button.layout.display = "" if more else "none"
        self.previous_button.layout.display = "" if self._page > 0 else "none"
        self.page_label.value = f"page {self._page + 1}" if more or self._page else ""
        self._update_selection()
        count = len(self.studies)
        if self._page == 0 and not count:
            self._say("No studies match; widen the dates or the description.")
        else:
            found = f"{count} stud{'y' if count == 1 else 'ies'}"
            self._say(f"{found} on this page." if more or self._page else f"{found} found.")
        self._load_thumbnails(rows)

    def _load_thumbnails(self, rows: list[StudyRow]) -> None:
        missing = [row.study_key for row in rows if row.study_key not in self._thumbnails]
        if missing:
            try:
                self._thumbnails.update(self.gateway.thumbnails(missing))
            except GatewayRefused as refusal:
                for key in missing:
                    self._thumbnails[key] = Thumbnail(None, f"No preview: {refusal.message}")
        for row in rows:
            row.show_thumbnail(self._thumbnails.get(row.study_key))

    def _tick(self, row: StudyRow, ticked: bool) -> None:
        if ticked:
            self._selected[row.study_key] = row.study
        else:
            self._selected.pop(row.study_key, None)
        self._update_selection()

    def _update_selection(self) -> None:
        count = len(self._selected)
        self.pull_button.disabled = not self.studies and not count
        self.selection.value = f"{count} selected" if count else ""

    # -- pull -------------------------------------------------------------------------------
    def pull(self) -> Pull | None:
        keys = self.selected_keys()
        if not keys:
            self._say("Tick one or more studies first.", error=True)
            return None
        self.pull_button.disabled = True
        self.progress.layout.visibility = "visible"
        self.progress.bar_style = ""
        self._say(f"Pulling {len(keys)} stud{'y' if len(keys) == 1 else 'ies'}…")
        try:
            pull = self.gateway.pull(keys, progress=self._show_progress)
        except GatewayRefused as refusal:
            self.progress.bar_style = "danger"
            self._say(refusal.message, error=True)
            return None
        finally:
            self.pull_button.disabled = False
        self.last_pull = pull
        self.header.value = self._header_html(self._project_info())  # today's usage moved on
        self.progress.bar_style = "success"
        refused = f" {pull.instances_refused} refused (see manifest)." if pull.instances_refused else ""
        self._say(
            f"Pulled {pull.instances_done} de-identified images into "
            f"<code>{html.escape(str(pull.path))}</code>.{refused} Open a series with "
            "<code>open_series(picker.last_pull.series_paths()[0])</code>.",
            raw_html=True,
        )
        return pull

    # -- display ----------------------------------------------------------------------------
    def _show_progress(self, pull: Pull) -> None:
        self.progress.max = max(pull.instances_total, 1)
        self.progress.value = pull.instances_done
        self.progress.description = f"{pull.instances_done}/{pull.instances_total}"

    def _project_info(self) -> dict[str, Any]:
        try:
            projects = self.gateway.projects()
        except GatewayRefused:
            return {"id": self.gateway.project}
        return next((p for p in projects if p["id"] == self.gateway.project), {"id": self.gateway.project})

    @staticmethod
    def _header_html(info: dict[str, Any]) -> str:
        title = html.escape(str(info.get("title") or info.get("id")))
        limits = info.get("limits") or {}
        parts = [f"<b>Archive samples for {title}</b>"]
        if limits:
            parts.append(
                f"up to {limits['max_studies_per_pull']} studies and "
                f"{limits['max_instances_per_pull']} images per pull; "
                f"{info.get('studies_pulled_today', 0)} of {limits['max_studies_per_day']} studies pulled today"
            )
        if info.get("why_not"):
            parts.append(f"<span style='color:#b00'>{html.escape(info['why_not'])}</span>")
        return "<br>".join(parts)

    def _say(self, message: str, *, error: bool = False, raw_html: bool = False) -> None:
        text = message if raw_html else html.escape(message)
        color = "#b00" if error else "inherit"
        css = "workbench-error" if error else "workbench-status"
        self.status.value = f"<div class='{css}' style='color:{color}'>{text}</div>"


def _label(study: Study) -> str:
    return " · ".join(
        part for part in (
            study.patient, study.age, study.study_date, "/".join(study.modalities),
            study.description, f"{study.instances} images" if study.instances is not None else "",
        ) if part
    )


def _placeholder(text: str, why: str) -> w.HTML:
    box = w.HTML(
        f"<div title='{html.escape(why, quote=True)}' style='width:{THUMB_SIZE}px;height:{THUMB_SIZE}px;"
        f"display:flex;align-items:center;justify-content:center;font-size:10px;color:#777;"
        f"border:1px solid #ddd'>{html.escape(text)}</div>"
    )
    box.add_class("workbench-no-thumbnail")
    return box
