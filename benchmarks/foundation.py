"""Figures of the foundation path, measured on this machine in one run.

    .venv/bin/python benchmarks/foundation.py [--repeat 3]

Starts a real Orthanc with the demo archive and a real hub (local spawner, sample gateway),
then measures: hub start (process start until /hub/api/ answers through the proxy), one
server spawn through the REST API (request until ready), a study search through the
gateway, and a pull of the 50-instance CT series through the gateway (request until the
de-identified files and manifest are in the project workspace). As a baseline for the pull,
the same 50 instances are downloaded straight from Orthanc's REST API in the same run.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

from demo.archive import build_archive
from demo.hub import HubProcess, write_demo_passwords
from demo.orthanc import OrthancServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wb-bench-"))
    archive = build_archive(work / "archive")
    orthanc = OrthancServer(storage_dir=work / "orthanc", users={"gw": secrets.token_urlsafe(12)})
    orthanc.start()
    orthanc.upload(archive.paths())
    data = work / "data"
    (data / "secrets").mkdir(parents=True)
    (data / "secrets" / "archive-credentials").write_text(
        f"{orthanc.username}:{orthanc.password}\n"
    )
    yaml = data / "workbench.yaml"
    yaml.write_text(
        textwrap.dedent(f"""\
        archive: {{dicomweb_url: "{orthanc.dicomweb_url}", credentials_file: secrets/archive-credentials}}
        profiles: [{{slug: small, name: Small, cpu: 1, memory: 1G}}]
        projects:
          - id: bench
            title: Benchmark
            members: [{", ".join(f"u{i}" for i in range(args.repeat))}]
            approval: {{reference: BENCH, expires: 2099-12-31}}
            archive: {{enabled: true, limits: {{max_instances_per_pull: 100, max_studies_per_day: 10000}}}}
        """)
    )
    token = secrets.token_hex(16)
    extra = work / "extra.py"
    extra.write_text(
        f"c.JupyterHub.services.append({{'name': 'bench', 'api_token': {token!r}}})\n"
        "c.JupyterHub.load_roles.append({'name': 'bench', 'services': ['bench'], "
        "'scopes': ['admin:users', 'admin:servers', 'tokens', 'read:users']})\n"
    )
    write_demo_passwords(data / "secrets" / "demo-passwords")
    hub = HubProcess(data_dir=data, workbench_yaml=yaml, extra_config=extra)
    started = time.perf_counter()
    hub.start(timeout=120)
    hub_start = time.perf_counter() - started
    api = httpx.Client(
        base_url=f"{hub.url}/hub/api/", headers={"Authorization": f"token {token}"}, timeout=120
    )
    spawn, search, pull, direct = [], [], [], []
    series = archive.benchmark_series()
    try:
        for i in range(args.repeat):
            user = f"u{i}"
            api.post(f"users/{user}")
            t = time.perf_counter()
            api.post(f"users/{user}/server", json={"project": "bench"})
            while not (api.get(f"users/{user}").json()["servers"].get("", {}).get("ready")):
                time.sleep(0.05)
            spawn.append(time.perf_counter() - t)

            user_token = api.post(
                f"users/{user}/tokens", json={"scopes": ["access:services!service=sample-gateway"]}
            ).json()["token"]
            gateway = httpx.Client(
                base_url=f"{hub.url}/services/sample-gateway/api/",
                headers={"Authorization": f"token {user_token}"},
                timeout=120,
            )
            t = time.perf_counter()
            studies = gateway.post(
                "search", json={"project": "bench", "criteria": {"modality": "CT"}}
            ).json()["studies"]
            search.append(time.perf_counter() - t)
            # The study holding the 50-instance series; pull only that series' study.
            study = max(studies, key=lambda s: s["instances"])
            t = time.perf_counter()
            started_pull = gateway.post(
                "pulls", json={"project": "bench", "study_keys": [study["study_key"]]}
            ).json()
            while (status := gateway.get(f"pulls/{started_pull['id']}").json())[
                "status"
            ] == "running":
                time.sleep(0.02)
            pull.append(time.perf_counter() - t)
            assert status["status"] == "done", status

            with orthanc.client() as client:
                t = time.perf_counter()
                for entry in series:
                    ids = client.post("/tools/lookup", content=entry.sop_instance_uid).json()
                    client.get(f"/instances/{ids[0]['ID']}/file").raise_for_status()
                direct.append(time.perf_counter() - t)
            api.delete(f"users/{user}/server")
    finally:
        hub.stop()
        orthanc.stop()

    med = statistics.median
    print(f"hub start (process -> /hub/api/ through the proxy): {hub_start:.2f} s")
    print(
        f"spawn (REST request -> server ready), median of {args.repeat}: {med(spawn):.2f} s  {_all(spawn)}"
    )
    print(
        f"search through the gateway (CT studies), median: {med(search) * 1000:.0f} ms  {_all(search)}"
    )
    print(
        f"pull + de-identify + deliver, study of {status['instances_done']} instances "
        f"({len(series)}-instance series + 1), median: {med(pull):.2f} s  {_all(pull)}"
    )
    print(
        f"baseline: plain download of the {len(series)} instances from Orthanc's REST API, median: "
        f"{med(direct):.2f} s; ratio pull/baseline: {med(pull) / med(direct):.1f}x"
    )


def _all(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


if __name__ == "__main__":
    main()
