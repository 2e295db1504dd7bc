"""The same profiles on a single container host, through JupyterHub's DockerSpawner.

:func:`docker_settings` is pure: a profile, a project, its approved datasets and the storage
layout become DockerSpawner trait values (image, CPU and memory limits, bind mounts, GPU
device requests). What one Docker host cannot honour from a profile's Nomad placement
(GPU model or memory, datacenters, node pool, constraints, namespace, priority) is listed in
``notes`` and logged, never silently dropped.

``WorkbenchDockerSpawner`` (the workbench mixin over DockerSpawner) is built on first use,
so this module imports without ``dockerspawner`` installed::

    c.JupyterHub.spawner_class = "spawners.docker.WorkbenchDockerSpawner"
    c.WorkbenchDockerSpawner.docker_gpus = 1     # GPUs this host can give servers

Mounts follow the local layout: the home at ``home_mount``, the project workspace at
``~/projects/<project>``, each approved dataset read-only at ``~/datasets/<id>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from hub_config.model import Dataset, Profile, Project
from hub_config.storage import StorageLayout


@dataclass(frozen=True)
class DockerSettings:
    image: str
    cpu_limit: float
    mem_limit: int
    volumes: dict[str, dict[str, str]]
    extra_host_config: dict[str, Any]
    notes: tuple[str, ...] = ()

    def trait_values(self) -> dict[str, Any]:
        """Values to set on a DockerSpawner before its ``start()``."""
        return {
            "image": self.image,
            "cpu_limit": self.cpu_limit,
            "mem_limit": self.mem_limit,
            "volumes": dict(self.volumes),
            "extra_host_config": dict(self.extra_host_config),
        }


def _template_safe(path: str) -> str:
    # DockerSpawner formats volume paths with str.format ({username}): keep braces literal.
    return path.replace("{", "{{").replace("}", "}}")


def docker_settings(
    profile: Profile,
    project: Project,
    datasets: Iterable[Dataset],
    *,
    username: str,
    storage: StorageLayout,
    default_image: str,
    home_mount: str = "/home/jovyan",
    gpu_driver: str = "nvidia",
) -> DockerSettings:
    home = PurePosixPath(home_mount)
    volumes: dict[str, dict[str, str]] = {
        _template_safe(str(storage.home(username))): {"bind": str(home), "mode": "rw"},
        _template_safe(str(storage.project_dir(project.id))): {
            "bind": str(home / "projects" / project.id),
            "mode": "rw",
        },
    }
    for dataset in datasets:
        volumes[_template_safe(str(storage.resolve(dataset.path)))] = {
            "bind": str(home / "datasets" / dataset.id),
            "mode": "ro",
        }
    extra: dict[str, Any] = {}
    notes: list[str] = []
    nomad = profile.nomad
    if profile.gpus:
        extra["device_requests"] = [
            {"driver": gpu_driver, "count": profile.gpus, "capabilities": [["gpu"]]}
        ]
        if nomad.gpu.model or nomad.gpu.min_memory:
            notes.append(
                "GPU model/memory requirements are not enforced on a single Docker host; "
                "the host's GPUs are used as they are"
            )
    ignored = [
        name
        for name, value in (
            ("datacenters", nomad.datacenters),
            ("node_pool", nomad.node_pool),
            ("constraints", nomad.constraints),
            ("namespace", nomad.namespace),
            ("priority", nomad.priority),
        )
        if value
    ]
    if ignored:
        notes.append("Nomad placement not applicable on one Docker host: " + ", ".join(ignored))
    if nomad.driver and nomad.driver != "docker":
        notes.append(f"profile asks for the {nomad.driver} driver; Docker runs it as a container")
    return DockerSettings(
        image=nomad.image or default_image,
        cpu_limit=float(profile.cpu),
        mem_limit=int(profile.memory),
        volumes=volumes,
        extra_host_config=extra,
        notes=tuple(notes),
    )


def _build_spawner_class() -> type:
    try:
        from dockerspawner import DockerSpawner
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "spawners.docker.WorkbenchDockerSpawner needs the 'dockerspawner' package"
        ) from exc
    from traitlets import Int, Unicode

    from .workbench import WorkbenchSpawnerMixin

    class WorkbenchDockerSpawner(WorkbenchSpawnerMixin, DockerSpawner):  # type: ignore[misc]
        """Workbench projects and profiles as containers on one Docker host."""

        docker_gpus = Int(
            0,
            config=True,
            help="""GPUs this Docker host can give servers (NVIDIA container toolkit).
            Profiles asking for more are shown as unavailable.""",
        )
        home_mount = Unicode(
            "/home/jovyan", config=True, help="Where the user's home is mounted in the container."
        )

        def profile_unavailable(self, profile: Profile) -> str | None:
            if profile.gpus > self.docker_gpus:
                return (
                    f"{profile.name} needs {profile.gpus} GPU(s); this Docker host offers "
                    f"{self.docker_gpus}. Choose another profile."
                )
            return None

        def apply_profile(self) -> DockerSettings:
            assert self.selection is not None, "run_pre_spawn_hook resolves the selection first"
            settings = docker_settings(
                self.selection.profile,
                self.selection.project,
                self.selection.datasets,
                username=self.user.name,
                storage=self.storage,
                default_image=self.image,
                home_mount=self.home_mount,
            )
            for name, value in settings.trait_values().items():
                setattr(self, name, value)
            for note in settings.notes:
                self.log.info("%s: %s", self._log_name, note)
            return settings

        async def start(self, *args: Any, **kwargs: Any) -> Any:
            settings = self.apply_profile()
            assert self.selection is not None
            # Create the writable directories here, or Docker creates them owned by root.
            self.storage.home(self.user.name).mkdir(parents=True, exist_ok=True)
            self.storage.samples_dir(self.selection.project.id).mkdir(parents=True, exist_ok=True)
            self.emit_progress(20, f"Starting a container from {settings.image}")
            return await super().start(*args, **kwargs)

    return WorkbenchDockerSpawner


def __getattr__(name: str) -> Any:
    if name == "WorkbenchDockerSpawner":
        cls = _build_spawner_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
