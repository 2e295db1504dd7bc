"""Sample gateway pull figures against their baselines, measured in one run.

    .venv/bin/python benchmarks/gateway_pull.py [--repeat 5] [--workers 0 2] [--profile]
                                                [--no-dimse] [--no-full-size]

Starts a real Orthanc with the demo archive and measures, on the study with the 50-slice CT
series (50 CT slices + 1 JPEG 2000 head CT, 51 instances), each median of ``--repeat``:

- **ceiling**: plain download of the same 51 instances from Orthanc: (a) its REST API
  (``/instances/{id}/file`` one after another, ids known beforehand), the issue's ceiling,
  and (b) one WADO-RS request per series, the multipart body read to the end and not parsed;
  ratios are printed against both; and (c) the REST download kept as a pull keeps it, each
  file written and then one ``syncfs``: what storing the bytes durably costs on this disk;
- **gateway**: a pull through the in-process gateway (DICOMweb integration; series lookup,
  retrieval, Annex E de-identification with the series memo (:mod:`.series_memo`; each pull
  starts with nothing learnt), files written and synced, manifests, audit record, rename)
  with each ``--workers`` setting (0: one thread; N: N processes);
- **pull, files prepared**: the same pull (one thread) with every object's de-identified
  file made beforehand and only written: what a pull costs besides de-identification;
- **naive**: dicomweb-client's ``retrieve_series`` for both series, then dicognito on every
  dataset and ``save_as`` into a folder, sequentially;
- the same for **a full-size series** (50 slices of 512x512 CT, 26 MB; ``--no-full-size``
  leaves it out): the demo's CT slices are 128x128 (35 kB), and a pull's costs that grow
  with bytes (reading, copying, hashing for the manifest, writing, the filesystem sync) only
  show at the size of a real series;
- the same three for one multi-frame object (the 30-frame JPEG ultrasound cine loop), and
  the gateway's retrieval of it alone (WADO-RS, part of the gateway's figure);
- **de-identification alone**, files per second on the same 51 files held in memory
  (parse, de-identify, encode): the gateway as a pull does it (series memo, nothing learnt
  before the first file) and each object alone (the ordinary way), against dicognito with
  pydicom's ``dcmwrite``;
- the DIMSE integration (C-GET and C-MOVE) on the same study, for reference;
- **CPU per run**: the CPU time every process involved used during each timed run (this
  one with the gateway's event loop and threads, the gateway's worker processes, Orthanc),
  read from ``/proc/<pid>/task/<tid>/schedstat`` (Linux): divided by the CPUs this machine
  has, it is the shortest a run could take here if all of it ran in parallel.

Orthanc runs with ``TCP_NODELAY=1`` in its environment: its DICOM toolkit (DCMTK) otherwise
leaves Nagle's algorithm on and every C-STORE sub-operation waits ~40 ms for a delayed ACK
(measured: 50 instances by C-GET 2.4 s without, 0.25 s with). HTTP is not affected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import secrets
import shutil
import statistics
import tempfile
import textwrap
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from demo.archive import build_archive
from demo.orthanc import Modality, OrthancServer, find_free_port
from hub_config.loader import parse_config
from hub_config.storage import StorageLayout
from services.sample_gateway.audit import AuditLog
from services.sample_gateway.deidentify import DeidPolicy, deidentify
from services.sample_gateway.delivery import PullWriter, store_instance, sync_filesystem
from services.sample_gateway.encoding import part10_bytes
from services.sample_gateway.gateway import Gateway
from services.sample_gateway.integration import build_archive as build_archive_client
from services.sample_gateway.pipeline import (
    Delivered,
    Workers,
    deidentified,
    drop_private,
    process,
)
from services.sample_gateway.pseudonyms import ProjectKeys
from services.sample_gateway.queries import StudyCriteria
from services.sample_gateway.series_memo import SeriesMemo
from services.sample_gateway.state import GatewayState

CINE = "US cine loop"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--profile", action="store_true", help="print where a gateway pull spends its time")
    parser.add_argument("--no-dimse", action="store_true")
    parser.add_argument("--no-full-size", action="store_true",
                        help="leave out the study of 50 512x512 CT slices (26 MB)")
    args = parser.parse_args()
    try:
        import dicognito  # noqa: F401 - the naive baseline
        import dicomweb_client  # noqa: F401
    except ImportError as missing:
        raise SystemExit(f"{missing.name} is needed for the baselines: pip install -e '.[bench]'") from None
    warnings.simplefilter("ignore")
    os.environ["TCP_NODELAY"] = "1"  # for Orthanc's DCMTK (see the module docstring)
    work = Path(tempfile.mkdtemp(prefix="wb-gwbench-"))
    archive = build_archive(work / "archive", full_size_ct=not args.no_full_size)
    peer = Modality(aet="BENCHGW", host="127.0.0.1", port=find_free_port())
    orthanc = OrthancServer(storage_dir=work / "orthanc", users={"gw": secrets.token_urlsafe(12)},
                            modalities={"gateway": peer})
    orthanc.start()
    try:
        orthanc.upload(archive.paths())
        asyncio.run(run(args, work, orthanc, archive, peer))
    finally:
        orthanc.stop()
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class Study:
    """A study the benchmark pulls: its instances and how the gateway's search finds it."""

    title: str
    prefix: str  # of its rows' names ("" for the issue's study)
    entries: list[Any]
    description: str  # the search's study description

    @property
    def study_uid(self) -> str:
        return self.entries[0].study_instance_uid

    @property
    def series_uids(self) -> list[str]:
        return sorted({e.series_instance_uid for e in self.entries})


