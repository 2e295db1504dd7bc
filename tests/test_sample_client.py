"""The notebook-side gateway client against an in-process fake gateway (httpx.MockTransport)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from extensions.sample_client import (
    GatewayRefused,
    Pull,
    SampleGateway,
    SearchResults,
    Study,
    Thumbnail,
)

BASE = "http://hub.test/services/sample-gateway/"

STUDY = {"study_key": "2.25.1", "patient": "PAAAAAAAAAA", "age": "45 years",
         "study_date": "2014-11-02", "description": "CT THORAX", "modalities": ["CT"],
         "series": 2, "instances": 40}


class FakeGateway:
    """Records requests; answers with the handler given for (method, path)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/services/sample-gateway/")
        route = self.routes.get((request.method, path))
        if route is None:
            return httpx.Response(404, json={"error": {"message": f"no route {path}", "reason": "not_found"}})
        return route(request)

    def bodies(self) -> list[object]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


def client(fake: Callable[[httpx.Request], httpx.Response], tmp_path: Path | None = None) -> SampleGateway:
    gateway = SampleGateway(BASE.rstrip("/"), "secret-token", "magi", project_dir=tmp_path)
    gateway._http.close()
    gateway._http = httpx.Client(transport=httpx.MockTransport(fake), base_url=gateway.url,
                                 headers={"Authorization": "token secret-token"})
    return gateway


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


def answer(payload: object, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=payload)


# -- requests and answers ------------------------------------------------------------------

def test_constructor_sets_base_url_and_token() -> None:
    gateway = SampleGateway(BASE.rstrip("/"), "tok", "magi")
    assert gateway.url == BASE
    assert gateway._http.headers["authorization"] == "token tok"
    gateway.close()


def test_projects(fake: FakeGateway) -> None:
    fake.routes["GET", "api/projects"] = answer({"projects": [{"id": "magi"}]})
    assert client(fake).projects() == [{"id": "magi"}]
    assert str(fake.requests[0].url) == BASE + "api/projects"
    assert fake.requests[0].headers["authorization"] == "token secret-token"


def test_search_sends_criteria_and_returns_studies(fake: FakeGateway) -> None:
    fake.routes["POST", "api/search"] = answer({"project": "magi", "studies": [STUDY], "next_page": "0.50.1."})
    gateway = client(fake)
    studies = gateway.search(modality="CT", date_from=dt.date(2020, 1, 2), date_to="2020-12-31",
                             description="", limit=10)
    assert studies == [Study(**STUDY)]
    assert fake.bodies() == [{"project": "magi", "criteria": {
        "modality": "CT", "date_from": "2020-01-02", "date_to": "2020-12-31", "limit": 10, "offset": 0}}]
    assert gateway.search_page(page="0.50.1.") == ([Study(**STUDY)], "0.50.1.")
    assert fake.bodies()[1] == {"project": "magi", "criteria": {"page": "0.50.1."}}


def test_last_page_has_no_next_page(fake: FakeGateway) -> None:
    fake.routes["POST", "api/search"] = answer({"studies": []})
    assert client(fake).search_page() == ([], None)
    assert client(fake).search_results() == SearchResults([], None, True, [])


def test_search_results_carry_completeness_and_notices(fake: FakeGateway) -> None:
    notice = "RIPA ignores requests for further results, so only its first answer could be read."
    fake.routes["POST", "api/search"] = answer(
        {"studies": [STUDY], "next_page": None, "complete": False, "notices": [notice]})
    assert client(fake).search_results(description="thorax") == SearchResults(
        [Study(**STUDY)], None, False, [notice])


def test_thumbnails(fake: FakeGateway) -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    fake.routes["POST", "api/thumbnails"] = answer({"project": "magi", "thumbnails": {
        "2.25.1": {"png": base64.b64encode(png).decode(), "message": None},
        "2.25.2": {"png": None, "message": "No preview: the pixels may show patient details."},
    }})
    gateway = client(fake)
    assert gateway.thumbnails(["2.25.1", "2.25.2"]) == {
        "2.25.1": Thumbnail(png, None),
        "2.25.2": Thumbnail(None, "No preview: the pixels may show patient details."),
    }
    assert fake.bodies() == [{"project": "magi", "study_keys": ["2.25.1", "2.25.2"]}]
    assert gateway.thumbnails([]) == {} and len(fake.requests) == 1


# -- errors --------------------------------------------------------------------------------

def test_error_body_becomes_gateway_refused(fake: FakeGateway) -> None:
    message = "You selected 4 studies; this project may pull at most 3 per pull. Select fewer studies."
    fake.routes["POST", "api/pulls"] = answer(
        {"error": {"message": message, "reason": "max_studies_per_pull"}}, 422)
    with pytest.raises(GatewayRefused) as info:
        client(fake).start_pull(["a", "b", "c", "d"])
    error = info.value
    assert (error.message, error.reason, error.status) == (message, "max_studies_per_pull", 422)
    assert str(error) == message


