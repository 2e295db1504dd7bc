"""An ipywidgets form to search the archive and pull a small de-identified sample.

    from extensions.sample_widget import SamplePicker
    picker = SamplePicker()      # uses the server's project and hub token
    picker                       # shows the form
    picker.last_pull.path        # after a pull: where the files are

Everything shown comes from the gateway: pseudonyms, ages, shifted dates. Errors (a refusal,
a limit, an archive that is down) appear in the form itself, in words.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from .sample_client import GatewayRefused, Pull, SampleGateway, Study

COMMON_MODALITIES = ["CT", "MR", "US", "CR", "DX", "MG", "PT", "NM", "OT"]


class SamplePicker(w.VBox):
    def __init__(self, gateway: SampleGateway | None = None, **kwargs: Any) -> None:
        self.gateway = gateway or SampleGateway.from_env()
        self.studies: list[Study] = []
        self.last_pull: Pull | None = None
        self._next_offset: int | None = None

        info = self._project_info()
        modalities = info.get("modalities") or COMMON_MODALITIES
        self.header = w.HTML(self._header_html(info))
        self.modality = w.Dropdown(options=[("any", "")] + [(m, m) for m in modalities],
                                   description="Modality")
        self.date_from = w.DatePicker(description="From")
        self.date_to = w.DatePicker(description="To")
        self.description = w.Text(description="Description", placeholder="e.g. head")
        self.search_button = w.Button(description="Search", button_style="primary", icon="search")
        self.more_button = w.Button(description="More results", layout=w.Layout(display="none"))
        self.results = w.VBox()
        self.pull_button = w.Button(description="Pull selected", button_style="success",
                                    icon="download", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, description="Pull",
                                      layout=w.Layout(visibility="hidden"))
        self.status = w.HTML()

        self.search_button.on_click(lambda _: self.search())
        self.more_button.on_click(lambda _: self.search(more=True))
        self.pull_button.on_click(lambda _: self.pull())

        form = w.HBox([w.VBox([self.modality, self.description]), w.VBox([self.date_from, self.date_to])])
        super().__init__(
            [self.header, form, w.HBox([self.search_button, self.more_button]), self.results,
             w.HBox([self.pull_button, self.progress]), self.status],
            **kwargs,
        )
        self.add_class("workbench-sample-picker")

    # -- actions ----------------------------------------------------------------------------
    def search(self, more: bool = False) -> list[Study]:
        self._say("Searching the archive…")
        try:
            studies, next_offset = self.gateway.search_page(
                modality=self.modality.value or None,
                date_from=self.date_from.value, date_to=self.date_to.value,
                description=self.description.value or None,
                offset=self._next_offset if more and self._next_offset else 0,
            )
        except GatewayRefused as refusal:
            self._say(refusal.message, error=True)
            return self.studies
        self.studies = (self.studies if more else []) + studies
        self._next_offset = next_offset
        self.more_button.layout.display = "" if next_offset else "none"
        self.results.children = [self._row(s) for s in self.studies]
        self.pull_button.disabled = not self.studies
        count = len(self.studies)
        self._say(f"{count} stud{'y' if count == 1 else 'ies'} found." if count
                  else "No studies match; widen the dates or the description.")
        return self.studies

    def selected_keys(self) -> list[str]:
        return [row.study_key for row in self.results.children if row.value]  # type: ignore[attr-defined]

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

    def _row(self, study: Study) -> w.Checkbox:
        label = " · ".join(
            part for part in (
                study.patient, study.age, study.study_date, "/".join(study.modalities),
                study.description, f"{study.instances} images" if study.instances is not None else "",
            ) if part
        )
        box = w.Checkbox(value=False, description=label, indent=False, layout=w.Layout(width="auto"))
        box.study_key = study.study_key  # type: ignore[attr-defined]
        box.add_class("workbench-study")
        return box

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