class Recorder:
    """Wall time and CPU time (all processes, Orthanc apart) of each named run."""

    def __init__(self, meter: CpuMeter) -> None:
        self.meter = meter
        self.results: dict[str, list[float]] = {}
        self.cpu: dict[str, list[tuple[float, float]]] = {}
        self._depth = 0  # a run timed inside another: no sync (it would count in the outer)

    @contextlib.contextmanager
    def timed(self, name: str, cpu: bool = True) -> Iterator[None]:
        # Every run starts with nothing unwritten: the naive pipeline never syncs, and its
        # files would otherwise make the next run's sync (or the pull's choice of sync) pay.
        if not self._depth:
            os.sync()
        before = self.meter.now() if cpu else (0, 0)  # outside the timed span: it scans /proc
        started = time.perf_counter()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        self.results.setdefault(name, []).append(time.perf_counter() - started)
        if cpu:
            (total, apart), (total0, apart0) = self.meter.now(), before
            self.cpu.setdefault(name, []).append(((total - total0) / 1e9, (apart - apart0) / 1e9))

    def median(self, name: str) -> float:
        return statistics.median(self.results[name])


async def run(args: argparse.Namespace, work: Path, orthanc: OrthancServer, archive: Any, peer: Modality) -> None:
    bench = archive.benchmark_series()
    issue_study = Study(f"study with the {len(bench)}-slice CT series", "",
                        [e for e in archive.entries if e.study_instance_uid == bench[0].study_instance_uid],
                        "CT THORAX")
    studies = [issue_study]
    if not args.no_full_size:
        full = archive.full_size_series()
        studies.append(Study(f"{len(full)} slices of {full[0].rows}x{full[0].columns} CT (the size of a real "
                             "series; the demo's slices are 128x128)", "full-size ", full, "CT ABDOMEN"))
    cine = next(e for e in archive.entries if e.series_description == CINE)
    rec = Recorder(CpuMeter(apart=orthanc.pid or 0))

    with orthanc.client() as client:
        ids = {e.sop_instance_uid: client.post("/tools/lookup", content=e.sop_instance_uid).json()[0]["ID"]
               for e in [*(e for study in studies for e in study.entries), cine]}
        sizes = {study.prefix: sum(len(client.get(f"/instances/{ids[e.sop_instance_uid]}/file").content)
                                   for e in study.entries) for study in studies}
        in_memory = [client.get(f"/instances/{ids[e.sop_instance_uid]}/file").content for e in issue_study.entries]
        full_in_memory = [client.get(f"/instances/{ids[e.sop_instance_uid]}/file").content
                          for e in studies[-1].entries] if len(studies) > 1 else []

    gateways = {w: make_gateway(work / f"gw{w}", orthanc, "dicomweb", peer, Workers(w)) for w in args.workers}
    for gateway in gateways.values():
        await asyncio.to_thread(gateway.workers.warm_up)
    dimse = {} if args.no_dimse else {
        mode: make_gateway(work / f"gw-{mode}", orthanc, "dimse", peer, Workers(args.workers[-1]), retrieve=mode)
        for mode in ("c-get", "c-move")
    }
    keys: dict[tuple[str, str], str] = {}
    for name, gateway in [*[(f"w{w}", g) for w, g in gateways.items()], *dimse.items()]:
        for study in studies if name.startswith("w") else [issue_study]:
            found = (await gateway.search("bench", "bench",
                                          StudyCriteria(description=study.description, modality="CT")))["studies"]
            keys[name, study.prefix] = next(s["study_key"] for s in found if s["instances"] == len(study.entries))
            await pull(gateway, keys[name, study.prefix])  # warm: key files, first connections

    prepared: dict[bytes, tuple[bytes, Any]] = {}
    made: set[str] = set()  # SOP instance UIDs whose files are prepared
    for _ in range(args.repeat):
        for study in studies:
            await measure_study(rec, study, orthanc, ids, gateways, keys, prepared, made, work)
        for mode, gateway in dimse.items():
            with rec.timed(f"gateway DIMSE {mode}", cpu=False):
                done = await pull(gateway, keys[mode, ""])
            assert done["status"] == "done", done

        with orthanc.client() as client, rec.timed("cine ceiling", cpu=False):
            client.get(f"/instances/{ids[cine.sop_instance_uid]}/file").raise_for_status()
        gateway = gateways[args.workers[0]]
        keys_ = gateway.keys_for("bench")
        with rec.timed("cine gateway", cpu=False):
            with rec.timed("cine gateway: WADO-RS retrieval", cpu=False):
                part = await gateway.archive.retrieve_instance(cine.study_instance_uid, cine.series_instance_uid,
                                                               cine.sop_instance_uid)
            writer = PullWriter(work / "cine", "bench")
            outcome = await asyncio.to_thread(
                process, part.body, part.content_type, cine.study_instance_uid, keys_,
                DeidPolicy(allow_burned_in_annotation=True), writer.target,
                f"cine-{len(rec.results.get('cine gateway', []))}")  # learnt nothing before
        assert outcome.row.frames == cine.number_of_frames, outcome
        writer.abort()
        with rec.timed("cine naive", cpu=False):
            await asyncio.to_thread(naive_instance, orthanc, cine, work / "naive-cine")

    deid_rates = deidentification_rates(in_memory, args.repeat)
    full_rates = deidentification_rates(full_in_memory, args.repeat) if full_in_memory else {}
    for gateway in [*gateways.values(), *dimse.values()]:
        await gateway.aclose()

    print(f"median of {args.repeat}; {os.cpu_count()} CPUs; files written to {filesystem_of(work)} "
          "(tmpfs: the syncs cost nothing)")
    for study in studies:
        report(rec, study, sizes[study.prefix], args.workers, list(dimse) if study is issue_study else [])
    print(f"multi-frame object ({cine.number_of_frames}-frame {cine.transfer_syntax_name} ultrasound):")
    for name in ("cine ceiling", "cine gateway", "cine gateway: WADO-RS retrieval", "cine naive"):
        print(f"  {name:<26} {rec.median(name) * 1000:6.1f} ms")
    print(f"de-identification alone (parse + de-identify + encode, same {len(in_memory)} files in memory):")
    for name, rate in deid_rates.items():
        if name.startswith("ms per file"):
            print(f"  {name:<34} {rate:6.2f}")
        else:
            print(f"  {name:<26} {rate:6.0f} files/s")
    for name in ("gateway, series memo", "gateway, series memo, pixels differing per slice",
                 "gateway, each object alone"):
        print(f"  ratio {name} / dicognito: {deid_rates[name] / deid_rates['dicognito']:.1f}x")
    if full_rates:
        print(f"full-size: de-identification alone, the same {len(full_in_memory)} 512x512 slices in memory: "
              f"series memo {full_rates['gateway, series memo']:.0f} files/s "
              f"({len(full_in_memory) / full_rates['gateway, series memo'] * 1000:.1f} ms for all), "
              f"each object alone {full_rates['gateway, each object alone']:.0f}, "
              f"dicognito {full_rates['dicognito']:.0f} "
              f"({full_rates['gateway, series memo'] / full_rates['dicognito']:.1f}x)")

    if args.profile:
        for study in studies:
            await profile(work, orthanc, peer, study)


