"""The data catalogue: validation, which datasets a project's servers get and why not, the
CLI, the widget's rendering, local links and Nomad volumes. Pure or on tmp_path: no hub."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from datasets_mount import catalogue, cli, widget
from datasets_mount.local import link_datasets
from hub_config.loader import ConfigError, load_config, parse_config
from hub_config.storage import StorageLayout
from spawners.nomad.objects import JobSettings, ServerSpec, VolumeRule, volumes
from spawners.selection import choices_for, resolve_selection

DEMO = Path(__file__).resolve().parent.parent / "hub_config" / "workbench.yaml"

TEXT = """\
profiles:
  - {slug: small, name: Small, cpu: 1, memory: 1G}
projects:
  - id: alpha
    title: Alpha
    members: [ada]
    approval: {reference: P-A, expires: 2030-01-31}
    datasets: [ct, old, beta-only, listed]
  - id: beta
    title: Beta
    members: [bob]
    approval: {reference: P-B, expires: 2030-01-31}
    datasets: [beta-only]
datasets:
  - id: ct
    title: Head CT
    path: datasets/ct
    owner: Radiology
    kind: imaging
    sensitivity: special-category
    legal_basis: GDPR art. 6(1)(e) and 9(2)(j)
    approval: {reference: DUA-CT, expires: 2027-03-31}
    projects: [alpha]
    volume: {type: csi, source: ripa-head-ct}
    format: DICOM
    size: 120G
    retain_until: 2029-12-31
    retention: Deleted at the end.
  - id: old
    title: Old cohort
    path: datasets/old
    owner: Cardiology
    kind: tabular
    sensitivity: pseudonymised
    legal_basis: GDPR art. 6(1)(e)
    approval: {reference: DUA-OLD, expires: 2026-06-30}
    projects: [alpha]
  - id: beta-only
    title: Beta's genomes
    path: datasets/beta
    owner: Clinical genetics
    kind: genomics
    sensitivity: special-category
    legal_basis: GDPR art. 9(2)(j)
    approval: {reference: DUA-B, expires: 2030-01-31}
    projects: [beta]
  - id: listed
    title: Listed only
    path: datasets/listed
  - id: open
    title: Open phantoms
    path: datasets/open
    owner: Unit
    kind: imaging
    sensitivity: public
    legal_basis: Public test data
    approval: {reference: OPEN, expires: 2030-01-31}
    projects: "*"
