"""What the double's Nomad client agent does with an allocation: run, stop, lose its task.

Mixed into :class:`~.cluster.Cluster`, whose state and event helpers it uses. A task goes
through ``Received``, ``Task Setup``, its templates, the driver (``docker`` only simulated:
``Downloading image`` and pull progress), ``Started``; it ends with ``Terminated`` and
``Not Restarting`` (restart attempts 0) or, when stopped, ``Killing``, ``Terminated``,
``Killed``. ``raw_exec`` and ``exec`` tasks are real local processes in their own process
group; see :mod:`.tasks` for interpolation and templates.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .tasks import Missing, TemplateError, interpolate, parse_env_file, render_template

if TYPE_CHECKING:
    from .cluster import AllocRecord

TERMINAL = frozenset({"complete", "failed", "lost"})


class Agent:
    """Task running for :class:`~.cluster.Cluster` (it provides the attributes used here)."""

    # Provided by Cluster.
    region: str
    root_dir: Path
    step_delay: float
    image_pull_seconds: Any
    max_kill_wait: float
    driver_failures: list[str]
    variables: dict[tuple[str, str], dict[str, Any]]
    allocs: dict[str, Any]

    # Running a task -------------------------------------------------------------------------------
    async def _run_alloc(self, record: AllocRecord) -> None:
        group = next(
            g for g in record.data["Job"]["TaskGroups"] if g["Name"] == record.data["TaskGroup"]
        )
        await asyncio.gather(*(self._run_task(record, group, task) for task in group["Tasks"]))

    def _task_env(
        self, record: AllocRecord, group: Mapping[str, Any], task: Mapping[str, Any], task_dir: Path
    ) -> dict[str, str]:
        data, node = record.data, record.node
        job = data["Job"]
        res = task.get("Resources") or {}
        env = {
            "NOMAD_ALLOC_DIR": str(task_dir.parent / "alloc"),
            "NOMAD_TASK_DIR": str(task_dir / "local"),
            "NOMAD_SECRETS_DIR": str(task_dir / "secrets"),
            "NOMAD_ALLOC_ID": data["ID"],
            "NOMAD_SHORT_ALLOC_ID": data["ID"][:8],
            "NOMAD_ALLOC_NAME": data["Name"],
            "NOMAD_ALLOC_INDEX": "0",
            "NOMAD_GROUP_NAME": group["Name"],
            "NOMAD_TASK_NAME": task["Name"],
            "NOMAD_JOB_ID": job["ID"],
            "NOMAD_JOB_NAME": job["Name"],
            "NOMAD_NAMESPACE": job["Namespace"],
            "NOMAD_REGION": job.get("Region", self.region),
            "NOMAD_DC": node.datacenter,
            "NOMAD_CPU_LIMIT": str(res.get("CPU") or 0),
            "NOMAD_MEMORY_LIMIT": str(res.get("MemoryMB") or 0),
        }
        for port in data["AllocatedResources"]["Shared"]["Ports"]:
            label, host_port = port["Label"], port["Value"]
            env[f"NOMAD_IP_{label}"] = node.ip
            env[f"NOMAD_HOST_IP_{label}"] = node.ip
            env[f"NOMAD_PORT_{label}"] = str(host_port)  # no container network here
            env[f"NOMAD_HOST_PORT_{label}"] = str(host_port)
            env[f"NOMAD_ADDR_{label}"] = f"{node.ip}:{host_port}"
            env[f"NOMAD_HOST_ADDR_{label}"] = f"{node.ip}:{host_port}"
            if port.get("To"):
                env[f"NOMAD_ALLOC_PORT_{label}"] = str(port["To"])
        for key, value in (job.get("Meta") or {}).items():
            env[f"NOMAD_META_{key}"] = str(value)
        return env

    def _interpolation_values(self, record: AllocRecord, env: Mapping[str, str]) -> dict[str, str]:
        node = record.node
        values = dict(env)
        values.update({f"attr.{k}": v for k, v in node.attributes.items()})
        values.update({f"meta.{k}": v for k, v in node.meta.items()})
        values.update(
            {
                "node.unique.name": node.name,
                "node.unique.id": node.id,
                "node.datacenter": node.datacenter,
                "node.class": node.node_class,
                "node.region": self.region,
            }
        )
        return values

    def _readable_variable(
        self, record: AllocRecord, group: str, task: str, path: str
    ) -> Mapping[str, str] | None:
        job_id = record.data["JobID"]
        allowed = {
            f"nomad/jobs/{job_id}",
            f"nomad/jobs/{job_id}/{group}",
            f"nomad/jobs/{job_id}/{group}/{task}",
        }
        if path not in allowed:
            return None  # workload identities read their own job's paths only
        variable = self.variables.get((record.data["Namespace"], path))
        return variable["Items"] if variable else None

    async def _run_task(
        self, record: AllocRecord, group: Mapping[str, Any], task: Mapping[str, Any]
    ) -> None:
        name = task["Name"]
        await asyncio.sleep(self.step_delay)
        self._event(record, name, "Received", "Task received by client")
        await asyncio.sleep(self.step_delay)
        task_dir = self.root_dir / "alloc" / record.data["ID"] / name
        for sub in ("local", "secrets", "tmp"):
            (task_dir / sub).mkdir(parents=True, exist_ok=True)
        (task_dir.parent / "alloc" / "logs").mkdir(parents=True, exist_ok=True)
        record.task_dir = task_dir
        self._event(
            record, name, "Task Setup", "Building Task Directory", Message="Building Task Directory"
        )
        env = self._task_env(record, group, task, task_dir)
        values = self._interpolation_values(record, env)

        template_env: dict[str, str] = {}
        for template in task.get("Templates") or []:
            said_missing = False
            while True:
                try:
                    rendered = render_template(
                        template.get("EmbeddedTmpl", ""),
                        lambda p: self._readable_variable(record, group["Name"], name, p),
                    )
                except TemplateError as exc:
                    self._fail_task(
                        record,
                        name,
                        "Setup Failure",
                        f"Template failed: {exc}",
                        SetupError=f"Template failed: {exc}",
                    )
                    return
                if not isinstance(rendered, Missing):
                    break
                if not said_missing:
                    ns = record.data["Namespace"]
                    self._event(
                        record,
                        name,
                        "Template",
                        f"Missing: nomad.var.block({rendered.path}@{ns}.{self.region})",
                    )
                    said_missing = True
                await self.wait_change(1.0)
                if record.killing or record.lost:
                    return
            dest = task_dir / str(template.get("DestPath", "local/template.out"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(rendered)
            os.chmod(dest, int(str(template.get("Perms") or "0644"), 8))
            if template.get("Envvars"):
                template_env.update(parse_env_file(rendered))

        driver = task["Driver"]
        config = dict(task.get("Config") or {})
        if self.driver_failures:
            message = self.driver_failures.pop(0)
            self._fail_task(record, name, "Driver Failure", message, DriverError=message)
            return
        if driver == "docker":
            image = str(config.get("image", ""))
            self._event(
                record, name, "Driver", "Downloading image", DriverMessage="Downloading image"
            )
            layers = 3
            for done in range(1, layers + 1):
                pull = self.image_pull_seconds
                await asyncio.sleep((pull(image) if callable(pull) else pull) / layers)
                if record.killing or record.lost:
                    return
                self._event(
                    record,
                    name,
                    "Driver",
                    f"Docker image pull progress: Pulled {done}/{layers} (12.5 MiB/37.5 MiB) "
                    f"layers: 0 waiting/{layers - done} pulling - est 0.1s remaining",
                    DriverMessage="image pull progress",
                )
            if not config.get("command"):
                message = (
                    f"the Nomad test double cannot run image {image!r} without a "
                    "'command' in the task config"
                )
                self._fail_task(record, name, "Driver Failure", message, DriverError=message)
                return
        command = str(config.get("command", ""))
        args = [interpolate(str(a), values) for a in config.get("args") or []]
        process_env = dict(os.environ)
        process_env.update(env)
        process_env.update(
            {k: interpolate(str(v), values) for k, v in (task.get("Env") or {}).items()}
        )
        process_env.update(template_env)
        logs = task_dir.parent / "alloc" / "logs"
        if record.killing or record.lost:
            return
        try:
            with (
                open(logs / f"{name}.stdout.0", "ab") as out,
                open(logs / f"{name}.stderr.0", "ab") as err,
            ):
                process = subprocess.Popen(  # noqa: S603 - the double runs what the job says
                    [command, *args],
                    env=process_env,
                    cwd=task_dir,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        except OSError as exc:
            message = (
                "failed to launch command with executor: rpc error: code = Unknown desc = "
                f'exec: "{command}": {exc.strerror or exc}'
            )
            self._fail_task(record, name, "Driver Failure", message, DriverError=message)
            return
        record.process = process
        state = record.data["TaskStates"][name]
        state["State"] = "running"
        state["StartedAt"] = _iso_now()
        self._event(record, name, "Started", "Task started by client")
        record.timeline.running = time.monotonic()
        self._set_client_status(record, "running", "Tasks are running")
        self._register_services(record, group)

        code = await asyncio.get_running_loop().run_in_executor(None, process.wait)
        signal_number = -code if code < 0 else 0
        exit_code = code if code >= 0 else 128 + signal_number
        if record.lost:
            return
        state["FinishedAt"] = _iso_now()
        self._event(
            record,
            name,
            "Terminated",
            f"Exit Code: {exit_code}" + (f", Signal: {signal_number}" if signal_number else ""),
            ExitCode=exit_code,
            Signal=signal_number,
        )
        state["State"] = "dead"
        if record.killing:
            self._event(record, name, "Killed", "Task successfully killed")
            self._set_client_status(record, "complete", "All tasks have completed")
            return
        if exit_code == 0 and record.data["Job"].get("Type") == "batch":
            # Batch work that exits cleanly is done; service tasks are meant to run forever,
            # so under a restart policy of 0 attempts any exit of theirs fails the task.
            self._set_client_status(record, "complete", "All tasks have completed")
            return
        state["Failed"] = True
        self._event(
            record,
            name,
            "Not Restarting",
            'Exceeded allowed attempts 0 in interval 5m0s and mode is "fail"',
            FailsTask=True,
        )
        self._set_client_status(record, "failed", "Failed tasks")

    def _fail_task(
        self, record: AllocRecord, task: str, kind: str, message: str, **extra: Any
    ) -> None:
        self._event(record, task, kind, message, FailsTask=True, **extra)
        self._event(record, task, "Not Restarting", "Error was unrecoverable", FailsTask=True)
        state = record.data["TaskStates"][task]
        state["State"] = "dead"
        state["Failed"] = True
        state["FinishedAt"] = _iso_now()
        self._set_client_status(record, "failed", "Failed tasks")

    def _stop_alloc(self, record: AllocRecord, description: str) -> None:
        data = record.data
        if data["DesiredStatus"] == "stop":
            return
        data["DesiredStatus"] = "stop"
        data["DesiredDescription"] = description
        record.killing = True
        self._touch(record)
        if data["ClientStatus"] in TERMINAL:
            return
        process = record.process
        if process is None or process.poll() is not None:
            if record.runner and not record.runner.done() and process is None:
                record.runner.cancel()
            for task, state in data["TaskStates"].items():
                if state["State"] != "dead":
                    state["State"] = "dead"
                    self._event(record, task, "Killed", "Task successfully killed")
            self._set_client_status(record, "complete", "All tasks have completed")
            return
        task = next(iter(data["TaskStates"]))
        task_spec = next(
            t for g in data["Job"]["TaskGroups"] for t in g["Tasks"] if t["Name"] == task
        )
        kill_timeout = min(
            int(task_spec.get("KillTimeout") or 5_000_000_000) / 1e9, self.max_kill_wait
        )
        self._event(
            record,
            task,
            "Killing",
            f"Sent interrupt. Waiting {kill_timeout:.0f}s before force killing",
            KillTimeout=int(kill_timeout * 1e9),
        )
        sig = getattr(signal, str(task_spec.get("KillSignal") or "SIGINT"), signal.SIGINT)
        signal_group(process, sig)
        self._spawn(self._force_kill(process, kill_timeout))

    async def _force_kill(self, process: subprocess.Popen[bytes], after: float) -> None:
        await asyncio.sleep(after)
        if process.poll() is None:
            signal_group(process, signal.SIGKILL)

    # Faults ---------------------------------------------------------------------------------------
    def lose_alloc(self, alloc_id: str) -> None:
        record = self.allocs[alloc_id]
        record.lost = True
        if record.process and record.process.poll() is None:
            signal_group(record.process, signal.SIGKILL)
        for state in record.data["TaskStates"].values():
            state["State"] = "dead"
        record.data["DesiredStatus"] = "stop"
        record.data["DesiredDescription"] = "alloc is lost since its node is down"
        self._set_client_status(record, "lost", "")

    def crash_task(self, alloc_id: str) -> None:
        record = self.allocs[alloc_id]
        if record.process and record.process.poll() is None:
            signal_group(record.process, signal.SIGKILL)


def signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _iso_now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
