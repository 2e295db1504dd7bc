"""The double's state: jobs, evaluations, allocations, variables, services, and their indexes.

Everything here runs on the double's own event loop (see :mod:`.server`). Each write bumps
the Raft-like index, as Nomad's state store does: a single object answers with its
``ModifyIndex``, a list with its table's index, and blocking queries wait for a larger one.

Lifecycles follow Nomad's: a registered job gets an evaluation, which the scheduler
(:mod:`.scheduler`) completes with an allocation or with ``FailedTGAllocs`` plus a blocked
evaluation that is retried when capacity frees up. Running the allocations' tasks is the
client agent's part, in :mod:`.agent`.
"""

from __future__ import annotations

import asyncio
import copy
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agent import TERMINAL, Agent, signal_group
from .scheduler import Node, Usage, place


def _now_ns() -> int:
    return time.time_ns()


def _free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


@dataclass
class Timeline:
    """When things happened to one allocation (monotonic seconds), for tests and benchmarks."""

    registered: float = 0.0
    placed: float = 0.0
    running: float = 0.0
    stopped: float = 0.0


@dataclass
class AllocRecord:
    data: dict[str, Any]
    node: Node
    process: subprocess.Popen[bytes] | None = None
    runner: asyncio.Task[None] | None = None
    killing: bool = False
    lost: bool = False
    timeline: Timeline = field(default_factory=Timeline)
    task_dir: Path | None = None


