"""The embedded default: user servers as local processes on the hub's machine.

For a laptop, a demo or CI. When the hub runs as root, servers run as one unprivileged
account (``server_user``, by default ``workbench``): they cannot read the hub's secrets, the
gateway's keys and state or the raw archive, and approved datasets are truly read-only to
them. They still share that account, so local mode gives no isolation between users'
files; production places servers with Nomad (:mod:`spawners.nomad`), where each server is
its own container with only its project's volumes. The README states these limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from jupyterhub.utils import random_port
from traitlets import Int, List, Unicode, default

from datasets_mount.catalogue import usable_anywhere
from datasets_mount.local import dataset_targets, guard_datasets, refusal_reasons
from hub_config.model import Profile
from services.teaching.rules import course_dir as teaching_course_dir

from .errors import spawn_error
from .workbench import WorkbenchSpawnerMixin, save_state_now

LOCAL_STATE_VERSION = 1
LAUNCH_ENV = "WORKBENCH_LAUNCH_ID"  # marks the process of one start, to find it without a pid


class LocalWorkbenchSpawner(WorkbenchSpawnerMixin, LocalProcessSpawner):
    """Spawns ``jupyterhub-singleuser`` as a child process, in the user's workbench home."""

    local_gpus = Int(
        0,
        config=True,
        help="""GPUs this machine can give servers. Profiles asking for more are shown as
        unavailable instead of starting a server that silently has no GPU.""",
    )

    starter_notebooks_dir = Unicode(
        str(Path(__file__).resolve().parent.parent / "notebooks"),
        config=True,
        help="Notebooks copied into each new home under ~/examples (never overwritten).",
    )

    course_notebooks_root = Unicode(
        str(Path(__file__).resolve().parent.parent / "notebooks"),
        config=True,
        help="Folder that teaching sessions' notebooks.folder is relative to.",
    )

    extra_singleuser_args = List(
        Unicode(),
        config=True,
        help="Arguments added to the single-user command (e.g. --allow-root when run as root).",
    )

    server_user = Unicode(
        config=True,
        help="""Unix account that runs the servers when the hub runs as root.

        Default: 'workbench' when the hub is root and that account exists (scripts/setup
        creates it) and can reach the server command; otherwise '' (servers run as the hub's
        own user, which as root means they could read every secret on the machine).
        """,
    )

    @default("server_user")
    def _default_server_user(self) -> str:
        command = self.cmd[0] if self.cmd else sys.executable
        account = _usable_server_account("workbench", command, Path(self.data_dir))
        if not account and os.geteuid() == 0:
            self.log.warning(
                "servers run as root: no usable 'workbench' account (scripts/setup creates it, "
                "and it must be able to enter %s and run %s)", self.data_dir, command)
        return account

    @default("cmd")
    def _default_cmd(self) -> list[str]:
        # The hub's own environment: the same packages and kernels as the hub's checkout.
        return [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]

    @default("default_url")
    def _default_url(self) -> str:
        return "/lab"

    @default("extra_singleuser_args")
    def _default_extra_args(self) -> list[str]:
        # jupyter_server refuses root without this, and the hub then shows an opaque 500.
        return ["--allow-root"] if os.geteuid() == 0 and not self.server_user else []

    def get_args(self) -> list[str]:
        return super().get_args() + list(self.extra_singleuser_args)

    def profile_unavailable(self, profile: Profile) -> str | None:
        if profile.gpus > self.local_gpus:
            return (
                f"{profile.name} needs {profile.gpus} GPU(s); this workbench runs servers on "
                f"one machine with {self.local_gpus}. Choose a CPU profile, or use the "
                "region's Nomad cluster."
            )
        return None

    # Process set-up: no setuid, the user's workbench home as working directory ----------------
    @property
    def home_dir(self) -> str:
        return str(self.storage.home(self.user.name))

    def make_preexec_fn(self, name: str):  # noqa: ANN201 - JupyterHub's signature
        home = self.home_dir
        # JupyterHub's set_user_setuid can only chdir to the account's own home (the shared
        # account has none): switch user without it, then enter the workbench home, which
        # becomes the server's root folder.
        switch_user = set_user_setuid(self.server_user, chdir=False) if self.server_user else None

        def preexec() -> None:
            if switch_user is not None:
                switch_user()
            os.chdir(home)

        return preexec

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        env["USER"] = self.user.name
        env["HOME"] = self.home_dir
        env["SHELL"] = "/bin/bash"
        # The server's own environment first, so `python` in a terminal or a kernel is the
        # workbench's Python whatever PATH the hub was started with.
        python_bin = str(Path(self.cmd[0]).parent) if self.cmd else str(Path(sys.executable).parent)
        path = env.get("PATH", "")
        if python_bin not in path.split(os.pathsep):
            env["PATH"] = os.pathsep.join(filter(None, [python_bin, path]))
        return env

    def move_certs(self, paths):  # noqa: ANN001, ANN201 - no internal SSL in local mode
        return paths

    async def start(self):  # noqa: ANN201 - returns (ip, port)
        assert self.selection is not None, "run_pre_spawn_hook resolves the selection first"
        project, session = self.selection.project, self.selection.session
        if session is not None:
            self.emit_progress(10, f"Teaching session {session.id}: {session.title}")
        else:
            self.emit_progress(10, f"Project {project.id}: approval {project.approval.reference} "
                                   f"valid until {project.approval.expires.isoformat()}")
            self.prepare_project_dir()
        if self.server_user:  # one account for all servers: close what no project may use
            workbench = self.workbench
            guard_datasets(self.storage, workbench, usable_anywhere(workbench, self.today()))
        self.prepare_home_dir()
        done = await self.set_up_home()
        if session is not None:
            self.emit_progress(30, self._course_message(done))
        else:
            self.emit_progress(30, "Workspace ready: ~/projects/" + project.id)
        if done["datasets"]:
            self.emit_progress(40, "Datasets mounted: " + ", ".join(done["datasets"]))
        for message in done["messages"]:
            self.emit_progress(40, message)
        self.emit_progress(50, f"Starting JupyterLab ({self.selection.profile.name})")
        # Port and launch id reach the hub database before the process exists: a hub killed
        # while Popen runs finds the process by its launch id on restart (load_state).
        if self.port == 0:
            self.port = random_port()
        self._launch_id = secrets.token_hex(12)
        save_state_now(self)
        ip_port = await super().start()
        # The pid and port reach the hub database now, not after the quota is accounted: a
        # hub killed in between finds (adopts or stops) the process instead of leaving it.
        save_state_now(self)
        self.emit_progress(70, "Server process started; waiting for JupyterLab to answer")
        return ip_port

    # State: the process and where it listens --------------------------------------------
    _saved_address: tuple[str, int] | None = None
    _launch_id: str | None = None

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        if self._launch_id:
            env[LAUNCH_ENV] = self._launch_id
        return env

    def get_state(self) -> dict:
        state = super().get_state()
        if self._launch_id and self.port:
            state["local"] = {
                "version": LOCAL_STATE_VERSION,
                "ip": self.ip or "127.0.0.1",
                "port": self.port,
                "launch": self._launch_id,
            }
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        saved = (state or {}).get("local")
        if not isinstance(saved, dict) or not isinstance(saved.get("port"), int):
            return
        self._saved_address = (str(saved.get("ip") or "127.0.0.1"), int(saved["port"]))
        self._launch_id = str(saved.get("launch") or "") or None
        if not self.pid and self._launch_id:
            # The hub died between starting the process and saving its pid.
            self.pid = find_launched(self._launch_id)

    def clear_state(self) -> None:
        super().clear_state()
        self._saved_address = None
        self._launch_id = None

    async def recovered_url(self) -> str | None:
        """Where the process listens, for JupyterHub's check after a restart: a hub killed
        before it recorded the address still finds (and then waits for) the server."""
        if not self.pid or self._saved_address is None:
            return None
        ip, port = self._saved_address
        base_url = self.server.base_url if self.server else "/"
        return f"http://{ip}:{port}{base_url}"

    # The home and the project folder -------------------------------------------------------
    # Root (the hub) touches only what sits in root-owned folders (the home itself under
    # homes/, the project folder under projects/), through descriptors that refuse links;
    # everything inside the home is done by spawners.home_setup as the server's account.
    def prepare_home_dir(self) -> None:
        """The home exists and belongs to the server's account (0700)."""
        home = Path(self.home_dir)
        home.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            home.mkdir(mode=0o700)
        if self.server_user:
            account = pwd.getpwnam(self.server_user)
            _hand_over(home, account.pw_uid, account.pw_gid, 0o700)

    def prepare_project_dir(self) -> None:
        """The project's shared workspace (0770, the server's account) with the gateway's
        ``samples`` inside it (which stays the gateway's, readable by the account's group)."""
        assert self.selection is not None
        project_dir = self.storage.project_dir(self.selection.project.id)
        project_dir.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            project_dir.mkdir()
        # Here, not at the top: the delivery module brings pydicom (0.24 s) into the hub.
        from services.sample_gateway.delivery import open_workspace_folder, share_samples
        from services.sample_gateway.errors import WorkspaceUnusable

        try:  # exactly 0750 whatever the umask, never through a link
            os.close(open_workspace_folder(project_dir, "samples"))
        except WorkspaceUnusable:
            pass  # a planted link or file: the gateway refuses it, loudly, at the next pull
        if self.server_user:
            account = pwd.getpwnam(self.server_user)
            _hand_over(project_dir, account.pw_uid, account.pw_gid, 0o770, recursive=False)
            try:  # pulls made before this first hand-over had the hub's group: unreadable
                share_samples(project_dir, account.pw_gid)
            except (OSError, WorkspaceUnusable) as error:
                self.log.warning("project %s: its samples could not be shared with its servers: %s",
                                 self.selection.project.id, getattr(error, "log_message", error))

    def home_setup_plan(self) -> dict[str, Any]:
        assert self.selection is not None
        plan: dict[str, Any] = {
            "home": self.home_dir,
            "datasets": {
                "targets": dataset_targets(self.storage, self.selection.datasets),
                "reasons": refusal_reasons(self.selection.refused_datasets),
            },
        }
        session = self.selection.session
        if session is None:
            project_id = self.selection.project.id
            plan["project"] = {"id": project_id, "dir": str(self.storage.project_dir(project_id))}
            plan["examples"] = str(self.starter_notebooks_dir)
        elif session.notebooks is not None and session.notebooks.git is None:
            plan["course"] = {"source": str(Path(self.course_notebooks_root) / session.notebooks.folder),
                              "folder": teaching_course_dir(session)}
        return plan

    async def set_up_home(self) -> dict[str, Any]:
        """Run spawners.home_setup as the server's account; a failure stops the spawn with a
        message (the detail goes to the hub's log)."""
        command = [str(Path(self.cmd[0]).with_name("python")), "-m", "spawners.home_setup"]
        switch_user = set_user_setuid(self.server_user, chdir=False) if self.server_user else None
        plan = json.dumps(self.home_setup_plan())
        try:
            done = await asyncio.to_thread(
                subprocess.run, command, input=plan, capture_output=True, text=True, timeout=120,
                preexec_fn=switch_user, cwd=self.home_dir, env=_home_setup_env(), check=False,
            )
        except subprocess.TimeoutExpired:
            raise spawn_error("Preparing your workbench home took over two minutes; try again, "
                              "or ask the workbench admins.", reason="home_setup_failed") from None
        if done.returncode != 0:
            self.log.error("home set-up for %s failed (%s): %s", self._log_name, done.returncode,
                           done.stderr[-2000:])
            raise spawn_error("Your workbench home could not be prepared (details in the hub's "
                              "log); ask the workbench admins.", reason="home_setup_failed")
        return json.loads(done.stdout)

    def _course_message(self, done: dict[str, Any]) -> str:
        assert self.selection is not None and self.selection.session is not None
        session = self.selection.session
        if session.notebooks is None:
            return "Home ready"
        if session.notebooks.git is not None:
            return f"Course notebooks: pulled from {session.notebooks.git.repo} when JupyterLab opens"
        copied = done["course_copied"] or []
        folder = teaching_course_dir(session)
        return (f"Course notebooks handed out: {len(copied)} new file(s) in ~/{folder}"
                if copied else f"Course notebooks already in ~/{folder}")


