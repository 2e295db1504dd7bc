"""The embedded default: user servers as local processes on the hub's machine.

For a laptop, a demo or CI. When the hub runs as root, servers run as one unprivileged
account (``server_user``, by default ``workbench``): they cannot read the hub's secrets, the
gateway's keys and state or the raw archive, and approved datasets are truly read-only to
them. They still share that account, so local mode gives no isolation between users'
files; production places servers with Nomad (:mod:`spawners.nomad`), where each server is
its own container with only its project's volumes. The README states these limits.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from jupyterhub.utils import random_port
from traitlets import Int, List, Unicode, default

from datasets_mount.catalogue import usable_anywhere
from datasets_mount.local import guard_datasets, link_datasets
from hub_config.model import Profile
from services.teaching.course import hand_out
from services.teaching.rules import course_dir as teaching_course_dir

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

    def _give_to_server_user(self, *paths: Path, mode: int | None = None, home: bool = False) -> None:
        """Make what the server must write its own (a no-op when it runs as the hub's user).

        ``home``: a home made while servers ran as the hub's user is handed over with all it
        holds, once. Nothing else is recursive: the gateway's ``samples`` folder inside the
        project workspace must stay the gateway's.
        """
        if not self.server_user:
            return
        account = pwd.getpwnam(self.server_user)
        for path in paths:
            if home and path.stat().st_uid != account.pw_uid:
                for inner in path.rglob("*"):
                    os.chown(inner, account.pw_uid, account.pw_gid, follow_symlinks=False)
            os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
            if mode is not None:
                path.chmod(mode)

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
            self.emit_progress(30, self.prepare_course())
        else:
            self.emit_progress(10, f"Project {project.id}: approval {project.approval.reference} "
                                   f"valid until {project.approval.expires.isoformat()}")
            self.prepare_workspace()
            self.emit_progress(30, "Workspace ready: ~/projects/" + project.id)
        if self.server_user:  # one account for all servers: close what no project may use
            workbench = self.workbench
            guard_datasets(self.storage, workbench, usable_anywhere(workbench, self.today()))
        mounted, refused = link_datasets(
            self.storage, Path(self.home_dir) / "datasets", self.selection.datasets,
            self.selection.refused_datasets,
        )
        if mounted:
            self.emit_progress(40, "Datasets mounted: " + ", ".join(mounted))
        for message in refused:
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

    def prepare_course(self) -> str:
        """The student's home with the course notebooks (git courses: pulled by the server)."""
        assert self.selection is not None and self.selection.session is not None
        session = self.selection.session
        home = Path(self.home_dir)
        home.mkdir(parents=True, exist_ok=True)
        self._give_to_server_user(home, mode=0o700, home=True)
        notebooks = session.notebooks
        if notebooks is None:
            return "Home ready"
        if notebooks.git is not None:
            return f"Course notebooks: pulled from {notebooks.git.repo} when JupyterLab opens"
        course = home / teaching_course_dir(session)
        copied = hand_out(Path(self.course_notebooks_root) / notebooks.folder, course)
        self._give_to_server_user(course, *course.rglob("*"))
        return (f"Course notebooks handed out: {len(copied)} new file(s) in ~/{teaching_course_dir(session)}"
                if copied else f"Course notebooks already in ~/{teaching_course_dir(session)}")

    def prepare_workspace(self) -> None:
        """Home, the project's shared workspace linked into it, and the starter notebooks."""
        assert self.selection is not None
        home = Path(self.home_dir)
        home.mkdir(parents=True, exist_ok=True)
        project_dir = self.storage.project_dir(self.selection.project.id)
        # samples/ stays the gateway's (servers read it through the project's group).
        (project_dir / "samples").mkdir(parents=True, exist_ok=True)
        links = home / "projects"
        links.mkdir(exist_ok=True)
        link = links / self.selection.project.id
        if not link.is_symlink() and not link.exists():
            link.symlink_to(project_dir, target_is_directory=True)
        examples = Path(self.starter_notebooks_dir)
        copied = []
        if examples.is_dir():
            target = home / "examples"
            target.mkdir(exist_ok=True)
            copied.append(target)
            for notebook in sorted(examples.glob("*.ipynb")):
                if not (target / notebook.name).exists():
                    shutil.copy2(notebook, target / notebook.name)
                    copied.append(target / notebook.name)
        self._give_to_server_user(home, mode=0o700, home=True)
        self._give_to_server_user(project_dir, mode=0o770)
        self._give_to_server_user(links, link, *copied)


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
