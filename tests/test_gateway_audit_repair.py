"""A torn last audit line is repaired (and audited); anything else fails closed.

See the decision in :mod:`services.sample_gateway.audit`: an interrupted append leaves
exactly one kind of damage, a last line without its line end, and refusing every later
search and pull for it would only force a hand edit. Other damage cannot come from an
interrupted append, so the gateway stops auditing work (HTTP 503) until an admin looks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from hub_config.loader import parse_config
from hub_config.storage import StorageLayout
from services.sample_gateway.archive import ArchiveSettings, DicomWebArchive
from services.sample_gateway.audit import AuditLog, main, verify
from services.sample_gateway.errors import AuditUnavailable
from services.sample_gateway.gateway import Gateway
from services.sample_gateway.queries import StudyCriteria
from services.sample_gateway.state import GatewayState
from tests.fixtures.fake_dicomweb import FakeArchive, serve


def chain(path: Path, count: int = 3) -> AuditLog:
    log = AuditLog(path)
    for n in range(count):
        log.append({"actor": "anna", "project": "magi", "action": "search", "n": n})
    return log


@pytest.mark.parametrize("torn", [b'{"seq": 4, "ti', b"{", b'{"actor": "anna", "n": 9, "seq": 4', b"\x00\x00\x00"])
def test_a_torn_last_line_is_cut_off_kept_and_recorded(tmp_path: Path, torn: bytes) -> None:
    log = chain(tmp_path / "audit.jsonl")
    whole = log.path.read_bytes()
    log.path.write_bytes(whole + torn)
    result = verify(log.path)
    assert not result.ok and result.first_bad == 4 and "incomplete" in result.problem
    log.check()  # repairable: no refusal

    record = log.append({"actor": "bo", "project": "kina", "action": "pull"})
    assert verify(log.path).ok and verify(log.path).records == 5
    records = log.records()
    repair = records[3]
    assert repair["action"] == "audit_repair" and repair["reason"] == "torn_last_line"
    assert repair["torn_bytes"] == len(torn) and repair["torn_sha256"] == hashlib.sha256(torn).hexdigest()
    assert base64.b64decode(repair["torn_base64"]) == torn
    assert (tmp_path / repair["torn_file"]).read_bytes() == torn
    assert (tmp_path / repair["torn_file"]).stat().st_mode & 0o777 == 0o600
    assert record["seq"] == 5 and record["prev"] == repair["hash"]
    assert log.path.read_bytes().startswith(whole)  # nothing before the tear was touched


def test_a_complete_record_missing_only_its_line_end_is_kept(tmp_path: Path) -> None:
    log = chain(tmp_path / "audit.jsonl", 4)
    log.path.write_bytes(log.path.read_bytes()[:-1])
    log.append({"actor": "anna", "action": "search"})
    assert verify(log.path).ok and [r["seq"] for r in log.records()] == [1, 2, 3, 4, 5]
    assert not any(r.get("action") == "audit_repair" for r in log.records())


def test_a_torn_first_line_repairs_to_a_new_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"seq": 1, "acto')
    log = AuditLog(path)
    log.append({"actor": "anna", "action": "search"})
    assert verify(path).ok and [r.get("action") for r in log.records()] == ["audit_repair", "search"]


def test_long_torn_tails_are_kept_in_the_side_file_only(tmp_path: Path) -> None:
    log = chain(tmp_path / "audit.jsonl")
    torn = b"x" * 70_000
    log.path.write_bytes(log.path.read_bytes() + torn)
    log.append({"action": "search"})
    repair = log.records()[3]
    assert "torn_base64" not in repair and (tmp_path / repair["torn_file"]).read_bytes() == torn


@pytest.mark.parametrize("damage", ["not json\n", "[1, 2]\n", '{"no": "seq"}\n'])
def test_other_damage_fails_closed(tmp_path: Path, damage: str) -> None:
    log = chain(tmp_path / "audit.jsonl")
    log.path.write_text(log.path.read_text() + damage)
    before = log.path.read_bytes()
    with pytest.raises(AuditUnavailable) as caught:
        log.check()
    assert caught.value.status == 503 and "audit" in caught.value.message
    assert "verify" in caught.value.log_message and str(log.path) in caught.value.log_message
    with pytest.raises(AuditUnavailable):
        log.append({"action": "search"})
    assert log.path.read_bytes() == before  # nothing written, nothing cut
    assert main(["verify", str(log.path)]) == 1


async def test_the_gateway_repairs_and_goes_on_or_stops_searching(tmp_path: Path) -> None:
    fake = FakeArchive()
    fake.add_study("CT THORAX", [("CT_small.dcm", "axial", 1)])
    async with serve(fake) as url:
        config = parse_config(textwrap.dedent(f"""\
            archive: {{dicomweb_url: "{url}", timeout_seconds: 2}}
            profiles: [{{slug: s, name: S, cpu: 1, memory: 1G}}]
            projects:
              - {{id: magi, title: M, members: [anna], approval: {{reference: R, expires: 2099-12-31}},
                 archive: {{enabled: true}}}}
            """))
        private = tmp_path / "gw"
        gateway = Gateway(
            config=lambda: config, storage=StorageLayout(tmp_path / "data"),
            archive=DicomWebArchive(ArchiveSettings(url, timeout_seconds=2)),
            state=GatewayState.at(private), audit=AuditLog(private / "audit.jsonl"), keys_dir=private / "keys",
        )
        try:
            first = await gateway.search("anna", "magi", StudyCriteria())
            path = gateway.audit.path
            path.write_bytes(path.read_bytes() + b'{"seq": 2, "actor": "an')  # a crash mid-append
            again = await gateway.search("anna", "magi", StudyCriteria())
            assert again["studies"] == first["studies"]
            assert [r["action"] for r in gateway.audit.records()] == ["search", "audit_repair", "search"]
            assert verify(path).ok

            path.write_text(path.read_text() + "edited by hand\n")
            requests = len(fake.requests)
            with pytest.raises(AuditUnavailable):
                await gateway.search("anna", "magi", StudyCriteria())
            with pytest.raises(AuditUnavailable):
                await gateway.start_pull("anna", "magi", [first["studies"][0]["study_key"]])
            assert len(fake.requests) == requests  # the archive was not even asked
            assert json.loads(path.read_text().splitlines()[-2])["action"] == "search"
        finally:
            await gateway.aclose()
