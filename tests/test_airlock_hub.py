"""The airlock as a hub service: tokens and scopes, request, check, review, delivery, audit."""

from __future__ import annotations

from pathlib import Path

import httpx
import pydicom.data
import pytest

from services.sample_gateway.audit import verify
from tests.fixtures.workbench import RunningHub

pytestmark = [pytest.mark.hub, pytest.mark.orthanc]


def _client(hub: RunningHub, user: str | None, scopes: list[str] | None = None) -> httpx.Client:
    headers = {"Authorization": f"token {hub.user_token(user, scopes)}"} if user else {}
    return httpx.Client(base_url=f"{hub.url}/services/airlock/", headers=headers, timeout=60)


def test_tokens_and_scopes(hub: RunningHub) -> None:
    with _client(hub, None) as anonymous:
        assert anonymous.get("api/requests").status_code == 401
        assert anonymous.post("api/requests", json={}).status_code == 401
    with _client(hub, "anna", ["read:users:name!user=anna"]) as narrow:
        response = narrow.get("api/requests")
        assert response.status_code == 403 and "access:services!service=airlock" in response.text
    with _client(hub, "anna") as anna:
        assert anna.get("api/requests").status_code == 200
        response = anna.post("api/requests/20260101-abcdef01/review", json={"decision": "approve", "reason": "x"})
        assert response.status_code == 403 and "custom:airlock:review" in response.text


def test_request_check_review_deliver_and_audit(hub: RunningHub) -> None:
    workspace = hub.files.storage.project_dir("magi")
    (workspace / "results").mkdir(parents=True, exist_ok=True)
    (workspace / "results" / "auc.csv").write_text("model,auc\nbaseline,0.87\n")
    raw = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    (workspace / "raw-ct.dcm").write_bytes(raw.read_bytes())

    with _client(hub, "anna") as anna, _client(hub, "stella") as stella:
        refused = anna.post("api/requests", json={"project": "magi", "paths": ["raw-ct.dcm"]})
        assert refused.status_code == 422, refused.text
        assert {f["code"] for f in refused.json()["findings"]} >= {"identity_not_removed", "identifying_value"}

        created = anna.post("api/requests", json={"project": "magi", "paths": ["results/auc.csv"],
                                                  "note": "table 2 of the paper"})
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]
        assert created.json()["status"] == "pending_review"
        assert created.headers["Location"].endswith(f"/api/requests/{request_id}")

        page = stella.get("")
        assert page.status_code == 200 and "Waiting for your review" in page.text and request_id in page.text

        no_reason = stella.post(f"api/requests/{request_id}/review", json={"decision": "approve"})
        assert no_reason.status_code == 422
        approved = stella.post(f"api/requests/{request_id}/review",
                               json={"decision": "approve", "reason": "aggregate figures"})
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "exported"
        assert anna.get(f"api/requests/{request_id}").json()["review"]["by"] == "stella"

    delivered = hub.files.data_dir / "egress" / "magi" / request_id
    assert (delivered / "results" / "auc.csv").read_text() == "model,auc\nbaseline,0.87\n"
    assert (delivered / "manifest.json").exists()
    audit = hub.files.data_dir / "airlock" / "audit.jsonl"
    assert verify(audit).ok
    actions = [line for line in audit.read_text().splitlines() if request_id in line]
    assert len(actions) == 3  # requested, reviewed, delivered


def test_steward_rejects_and_bo_sees_nothing(hub: RunningHub) -> None:
    workspace = hub.files.storage.project_dir("magi")
    (workspace / "rows.csv").write_text("id,value\n1,2\n")
    with _client(hub, "anna") as anna, _client(hub, "erik") as erik, _client(hub, "bo") as bo:
        request_id = anna.post("api/requests", json={"project": "magi", "paths": ["rows.csv"]}).json()["id"]
        assert bo.get(f"api/requests/{request_id}").status_code == 404
        rejected = erik.post(f"api/requests/{request_id}/review",
                             json={"decision": "reject", "reason": "row-level data"})
        assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert not (hub.files.data_dir / "egress" / "magi" / request_id).exists()
