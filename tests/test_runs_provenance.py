"""Provenance changes when code, environment or input data change (and only then)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from extensions.runs import provenance

GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.org", "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str) -> None:
    subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True)


def test_code_version_follows_commits_edits_and_untracked_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "lib").mkdir(parents=True)
    notebook = repo / "analysis.ipynb"
    notebook.write_text("{}")
    (repo / "lib" / "model.py").write_text("WEIGHT = 1\n")
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "init", "-q")
    git(repo, "remote", "add", "origin", "https://alice:s3cret-token@git.example.org/unit/repo.git")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")

    clean = provenance.code_version(notebook)
    assert clean["commit"] and not clean["dirty"] and clean["changes_sha256"] is None
    assert clean["remote"] == "https://git.example.org/unit/repo.git"  # never the token
    assert clean["path_in_repo"] == "analysis.ipynb"

    (repo / "run.log").write_text("ignored files are not code\n")
    assert provenance.code_version(notebook) == clean

    (repo / "lib" / "model.py").write_text("WEIGHT = 2\n")
    edited = provenance.code_version(notebook)
    assert edited["commit"] == clean["commit"] and edited["dirty"]
    assert edited["changed_files"] == ["lib/model.py"]

    (repo / "lib" / "helper.py").write_text("X = 1\n")
    untracked = provenance.code_version(notebook)
    assert untracked["changes_sha256"] != edited["changes_sha256"]
    (repo / "lib" / "helper.py").write_text("X = 2\n")  # the content of untracked files counts
    assert provenance.code_version(notebook)["changes_sha256"] != untracked["changes_sha256"]

    git(repo, "add", ".")
    git(repo, "commit", "-qm", "second")
    committed = provenance.code_version(notebook)
    assert committed["commit"] != clean["commit"] and not committed["dirty"]


def test_outside_git_the_code_version_says_so(tmp_path: Path) -> None:
    version = provenance.code_version(tmp_path / "loose.ipynb")
    assert version["repo"] is None and version["commit"] is None
    assert version["note"] == "not in a git repository"


def test_environment_hash_changes_with_the_kernels_installed_packages(tmp_path: Path) -> None:
    base = provenance.environment_of(sys.executable)
    assert base["python"].startswith("CPython 3.") and base["packages"]
    assert any(p.startswith("papermill==") for p in base["packages"])
    again = provenance.environment_of(sys.executable)
    assert again["sha256"] == base["sha256"]  # stable

    # One more distribution on the kernel's path (what `pip install` would add).
    site = tmp_path / "site"
    info = site / "extra_tool-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-tool\nVersion: 1.2.3\n")
    extra = provenance.environment_of(sys.executable, {"PYTHONPATH": str(site)})
    assert "extra-tool==1.2.3" in extra["packages"]
    assert extra["sha256"] != base["sha256"]


def test_the_environment_is_the_kernels_not_the_runners() -> None:
    env = provenance.environment("python3")
    assert env["kernel"]["name"] == "python3" and env["kernel"]["executable"] == sys.executable
    with pytest.raises(Exception, match="No such kernel"):
        provenance.environment("no-such-kernel")


def test_input_data_hashes_follow_file_content(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "tables").mkdir(parents=True)
    table = workspace / "tables" / "a.csv"
    table.write_text("x\n1\n")
    values = {"table": "tables/a.csv", "folder": str(workspace / "tables"), "label": "not a file",
              "many": [str(table)], "n": 3}
    first = provenance.parameter_inputs(values, workspace, workspace)
    assert [(i["name"], i["path"]) for i in first] == [
        ("folder", "workspace:tables"), ("many", "workspace:tables/a.csv"), ("table", "workspace:tables/a.csv")]
    table.write_text("x\n2\n")
    second = provenance.parameter_inputs(values, workspace, workspace)
    assert all(a["sha256"] != b["sha256"] for a, b in zip(first, second))
    outside = provenance.parameter_inputs({"f": str(table)}, tmp_path, None)
    assert outside[0]["path"] == str(table.resolve())


def test_files_read_under_a_pull_are_recorded_as_that_pulls_manifest(tmp_path: Path) -> None:
    from tests.runs_support import sample_pull

    workspace = tmp_path / "ws"
    pull = sample_pull(workspace, "p1")
    opened = [str(pull / "study" / "series" / "1.dcm"), str(pull / "manifest.json"),
              str(workspace / "samples" / "loose.txt")]
    (inputs,) = provenance.sample_inputs(opened, workspace)
    assert inputs["path"] == "workspace:samples/p1/manifest.json"
    assert (inputs["kind"], inputs["name"], inputs["files"], inputs["bytes"]) == ("sample", "p1", 1, 9)
    sample_pull(workspace, "p1", content=b"DICM other")  # a different delivery of that pull
    assert provenance.sample_inputs(opened, workspace)[0]["sha256"] != inputs["sha256"]
    # A pull folder given as a parameter is identified by its manifest too.
    (param,) = provenance.parameter_inputs({"pull": str(pull)}, workspace, workspace)
    assert param["sha256"] == provenance.sha256_file(pull / "manifest.json")


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("https://user:token@git.example.org/a/b.git", "https://git.example.org/a/b.git"),
        ("https://oauth2:tok@host:8443/a.git", "https://host:8443/a.git"),
        ("git@github.com:unit/repo.git", "git@github.com:unit/repo.git"),
        ("https://host/a.git?private_token=x", "https://host/a.git"),
    ],
)
def test_remote_urls_lose_their_credentials(url: str, public: str) -> None:
    assert provenance.public_url(url) == public


def test_inputs_beyond_the_size_limit_are_identified_by_a_listing(tmp_path: Path) -> None:
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"x" * 100)
    sha, files, size, method = provenance.hash_path(folder)
    assert (files, size, method) == (1, 100, "sha256")
    listed = provenance.hash_path(folder, limit=10)
    assert listed[1:] == (1, 100, "listing") and listed[0] != sha
    os.utime(folder / "a.bin", ns=(1, 1))  # touched: the listing changes
    assert provenance.hash_path(folder, limit=10)[0] != listed[0]
    (inputs,) = provenance.parameter_inputs({"d": str(folder)}, tmp_path, None)
    assert inputs["method"] == "sha256"


def test_the_environment_is_cached_until_the_interpreters_paths_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    cache = tmp_path / "cache"
    env = {"PYTHONPATH": str(site)}
    first = provenance.environment_of(sys.executable, env, cache_dir=cache)
    (entry,) = cache.iterdir()
    stamps = json.loads(entry.read_text())["stamps"]
    assert str(site) in stamps and "paths" not in first
    with monkeypatch.context() as patched:
        patched.setattr(provenance.subprocess, "run", lambda *a, **k: pytest.fail("probed again"))
        assert provenance.environment_of(sys.executable, env, cache_dir=cache) == first

    info = site / "late_tool-2.0.dist-info"  # `pip install` into a directory on the path
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: late-tool\nVersion: 2.0\n")
    os.utime(site, ns=(stamps[str(site)] + 10**9, stamps[str(site)] + 10**9))
    after = provenance.environment_of(sys.executable, env, cache_dir=cache)
    assert "late-tool==2.0" in after["packages"] and after["sha256"] != first["sha256"]