async def measure_study(rec: Recorder, study: Study, orthanc: OrthancServer, ids: dict[str, str],
                        gateways: dict[int, Gateway], keys: dict[tuple[str, str], str],
                        prepared: dict[bytes, tuple[bytes, Any]], made: set[str], work: Path) -> None:
    """One timed run of each: the two ceilings, the gateway per workers setting, the naive
    pipeline and the pull with files prepared."""
    p = study.prefix
    with orthanc.client() as client:
        with rec.timed(f"{p}ceiling REST"):
            for entry in study.entries:
                client.get(f"/instances/{ids[entry.sop_instance_uid]}/file").raise_for_status()
        # The same download kept as a pull keeps it: each file written, then one syncfs. Not
        # the issue's ceiling (that one keeps nothing); it says what storing costs here.
        stored = work / "stored" / f"{p or 'issue '}{len(rec.results.get(f'{p}ceiling REST, stored', []))}"
        stored.mkdir(parents=True)
        with rec.timed(f"{p}ceiling REST, stored"):
            for entry in study.entries:
                data = client.get(f"/instances/{ids[entry.sop_instance_uid]}/file").content
                (stored / f"{entry.sop_instance_uid}.dcm").write_bytes(data)
            folder = os.open(stored, os.O_RDONLY)
            try:
                if not sync_filesystem(folder):  # no syncfs here: each file, as a pull would
                    for path in stored.iterdir():
                        with path.open("rb") as file:
                            os.fsync(file.fileno())
                    os.fsync(folder)
            finally:
                os.close(folder)
        with rec.timed(f"{p}ceiling WADO-RS"):
            for series_uid in study.series_uids:
                with client.stream("GET", f"/dicom-web/studies/{study.study_uid}/series/{series_uid}",
                                   headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                      "transfer-syntax=*"}) as r:
                    for _chunk in r.iter_bytes():
                        pass
    for workers, gateway in gateways.items():
        with rec.timed(f"{p}gateway workers={workers}"):
            done = await pull(gateway, keys[f"w{workers}", p])
        assert done["status"] == "done" and done["instances_done"] == len(study.entries), done
    with rec.timed(f"{p}naive"):
        await asyncio.to_thread(naive, orthanc, study.study_uid, study.series_uids, work / "naive")
    # What is left of a pull when de-identification costs nothing: the same pull (one
    # thread) with every object's file prepared beforehand, only written.
    if 0 in gateways:
        with _prepared(prepared):
            if not any(e.sop_instance_uid in made for e in study.entries):
                await pull(gateways[0], keys["w0", p])  # untimed: makes the files
                made.update(e.sop_instance_uid for e in study.entries)
            with rec.timed(f"{p}pull, files prepared"):
                done = await pull(gateways[0], keys["w0", p])
        assert done["status"] == "done", done