class Cluster(Agent):
    def __init__(
        self,
        nodes: list[Node],
        *,
        root_dir: Path,
        region: str = "global",
        namespaces: tuple[str, ...] = ("default",),
        schedule_delay: float = 0.02,
        step_delay: float = 0.01,
        image_pull_seconds: float | Callable[[str], float] = 0.3,
        max_kill_wait: float = 5.0,
        csi_volumes: set[str] | None = None,
    ) -> None:
        self.nodes = nodes
        self.root_dir = root_dir
        self.region = region
        self.namespaces = set(namespaces)
        self.schedule_delay = schedule_delay
        self.step_delay = step_delay
        self.image_pull_seconds = image_pull_seconds
        self.max_kill_wait = max_kill_wait
        self.csi_volumes = set(csi_volumes or ())
        self.index = 1
        self.table_index = {"jobs": 1, "evals": 1, "allocs": 1, "vars": 1, "services": 1}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.registered_at: dict[tuple[str, str], float] = {}
        self.evals: dict[str, dict[str, Any]] = {}
        self.allocs: dict[str, AllocRecord] = {}
        self.variables: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.driver_failures: list[str] = []
        self._changed = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    # Indexes and change notification ------------------------------------------------------------
    def bump(self, *tables: str) -> int:
        self.index += 1
        for table in tables:
            self.table_index[table] = self.index
        self._changed.set()
        self._changed = asyncio.Event()
        return self.index

    async def wait_change(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout=max(timeout, 0))
        except TimeoutError:
            pass

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # Jobs ---------------------------------------------------------------------------------------
    def register_job(self, namespace: str, job: dict[str, Any]) -> tuple[int, Any]:
        ns = job.get("Namespace") or namespace
        if ns not in self.namespaces:
            return 400, f'job "{job.get("ID")}" is in nonexistent namespace "{ns}"'
        problems = _job_problems(job)
        if problems:
            return 400, f"{len(problems)} errors occurred:\n" + "".join(
                f"\t* {p}\n" for p in problems
            )
        key = (ns, str(job["ID"]))
        self.registered_at[key] = time.monotonic()
        old = self.jobs.get(key)
        stored = copy.deepcopy(job)
        stored["Namespace"] = ns
        stored.setdefault("Name", job["ID"])
        stored.setdefault("Region", self.region)
        stored.setdefault("Priority", 50)
        stored.setdefault("NodePool", "default")
        stored["Stop"] = False
        stored["SubmitTime"] = _now_ns()
        index = self.bump("jobs")
        same = old is not None and not old.get("Stop") and _spec(old) == _spec(stored)
        stored["Version"] = (old["Version"] + (0 if same else 1)) if old else 0
        stored["CreateIndex"] = old["CreateIndex"] if old else index
        stored["ModifyIndex"] = index
        stored["JobModifyIndex"] = old["JobModifyIndex"] if same and old else index
        stored["Status"] = old["Status"] if old else "pending"
        self.jobs[key] = stored
        evaluation = self._new_eval(stored, "job-register")
        self._spawn(self._process_eval(evaluation["ID"]))
        return 200, {
            "EvalID": evaluation["ID"],
            "EvalCreateIndex": evaluation["CreateIndex"],
            "JobModifyIndex": stored["JobModifyIndex"],
            "Warnings": "",
            "KnownLeader": True,
            "LastContact": 0,
            "LastIndex": evaluation["CreateIndex"],
        }

    def deregister_job(self, namespace: str, job_id: str, purge: bool) -> tuple[int, Any]:
        key = (namespace, job_id)
        job = self.jobs.get(key)
        if job is None:
            return 404, "job not found"
        for ev in self.evals.values():
            if ev["JobID"] == job_id and ev["Namespace"] == namespace and ev["Status"] == "blocked":
                ev["Status"] = "canceled"
                ev["StatusDescription"] = "evaluation canceled because the job was stopped"
                ev["ModifyIndex"] = self.bump("evals")
        job["Stop"] = True
        job["ModifyIndex"] = job["JobModifyIndex"] = self.bump("jobs")
        evaluation = self._new_eval(job, "job-deregister")
        if purge:
            del self.jobs[key]
            self.bump("jobs")
        self._spawn(self._process_eval(evaluation["ID"]))
        return 200, {
            "EvalID": evaluation["ID"],
            "EvalCreateIndex": evaluation["CreateIndex"],
            "JobModifyIndex": job["JobModifyIndex"],
            "KnownLeader": True,
            "LastContact": 0,
            "LastIndex": evaluation["CreateIndex"],
        }

    def job_status(self, namespace: str, job_id: str) -> str:
        job = self.jobs.get((namespace, job_id))
        allocs = self._job_allocs(namespace, job_id)
        if job is not None and job.get("Stop"):
            return "dead" if all(a.data["ClientStatus"] in TERMINAL for a in allocs) else "running"
        if any(a.data["ClientStatus"] not in TERMINAL for a in allocs):
            return "running"
        if any(
            e["JobID"] == job_id
            and e["Namespace"] == namespace
            and e["Status"] in {"pending", "blocked"}
            for e in self.evals.values()
        ):
            return "pending"
        return "dead" if allocs else "pending"

    def job_view(self, namespace: str, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get((namespace, job_id))
        if job is None:
            return None
        view = copy.deepcopy(job)
        view["Status"] = self.job_status(namespace, job_id)
        return view

    def job_stubs(self, namespace: str, prefix: str) -> list[dict[str, Any]]:
        out = []
        for (ns, job_id), job in sorted(self.jobs.items()):
            if ns != namespace or not job_id.startswith(prefix):
                continue
            out.append(
                {
                    "ID": job_id,
                    "Name": job["Name"],
                    "Namespace": ns,
                    "Type": job["Type"],
                    "Priority": job["Priority"],
                    "Status": self.job_status(ns, job_id),
                    "Stop": job["Stop"],
                    "Datacenters": job.get("Datacenters"),
                    "SubmitTime": job["SubmitTime"],
                    "CreateIndex": job["CreateIndex"],
                    "ModifyIndex": job["ModifyIndex"],
                    "JobModifyIndex": job["JobModifyIndex"],
                    "ParentID": "",
                    "Periodic": False,
                    "ParameterizedJob": False,
                    "StatusDescription": "",
                }
            )
        return out

    # Evaluations ----------------------------------------------------------------------------------
    def _new_eval(
        self, job: Mapping[str, Any], trigger: str, status: str = "pending"
    ) -> dict[str, Any]:
        index = self.bump("evals")
        evaluation = {
            "ID": str(uuid.uuid4()),
            "Namespace": job["Namespace"],
            "Priority": job.get("Priority", 50),
            "Type": job.get("Type", "service"),
            "TriggeredBy": trigger,
            "JobID": job["ID"],
            "JobModifyIndex": job.get("JobModifyIndex", index),
            "Status": status,
            "StatusDescription": "",
            "FailedTGAllocs": None,
            "BlockedEval": "",
            "QueuedAllocations": None,
            "CreateIndex": index,
            "ModifyIndex": index,
            "CreateTime": _now_ns(),
            "ModifyTime": _now_ns(),
            "PreviousEval": "",
            "NextEval": "",
        }
        self.evals[evaluation["ID"]] = evaluation
        return evaluation

    def _finish_eval(self, evaluation: dict[str, Any], **changes: Any) -> None:
        evaluation.update(changes)
        evaluation.setdefault("Status", "complete")
        evaluation["ModifyTime"] = _now_ns()
        evaluation["ModifyIndex"] = self.bump("evals", "jobs")

    async def _process_eval(self, eval_id: str) -> None:
        await asyncio.sleep(self.schedule_delay)
        evaluation = self.evals[eval_id]
        if evaluation["Status"] not in {"pending", "blocked"}:
            return
        namespace, job_id = evaluation["Namespace"], evaluation["JobID"]
        job = self.jobs.get((namespace, job_id))
        live = [
            a
            for a in self._job_allocs(namespace, job_id, all_instances=True)
            if a.data["DesiredStatus"] == "run"
        ]
        if job is None or job.get("Stop"):
            for record in live:
                self._stop_alloc(record, "alloc not needed due to job update")
            self._finish_eval(evaluation, Status="complete")
            return
        current = [
            a
            for a in live
            if a.data["Job"]["Version"] == job["Version"]
            and a.data["Job"]["CreateIndex"] == job["CreateIndex"]
        ]
        if current:
            self._finish_eval(
                evaluation,
                Status="complete",
                QueuedAllocations={g["Name"]: 0 for g in job["TaskGroups"]},
            )
            return
        failed: dict[str, Any] = {}
        placed: list[AllocRecord] = []
        for record in live:
            self._stop_alloc(record, "alloc is being updated due to job update")
        for group in job["TaskGroups"]:
            placement, metric = place(job, group, self.nodes, self._usage(), self.csi_volumes)
            if placement is None:
                failed[group["Name"]] = metric
                continue
            placed.append(self._new_alloc(job, group, evaluation, placement, metric))
        if failed:
            if evaluation["Status"] == "blocked":
                evaluation["ModifyIndex"] = self.bump("evals")
                return  # stays blocked until capacity changes
            blocked = self._new_eval(job, "queued-allocs", status="blocked")
            blocked["PreviousEval"] = eval_id
            self._finish_eval(
                evaluation,
                Status="complete",
                FailedTGAllocs=failed,
                BlockedEval=blocked["ID"],
                QueuedAllocations={name: 1 for name in failed},
            )
        else:
            self._finish_eval(
                evaluation,
                Status="complete",
                QueuedAllocations={g["Name"]: 0 for g in job["TaskGroups"]},
            )
        for record in placed:
            record.runner = self._spawn(self._run_alloc(record))

    def _retry_blocked(self) -> None:
        for evaluation in list(self.evals.values()):
            if evaluation["Status"] == "blocked":
                self._spawn(self._process_eval(evaluation["ID"]))

    def eval_view(self, eval_id: str) -> dict[str, Any] | None:
        evaluation = self.evals.get(eval_id)
        return copy.deepcopy(evaluation) if evaluation else None

    def job_evals(self, namespace: str, job_id: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(e)
            for e in self.evals.values()
            if e["JobID"] == job_id and e["Namespace"] == namespace
        ]

    # Allocations ----------------------------------------------------------------------------------
    def _usage(self) -> dict[str, Usage]:
        usage: dict[str, Usage] = {}
        for record in self.allocs.values():
            if record.data["ClientStatus"] in TERMINAL:
                continue
            used = usage.setdefault(record.node.name, Usage())
            for task in record.data["AllocatedResources"]["Tasks"].values():
                used.cpu += task["Cpu"]["CpuShares"]
                used.memory += task["Memory"]["MemoryMB"]
                used.cores += len(task["Cpu"].get("ReservedCores") or [])
                for device in task.get("Devices") or []:
                    for device_id in device["DeviceIDs"]:
                        used.devices[device_id] = 1
        return usage

    def _new_alloc(
        self,
        job: dict[str, Any],
        group: dict[str, Any],
        evaluation: dict[str, Any],
        placement: Any,
        metric: dict[str, Any],
    ) -> AllocRecord:
        node: Node = placement.node
        alloc_id = str(uuid.uuid4())
        ports = []
        for network in group.get("Networks") or []:
            for port in network.get("DynamicPorts") or []:
                ports.append(
                    {
                        "Label": port["Label"],
                        "Value": _free_port(node.ip),
                        "To": port.get("To", 0),
                        "HostIP": node.ip,
                    }
                )
            for port in network.get("ReservedPorts") or []:
                ports.append(
                    {
                        "Label": port["Label"],
                        "Value": port["Value"],
                        "To": port.get("To", 0),
                        "HostIP": node.ip,
                    }
                )
        tasks_alloc: dict[str, Any] = {}
        for task in group["Tasks"]:
            res = task.get("Resources") or {}
            devices = [
                {"Vendor": g.vendor, "Type": g.type, "Name": g.name, "DeviceIDs": ids}
                for g, ids in placement.devices
            ]
            tasks_alloc[task["Name"]] = {
                "Cpu": {
                    "CpuShares": int(res.get("CPU") or 0),
                    "ReservedCores": list(range(int(res.get("Cores") or 0))),
                },
                "Memory": {
                    "MemoryMB": int(res.get("MemoryMB") or 0),
                    "MemoryMaxMB": int(res.get("MemoryMaxMB") or 0),
                },
                "Devices": devices or None,
                "Networks": None,
            }
        index = self.bump("allocs", "jobs")
        data = {
            "ID": alloc_id,
            "Namespace": job["Namespace"],
            "EvalID": evaluation["ID"],
            "Name": f"{job['ID']}.{group['Name']}[0]",
            "NodeID": node.id,
            "NodeName": node.name,
            "JobID": job["ID"],
            "Job": copy.deepcopy(job),
            "TaskGroup": group["Name"],
            "DesiredStatus": "run",
            "DesiredDescription": "",
            "DesiredTransition": {},
            "ClientStatus": "pending",
            "ClientDescription": "No tasks have started",
            "TaskStates": {
                t["Name"]: {
                    "State": "pending",
                    "Failed": False,
                    "Restarts": 0,
                    "StartedAt": None,
                    "FinishedAt": None,
                    "LastRestart": None,
                    "Events": [],
                }
                for t in group["Tasks"]
            },
            "AllocatedResources": {
                "Tasks": tasks_alloc,
                "Shared": {
                    "DiskMB": 300,
                    "Networks": [
                        {
                            "Mode": "host",
                            "IP": node.ip,
                            "DynamicPorts": [
                                {
                                    "Label": p["Label"],
                                    "Value": p["Value"],
                                    "To": p["To"],
                                    "HostNetwork": "default",
                                }
                                for p in ports
                            ],
                        }
                    ],
                    "Ports": ports,
                },
            },
            "Metrics": metric,
            "CreateIndex": index,
            "ModifyIndex": index,
            "AllocModifyIndex": index,
            "CreateTime": _now_ns(),
            "ModifyTime": _now_ns(),
            "PreviousAllocation": "",
            "NextAllocation": "",
            "FollowupEvalID": "",
        }
        record = AllocRecord(data=data, node=node)
        record.timeline.registered = self.registered_at.get(
            (job["Namespace"], job["ID"]), time.monotonic()
        )
        record.timeline.placed = time.monotonic()
        self.allocs[alloc_id] = record
        return record

    def _touch(self, record: AllocRecord) -> None:
        record.data["ModifyTime"] = _now_ns()
        record.data["ModifyIndex"] = self.bump("allocs", "jobs")

    def _event(self, record: AllocRecord, task: str, kind: str, message: str, **extra: Any) -> None:
        event = {
            "Type": kind,
            "Time": _now_ns(),
            "DisplayMessage": message,
            "Details": {},
            "FailsTask": False,
            "ExitCode": 0,
            "Signal": 0,
            "Message": "",
            "DriverError": "",
            "SetupError": "",
            "KillReason": "",
            "DriverMessage": "",
        }
        event.update(extra)
        record.data["TaskStates"][task]["Events"].append(event)
        self._touch(record)

    def _set_client_status(self, record: AllocRecord, status: str, description: str) -> None:
        was_live = record.data["ClientStatus"] not in TERMINAL
        record.data["ClientStatus"] = status
        record.data["ClientDescription"] = description
        self._touch(record)
        if status in TERMINAL and was_live:
            record.timeline.stopped = time.monotonic()
            self._deregister_services(record)
            self._retry_blocked()

    def stub(self, record: AllocRecord) -> dict[str, Any]:
        data = record.data
        keys = (
            "ID",
            "Namespace",
            "EvalID",
            "Name",
            "NodeID",
            "NodeName",
            "JobID",
            "TaskGroup",
            "DesiredStatus",
            "DesiredDescription",
            "ClientStatus",
            "ClientDescription",
            "TaskStates",
            "CreateIndex",
            "ModifyIndex",
            "CreateTime",
            "ModifyTime",
            "FollowupEvalID",
            "AllocatedResources",
        )
        out = {k: copy.deepcopy(data[k]) for k in keys}
        out["JobVersion"] = data["Job"]["Version"]
        out["JobType"] = data["Job"].get("Type", "service")
        return out

    def _job_allocs(
        self, namespace: str, job_id: str, all_instances: bool = False
    ) -> list[AllocRecord]:
        """A job's allocations; like Nomad, only the current instance's unless ``all``."""
        job = self.jobs.get((namespace, job_id))
        return [
            r
            for r in self.allocs.values()
            if r.data["JobID"] == job_id
            and r.data["Namespace"] == namespace
            and (all_instances or job is None or r.data["Job"]["CreateIndex"] == job["CreateIndex"])
        ]

    def job_alloc_stubs(
        self, namespace: str, job_id: str, all_instances: bool = False
    ) -> list[dict[str, Any]]:
        return [self.stub(r) for r in self._job_allocs(namespace, job_id, all_instances)]

    def eval_alloc_stubs(self, eval_id: str) -> list[dict[str, Any]]:
        return [self.stub(r) for r in self.allocs.values() if r.data["EvalID"] == eval_id]

    def alloc_stubs(self, namespace: str) -> list[dict[str, Any]]:
        return [self.stub(r) for r in self.allocs.values() if r.data["Namespace"] == namespace]

    def alloc_view(self, alloc_id: str) -> dict[str, Any] | None:
        record = self.allocs.get(alloc_id)
        return copy.deepcopy(record.data) if record else None

    # Services -------------------------------------------------------------------------------------
    def _register_services(self, record: AllocRecord, group: Mapping[str, Any]) -> None:
        ports = {p["Label"]: p for p in record.data["AllocatedResources"]["Shared"]["Ports"]}
        for service in group.get("Services") or []:
            if service.get("Provider", "consul") != "nomad":
                continue
            port = ports.get(service.get("PortLabel", ""))
            service_id = (
                f"_nomad-task-{record.data['ID']}-group-{group['Name']}-{service['Name']}-"
                f"{service.get('PortLabel', '')}"
            )
            index = self.bump("services")
            self.services[service_id] = {
                "ID": service_id,
                "ServiceName": service["Name"],
                "Namespace": record.data["Namespace"],
                "NodeID": record.node.id,
                "Datacenter": record.node.datacenter,
                "JobID": record.data["JobID"],
                "AllocID": record.data["ID"],
                "Tags": list(service.get("Tags") or []),
                "Address": record.node.ip,
                "Port": port["Value"] if port else 0,
                "CreateIndex": index,
                "ModifyIndex": index,
            }

    def _deregister_services(self, record: AllocRecord) -> None:
        gone = [k for k, s in self.services.items() if s["AllocID"] == record.data["ID"]]
        for key in gone:
            del self.services[key]
        if gone:
            self.bump("services")

    def alloc_services(self, alloc_id: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(s) for s in self.services.values() if s["AllocID"] == alloc_id]

    # Variables ------------------------------------------------------------------------------------
    def put_variable(self, namespace: str, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        if namespace not in self.namespaces:
            return 400, f'nonexistent namespace "{namespace}"'
        items = body.get("Items")
        if not isinstance(items, dict) or not items:
            return 400, "variable missing required Items object"
        key = (namespace, path)
        old = self.variables.get(key)
        index = self.bump("vars")
        variable = {
            "Namespace": namespace,
            "Path": path,
            "Items": {str(k): str(v) for k, v in items.items()},
            "CreateIndex": old["CreateIndex"] if old else index,
            "ModifyIndex": index,
            "CreateTime": old["CreateTime"] if old else _now_ns(),
            "ModifyTime": _now_ns(),
        }
        self.variables[key] = variable
        return 200, copy.deepcopy(variable)

    def delete_variable(self, namespace: str, path: str) -> tuple[int, Any]:
        if self.variables.pop((namespace, path), None) is None:
            return 404, "variable not found"
        self.bump("vars")
        return 204, None

    # Shutdown -------------------------------------------------------------------------------------
    async def shutdown(self) -> None:
        for task in list(self._background):
            task.cancel()
        for record in self.allocs.values():
            if record.process and record.process.poll() is None:
                signal_group(record.process, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for record in self.allocs.values():
            process = record.process
            if process is None:
                continue
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if process.poll() is None:
                signal_group(process, signal.SIGKILL)
                process.wait()

    def remove_root(self) -> None:
        shutil.rmtree(self.root_dir, ignore_errors=True)


_VOLATILE = {
    "SubmitTime",
    "Version",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
    "Status",
    "Stop",
}


def _spec(job: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in _VOLATILE}


def _job_problems(job: Mapping[str, Any]) -> list[str]:
    """A few of the checks ``Job.Validate`` does; the schema check happens before."""
    problems = []
    job_id = str(job.get("ID") or "")
    if not job_id:
        problems.append("Missing job ID")
    if " " in job_id:
        problems.append("Job ID contains a space")
    if job.get("Type", "service") not in {"service", "batch", "system", "sysbatch"}:
        problems.append(f"Invalid job type: {job.get('Type')!r}")
    groups = job.get("TaskGroups") or []
    if not groups:
        problems.append("Missing job task groups")
    for meta_value in (job.get("Meta") or {}).values():
        if not isinstance(meta_value, str):
            problems.append("Meta values must be strings")
    for group in groups:
        if not group.get("Name"):
            problems.append("Missing task group name")
        if not group.get("Tasks"):
            problems.append(f"Task group {group.get('Name')} missing tasks")
        for task in group.get("Tasks") or []:
            if not task.get("Driver"):
                problems.append(f"Task {task.get('Name')} missing driver")
            if task.get("Driver") == "raw_exec" and task.get("VolumeMounts"):
                problems.append(
                    f"Task {task.get('Name')}: task driver raw_exec does not support volume mounts"
                )
            for mount in task.get("VolumeMounts") or []:
                if mount.get("Volume") not in (group.get("Volumes") or {}):
                    problems.append(
                        f"Task {task.get('Name')}: volume_mount {mount.get('Volume')} has no volume"
                    )
    return problems
