"""The local spawner's process set-up: who the server runs as and where it starts.

The server's working directory becomes JupyterLab's root folder, so a wrong one is not a
cosmetic fault: the starter notebooks and the project links vanish from the file browser.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import psutil
import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub

from spawners.local import LocalWorkbenchSpawner

WORKBENCH = """\
profiles:
  - {slug: cpu-small, name: Small CPU, cpu: 1, memory: 1G}
projects:
  - id: magi
    title: MAGI
    members: [anna]
    approval: {reference: R-1, expires: 2099-01-01}
"""


def make(tmp_path: Path, **config: object) -> LocalWorkbenchSpawner:
    yaml = tmp_path / "workbench.yaml"
    yaml.write_text(WORKBENCH)
    return LocalWorkbenchSpawner(
        user=types.SimpleNamespace(name="anna", url="/user/anna/", escaped_name="anna", id=1),
        hub=Hub(),
        orm_spawner=orm.Spawner(name=""),
        workbench_config_file=str(yaml),
        data_dir=str(tmp_path / "data"),
        **config,
    )


def run_in_server_setup(spawner: LocalWorkbenchSpawner) -> tuple[int, str]:
    """Run ``id -u; pwd`` the way the spawner starts the server process."""
    home = Path(spawner.home_dir)
    result = subprocess.run(
        ["sh", "-c", "id -u; pwd -P"], preexec_fn=spawner.make_preexec_fn(spawner.user.name),
        capture_output=True, text=True, check=True, cwd="/",
    )
    uid, cwd = result.stdout.split()
    assert home.exists()
    return int(uid), cwd


def test_server_starts_in_the_workbench_home_as_the_hubs_user(tmp_path: Path) -> None:
    spawner = make(tmp_path, server_user="")
    Path(spawner.home_dir).mkdir(parents=True)
    uid, cwd = run_in_server_setup(spawner)
    assert uid == os.geteuid()
    assert cwd == str(Path(spawner.home_dir).resolve())


def test_server_switches_to_the_server_account_and_starts_in_the_workbench_home(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching accounts needs a root hub")
    try:
        account = pwd.getpwnam("workbench")
    except KeyError:
        pytest.skip("no 'workbench' account here (scripts/setup creates it)")
    # pytest's own folders are root's alone: a folder the account can traverse, as a data dir is.
    with tempfile.TemporaryDirectory(prefix="wb-local-") as where:
        base = Path(where)
        base.chmod(0o711)
        spawner = make(base, server_user="workbench")
        home = Path(spawner.home_dir)
        home.mkdir(parents=True)
        for folder in (base / "data", home.parent):
            folder.chmod(0o711)
        os.chown(home, account.pw_uid, account.pw_gid)
        uid, cwd = run_in_server_setup(spawner)
        assert uid == account.pw_uid
        # Not the account's own (nonexistent) home, not a temp dir: the user's workbench home.
        assert cwd == str(home.resolve())


def test_a_lost_server_is_found_by_its_launch_id_not_by_its_kernels() -> None:
    from spawners.local import LAUNCH_ENV, find_launched

    launch = "test-" + os.urandom(6).hex()
    env = dict(os.environ, **{LAUNCH_ENV: launch})
    # A "server" that starts a "kernel" child, both carrying the launch id.
    server = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                               "time.sleep(60)"], env=env)
    try:
        deadline = time.monotonic() + 30
        while len(psutil.Process(server.pid).children()) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert find_launched(launch) == server.pid  # the server, not its kernel
        assert find_launched("other-" + launch) == 0
        # Two unrelated processes with the same id: nothing is adopted on a guess.
        twin = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
        try:
            assert find_launched(launch) == 0
        finally:
            twin.kill()
            twin.wait(10)
    finally:
        for process in [*psutil.Process(server.pid).children(), psutil.Process(server.pid)]:
            with contextlib.suppress(psutil.Error):
                process.kill()
        server.wait(10)


@pytest.mark.parametrize("planted", ["examples", "datasets", "projects"])
async def test_links_planted_in_a_home_do_not_make_the_hub_write_elsewhere(planted: str) -> None:
    """A server's code can put links in its (or, sharing the account, anyone's) home. The
    hub prepares the home through spawners.home_setup as the server's account, so a link to a
    root-owned folder leads nowhere: nothing there is created, removed or handed over."""
    if os.geteuid() != 0:
        pytest.skip("the attack needs a root hub")
    try:
        pwd.getpwnam("workbench")
    except KeyError:
        pytest.skip("no 'workbench' account here (scripts/setup creates it)")
    with tempfile.TemporaryDirectory(prefix="wb-local-") as where:
        base = Path(where)
        base.chmod(0o711)
        victim = base / "system"
        victim.mkdir(mode=0o755)
        (victim / "shadow").write_text("root:x\n")
        (victim / "bin").symlink_to("usr/bin")
        before = sorted((p.name, p.lstat().st_uid) for p in victim.iterdir())
        spawner = make(base, server_user="workbench")
        (base / "data").mkdir(mode=0o711)
        from spawners.local import _usable_server_account

        if not _usable_server_account("workbench", spawner.cmd[0], base / "data"):
            pytest.skip("the 'workbench' account cannot run this environment's Python (scripts/setup "
                        "builds .venv from /usr/bin/python3 for that)")
        spawner.prepare_home_dir()
        home = Path(spawner.home_dir)
        (home / planted).symlink_to(victim, target_is_directory=True)
        examples = base / "examples"
        examples.mkdir(mode=0o755)
        (examples / "01-start.ipynb").write_text("{}")
        spawner.home_setup_plan = lambda: {  # type: ignore[method-assign]
            "home": str(home), "examples": str(examples),
            "project": {"id": "magi", "dir": str(base / "data" / "projects" / "magi")},
            "datasets": {"targets": {}, "reasons": {}},
        }
        with contextlib.suppress(Exception):  # refusing the spawn is fine; writing there is not
            await spawner.set_up_home()
        assert sorted((p.name, p.lstat().st_uid) for p in victim.iterdir()) == before
        assert victim.stat().st_uid == 0


def test_a_pull_made_before_the_first_server_start_is_readable_by_the_server() -> None:
    """Found by a new user: pulling samples before ever starting a server left ``samples``
    and the pull with root's group, and the server's account could never read them."""
    if os.geteuid() != 0:
        pytest.skip("switching accounts needs a root hub")
    try:
        pwd.getpwnam("workbench")
    except KeyError:
        pytest.skip("no 'workbench' account here (scripts/setup creates it)")
    from jupyterhub.spawner import set_user_setuid

    from services.sample_gateway.delivery import PullWriter

    with tempfile.TemporaryDirectory(prefix="wb-local-") as where:
        base = Path(where)
        base.chmod(0o711)
        spawner = make(base, server_user="workbench")
        (base / "data").mkdir(mode=0o711)
        project_dir = spawner.storage.project_dir("magi")
        # The gateway pulls first: it makes the project folder and samples itself.
        pulled = PullWriter(project_dir, "pull-first").commit({"pull": "pull-first", "project": "magi"})
        spawner.selection = types.SimpleNamespace(project=types.SimpleNamespace(id="magi"))
        spawner.prepare_project_dir()
        result = subprocess.run(["cat", str(pulled / "manifest.csv")],
                                preexec_fn=set_user_setuid("workbench", chdir=False),
                                capture_output=True, text=True, check=False, cwd="/")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("file,sha256")


def test_samples_is_never_writable_by_the_servers_whatever_the_hubs_umask() -> None:
    """A review found a hub with umask 002 made samples 0775 and then gave it the servers'
    group: a server could rename, replace or plant things among delivered pulls."""
    if os.geteuid() != 0:
        pytest.skip("switching accounts needs a root hub")
    try:
        pwd.getpwnam("workbench")
    except KeyError:
        pytest.skip("no 'workbench' account here (scripts/setup creates it)")
    from jupyterhub.spawner import set_user_setuid

    old_umask = os.umask(0o002)
    try:
        with tempfile.TemporaryDirectory(prefix="wb-local-") as where:
            base = Path(where)
            base.chmod(0o711)
            spawner = make(base, server_user="workbench")
            (base / "data").mkdir(mode=0o711)
            spawner.selection = types.SimpleNamespace(project=types.SimpleNamespace(id="magi"))
            spawner.prepare_project_dir()
            samples = spawner.storage.project_dir("magi") / "samples"
            assert samples.stat().st_mode & 0o777 == 0o750
            planted = subprocess.run(["mkdir", str(samples / "planted")],
                                     preexec_fn=set_user_setuid("workbench", chdir=False),
                                     capture_output=True, text=True, check=False, cwd="/")
            assert planted.returncode != 0 and not (samples / "planted").exists()
    finally:
        os.umask(old_umask)

