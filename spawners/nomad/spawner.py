"""``NomadSpawner``: each user server is a Nomad service job on the region's nodes.

The project/profile choice, its checks, the environment and the progress stream come from
:class:`spawners.workbench.WorkbenchSpawnerMixin`; the job comes from :mod:`.objects`; the
API calls from :mod:`.lifecycle`. This class holds configuration and state.

Configure it in ``jupyterhub_config.py``::

    c.JupyterHub.spawner_class = "spawners.nomad.spawner.NomadSpawner"
    c.NomadSpawner.nomad_address = "https://nomad.region.example:4646"
    c.NomadSpawner.nomad_ca_cert = "/etc/nomad.d/ca.pem"
    c.NomadSpawner.hub_connect_url = "http://hub.region.example:8081"

and see ``docs/nomad.md`` for the ACL policy, volumes and GPU nodes.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

from jupyterhub.spawner import Spawner
from traitlets import (
    Bool,
    Dict,
    Enum,
    Float,
    Int,
    List,
    TraitError,
    Unicode,
    default,
    validate,
)

from spawners.errors import spawn_error
from spawners.workbench import WorkbenchSpawnerMixin, save_state_now

from . import objects, slugs
from .client import NomadClient, NomadConnection
from .lifecycle import ServerJob, StartFailed, Submitted
from .objects import JobSettings, ServerSpec, UnsafeValue, VolumeRule

STATE_VERSION = 1
_clients: dict[tuple[Any, ...], NomadClient] = {}


def _client_for(connection: NomadConnection) -> NomadClient:
    """One pooled client per connection settings and event loop (the hub has one loop)."""
    loop = asyncio.get_running_loop()
    key = (connection, id(loop))
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = NomadClient(connection)
    return client


def _env_default(name: str, fallback: str = "") -> str:
    return os.environ.get(name, fallback)


class NomadSpawnerBase(Spawner):
    """Nomad settings, state and lifecycle; combined with the workbench mixin below."""

    # Connection ------------------------------------------------------------------------------
    nomad_address = Unicode(
        config=True,
        help="""Nomad HTTP API address, e.g. https://nomad.service.consul:4646.

        Defaults to $NOMAD_ADDR, else http://127.0.0.1:4646. Use https in production: the
        hub's ACL token travels with every request.""",
    )

    @default("nomad_address")
    def _default_address(self) -> str:
        return _env_default("NOMAD_ADDR", "http://127.0.0.1:4646")

    nomad_token = Unicode(
        config=True,
        help="""Nomad ACL token of the hub. Defaults to $NOMAD_TOKEN or the file in
        nomad_token_file. Prefer the environment or a file readable only by the hub over
        writing the token into a config file. See docs/nomad.md for the least-privilege
        policy it needs.""",
    )

    @default("nomad_token")
    def _default_token(self) -> str:
        return _env_default("NOMAD_TOKEN")

    nomad_token_file = Unicode(
        "", config=True, help="File holding the hub's Nomad ACL token (read at each start)."
    )
    nomad_namespace = Unicode(
        config=True,
        help="""Namespace of the servers' jobs, unless a profile names its own.
        Defaults to $NOMAD_NAMESPACE, else 'default'. A namespace of the hub's own keeps its
        ACL policy narrow.""",
    )

    @default("nomad_namespace")
    def _default_namespace(self) -> str:
        return _env_default("NOMAD_NAMESPACE", "default")

    nomad_region = Unicode(
        config=True,
        help="Nomad region of every request; defaults to $NOMAD_REGION (or the agent's).",
    )

    @default("nomad_region")
    def _default_region(self) -> str:
        return _env_default("NOMAD_REGION")

    nomad_ca_cert = Unicode(
        config=True, help="CA bundle that signed Nomad's HTTPS certificate ($NOMAD_CACERT)."
    )

    @default("nomad_ca_cert")
    def _default_ca(self) -> str:
        return _env_default("NOMAD_CACERT")

    nomad_client_cert = Unicode(
        config=True,
        help="Client certificate for Nomad's verify_https_client ($NOMAD_CLIENT_CERT).",
    )

    @default("nomad_client_cert")
    def _default_client_cert(self) -> str:
        return _env_default("NOMAD_CLIENT_CERT")

    nomad_client_key = Unicode(
        config=True, help="Key of nomad_client_cert ($NOMAD_CLIENT_KEY); keep it hub-readable only."
    )

    @default("nomad_client_key")
    def _default_client_key(self) -> str:
        return _env_default("NOMAD_CLIENT_KEY")

    nomad_skip_verify = Bool(
        False,
        config=True,
        help="""Do not verify Nomad's TLS certificate. Only for a disposable dev agent: it
        lets anyone on the path read the hub's ACL token.""",
    )
    nomad_request_timeout = Float(
        10.0, config=True, help="Seconds for one Nomad request (blocking queries add their wait)."
    )
    nomad_retries = Int(
        4,
        config=True,
        help="Retries of a request after connection errors, HTTP 429 or 5xx (with backoff).",
    )
    blocking_wait = Float(
        30.0,
        config=True,
        help="""Longest wait of one blocking query while following an evaluation or
        allocation. Changes arrive at once regardless; this only bounds each request.""",
    )

    # Identity of this hub's jobs -----------------------------------------------------------------
    hub_id = Unicode(
        "jupyterhub",
        config=True,
        help="""Name of this hub in job meta (workbench_hub). The orphan reconciler removes
        only jobs carrying it, so two hubs sharing a namespace must use different ids.""",
    )
    job_prefix = Unicode(
        "jupyter",
        config=True,
        help="""Start of every job id (<prefix>--<user>[--<server>]). Lower-case letters,
        digits and single dashes. Changing it orphans running servers' jobs.""",
    )

    @validate("job_prefix", "hub_id")
    def _check_slug(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"]
        if not slugs.SAFE_PART.match(value) or len(value) > 30:
            raise TraitError(
                f"{proposal['trait'].name} {value!r}: use lower-case letters, digits and single "
                "dashes, at most 30 characters"
            )
        return value

    # Placement defaults (profiles override) -------------------------------------------------------
    driver = Enum(
        ["docker", "raw_exec", "exec"],
        default_value="docker",
        config=True,
        help="""Task driver when a profile names none. 'docker' isolates servers and mounts
        volumes; 'raw_exec' runs servers unisolated as the Nomad client's user and cannot
        mount volumes: development and tests only.""",
    )
    image = Unicode(
        "quay.io/jupyter/base-notebook:latest",
        config=True,
        help="Container image when a profile names none (docker driver). Pin a tag or digest.",
    )
    datacenters = List(
        Unicode(), ["dc1"], config=True, help="Datacenters when a profile names none."
    )
    node_pool = Unicode("", config=True, help="Node pool when a profile names none (Nomad 1.6+).")
    cpu_mode = Enum(
        ["mhz", "cores"],
        default_value="mhz",
        config=True,
        help="""How a profile's cores become Nomad resources: 'mhz' asks for
        cores x mhz_per_core of CPU shares; 'cores' reserves whole cores (rounded up).""",
    )
    mhz_per_core = Int(1000, config=True, help="MHz counted per profile core in 'mhz' mode.")
    memory_max_factor = Float(
        0.0,
        config=True,
        help="""If > 1, MemoryMaxMB = memory x factor (needs memory oversubscription enabled
        in Nomad's scheduler config). Servers may then use more memory than reserved.""",
    )
    container_port = Int(8888, config=True, help="Port the server listens on inside its container.")
    task_user = Unicode(
        "",
        config=True,
        help="User the task runs as (Nomad task 'user'); empty: the driver's default.",
    )
    docker_options = Dict(
        config=True,
        help="""Extra docker driver options merged into each task's config, e.g.
        {"auth_soft_fail": true, "shm_size": 1073741824}. The spawner sets image and ports.""",
    )
    home_volume = Dict(
        config=True,
        help="""The user's home as a Nomad volume (docker/exec only), e.g.
        {"type": "csi", "source": "home-{user}", "destination": "/home/jovyan"}.
        Fields: {user} {server} {project} {hub}, each a slug. Empty: no home volume.""",
    )
    project_volume = Dict(
        config=True,
        help="""The project's shared workspace, e.g. {"type": "csi", "source":
        "project-{project}", "destination": "/home/jovyan/projects/{project}"}. Empty: none.""",
    )
    dataset_volume = Dict(
        config=True,
        help="""Each approved dataset of the project, always mounted read-only, e.g.
        {"type": "host", "source": "dataset-{dataset}", "destination": "/datasets/{dataset}"}.
        Empty: datasets are not mounted.""",
    )

    @validate("home_volume", "project_volume", "dataset_volume")
    def _check_volume(self, proposal: dict[str, Any]) -> dict[str, Any]:
        value = proposal["value"]
        if value:
            try:
                _volume_rule(value)
            except ValueError as exc:
                raise TraitError(f"{proposal['trait'].name}: {exc}") from None
        return value

    token_delivery = Enum(
        ["variable", "env"],
        default_value="variable",
        config=True,
        help="""How the server gets its hub API token. 'variable' (Nomad 1.4+): a Nomad
        Variable at nomad/jobs/<job id>, rendered into the task's environment by a template;
        only the job's workload identity and the hub can read it. 'env': in the job's plain
        Env, readable by anyone allowed to read the job; only for clusters without Variables.""",
    )
    register_service = Bool(
        True, config=True, help="Register each server as a Nomad-native service (provider 'nomad')."
    )
    kill_timeout = Float(
        20.0, config=True, help="Seconds Nomad waits after SIGTERM before killing a server."
    )

    # Behaviour ------------------------------------------------------------------------------------
    fail_on_unplaceable = Bool(
        True,
        config=True,
        help="""End a start at once, with the reason, when Nomad finds no node (busy GPUs,
        missing host volume, ...). False keeps the job queued until capacity frees up or
        start_timeout passes.""",
    )
    purge_on_stop = Bool(
        False,
        config=True,
        help="""Purge the job when a server stops. False leaves the stopped job for operators
        to inspect until Nomad's garbage collection removes it.""",
    )
    stop_timeout = Float(
        30.0, config=True, help="Longest wait in stop() for the task to end (bounded)."
    )

    @default("start_timeout")
    def _default_start_timeout(self) -> int:
        return 300  # an image pull on a fresh node takes minutes

    @default("cmd")
    def _default_cmd(self) -> list[str]:
        return ["jupyterhub-singleuser"]

    @default("env_keep")
    def _default_env_keep(self) -> list[str]:
        return []  # the hub's PATH or VIRTUAL_ENV mean nothing inside a container on a node

    # State ----------------------------------------------------------------------------------------
    job_id: str | None = None
    job_namespace: str | None = None
    eval_id: str | None = None
    alloc_id: str | None = None

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.job_id:
            state["nomad"] = {
                "version": STATE_VERSION,
                "job_id": self.job_id,
                "namespace": self.job_namespace,
                "eval_id": self.eval_id,
                "alloc_id": self.alloc_id,
            }
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        state = state or {}
        saved = state.get("nomad")
        if isinstance(saved, dict):
            saved_state = saved
        elif "job_id" in state:  # version 0: flat keys, as early versions wrote them
            saved_state = {
                "job_id": state.get("job_id"),
                "namespace": state.get("namespace") or state.get("job_namespace"),
                "alloc_id": state.get("alloc_id"),
            }
        else:
            return
        self.job_id = saved_state.get("job_id") or None
        self.job_namespace = saved_state.get("namespace") or self.nomad_namespace
        self.eval_id = saved_state.get("eval_id") or None
        self.alloc_id = saved_state.get("alloc_id") or None

    def clear_state(self) -> None:
        super().clear_state()
        self.job_id = self.job_namespace = self.eval_id = self.alloc_id = None

    # Building blocks ------------------------------------------------------------------------------
    def connection(self, namespace: str | None = None) -> NomadConnection:
        token = self.nomad_token
        if self.nomad_token_file:
            with open(self.nomad_token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        return NomadConnection(
            address=self.nomad_address,
            token=token or None,
            namespace=namespace or self.nomad_namespace,
            region=self.nomad_region or None,
            ca_cert=self.nomad_ca_cert or None,
            client_cert=self.nomad_client_cert or None,
            client_key=self.nomad_client_key or None,
            skip_verify=self.nomad_skip_verify,
            timeout=self.nomad_request_timeout,
            retries=self.nomad_retries,
        )

    def job_settings(self) -> JobSettings:
        return JobSettings(
            hub_id=self.hub_id,
            job_prefix=self.job_prefix,
            namespace=self.nomad_namespace,
            region=self.nomad_region or None,
            datacenters=tuple(self.datacenters),
            node_pool=self.node_pool or None,
            driver=self.driver,
            image=self.image,
            command=tuple(self.cmd) + tuple(self.get_args()),
            cpu_mode=self.cpu_mode,
            mhz_per_core=self.mhz_per_core,
            memory_max_factor=self.memory_max_factor or None,
            container_port=self.container_port,
            home=_volume_rule(self.home_volume) if self.home_volume else None,
            project_workspace=_volume_rule(self.project_volume) if self.project_volume else None,
            dataset=_volume_rule(self.dataset_volume) if self.dataset_volume else None,
            token_delivery=self.token_delivery,
            register_service=self.register_service,
            kill_timeout_s=self.kill_timeout,
            task_user=self.task_user or None,
            docker_options=dict(self.docker_options),
        )

    def server_job(self) -> ServerJob:
        return ServerJob(
            _client_for(self.connection()),
            log=self.log,
            progress=self._progress_hook,
            wait=self.blocking_wait,
            fail_on_unplaceable=self.fail_on_unplaceable,
        )

    def _progress_hook(self, percent: int, message: str) -> None:
        emit = getattr(self, "emit_progress", None)
        if emit is not None:
            emit(percent, message)

    def _submitted(self, submitted: Submitted) -> None:
        """Save the job id the moment Nomad has it, before start() returns."""
        self.job_id, self.job_namespace, self.eval_id = (
            submitted.job_id,
            submitted.namespace,
            submitted.eval_id,
        )
        save_state_now(self)

    def selection_for_start(self) -> Any:
        selection = getattr(self, "selection", None)
        if selection is None:
            raise spawn_error(
                "No project and profile were chosen for this server.",
                reason="bad_options",
                status_code=400,
            )
        return selection

    # Spawner contract -----------------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        selection = self.selection_for_start()
        for message in getattr(self, "dataset_messages", list)():
            self._progress_hook(8, message)  # requested datasets left out, and why
        settings = self.job_settings()
        spec = ServerSpec(
            username=self.user.name,
            server_name=self.name or "",
            project=selection.project,
            profile=selection.profile,
            datasets=tuple(selection.datasets),
            env=self.get_env(),
            base_url=self.server.base_url if self.server else "/",
        )
        try:
            job = objects.build_job(spec, settings)
        except UnsafeValue as exc:
            raise spawn_error(str(exc), reason="unsafe_value", status_code=400) from None
        _, secrets = objects.split_env(spec.env)
        self.job_id, self.job_namespace = job["ID"], job["Namespace"]
        self.alloc_id = self.eval_id = None
        try:
            started = await self.server_job().start(
                job,
                secrets if settings.token_delivery == "variable" else None,
                profile_name=selection.profile.name,
                on_submitted=self._submitted,
            )
        except StartFailed as failure:
            raise spawn_error(
                failure.message,
                reason=failure.reason,
                log_message=f"Nomad job {job['ID']}: {failure.log_message}",
                status_code=failure.status_code,
            ) from None
        self.alloc_id = started.alloc_id
        self._progress_hook(90, f"Running on {started.node} at {started.ip}:{started.port}")
        return started.ip, started.port

    async def recovered_url(self) -> str | None:
        """The server's URL once its allocation runs, for JupyterHub's check after a restart
        (see ``WorkbenchSpawnerMixin.get_url``): a start cut short by a hub crash goes on
        within what is left of its ``start_timeout``. None when it fails or runs out of time;
        the hub then stops the server."""
        if not self.job_id:
            return None
        namespace = self.job_namespace or self.nomad_namespace
        try:
            started = await asyncio.wait_for(
                self.server_job().resume(self.job_id, namespace, self.alloc_id),
                timeout=self.start_time_left(),
            )
        except TimeoutError:
            self.log.warning(
                "Nomad job %s of %s: not running within start_timeout after the hub restart",
                self.job_id,
                self._log_name,
            )
            return None
        except StartFailed as failure:
            self.log.warning("Nomad job %s of %s: %s", self.job_id, self._log_name, failure.log_message)
            return None
        if started.alloc_id != self.alloc_id:
            self.alloc_id = started.alloc_id
            save_state_now(self)
        base_url = self.server.base_url if self.server else "/"
        return f"http://{started.ip}:{started.port}{base_url}"

    def start_time_left(self, minimum: float = 1.0) -> float:
        """Seconds left of ``start_timeout`` for the start that began at ``orm_spawner.started``."""
        began = getattr(getattr(self, "orm_spawner", None), "started", None)
        if began is None:
            return float(self.start_timeout)
        now = datetime.now(UTC)
        elapsed = (now - (began if began.tzinfo else began.replace(tzinfo=UTC))).total_seconds()
        return max(self.start_timeout - elapsed, minimum)

    async def poll(self) -> int | None:
        if not self.job_id:
            return 0
        return await self.server_job().status(
            self.job_id, self.job_namespace or self.nomad_namespace, self.alloc_id
        )

    async def stop(self, now: bool = False) -> None:
        if not self.job_id:
            return
        await self.server_job().stop(
            self.job_id,
            self.job_namespace or self.nomad_namespace,
            self.alloc_id,
            purge=self.purge_on_stop,
            timeout=0.0 if now else self.stop_timeout,
            delete_variable=self.token_delivery == "variable",
        )


def _volume_rule(value: dict[str, Any]) -> VolumeRule:
    unknown = set(value) - {"type", "source", "destination", "access_mode", "attachment_mode"}
    if (
        unknown
        or value.get("type") not in {"host", "csi"}
        or not value.get("source")
        or not str(value.get("destination", "")).startswith("/")
    ):
        raise ValueError(
            f"volume {value!r}: give type ('host' or 'csi'), source and an absolute "
            "destination (and optionally access_mode, attachment_mode)"
        )
    return VolumeRule(**value)


class NomadSpawner(WorkbenchSpawnerMixin, NomadSpawnerBase):
    """The workbench's production spawner: project + profile -> one Nomad job."""

    def profile_unavailable(self, profile: Any) -> str | None:
        return None  # the cluster decides; a placement failure explains itself
