"""Run the workbench's JupyterHub as a child process (the demo and the tests use this).

The proxy answers on the public port before the hub is ready, so readiness means
``/hub/api/`` returning JSON through the proxy, not an open port.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
HUB_CONFIG = ROOT / "hub_config" / "jupyterhub_config.py"


def _end(processes: list[psutil.Process], grace: float = 5.0) -> None:
    """Terminate what is still alive of ``processes``, then kill what ignores that."""
    alive = [p for p in processes if p.is_running()]
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, stubborn = psutil.wait_procs(alive, timeout=grace)
    for process in stubborn:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def _without_user_servers(processes: list[psutil.Process]) -> list[psutil.Process]:
    """``processes`` less single-user servers and everything below them."""
    servers: set[int] = set()
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if any("jupyterhub-singleuser" in part for part in process.cmdline()):
                servers.add(process.pid)
                servers.update(child.pid for child in process.children(recursive=True))
    return [p for p in processes if p.pid not in servers]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_demo_passwords(path: Path) -> dict[str, str]:
    """Random demo passwords (user and admin), created once with mode 0600."""
    if path.exists():
        return dict(line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    passwords = {"user": secrets.token_urlsafe(9), "admin": secrets.token_urlsafe(24)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(f"{k}:{v}\n" for k, v in passwords.items()))
    return passwords


@dataclass
class HubProcess:
    """A JupyterHub started from ``hub_config/jupyterhub_config.py``."""

    data_dir: Path
    workbench_yaml: Path
    hub_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    quota_port: int = field(default_factory=free_port)
    airlock_port: int = field(default_factory=free_port)
    extra_config: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            WORKBENCH_CONFIG=str(Path(self.workbench_yaml).resolve()),
            WORKBENCH_DATA_DIR=str(Path(self.data_dir).resolve()),
            WORKBENCH_HUB_PORT=str(self.hub_port),
            WORKBENCH_HUB_API_PORT=str(self.api_port),
            WORKBENCH_PROXY_API_PORT=str(self.proxy_api_port),
            WORKBENCH_GATEWAY_PORT=str(self.gateway_port),
            WORKBENCH_QUOTA_PORT=str(self.quota_port),
            WORKBENCH_AIRLOCK_PORT=str(self.airlock_port),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")])),
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        )
        if self.extra_config:
            env["WORKBENCH_EXTRA_CONFIG"] = str(self.extra_config)
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path or self.data_dir / "hub.log"
        # 0600: the log names every user's logins and requests; servers must not read it.
        log = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        os.chmod(log_path, 0o600)  # a log made before this rule
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("jupyterhub")), "-f", str(HUB_CONFIG)],
            cwd=self.data_dir,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.log_path = log_path
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"JupyterHub exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                response = httpx.get(f"{self.url}/hub/api/", timeout=2)
                if response.status_code == 200 and "version" in response.json():
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"JupyterHub not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 45.0) -> None:
        """Stop the hub and everything it started, whatever state it is in.

        SIGTERM lets the hub clean up (services, user servers, proxy). The proxy and the local
        servers run in sessions of their own, so if the hub does not finish in time (a service
        or a server slow to stop), every process it started is ended explicitly: nothing is
        left holding a port or a GPU after Ctrl-C. A hub run with cleanup off
        (``WORKBENCH_CLEANUP_SERVERS=0``) means to keep user servers across restarts, so they
        and what they started are left running, as the hub itself leaves them.
        """
        if self.process is None or self.process.poll() is not None:
            return
        try:
            started = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            started = []
        if self.environment().get("WORKBENCH_CLEANUP_SERVERS", "1") != "1":
            started = _without_user_servers(started)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        _end(started)

    def kill_hub_only(self) -> None:
        """Kill the hub process alone (proxy and servers stay): a crash, for restart tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
