"""Catalogue mounts and the catalogue API through the real hub (session ``hub`` fixture)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.fixtures.workbench import RunningHub
from tests.test_hub import _events, environ_of, stop, wait_ready

pytestmark = [pytest.mark.hub, pytest.mark.orthanc]


async def test_spawn_mounts_approved_datasets_removes_lapsed_ones_and_says_why(hub: RunningHub) -> None:
    data = hub.files.data_dir
    links = hub.files.storage.home("wbadmin") / "datasets"
    links.mkdir(parents=True, exist_ok=True)
    stale = links / "old-scans"  # an earlier start linked it; its approval has lapsed since
    if not stale.is_symlink():
        stale.symlink_to(data / "datasets" / "old-scans", target_is_directory=True)

    headers = {"Authorization": f"token {hub.token}"}
    api = f"{hub.url}/hub/api"
    events: list[dict] = []
    async with httpx.AsyncClient(headers=headers, timeout=90) as client:
        await client.post(f"{api}/users/wbadmin")
        spawn = asyncio.create_task(
            client.post(f"{api}/users/wbadmin/server", json={"project": "magi", "profile": "cpu-small"}))
        await asyncio.sleep(0.3)
        await asyncio.wait_for(asyncio.gather(
            _events(client, f"{api}/users/wbadmin/server/progress", events), spawn), 90)
    messages = [e.get("message", "") for e in events]
    assert "Datasets mounted: phantoms" in messages, messages
    assert any("approval DUA-OLD expired on 2020-06-30" in m and "Removed ~/datasets/old-scans." in m
               for m in messages), messages
    assert any(m.startswith("Dataset kina-knees is not approved for magi") for m in messages), messages
    entry = wait_ready(hub, "wbadmin")
    assert environ_of(entry["state"]["pid"])["WORKBENCH_DATASETS"] == "phantoms"
    assert sorted(p.name for p in links.iterdir()) == ["phantoms"]
    stop(hub, "wbadmin")


def test_catalogue_api_for_members_and_stewards(hub: RunningHub) -> None:
    url = f"{hub.url}/services/airlock/api/catalogue"
    anna = {"Authorization": f"token {hub.user_token('anna')}"}
    body = httpx.get(url, params={"project": "magi"}, headers=anna, timeout=30).json()
    statuses = {e["dataset"]["id"]: e["status"] for e in body["datasets"]}
    assert statuses == {"phantoms": "mounted", "old-scans": "approval_expired", "kina-knees": "other_project"}
    assert all("projects" not in e["dataset"] for e in body["datasets"])  # not for researchers
    assert httpx.get(url, params={"project": "kina"}, headers=anna, timeout=30).status_code == 403
    stella = {"Authorization": f"token {hub.user_token('stella')}"}
    seen = httpx.get(url, headers=stella, timeout=30).json()["datasets"]
    assert {e["dataset"]["id"]: e["dataset"]["projects"] for e in seen}["phantoms"] == ["magi", "course"]
    assert httpx.get(url, timeout=30).status_code == 401
