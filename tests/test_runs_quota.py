"""How a Nomad run is charged: the choice of quota hook, and the quota service's API as a
user's server calls it (the ledger itself is exercised with real runs in test_runs_nomad.py)."""

from __future__ import annotations

import functools
import json

import httpx
import pytest

from extensions.runs.errors import RunRefused
from extensions.runs.quota import (
    LedgerQuota,
    NoQuota,
    RunClaim,
    ServiceQuota,
    quota_from_env,
)
from hub_config.loader import parse_config

CONFIG = parse_config(
    """\
profiles:
  - {slug: gpu-1, name: One GPU, cpu: 4, memory: 8G, gpus: 1}
projects:
  - {id: magi, title: MAGI, members: [anna], approval: {reference: R, expires: 2099-12-31}}
""",
    "quota-test.yaml",
)
CLAIM = RunClaim("magi", "anna", "20250101-000000-abcdef", CONFIG.profile("gpu-1"))  # type: ignore[arg-type]
ALLOCATION = "a" * 32


def test_the_hook_is_chosen_from_the_environment() -> None:
    assert isinstance(quota_from_env(CONFIG, {}), NoQuota)
    assert isinstance(quota_from_env(CONFIG, {"WORKBENCH_QUOTA_DB": "sqlite:///x.sqlite"}), LedgerQuota)
    service = quota_from_env(CONFIG, {"WORKBENCH_QUOTA_URL": "http://hub/services/quota/",
                                      "JUPYTERHUB_API_TOKEN": "t", "WORKBENCH_QUOTA_DB": "sqlite:///x"})
    assert isinstance(service, ServiceQuota)  # a user's server goes through the service
    assert isinstance(quota_from_env(CONFIG, {"WORKBENCH_QUOTA_URL": "http://hub/q/"}), NoQuota)


@pytest.fixture
def quota_api(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict]]:
    """The quota service's allocations API, answered in process."""
    calls: list[tuple[str, str, dict]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        calls.append((request.method, request.url.path, body))
        assert request.headers["Authorization"] == "token server-token"
        path = request.url.path.removeprefix("/services/quota/api/")
        if request.method == "POST" and path == "allocations":
            if body["gpus"] > 0 and body["project"] == "full":
                return httpx.Response(429, json={"error": {
                    "message": "Project full has used 10 of its 10 GPU-hours this month.",
                    "limit": "gpu_hours"}})
            return httpx.Response(201, json={"id": ALLOCATION})
        if path.endswith("/heartbeat"):
            return httpx.Response(200, json={"id": ALLOCATION, "stop_requested_at": 1700000000.0})
        return httpx.Response(200, json={"id": ALLOCATION})

    transport = httpx.MockTransport(answer)
    monkeypatch.setattr(httpx, "AsyncClient", functools.partial(httpx.AsyncClient, transport=transport))
    return calls


async def test_a_run_is_charged_as_a_batch_allocation_through_the_service(quota_api: list) -> None:
    quota = ServiceQuota("http://hub/services/quota/", "server-token")
    allocation = await quota.reserve(CLAIM)
    await quota.started(allocation)
    stop = await quota.heartbeat(allocation)
    await quota.ended(allocation, "run succeeded")
    assert allocation == ALLOCATION
    assert quota_api[0] == ("POST", "/services/quota/api/allocations", {
        "project": "magi", "kind": "batch", "cpu": 4.0, "gpus": 1, "name": f"run:{CLAIM.run_id}"})
    assert [(m, p.rsplit("/", 1)[-1]) for m, p, _ in quota_api[1:]] == [
        ("POST", "start"), ("POST", "heartbeat"), ("DELETE", ALLOCATION)]
    assert stop is not None and "budget is used up" in stop


async def test_a_refusal_of_the_service_is_a_run_refusal_with_its_message(quota_api: list) -> None:
    quota = ServiceQuota("http://hub/services/quota/", "server-token")
    claim = RunClaim("full", "anna", "r", CLAIM.profile)
    with pytest.raises(RunRefused, match="used 10 of its 10 GPU-hours") as refused:
        await quota.reserve(claim)
    assert refused.value.reason == "gpu_hours"