def _hand_over(folder: Path, uid: int, gid: int, mode: int, *, recursive: bool = True) -> None:
    """Give ``folder`` (never a link) to ``uid``; a folder made while servers ran as the hub's
    user is handed over with what it holds, walking by descriptors without following links."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if recursive and os.fstat(fd).st_uid != uid:
            for _, dirs, files, dir_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
                for name in dirs + files:
                    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _home_setup_env() -> dict[str, str]:
    """The helper's environment: enough to import the project, nothing of the hub's secrets."""
    keep = ("PATH", "LANG", "LC_ALL", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if k in keep}


def find_launched(launch_id: str) -> int:
    """The pid of the process started with ``WORKBENCH_LAUNCH_ID=launch_id``, else 0.

    Its kernels and terminals inherit the variable: the server is the one whose parent does
    not carry it (a kernel left behind by a dead server is not taken for the server).
    """
    carriers: dict[int, int] = {}
    for process in psutil.process_iter(["ppid"]):
        try:
            if process.environ().get(LAUNCH_ENV) == launch_id:
                carriers[process.pid] = process.info["ppid"]
        except psutil.Error:
            continue
    tops = sorted(pid for pid, parent in carriers.items() if parent not in carriers)
    if len(tops) != 1:  # none, or several unrelated ones: nothing to adopt with confidence
        return 0
    return tops[0]


def _usable_server_account(name: str, command: str, data_dir: Path) -> str:
    """``name`` if the hub is root, the account exists and can run ``command`` and enter
    ``data_dir`` (a checkout or data folder only root can enter makes it unusable); else ''."""
    if os.geteuid() != 0:
        return ""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return ""
    # Run the environment's Python itself: a venv whose base interpreter lives under /root
    # (e.g. pyenv) has runnable-looking scripts that the account cannot actually execute.
    python = Path(command).with_name("python")
    script = '"$1" -c "" && test -x "$2"'
    check = subprocess.run(["runuser", "-u", name, "--", "sh", "-c", script, "sh", str(python), str(data_dir)],
                           capture_output=True, check=False)
    return name if check.returncode == 0 else ""