@pytest.mark.parametrize(
    ("response", "message", "reason"),
    [
        (httpx.Response(502, text="<html>Bad Gateway</html>"), "The sample gateway answered HTTP 502.", "http"),
        (httpx.Response(500, json=["not", "an", "object"]), "The sample gateway answered HTTP 500.", "http"),
        (httpx.Response(403, json={"error": "just a string"}), "The sample gateway answered HTTP 403.", "http"),
        (httpx.Response(401, json={"error": {"message": "Sign in to the workbench.", "reason": "unauthenticated"}}),
         "Sign in to the workbench.", "unauthenticated"),
    ],
)
def test_other_error_answers(fake: FakeGateway, response: httpx.Response, message: str, reason: str) -> None:
    fake.routes["GET", "api/projects"] = lambda request: response
    with pytest.raises(GatewayRefused) as info:
        client(fake).projects()
    assert (info.value.message, info.value.reason, info.value.status) == (message, reason, response.status_code)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(302, headers={"Location": "/hub/login"}), "The sample gateway answered HTTP 302."),
        (httpx.Response(200, text="<html>JupyterHub</html>"),
         "The sample gateway answered HTTP 200 without a JSON object."),
        (httpx.Response(200, json=[1, 2]), "The sample gateway answered HTTP 200 without a JSON object."),
    ],
)
def test_answers_that_are_not_the_gateway_api(fake: FakeGateway, response: httpx.Response, message: str) -> None:
    fake.routes["GET", "api/projects"] = lambda request: response
    with pytest.raises(GatewayRefused) as info:
        client(fake).projects()
    assert (info.value.message, info.value.reason, info.value.status) == (message, "http", response.status_code)


def test_timeout_is_readable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(GatewayRefused) as info:
        client(slow).projects()
    assert (info.value.message, info.value.reason, info.value.status) == (
        "The sample gateway did not answer in time; try again.", "timeout", 0)
    assert info.value.__suppress_context__


def test_connection_error_is_readable_and_hides_the_token() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused secret-token", request=request)

    with pytest.raises(GatewayRefused) as info:
        client(down).search()
    assert (info.value.message, info.value.reason) == (
        "The sample gateway cannot be reached (ConnectError). Is the hub running?", "unreachable")
    assert "secret-token" not in info.value.message


def test_real_connection_refused_is_readable() -> None:
    gateway = SampleGateway("http://127.0.0.1:9", "tok", "magi", timeout=2)
    with pytest.raises(GatewayRefused) as info:
        gateway.projects()
    assert info.value.reason == "unreachable"
    gateway.close()


# -- pulls ---------------------------------------------------------------------------------

def pull_record(status: str, done: int, **extra: object) -> dict:
    return {"id": "p1", "project": "magi", "status": status, "instances_total": 40,
            "instances_done": done, "instances_refused": 0, **extra}


def test_pull_polls_until_done_and_reports_progress(fake: FakeGateway, tmp_path: Path) -> None:
    fake.routes["POST", "api/pulls"] = answer(pull_record("running", 0), 202)
    states = iter([pull_record("running", 10), pull_record("running", 30),
                   pull_record("done", 40, path="samples/p1")])
    fake.routes["GET", "api/pulls/p1"] = lambda request: httpx.Response(200, json=next(states))
    seen: list[tuple[str, int]] = []
    pull = client(fake, tmp_path).pull(["2.25.1", "2.25.2"], poll_seconds=0.001,
                                       progress=lambda p: seen.append((p.status, p.instances_done)))
    assert seen == [("running", 0), ("running", 10), ("running", 30), ("done", 40)]
    assert (pull.id, pull.status, pull.instances_done, pull.path) == ("p1", "done", 40, tmp_path / "samples/p1")
    assert fake.bodies()[0] == {"project": "magi", "study_keys": ["2.25.1", "2.25.2"]}
    assert [(r.method, r.url.path.rsplit("/", 2)[-2:]) for r in fake.requests] == [
        ("POST", ["api", "pulls"])] + [("GET", ["pulls", "p1"])] * 3


def test_failed_pull_raises_with_the_gateways_message(fake: FakeGateway) -> None:
    fake.routes["POST", "api/pulls"] = answer(pull_record("running", 0), 202)
    fake.routes["GET", "api/pulls/p1"] = answer(pull_record(
        "failed", 0, error={"message": "The pull passed this project's limit of 2.0 GiB per pull.",
                            "reason": "max_bytes_per_pull"}))
    seen: list[str] = []
    with pytest.raises(GatewayRefused) as info:
        client(fake).pull(["2.25.1"], poll_seconds=0, progress=lambda p: seen.append(p.status))
    assert (info.value.message, info.value.reason) == (
        "The pull passed this project's limit of 2.0 GiB per pull.", "max_bytes_per_pull")
    assert seen == ["running", "failed"]