def report(rec: Recorder, study: Study, size: int, workers: list[int], dimse: list[str]) -> None:
    p, n = study.prefix, len(study.entries)
    ceiling, wado, naive_time = (rec.median(f"{p}{name}") for name in ("ceiling REST", "ceiling WADO-RS", "naive"))
    print(f"{p}{study.title}: {n} instances, {size / 1e6:.1f} MB")
    for name in ("ceiling REST", "ceiling REST, stored", "ceiling WADO-RS"):
        t = rec.median(f"{p}{name}")
        print(f"  {name:<26} {t:6.3f} s  {n / t:6.0f} files/s")
    for name in [*[f"gateway workers={w}" for w in workers], *[f"gateway DIMSE {m}" for m in dimse],
                 *(["pull, files prepared"] if f"{p}pull, files prepared" in rec.results else [])]:
        t = rec.median(f"{p}{name}")
        print(f"  {name:<26} {t:6.3f} s  {n / t:6.0f} files/s  {ceiling / t:5.0%} of the REST ceiling "
              f"({wado / t:4.0%} of WADO-RS), {naive_time / t:4.1f}x the naive pipeline   "
              f"{_all(rec.results[p + name])}")
    print(f"  {'naive (dicomweb-client + dicognito)':<26} {naive_time:6.3f} s  {n / naive_time:6.0f} files/s")
    stored = rec.median(f"{p}ceiling REST, stored")
    print("  share of the REST download written and synced (files kept as a pull keeps them): " + ", ".join(
        f"{name} {stored / rec.median(p + name):.0%}" for name in [*[f"gateway workers={w}" for w in workers],
                                                                   "pull, files prepared"]
        if p + name in rec.results))
    if not rec.meter.available:
        return
    cpus = os.cpu_count() or 1
    print(f"  CPU time per run, all processes (this one, the gateway's workers, Orthanc), median; "
          f"/ {cpus} CPUs = the shortest the run could take here:")
    for name, values in rec.cpu.items():
        if not name.startswith(p) or (not p and name.startswith("full-size ")):
            continue
        used = statistics.median(v[0] for v in values)
        in_orthanc = statistics.median(v[1] for v in values)
        print(f"    {name.removeprefix(p):<24} {used * 1000:6.1f} core-ms (Orthanc {in_orthanc * 1000:5.1f})  "
              f"/ {cpus} = {used / cpus * 1000:5.1f} ms (measured {rec.median(name) * 1000:5.1f} ms)")
    floor = min(statistics.median(v[0] for v in rec.cpu[f"{p}gateway workers={w}"]) for w in workers) / cpus
    print(f"  70 % of the REST ceiling is {ceiling / 0.7 * 1000:.1f} ms; the gateway's CPU alone needs "
          f"at least {floor * 1000:.1f} ms on {cpus} CPUs")


