"""The workbench YAML: the demo file is valid, and each kind of mistake names its line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hub_config.loader import ConfigError, cached_config, load_config, parse_config
from hub_config.model import parse_bytes

DEMO = Path(__file__).resolve().parent.parent / "hub_config" / "workbench.yaml"

MINIMAL = """\
admins: [root-admin]
profiles:
  - slug: small
    name: Small
    cpu: 1
    memory: 1G
projects:
  - id: alpha
    title: Alpha
    members: [ada]
    approval: {reference: REF-1, expires: 2030-01-31}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "wb.yaml")
    return [str(p) for p in caught.value.problems]


def test_demo_file_is_valid() -> None:
    config = load_config(DEMO)
    assert {p.id for p in config.projects} >= {"magi", "kina", "hjertero"}
    assert config.profile("gpu-1").gpus == 1
    assert config.profile("cpu-small").memory == 2 * 1024**3
    assert [p.id for p in config.projects_of("anna")] == ["magi"]
    assert "admin" in config.all_users()


def test_minimal_file() -> None:
    config = parse_config(MINIMAL)
    assert config.project("alpha").approval.expires == dt.date(2030, 1, 31)
    assert config.profiles_for("alpha")[0].slug == "small"
    assert config.archive is None


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("expires: 2030-01-31", "expires: 2030-02-30"), "wb.yaml:11: projects[0].approval.expires = '2030-02-30'"),
        (("cpu: 1", "cpu: 0"), "wb.yaml:5: profiles[0].cpu = 0: Input should be greater than 0"),
        (("memory: 1G", "memory: lots"), "wb.yaml:6: profiles[0].memory = 'lots': 'lots' is not a size"),
        (("    cpu: 1\n", "    cpu: 1\n    gpu: 1\n"), "wb.yaml:6: profiles[0].gpu = 1: Extra inputs are not permitted"),
        (("id: alpha", "id: Alpha Project"), "wb.yaml:8: projects[0].id = 'Alpha Project': String should match pattern"),
        (("members: [ada]", "members: [ada]\n    datasets: [nope]"), "wb.yaml:11: projects[0].datasets[0] = 'nope': dataset 'nope' is not in datasets"),
        (("    approval: {reference: REF-1, expires: 2030-01-31}\n", ""), "wb.yaml:8: projects[0].approval: Field required"),
        (("    memory: 1G\n", "    memory: 1G\n    projects: [beta]\n"), "wb.yaml:7: profiles[0].projects[0] = 'beta': project 'beta' is not defined"),
    ],
)
def test_each_mistake_names_field_value_and_line(edit: tuple[str, str], expected: str) -> None:
    text = MINIMAL.replace(*edit)
    assert text != MINIMAL
    found = problems_of(text)
    assert any(p.startswith(expected) for p in found), found


def test_duplicate_ids_and_archive_without_connection() -> None:
    text = MINIMAL + """\
  - id: alpha
    title: Again
    approval: {reference: REF-2, expires: 2030-01-31}
    archive: {enabled: true}
"""
    found = problems_of(text)
    assert any("projects[1].id = 'alpha': id 'alpha' appears more than once" in p for p in found)
    assert any("projects[1].archive.enabled" in p and "no archive is configured" in p for p in found)


def test_not_yaml_and_not_a_mapping() -> None:
    assert problems_of("profiles: [\n")[0].startswith("wb.yaml:2: (top level): not valid YAML")
    assert "must be a mapping" in problems_of("- a\n- b\n")[0]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_cached_config_keeps_last_good_version_on_bad_edit(tmp_path: Path) -> None:
    path = tmp_path / "wb.yaml"
    path.write_text(MINIMAL)
    first = cached_config(path)
    path.write_text(MINIMAL.replace("cpu: 1", "cpu: -1") + "\n")
    import os

    os.utime(path, (1, 1))  # a different mtime even on coarse clocks
    assert cached_config(path) is first
    path.write_text(MINIMAL.replace("title: Alpha", "title: Alpha two"))
    os.utime(path, (2, 2))
    assert cached_config(path).project("alpha").title == "Alpha two"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1G", 1024**3), ("512M", 512 * 1024**2), ("2Gi", 2 * 1024**3), ("1.5G", int(1.5 * 1024**3)), (1000, 1000), ("10", 10)],
)
def test_parse_bytes(text: str | int, expected: int) -> None:
    assert parse_bytes(text) == expected