def test_failed_pull_without_an_error_body(fake: FakeGateway) -> None:
    fake.routes["POST", "api/pulls"] = answer(pull_record("failed", 0))
    with pytest.raises(GatewayRefused, match=r"^Pull p1 failed\.$"):
        client(fake).pull(["2.25.1"])


def test_pull_that_never_finishes_times_out(fake: FakeGateway) -> None:
    fake.routes["POST", "api/pulls"] = answer(pull_record("running", 0), 202)
    fake.routes["GET", "api/pulls/p1"] = answer(pull_record("running", 1))
    with pytest.raises(GatewayRefused, match=r"^Pull p1 still running after 0 s\.$"):
        client(fake).pull(["2.25.1"], poll_seconds=0.001, timeout=0.01)


def test_pull_path_without_project_dir_is_relative(fake: FakeGateway) -> None:
    fake.routes["GET", "api/pulls/p1"] = answer(pull_record("done", 40, path="samples/p1"))
    pull = client(fake).pull_status("p1")
    assert pull.path == Path("samples/p1")
    assert pull.raw["instances_total"] == 40


def test_pull_manifest_and_series_paths(tmp_path: Path) -> None:
    folder = tmp_path / "p1"
    folder.mkdir()
    manifest = {"pull": "p1", "instances": [{"file": "s/b/2.dcm"}, {"file": "s/a/1.dcm"}, {"file": "s/b/3.dcm"}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    pull = Pull(id="p1", project="magi", status="done", path=folder)
    assert pull.manifest == manifest
    assert pull.series_paths() == [folder / "s" / "a", folder / "s" / "b"]
    undelivered = Pull(id="p2", project="magi", status="failed")
    assert undelivered.series_paths() == []
    with pytest.raises(GatewayRefused, match=r"Pull p2 has not delivered files \(failed\)\."):
        undelivered.manifest  # noqa: B018


# -- from_env ------------------------------------------------------------------------------

ENV = ("WORKBENCH_GATEWAY_URL", "JUPYTERHUB_API_TOKEN", "WORKBENCH_PROJECT")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_from_env_outside_a_workbench_server(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(GatewayRefused) as info:
        SampleGateway.from_env()
    assert info.value.message == (
        "This notebook is not running in a workbench server (missing WORKBENCH_GATEWAY_URL, "
        "JUPYTERHUB_API_TOKEN, WORKBENCH_PROJECT). Start a server from the workbench hub and "
        "choose a project."
    )


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ({"WORKBENCH_GATEWAY_URL": "http://x/", "JUPYTERHUB_API_TOKEN": "t"}, "WORKBENCH_PROJECT"),
        ({"JUPYTERHUB_API_TOKEN": "t", "WORKBENCH_PROJECT": "magi"}, "WORKBENCH_GATEWAY_URL"),
        ({"WORKBENCH_GATEWAY_URL": "http://x/", "WORKBENCH_PROJECT": "magi"}, "JUPYTERHUB_API_TOKEN"),
        ({"WORKBENCH_GATEWAY_URL": "http://x/", "JUPYTERHUB_API_TOKEN": ""}, "JUPYTERHUB_API_TOKEN, WORKBENCH_PROJECT"),
    ],
)
def test_from_env_names_what_is_missing(clean_env: pytest.MonkeyPatch, present: dict, missing: str) -> None:
    for name, value in present.items():
        clean_env.setenv(name, value)
    with pytest.raises(GatewayRefused, match=rf"\(missing {missing}\)\. Start a server"):
        SampleGateway.from_env()


def test_from_env_in_a_workbench_server(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("WORKBENCH_GATEWAY_URL", "http://hub:8000/services/sample-gateway")
    clean_env.setenv("JUPYTERHUB_API_TOKEN", "tok")
    clean_env.setenv("WORKBENCH_PROJECT", "magi")
    clean_env.setenv("HOME", str(tmp_path))
    gateway = SampleGateway.from_env()
    assert (gateway.url, gateway.project, gateway.project_dir) == (
        "http://hub:8000/services/sample-gateway/", "magi", tmp_path / "projects" / "magi")
    other = SampleGateway.from_env(project="kina")
    assert (other.project, other.project_dir) == ("kina", tmp_path / "projects" / "kina")
    gateway.close()
    other.close()


def test_delete_pull_sends_delete_and_shows_the_refusal(fake: FakeGateway, tmp_path: Path) -> None:
    fake.routes[("DELETE", "api/pulls/p1")] = answer(
        {"id": "p1", "project": "magi", "status": "deleted", "path": "samples/p1"})
    fake.routes[("DELETE", "api/pulls/p2")] = answer(
        {"error": {"message": "Pull p2 is still running; delete it when it has finished.",
                   "reason": "conflict"}}, 409)
    gateway = client(fake, tmp_path)
    deleted = gateway.delete_pull("p1")
    assert deleted.status == "deleted" and deleted.path == tmp_path / "samples/p1"
    with pytest.raises(GatewayRefused, match="still running") as refused:
        gateway.delete_pull("p2")
    assert refused.value.reason == "conflict"
