"""Notebook-side client of the sample gateway.

Runs inside a user's server and talks to the hub-side gateway with the server's own hub
token ($JUPYTERHUB_API_TOKEN). It never sees archive credentials or identifying data: the
gateway answers with pseudonyms, ages and shifted dates, and delivers de-identified files
into the project workspace.

    from extensions.sample_client import SampleGateway
    gw = SampleGateway.from_env()
    studies = gw.search(modality="CT", description="head")
    pull = gw.pull([s.study_key for s in studies[:2]])
    pull.path  # folder with the DICOM files and manifest.csv

    page = gw.search_results(modality="CT", limit=20)       # one page, with what the
    page.next_page, page.complete, page.notices              # gateway says about it
    gw.search_results(modality="CT", limit=20, page=page.next_page)   # the next one
    gw.thumbnails([s.study_key for s in page.studies])      # PNG previews, or why not
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


class GatewayRefused(Exception):
    """The gateway said no, or could not do it; ``message`` says why and what to do."""

    def __init__(self, message: str, reason: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Study:
    study_key: str
    patient: str
    age: str
    study_date: str
    description: str
    modalities: list[str]
    series: int | None
    instances: int | None


@dataclass(frozen=True)
class SearchResults:
    """One page of a search: ``next_page`` goes on (None: the last page); ``complete`` is
    False when the archive may hold more matches than it could show, and ``notices`` say why."""

    studies: list[Study]
    next_page: str | None = None
    complete: bool = True
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Thumbnail:
    """A PNG preview rendered by the gateway from de-identified pixels, or why there is none."""

    png: bytes | None
    message: str | None = None


@dataclass
class Pull:
    id: str
    project: str
    status: str
    instances_total: int = 0
    instances_done: int = 0
    instances_refused: int = 0
    instances_received: int = 0
    error: dict[str, str] | None = None
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def manifest(self) -> dict[str, Any]:
        if self.path is None:
            raise GatewayRefused(f"Pull {self.id} has not delivered files ({self.status}).")
        return json.loads((self.path / "manifest.json").read_text())

    def series_paths(self) -> list[Path]:
        """One folder per delivered series, ready for ``extensions.loading.open_series``."""
        if self.path is None:
            return []
        return sorted({(self.path / row["file"]).parent for row in self.manifest["instances"]})


class SampleGateway:
    def __init__(
        self, url: str, token: str, project: str, project_dir: Path | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.url = url.rstrip("/") + "/"
        self.project = project
        self.project_dir = project_dir
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"token {token}"}, timeout=timeout
        )

    @classmethod
    def from_env(cls, project: str | None = None) -> SampleGateway:
        """Configured from what the workbench spawner puts in the server's environment."""
        missing = [v for v in ("WORKBENCH_GATEWAY_URL", "JUPYTERHUB_API_TOKEN") if not os.environ.get(v)]
        project = project or os.environ.get("WORKBENCH_PROJECT")
        if not project:
            missing.append("WORKBENCH_PROJECT")
        if missing:
            raise GatewayRefused(
                "This notebook is not running in a workbench server (missing "
                + ", ".join(missing)
                + "). Start a server from the workbench hub and choose a project."
            )
        home = Path(os.environ.get("HOME", "~")).expanduser()
        return cls(
            os.environ["WORKBENCH_GATEWAY_URL"], os.environ["JUPYTERHUB_API_TOKEN"], project,
            project_dir=home / "projects" / project,
        )

    def close(self) -> None:
        self._http.close()

    # -- API --------------------------------------------------------------------------------
    def projects(self) -> list[dict[str, Any]]:
        return self._call("GET", "api/projects")["projects"]

    def search(
        self, *, modality: str | None = None, date_from: dt.date | str | None = None,
        date_to: dt.date | str | None = None, description: str | None = None,
        limit: int = 50, offset: int = 0,
    ) -> list[Study]:
        """Studies of the project's archive; dates are the shifted dates results show, and
        the description matches the de-identified description."""
        result = self.search_page(modality=modality, date_from=date_from, date_to=date_to,
                                  description=description, limit=limit, offset=offset)
        return result[0]

    def search_page(self, **criteria: Any) -> tuple[list[Study], str | None]:
        """(studies, next page token) of one page; give the token back as ``page=``."""
        results = self.search_results(**criteria)
        return results.studies, results.next_page

    def search_results(self, **criteria: Any) -> SearchResults:
        body = {
            "project": self.project,
            "criteria": {k: (v.isoformat() if isinstance(v, dt.date) else v)
                         for k, v in criteria.items() if v not in (None, "")},
        }
        answer = self._call("POST", "api/search", json=body)
        return SearchResults(
            studies=[Study(**s) for s in answer["studies"]],
            next_page=answer.get("next_page"),
            complete=bool(answer.get("complete", True)),
            notices=[str(n) for n in answer.get("notices") or []],
        )

    def thumbnails(self, study_keys: Sequence[str]) -> dict[str, Thumbnail]:
        """Previews of studies from a search (at most 50 at a time)."""
        if not study_keys:
            return {}
        answer = self._call("POST", "api/thumbnails",
                            json={"project": self.project, "study_keys": list(study_keys)})
        out = {}
        for key, item in (answer.get("thumbnails") or {}).items():
            png = base64.b64decode(item["png"]) if item.get("png") else None
            out[key] = Thumbnail(png, item.get("message"))
        return out

    def start_pull(self, study_keys: Sequence[str]) -> Pull:
        answer = self._call("POST", "api/pulls", json={"project": self.project, "study_keys": list(study_keys)})
        return self._pull(answer)

    def pull_status(self, pull_id: str) -> Pull:
        return self._pull(self._call("GET", f"api/pulls/{pull_id}"))

    def delete_pull(self, pull_id: str) -> Pull:
        """Remove a delivered pull's files from the project workspace (audited; it still
        counts toward the day's limits)."""
        return self._pull(self._call("DELETE", f"api/pulls/{pull_id}"))

    def pull(
        self, study_keys: Sequence[str], *, progress: Callable[[Pull], None] | None = None,
        poll_seconds: float = 0.5, timeout: float = 3600.0,
    ) -> Pull:
        """Pull and wait; raises GatewayRefused with the gateway's message if it fails."""
        pull = self.start_pull(study_keys)
        deadline = time.monotonic() + timeout
        while pull.status == "running":
            if progress:
                progress(pull)
            if time.monotonic() > deadline:
                raise GatewayRefused(f"Pull {pull.id} still running after {timeout:.0f} s.")
            time.sleep(poll_seconds)
            pull = self.pull_status(pull.id)
        if progress:
            progress(pull)
        if pull.status != "done":
            error = pull.error or {}
            raise GatewayRefused(error.get("message", f"Pull {pull.id} {pull.status}."), error.get("reason", ""))
        return pull

    # -- plumbing ---------------------------------------------------------------------------
    def _pull(self, answer: dict[str, Any]) -> Pull:
        path = None
        if answer.get("path"):
            base = self.project_dir or Path(".")
            path = base / answer["path"]
        return Pull(
            id=answer["id"], project=answer["project"], status=answer["status"],
            instances_total=answer.get("instances_total", 0),
            instances_done=answer.get("instances_done", 0),
            instances_refused=answer.get("instances_refused", 0),
            instances_received=answer.get("instances_received", answer.get("instances_done", 0)),
            error=answer.get("error"), path=path, raw=answer,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise GatewayRefused("The sample gateway did not answer in time; try again.", "timeout") from None
        except httpx.HTTPError as exc:
            raise GatewayRefused(
                f"The sample gateway cannot be reached ({type(exc).__name__}). Is the hub running?",
                "unreachable",
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        # A redirect (e.g. to the hub's login page) or a non-JSON answer is not the gateway's
        # API speaking: say so, instead of failing later with a KeyError.
        if response.status_code >= 300 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                raise GatewayRefused(error.get("message", ""), error.get("reason", ""), response.status_code)
            raise GatewayRefused(
                f"The sample gateway answered HTTP {response.status_code}"
                + ("." if response.status_code >= 300 else " without a JSON object."),
                "http", response.status_code,
            )
        return body