"""
CONFIG = parse_config(TEXT)
TODAY = dt.date(2026, 12, 3)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "wb.yaml")
    return [str(p) for p in caught.value.problems]


# Validation ----------------------------------------------------------------------------------
def test_demo_catalogue_is_valid_and_complete() -> None:
    config = load_config(DEMO)
    for dataset in config.datasets:
        if dataset.projects:
            assert dataset.owner and dataset.kind and dataset.sensitivity and dataset.legal_basis
            assert dataset.approval is not None
    assert config.dataset("stroke-ct-2024").size == 140 * 1024**3


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("    owner: Radiology\n", ""),
         "wb.yaml:15: datasets[0].owner: an entry approved for projects must give owner"),
        (("    legal_basis: GDPR art. 6(1)(e)\n", ""),
         "wb.yaml:29: datasets[1].legal_basis: an entry approved for projects must give legal_basis"),
        (("kind: tabular", "kind: spreadsheets"),
         "wb.yaml:33: datasets[1].kind = 'spreadsheets': Input should be 'imaging', 'pathology', "
         "'genomics', 'tabular' or 'real-time'"),
        (("sensitivity: pseudonymised", "sensitivity: secret"),
         "wb.yaml:34: datasets[1].sensitivity = 'secret'"),
        (("expires: 2027-03-31", "expires: 2027-02-30"),
         "wb.yaml:22: datasets[0].approval.expires = '2027-02-30'"),
        (("projects: [beta]", "projects: [gamma]"),
         "wb.yaml:46: datasets[2].projects[0] = 'gamma': project 'gamma' is not defined"),
        (("retain_until: 2029-12-31", "retain_until: 2027-01-31"),
         "wb.yaml:27: datasets[0].retain_until = '2027-01-31': the approval runs to 2027-03-31, "
         "past the retention end 2027-01-31"),
        (("size: 120G", "size: huge"), "wb.yaml:26: datasets[0].size = 'huge': 'huge' is not a size"),
        (("sensitivity: special-category\n    legal_basis: GDPR art. 9(2)(j)\n    approval: "
          "{reference: DUA-B, expires: 2030-01-31}\n    projects: [beta]",
          "sensitivity: special-category\n    legal_basis: GDPR art. 9(2)(j)\n    approval: "
          "{reference: DUA-B, expires: 2030-01-31}\n    projects: '*'"),
         "wb.yaml:46: datasets[2].projects = '*': '*' (every project) is only for public or anonymised data"),
        (("type: csi, source: ripa-head-ct", "type: nfs, source: ripa-head-ct"),
         "wb.yaml:24: datasets[0].volume.type = 'nfs'"),
        (("  - id: listed", "  - id: ct"), "wb.yaml:47: datasets[3].id = 'ct': id 'ct' appears more than once"),
    ],
)
def test_catalogue_mistakes_name_field_and_line(edit: tuple[str, str], expected: str) -> None:
    text = TEXT.replace(*edit)
    assert text != TEXT
    found = problems_of(text)
    assert any(p.startswith(expected) for p in found), found


def test_withdrawing_an_approval_is_not_a_config_error() -> None:
    # How a steward revokes: drop the project from the entry; the project still lists it.
    config = parse_config(TEXT.replace("projects: [alpha]\n    volume", "projects: [beta]\n    volume"))
    mounts = catalogue.mounts_for(config, "alpha", TODAY)
    assert "ct" not in [d.id for d in mounts.granted]
    assert [s.code for s in mounts.refused if s.dataset.id == "ct"] == [catalogue.OTHER_PROJECT]


# Mounts --------------------------------------------------------------------------------------
def test_mounts_are_exactly_the_requested_approved_unexpired_ones() -> None:
    mounts = catalogue.mounts_for(CONFIG, "alpha", TODAY)
    assert [d.id for d in mounts.granted] == ["ct"]
    assert {s.dataset.id: s.code for s in mounts.refused} == {
        "old": catalogue.APPROVAL_EXPIRED,
        "beta-only": catalogue.OTHER_PROJECT,
        "listed": catalogue.NOT_APPROVED,
    }
    messages = {s.dataset.id: s.message for s in mounts.refused}
    assert "approval DUA-OLD expired on 2026-06-30" in messages["old"]
    assert "not approved for alpha" in messages["beta-only"]
    assert "not approved for any project" in messages["listed"]


def test_approval_valid_through_its_last_day_then_removed() -> None:
    assert [d.id for d in catalogue.mounts_for(CONFIG, "alpha", dt.date(2027, 3, 31)).granted] == ["ct"]
    assert catalogue.mounts_for(CONFIG, "alpha", dt.date(2027, 4, 1)).granted == ()


def test_open_data_is_approved_for_every_project_but_mounted_only_when_listed() -> None:
    status = catalogue.status_of(CONFIG.dataset("open"), "beta", TODAY)
    assert status.code == catalogue.AVAILABLE and "does not list it" in status.message
    assert catalogue.status_of(CONFIG.dataset("open"), "beta", TODAY, requested=True).mounted


def test_selection_carries_granted_and_refused_datasets() -> None:
    selection = resolve_selection(CONFIG, "ada", {"project": "alpha"}, TODAY)
    assert [d.id for d in selection.datasets] == ["ct"]
    assert [s.dataset.id for s in selection.refused_datasets] == ["old", "beta-only", "listed"]
    notes = choices_for(CONFIG, "ada", TODAY)[0].notes
    assert "Datasets mounted read-only: ct." in notes
    assert any("DUA-OLD expired" in n for n in notes)


def test_catalogue_seen_from_a_project_and_from_none() -> None:
    seen = {s.dataset.id: s.label for s in catalogue.catalogue_for(CONFIG, "beta", TODAY)}
    assert seen == {"ct": "not approved for this project", "old": "not approved for this project",
                    "beta-only": "mounted", "listed": "not approved for use",
                    "open": "approved, not requested"}
    overall = {s.dataset.id: s.code for s in catalogue.catalogue_for(CONFIG, None, TODAY)}
    assert overall["old"] == catalogue.APPROVAL_EXPIRED and overall["ct"] == catalogue.APPROVED


def test_json_hides_which_projects_unless_allowed() -> None:
    status = catalogue.status_of(CONFIG.dataset("beta-only"), "alpha", TODAY)
    assert "projects" not in catalogue.status_json(status, with_projects=False)["dataset"]
    assert catalogue.status_json(status, with_projects=True)["dataset"]["projects"] == ["beta"]


# Local links ----------------------------------------------------------------------------------
def test_local_links_removed_at_next_start_with_the_reason(tmp_path: Path) -> None:
    storage = StorageLayout(tmp_path)
    for name in ("ct", "old"):
        (tmp_path / "datasets" / name).mkdir(parents=True)
    links = tmp_path / "home" / "datasets"
    before = catalogue.mounts_for(CONFIG, "alpha", dt.date(2026, 1, 1))  # 'old' still valid
    linked, _ = link_datasets(storage, links, before.granted, before.refused)
    assert sorted(linked) == ["ct", "old"] and (links / "old").is_symlink()

    after = catalogue.mounts_for(CONFIG, "alpha", TODAY)
    linked, messages = link_datasets(storage, links, after.granted, after.refused)
    assert linked == ["ct"] and not (links / "old").exists()
    assert any("DUA-OLD expired on 2026-06-30" in m and "Removed ~/datasets/old." in m for m in messages)
    assert any(m.startswith("Dataset beta-only is not approved for alpha") for m in messages)


def test_datasets_usable_by_any_project_today() -> None:
    assert catalogue.usable_anywhere(CONFIG, TODAY) == {"ct", "beta-only"}
    # 'old' lapsed, 'listed' was never approved, 'open' is approved for all but nobody lists it.
    assert catalogue.usable_anywhere(CONFIG, dt.date(2028, 1, 1)) == {"beta-only"}


def test_guard_closes_the_folders_of_datasets_nobody_may_use(tmp_path: Path) -> None:
    """Local servers share one account: what no project may use today is closed to it."""
    from datasets_mount.local import guard_datasets

    storage = StorageLayout(tmp_path)
    for dataset in CONFIG.datasets:
        folder = storage.resolve(dataset.path)
        folder.mkdir(parents=True)
        (folder / "data.txt").write_text("x")
        folder.chmod(0o755)
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir(mode=0o755)
    config = CONFIG.model_copy(update={"datasets": [*CONFIG.datasets, CONFIG.datasets[1].model_copy(
        update={"id": "away", "path": str(outside)})]})
    closed = guard_datasets(storage, config, catalogue.usable_anywhere(config, TODAY))
    assert sorted(closed) == ["listed", "old", "open"]

    def mode(path: Path) -> int:
        return path.stat().st_mode & 0o777

    assert mode(storage.resolve("datasets/old")) == 0o700
    assert mode(storage.resolve("datasets/ct")) == 0o755
    assert mode(storage.resolve("datasets")) & 0o044 == 0  # not listable by others
    assert mode(outside) == 0o755  # outside the data root: its owner's permissions stand
    # The approval is renewed: the next guard opens the folder again.
    assert guard_datasets(storage, config, {"ct", "old", "beta-only"}) == ["listed", "open"]
    assert mode(storage.resolve("datasets/old")) == 0o755


# Nomad -------------------------------------------------------------------------------------
def test_nomad_mounts_the_catalogue_volume_read_only() -> None:
    selection = resolve_selection(CONFIG, "ada", {"project": "alpha"}, TODAY)
    spec = ServerSpec("ada", "", selection.project, selection.profile, selection.datasets)
    settings = JobSettings(dataset=VolumeRule("host", "dataset-{dataset}", "/home/jovyan/datasets/{dataset}"))
    group, mounts = volumes(spec, settings, "docker")
    assert group == {"dataset-ct": {"Name": "dataset-ct", "Type": "csi", "Source": "ripa-head-ct",
                                    "ReadOnly": True, "AccessMode": "multi-node-reader-only",
                                    "AttachmentMode": "file-system"}}
    assert mounts == [{"Volume": "dataset-ct", "Destination": "/home/jovyan/datasets/ct",
                       "ReadOnly": True, "PropagationMode": "private"}]


# CLI ----------------------------------------------------------------------------------------
@pytest.fixture
def yaml_file(tmp_path: Path) -> str:
    path = tmp_path / "wb.yaml"
    path.write_text(TEXT)
    return str(path)


def test_cli_list_for_a_project(yaml_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", yaml_file, "--project", "alpha", "--date", "2026-12-03", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "KIND", "SENSITIVITY", "APPROVAL", "SIZE", "STATUS", "(alpha)"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert rows["ct"].endswith("mounted") and "120 GiB" in rows["ct"]
    assert rows["old"].endswith("approval expired")
    assert rows["beta-only"].endswith("not approved for this project")


def test_cli_show_and_json_and_errors(yaml_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", yaml_file, "--project", "alpha", "--date", "2026-12-03", "show", "old"]) == 0
    out = capsys.readouterr().out
    assert "Legal basis:       GDPR art. 6(1)(e)" in out
    assert "Status for alpha:" in out and "expired on 2026-06-30" in out
    assert cli.main(["--config", yaml_file, "--json", "--project", "beta", "show", "beta-only"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "mounted"
    assert cli.main(["--config", yaml_file, "show", "nope"]) == 2
    assert "no dataset 'nope'" in capsys.readouterr().err
    assert cli.main(["--config", yaml_file, "--project", "gamma", "list"]) == 2


# Widget ---------------------------------------------------------------------------------------
def test_widget_renders_status_filters_and_details(yaml_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_AIRLOCK_URL", raising=False)
    data = widget.load_catalogue("alpha", config_file=yaml_file)
    data["datasets"] = [
        catalogue.status_json(s, with_projects=False) for s in catalogue.catalogue_for(CONFIG, "alpha", TODAY)
    ]
    box = widget.catalogue_browser("alpha", data=data)
    header, filters, table, pick, detail = box.children
    assert "5 dataset(s)" in header.value and "alpha" in header.value
    assert table.value.count("class='wb-dataset'") == 5
    filters.children[0].value = "usable"
    assert table.value.count("class='wb-dataset'") == 1 and "data-id='ct'" in table.value
    filters.children[0].value = "all"
    filters.children[1].value = "genomics"
    assert "data-id='beta-only'" in table.value and table.value.count("class='wb-dataset'") == 1
    pick.value = "old"
    assert "DUA-OLD" in detail.value and "Projects allowed" not in detail.value
    assert "approval expired" in detail.value
    assert "<script" not in widget.table_html({"datasets": [{
        "dataset": {"id": "x", "title": "<script>", "kind": None}, "status": "mounted",
        "label": "mounted", "message": "m"}]})
