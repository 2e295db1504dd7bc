"""A pull's commit beside another writer: the sync the gateway chooses against ``syncfs`` always.

    .venv/bin/python benchmarks/gateway_commit_beside_writer.py [--repeat 7] [--other-mb 200]

A pull ends by putting its files on disk before the rename that shows them. One
``syncfs(2)`` of the filesystem does that fastest on a quiet disk, but it also waits for every
other writer's unwritten data there (a notebook saving a large array to the same disk). The
gateway therefore syncs each file instead when ``/proc/meminfo`` shows more than
``delivery.SYNCFS_OTHERS_LIMIT`` of other unwritten data.

Starts a real Orthanc with the demo archive and pulls the study with the 50-slice CT series
(one thread) four ways, interleaved, each median of ``--repeat``: on a quiet disk and right
after this process wrote ``--other-mb`` MB to another file on the same filesystem without
syncing it, each with the gateway's choice and with ``syncfs`` always (the limit raised out of
reach). Every pull starts after an ``os.sync()`` (untimed). Prints the medians and the ratios
(``syncfs`` always / the gateway's choice) measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_pull import filesystem_of, make_gateway, pull  # noqa: E402

from demo.archive import build_archive  # noqa: E402
from demo.orthanc import Modality, OrthancServer, find_free_port  # noqa: E402
from services.sample_gateway import delivery  # noqa: E402
from services.sample_gateway.pipeline import Workers  # noqa: E402
from services.sample_gateway.queries import StudyCriteria  # noqa: E402

NEVER = 1 << 62  # a limit no machine's unwritten data reaches: syncfs always


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--other-mb", type=int, default=200, help="what the other writer leaves unwritten")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    work = Path(tempfile.mkdtemp(prefix="wb-commitbench-"))
    archive = build_archive(work / "archive")
    peer = Modality(aet="BENCHGW", host="127.0.0.1", port=find_free_port())
    orthanc = OrthancServer(storage_dir=work / "orthanc", users={"gw": secrets.token_urlsafe(12)},
                            modalities={"gateway": peer})
    orthanc.start()
    try:
        orthanc.upload(archive.paths())
        asyncio.run(run(args, work, orthanc, peer))
    finally:
        orthanc.stop()
        shutil.rmtree(work, ignore_errors=True)


async def run(args: argparse.Namespace, work: Path, orthanc: OrthancServer, peer: Modality) -> None:
    gateway = make_gateway(work / "gw", orthanc, "dicomweb", peer, Workers(0))
    found = (await gateway.search("bench", "bench", StudyCriteria(description="CT THORAX", modality="CT")))["studies"]
    key = max(found, key=lambda study: study["instances"])["study_key"]
    await pull(gateway, key)  # warm: key files, first connections
    chosen_limit = delivery.SYNCFS_OTHERS_LIMIT
    other = work / "other-writer.bin"
    chunk = bytes(1024 * 1024)
    times: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeat):
        variants = [("the gateway's choice", chosen_limit), ("syncfs always", NEVER)]
        for disk in ("quiet disk", f"beside {args.other_mb} MB unwritten"):
            for name, limit in variants if repeat % 2 else variants[::-1]:
                os.sync()
                if disk != "quiet disk":
                    with other.open("wb") as file:  # the other writer: no sync
                        for _ in range(args.other_mb):
                            file.write(chunk)
                delivery.SYNCFS_OTHERS_LIMIT = limit
                try:
                    started = time.perf_counter()
                    done = await pull(gateway, key)
                    times.setdefault((disk, name), []).append(time.perf_counter() - started)
                finally:
                    delivery.SYNCFS_OTHERS_LIMIT = chosen_limit
                assert done["status"] == "done", done
                other.unlink(missing_ok=True)
    await gateway.aclose()

    print(f"pull of {done['instances_done']} instances, one thread, median of {args.repeat}; "
          f"{os.cpu_count()} CPUs; files written to {filesystem_of(work)}")
    for disk in dict.fromkeys(d for d, _ in times):
        chosen = statistics.median(times[disk, "the gateway's choice"])
        always = statistics.median(times[disk, "syncfs always"])
        print(f"  {disk}:")
        for name in ("the gateway's choice", "syncfs always"):
            values = times[disk, name]
            print(f"    {name:<22} {statistics.median(values) * 1000:7.1f} ms   "
                  f"[{', '.join(f'{v * 1000:.0f}' for v in values)}]")
        print(f"    ratio syncfs always / the gateway's choice: {always / chosen:.2f}")


if __name__ == "__main__":
    main()
