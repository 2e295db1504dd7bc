"""Cluster sizing from each source of limits: profile, JupyterHub, Nomad, cgroup v1/v2, node."""

from __future__ import annotations

from pathlib import Path

import pytest

from extensions.compute import sizing
from extensions.compute.cluster import ClusterChoiceError, choose, plan
from extensions.compute.sizing import Allocation, GiB, Limits, MiB

NODE = Limits("node", cpus=64.0, memory=512 * GiB)


def test_profile_environment() -> None:
    env = {"WORKBENCH_CPU_LIMIT": "4", "WORKBENCH_MEM_LIMIT": str(8 * GiB), "WORKBENCH_GPUS": "1"}
    assert sizing.from_profile_env(env) == Limits("profile", 4.0, 8 * GiB, 1)
    assert sizing.from_profile_env({}) == Limits("profile")


def test_jupyterhub_environment_reads_its_size_suffixes() -> None:
    assert sizing.from_jupyterhub_env({"CPU_LIMIT": "1.5", "MEM_LIMIT": "2G"}) == Limits("jupyterhub", 1.5, 2 * GiB)
    assert sizing.from_jupyterhub_env({"MEM_LIMIT": "536870912"}).memory == 512 * MiB


def test_nomad_environment_mhz_cores_and_memory_max() -> None:
    assert sizing.from_nomad_env({"NOMAD_CPU_LIMIT": "3000", "NOMAD_MEMORY_LIMIT": "4096"}) == Limits(
        "nomad", 3.0, 4 * GiB)
    # Reserved cores win over MHz shares; a memory oversubscription ceiling wins over the soft limit.
    env = {"NOMAD_CPU_CORES": "0-3,8", "NOMAD_CPU_LIMIT": "11000", "NOMAD_MEMORY_LIMIT": "1024",
           "NOMAD_MEMORY_MAX_LIMIT": "2048"}
    assert sizing.from_nomad_env(env) == Limits("nomad", 5.0, 2 * GiB)
    assert sizing.from_nomad_env({"NOMAD_CPU_LIMIT": "5000"}, mhz_per_core=2500).cpus == 2.0


@pytest.mark.parametrize(("text", "count"), [("0-3", 4), ("0-3,6,8-9", 7), ("5", 1), ("", 0)])
def test_cpu_lists(text: str, count: int) -> None:
    assert sizing.parse_cpu_list(text, source="t") == count


def test_unreadable_values_name_their_source() -> None:
    with pytest.raises(sizing.SizingError, match="WORKBENCH_MEM_LIMIT: 'lots'"):
        sizing.from_profile_env({"WORKBENCH_MEM_LIMIT": "lots"})
    with pytest.raises(sizing.SizingError, match="NOMAD_CPU_LIMIT"):
        sizing.from_nomad_env({"NOMAD_CPU_LIMIT": "-1"})


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def test_cgroup_v2_takes_the_tightest_level_on_the_way_up(tmp_path: Path) -> None:
    _write(tmp_path, {
        "cgroup.controllers": "cpuset cpu io memory pids",
        "cpu.max": "max 100000",
        "memory.max": "max",
        "kubepods/cpu.max": "400000 100000",  # the parent: 4 CPUs
        "kubepods/memory.max": str(6 * GiB),
        "kubepods/server/cpu.max": "250000 100000",  # the server: 2.5 CPUs
        "kubepods/server/memory.max": "max",
        "kubepods/server/cpuset.cpus.effective": "0-7",
    })
    limits = sizing.from_cgroup("0::/kubepods/server\n", root=tmp_path)
    assert limits == Limits("cgroup v2", cpus=2.5, memory=6 * GiB)


def test_cgroup_v2_without_limits_says_nothing(tmp_path: Path) -> None:
    _write(tmp_path, {"cgroup.controllers": "cpu memory", "cpu.max": "max 100000", "memory.max": "max"})
    assert sizing.from_cgroup("0::/\n", root=tmp_path) == Limits("cgroup v2")


def test_cgroup_v1_quota_cpuset_and_memory(tmp_path: Path) -> None:
    _write(tmp_path, {
        "cpu,cpuacct/cgroup.procs": "1",
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
        "cpu,cpuacct/cpu.cfs_quota_us": "-1",
        "memory/cgroup.procs": "1",
        "memory/docker/abc/memory.limit_in_bytes": str(3 * GiB),
        "memory/memory.limit_in_bytes": "9223372036854771712",
        "cpuset/cgroup.procs": "1",
        "cpuset/docker/abc/cpuset.cpus": "0-1",
    })
    proc = "12:cpu,cpuacct:/docker/abc\n5:memory:/docker/abc\n3:cpuset:/docker/abc\n0::/\n"
    assert sizing.from_cgroup(proc, root=tmp_path) == Limits("cgroup v1", cpus=1.5, memory=3 * GiB)


def test_cgroup_v1_unlimited_is_no_limit(tmp_path: Path) -> None:
    _write(tmp_path, {"cpu/cgroup.procs": "1", "cpu/cpu.cfs_quota_us": "-1",
                      "memory/cgroup.procs": "1", "memory/memory.limit_in_bytes": "9223372036854771712"})
    assert sizing.from_cgroup("4:memory:/\n2:cpu:/\n", root=tmp_path) == Limits("cgroup v1")