async def profile(work: Path, orthanc: OrthancServer, peer: Modality, study: Study) -> None:
    """Where one pull (one thread) spends its time: the event loop's thread and the
    de-identification thread, each profiled in itself (a profiler sees only its thread)."""
    gateway = make_gateway(work / f"gw-profile-{study.prefix.strip()}", orthanc, "dicomweb", peer, Workers(0))
    found = (await gateway.search("bench", "bench", StudyCriteria(description=study.description,
                                                                   modality="CT")))["studies"]
    key = next(s["study_key"] for s in found if s["instances"] == len(study.entries))
    profiler, worker_profiler = cProfile.Profile(), cProfile.Profile()
    await gateway.workers.run(worker_profiler.enable)  # Workers(0): its one thread
    profiler.enable()
    await pull(gateway, key)
    profiler.disable()
    await gateway.workers.run(worker_profiler.disable)
    await gateway.aclose()
    print(f"{study.prefix}event loop thread:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    print(f"{study.prefix}de-identification thread:")
    pstats.Stats(worker_profiler).sort_stats("tottime").print_stats(40)


def make_gateway(private: Path, orthanc: OrthancServer, integration: str, peer: Modality, workers: Workers,
                 retrieve: str = "c-get") -> Gateway:
    config = parse_config(textwrap.dedent(f"""\
        archive:
          name: Bench RIPA
          integration: {integration}
          dicomweb_url: "{orthanc.dicomweb_url}"
          text_matching: case-insensitive
          max_results: 1000
          dimse: {{host: 127.0.0.1, port: {orthanc.dicom_port}, called_aet: {orthanc.aet},
                  calling_aet: {peer.aet}, retrieve: {retrieve}, storage_port: {peer.port}}}
        profiles: [{{slug: s, name: S, cpu: 1, memory: 1G}}]
        projects:
          - id: bench
            title: Bench
            members: [bench]
            approval: {{reference: B, expires: 2099-12-31}}
            archive: {{enabled: true, allow_burned_in_annotation: true,
                      limits: {{max_instances_per_pull: 500, max_studies_per_day: 100000}}}}
        """))
    assert config.archive is not None
    return Gateway(
        config=lambda: config, storage=StorageLayout(private / "data"),
        archive=build_archive_client(config.archive, orthanc.username, orthanc.password),
        state=GatewayState.at(private), audit=AuditLog(private / "audit.jsonl"), keys_dir=private / "keys",
        workers=workers,
    )


async def pull(gateway: Gateway, key: str) -> dict[str, Any]:
    started = await gateway.start_pull("bench", "bench", [key])
    await gateway.wait_idle()
    return gateway.pull_status("bench", started["id"])


def _dicomweb_client(orthanc: OrthancServer) -> Any:
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    session = create_session_from_user_pass(orthanc.username, orthanc.password)
    return DICOMwebClient(orthanc.dicomweb_url, session=session)


def naive(orthanc: OrthancServer, study_uid: str, series_uids: list[str], folder: Path) -> None:
    """What one would write first: retrieve, dicognito, save, one after the other."""
    from dicognito.anonymizer import Anonymizer

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    client = _dicomweb_client(orthanc)
    anonymizer = Anonymizer()
    for series_uid in series_uids:
        for ds in client.retrieve_series(study_uid, series_uid, media_types=(("application/dicom", "*"),)):
            anonymizer.anonymize(ds)
            ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)


