"""A notebook widget to browse the data catalogue from the server's project.

``catalogue_browser()`` shows every dataset of the catalogue with, for the project this
server runs for ($WORKBENCH_PROJECT), whether it is mounted and why not otherwise; a filter
narrows by usability and data kind, and picking a dataset shows its full entry (owner,
legal basis, approval, location, retention, ...).

Where the data comes from: in a workbench server, the airlock service's catalogue API
($WORKBENCH_AIRLOCK_URL, with the server's own hub token); elsewhere (the hub machine, tests)
the workbench YAML directly. Both give the same JSON (:func:`catalogue.status_json`).
"""

from __future__ import annotations

import datetime as dt
import os
from html import escape
from typing import Any

import httpx
import ipywidgets as widgets

from hub_config.model import Dataset

from . import catalogue

_COLOURS = {"mounted": "#1a7f37", "approved": "#1a7f37", "available": "#9a6700"}


def load_catalogue(project: str | None = None, *, config_file: str | None = None) -> dict[str, Any]:
    """The catalogue as seen from ``project`` (JSON, as the airlock's API returns it)."""
    url = os.environ.get("WORKBENCH_AIRLOCK_URL")
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    if url and token and config_file is None:
        response = httpx.get(
            url.rstrip("/") + "/api/catalogue",
            params={"project": project} if project else None,
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
        response.raise_for_status()
        return response.json()
    from hub_config.loader import load_config

    config = load_config(config_file)
    today = dt.date.today()
    return {
        "project": project,
        "date": today.isoformat(),
        "datasets": [catalogue.status_json(s, with_projects=True)
                     for s in catalogue.catalogue_for(config, project, today)],
    }


def _dataset(entry: dict[str, Any]) -> tuple[Dataset, bool]:
    data = dict(entry["dataset"])
    has_projects = "projects" in data
    if not has_projects:
        data["projects"] = []
    return Dataset.model_validate(data), has_projects


def table_html(data: dict[str, Any], show: str = "all", kind: str = "all") -> str:
    """The catalogue as an HTML table (escaped), filtered by usability and kind."""
    rows = []
    for entry in data["datasets"]:
        usable = entry["status"] in ("mounted", "approved")
        if (show == "usable" and not usable) or (show == "not usable" and usable):
            continue
        if kind != "all" and entry["dataset"].get("kind") != kind:
            continue
        d = entry["dataset"]
        colour = _COLOURS.get(entry["status"], "#a40e26")
        rows.append(
            f"<tr class='wb-dataset' data-id='{escape(d['id'])}'><td><code>{escape(d['id'])}</code></td>"
            f"<td>{escape(d['title'])}</td><td>{escape(d.get('kind') or '')}</td>"
            f"<td>{escape(d.get('sensitivity') or '')}</td>"
            f"<td style='color:{colour}' title='{escape(entry['message'])}'>{escape(entry['label'])}</td></tr>"
        )
    if not rows:
        rows.append("<tr><td colspan='5'>No dataset matches.</td></tr>")
    head = "<tr><th>ID</th><th>Title</th><th>Kind</th><th>Sensitivity</th><th>Status</th></tr>"
    return f"<table class='wb-catalogue'>{head}{''.join(rows)}</table>"


def detail_html(entry: dict[str, Any]) -> str:
    dataset, has_projects = _dataset(entry)
    rows = [
        (label, value) for label, value in catalogue.describe(dataset)
        if has_projects or label != "Projects allowed"
    ]
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return (f"<div class='wb-dataset-detail'><h4>{escape(dataset.id)}</h4><table>{body}</table>"
            f"<p><b>{escape(entry['label'])}</b>: {escape(entry['message'])}</p></div>")


def catalogue_browser(project: str | None = None, data: dict[str, Any] | None = None) -> widgets.VBox:
    """The widget. ``project`` defaults to the server's project; ``data`` skips loading."""
    project = project or os.environ.get("WORKBENCH_PROJECT") or None
    data = data if data is not None else load_catalogue(project)
    kinds = sorted({e["dataset"].get("kind") for e in data["datasets"] if e["dataset"].get("kind")})
    header = widgets.HTML(
        f"<b>Data catalogue</b>: {len(data['datasets'])} dataset(s)"
        + (f", seen from <code>{escape(project)}</code>" if project else "")
        + f" on {escape(data['date'])}"
    )
    show = widgets.ToggleButtons(options=["all", "usable", "not usable"], value="all",
                                 description="Show")
    kind = widgets.Dropdown(options=["all", *kinds], value="all", description="Kind")
    table = widgets.HTML(table_html(data))
    ids = [e["dataset"]["id"] for e in data["datasets"]]
    pick = widgets.Dropdown(options=["(choose a dataset)", *ids], description="Details")
    detail = widgets.HTML("")

    def refresh(_: Any = None) -> None:
        table.value = table_html(data, show.value, kind.value)

    def show_detail(_: Any = None) -> None:
        entry = next((e for e in data["datasets"] if e["dataset"]["id"] == pick.value), None)
        detail.value = detail_html(entry) if entry else ""

    show.observe(refresh, names="value")
    kind.observe(refresh, names="value")
    pick.observe(show_detail, names="value")
    box = widgets.VBox([header, widgets.HBox([show, kind]), table, pick, detail])
    box.add_class("workbench-catalogue")
    return box