def test_node_limits_from_affinity_and_meminfo() -> None:
    limits = sizing.node_limits(affinity={0, 1, 2}, meminfo="MemTotal:       16384000 kB\nMemFree: 1 kB\n")
    assert limits == Limits("node", 3.0, 16384000 * 1024)


def test_the_tightest_source_wins_and_is_named() -> None:
    allocation = sizing.resolve([
        Limits("profile", 4.0, 8 * GiB, 1),
        Limits("jupyterhub", None, 6 * GiB),
        Limits("cgroup v2", 2.5, None),
        NODE,
    ])
    assert allocation == Allocation(2.5, 6 * GiB, 1, {"cpus": "cgroup v2", "memory": "jupyterhub", "gpus": "profile"})
    assert "2.5 CPU (cgroup v2)" in allocation.describe()


def test_never_the_whole_node() -> None:
    allocation = sizing.resolve([Limits("profile"), NODE])
    assert allocation.memory == 2 * GiB and allocation.why["memory"] == "default (no limit found)"
    assert allocation.cpus == 64.0  # CPUs: the affinity is a real, enforced limit
    small_node = sizing.resolve([Limits("node", 1.0, 1 * GiB)])
    assert small_node.memory == 1 * GiB and small_node.why["memory"] == "node"


@pytest.mark.parametrize(("cores", "split"), [(1, (1, 1)), (2, (2, 1)), (4, (4, 1)), (8, (4, 2)),
                                              (9, (3, 3)), (16, (4, 4)), (7, (7, 1)), (12, (4, 3))])
def test_processes_threads_like_dask(cores: int, split: tuple[int, int]) -> None:
    from distributed.deploy.utils import nprocesses_nthreads

    assert sizing.processes_threads(cores) == split == nprocesses_nthreads(cores)


def test_local_layout_reserves_memory_for_the_kernel() -> None:
    layout = sizing.local_layout(Allocation(2.0, 4 * GiB, 0))
    assert (layout.n_workers, layout.threads_per_worker) == (2, 1)
    assert layout.reserved_memory == int(4 * GiB * 0.15)
    assert layout.memory_limit == (4 * GiB - layout.reserved_memory) // 2
    assert layout.kwargs() == {"n_workers": 2, "threads_per_worker": 1, "memory_limit": layout.memory_limit,
                               "processes": True}


def test_local_layout_fewer_workers_when_memory_is_short() -> None:
    layout = sizing.local_layout(Allocation(4.0, 1 * GiB, 0))
    assert layout.n_workers == 1 and layout.threads_per_worker == 4
    assert layout.memory_limit == 512 * MiB


def test_fractional_cpu_gets_one_worker_one_thread() -> None:
    layout = sizing.local_layout(Allocation(0.5, 1 * GiB, 0))
    assert (layout.n_workers, layout.threads_per_worker) == (1, 1)


def test_explicit_workers_keep_within_the_share() -> None:
    layout = sizing.local_layout(Allocation(4.0, 8 * GiB, 0), n_workers=2)
    assert (layout.n_workers, layout.threads_per_worker) == (2, 2)


def test_choice_of_cluster() -> None:
    cpu, gpu = Allocation(4.0, 8 * GiB, 0), Allocation(8.0, 32 * GiB, 2)
    assert choose("auto", cpu, [], nomad_configured=False)[0] == "local"
    assert choose("auto", gpu, ["0", "1"], nomad_configured=False)[0] == "cuda"
    assert choose("auto", gpu, [], nomad_configured=False)[0] == "local"  # a GPU profile, no device
    assert choose("nomad", cpu, [], nomad_configured=True)[0] == "nomad"
    with pytest.raises(ClusterChoiceError, match="NOMAD_ADDR"):
        choose("nomad", cpu, [], nomad_configured=False)
    with pytest.raises(ClusterChoiceError, match="GPU profile"):
        choose("cuda", cpu, ["0"], nomad_configured=False)


def test_plan_from_a_profile_environment_without_touching_the_machine() -> None:
    env = {"WORKBENCH_CPU_LIMIT": "2", "WORKBENCH_MEM_LIMIT": "4G", "WORKBENCH_GPUS": "0",
           "JUPYTERHUB_SERVICE_PREFIX": "/user/anna/"}
    chosen = plan(environ=env, limits=[sizing.from_profile_env(env), NODE], devices=[])
    assert chosen.kind == "local"
    assert chosen.kwargs["n_workers"] == 2 and chosen.kwargs["threads_per_worker"] == 1
    assert chosen.kwargs["dashboard_address"] == "127.0.0.1:0"  # only the hub's proxy reaches it
    assert "2 CPU (profile)" in str(chosen)


def test_detect_reads_this_machine() -> None:
    sources = sizing.detect({})
    assert [s.source for s in sources][:3] == ["profile", "jupyterhub", "nomad"]
    allocation = sizing.resolve(sources)
    assert allocation.cpus >= 1 and 0 < allocation.memory <= 2 * GiB