def naive_instance(orthanc: OrthancServer, entry: Any, folder: Path) -> None:
    from dicognito.anonymizer import Anonymizer

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ds = _dicomweb_client(orthanc).retrieve_instance(
        entry.study_instance_uid, entry.series_instance_uid, entry.sop_instance_uid,
        media_types=(("application/dicom", "*"),))
    Anonymizer().anonymize(ds)
    ds.save_as(folder / "cine.dcm", enforce_file_format=True)


def deidentification_rates(files: list[bytes], repeat: int) -> dict[str, float]:
    from dicognito.anonymizer import Anonymizer

    keys = ProjectKeys(b"b" * 32, "bench")
    policy = DeidPolicy(allow_burned_in_annotation=True)
    anonymizer = Anonymizer()

    def ours(data: bytes) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(data))
        drop_private(ds)
        return part10_bytes(deidentify(ds, keys, policy).dataset)

    def theirs(data: bytes) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(data))
        anonymizer.anonymize(ds)
        out = io.BytesIO()
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
        return out.getvalue()

    studies = {data: str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID)
               for data in files}  # what the gateway knows before an object arrives

    def series(data: bytes, memo: SeriesMemo) -> bytes:
        return deidentified(data, "application/dicom", studies[data], keys, policy, memo).data

    rates: dict[str, float] = {}
    # Where the gateway's time per file goes (CPU, one thread).
    stages = {"parse": 0.0, "drop private": 0.0, "de-identify": 0.0, "encode": 0.0}
    for _ in range(repeat):
        for data in files:
            t0 = time.perf_counter()
            ds = pydicom.dcmread(io.BytesIO(data))
            t1 = time.perf_counter()
            drop_private(ds)
            t2 = time.perf_counter()
            clean = deidentify(ds, keys, policy).dataset
            t3 = time.perf_counter()
            part10_bytes(clean)
            t4 = time.perf_counter()
            for stage, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                stages[stage] += seconds
    for stage, seconds in stages.items():
        rates[f"ms per file: {stage}"] = seconds / (repeat * len(files)) * 1000
    for name, function in (("gateway, each object alone", ours), ("dicognito", theirs)):
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            for data in files:
                function(data)
            times.append(time.perf_counter() - started)
        rates[name] = len(files) / statistics.median(times)
    # The demo's 50 CT slices share one image; real slices do not. The same files with each
    # slice's pixels changed (value + slice number) say what differing pixels cost the memo.
    differing = []
    for number, data in enumerate(files):
        ds = pydicom.dcmread(io.BytesIO(data))
        if "PixelData" in ds and not ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.PixelData = (ds.pixel_array + number).astype(ds.pixel_array.dtype).tobytes()
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        differing.append(out.getvalue())
        studies[differing[-1]] = studies[data]
    for name, inputs in (("gateway, series memo", files),
                         ("gateway, series memo, pixels differing per slice", differing)):
        times = []
        for _ in range(repeat):
            memo = SeriesMemo()  # as in one pull: nothing learnt before
            started = time.perf_counter()
            for data in inputs:
                series(data, memo)
            times.append(time.perf_counter() - started)
        rates[name] = len(inputs) / statistics.median(times)
    return rates


@contextlib.contextmanager
def _prepared(prepared: dict[bytes, tuple[bytes, Any]]) -> Iterator[None]:
    """A pull's per-object work (in the gateway's thread) replaced by writing the file made
    for that object beforehand (made on first sight: run the pull once untimed)."""
    import services.sample_gateway.pipeline as pipeline_module  # process_batch calls its process

    def write_prepared(body: bytes, content_type: str, study_uid: str, keys: ProjectKeys,
                       policy: DeidPolicy, target: Any, pull_id: str = "") -> Delivered:
        # Keyed by the object's head (its UIDs) and tail (its last pixels), not the whole
        # body: hashing 26 MB of bodies on every pull would cost this row ~20 ms of its own.
        key = body[:16384] + body[-256:]
        if key not in prepared:
            made = deidentified(body, content_type, study_uid, keys, policy, SeriesMemo())
            prepared[key] = (made.data, made.row)
        data, row = prepared[key]
        store_instance(target, row.file, data)
        return Delivered(row)

    original = pipeline_module.process
    pipeline_module.process = write_prepared
    try:
        yield
    finally:
        pipeline_module.process = original


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (the longest mount point above it)."""
    best, kind = "", "unknown filesystem"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and (str(path) + "/").startswith(fields[1].rstrip("/") + "/") \
                    and len(fields[1]) >= len(best):
                best, kind = fields[1], fields[2]
    return kind


def _all(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


class CpuMeter:
    """CPU time (ns) used by this process and all its descendants (the gateway's worker
    processes, Orthanc), every thread, from ``/proc/<pid>/task/<tid>/schedstat`` (Linux;
    nanosecond resolution, unlike the 10 ms ticks of ``/proc/<pid>/stat``). Read it before
    and after a run, outside the timed span: it scans ``/proc``."""

    def __init__(self, apart: int) -> None:
        self.available = Path(f"/proc/{os.getpid()}/task").is_dir()
        self.apart = apart  # a process counted apart too (Orthanc)

    def now(self) -> tuple[int, int]:
        """(all, the one counted apart)."""
        if not self.available:
            return 0, 0
        total = apart = 0
        for pid in self._family():
            for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    used = int(task.read_text().split()[0])
                    total += used
                    apart += used if pid == self.apart else 0
        return total, apart

    @staticmethod
    def _family() -> list[int]:
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = stat.read_text()
                parents[int(text.split(" ", 1)[0])] = int(text.rsplit(")", 1)[1].split()[1])
        family, frontier = [os.getpid()], [os.getpid()]
        while frontier:
            frontier = [pid for pid, parent in parents.items() if parent in frontier]
            family.extend(frontier)
        return family



if __name__ == "__main__":
    main()
