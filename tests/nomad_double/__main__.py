"""Run the Nomad double in a process of its own (benchmarks, manual tries).

    python -m tests.nomad_double --nodes 2 [--no-validate] [--pull-from-tag]

Prints ``NOMAD_ADDR=http://127.0.0.1:<port>`` once it listens, then serves until SIGTERM or
SIGINT. Besides Nomad's ``/v1`` API it answers ``/_double/timeline/<alloc id>``,
``/_double/requests`` (count), ``POST /_double/requests/clear`` and ``/_double/violations``.
:class:`RemoteDouble` is the matching client.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx

from .scheduler import Node
from .server import NomadDouble

_PULL = re.compile(r":pull-([0-9.]+)$")


def pull_from_tag(image: str) -> float:
    """Simulated pull time written in the image tag: ``img:pull-2.5`` pulls for 2.5 s."""
    match = _PULL.search(image)
    return float(match.group(1)) if match else 0.0


@dataclass
class RemoteDouble:
    """A double in a child process; ``address`` is its Nomad API."""

    process: subprocess.Popen[str]
    address: str

    @classmethod
    def start(cls, *args: str) -> RemoteDouble:
        root = Path(__file__).resolve().parents[2]
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.nomad_double", *args],
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        said = []
        for _ in range(20):  # notices (e.g. "request validation skipped") come first
            line = process.stdout.readline().strip()
            if line.startswith("NOMAD_ADDR="):
                return cls(process, line.split("=", 1)[1])
            said.append(line)
            if not line and process.poll() is not None:
                break
        process.kill()
        raise RuntimeError(f"the double did not start: {' | '.join(said)!r}")

    def timeline(self, alloc_id: str) -> dict[str, float]:
        return httpx.get(f"{self.address}/_double/timeline/{alloc_id}").json()

    def request_count(self) -> int:
        return int(httpx.get(f"{self.address}/_double/requests").json()["count"])

    def clear_requests(self) -> None:
        httpx.post(f"{self.address}/_double/requests/clear").raise_for_status()

    def violations(self) -> list[str]:
        return list(httpx.get(f"{self.address}/_double/violations").json()["violations"])

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Nomad test double")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--cpu-mhz", type=int, default=64000)
    parser.add_argument("--memory-mb", type=int, default=65536)
    parser.add_argument("--no-validate", action="store_true")
    parser.add_argument("--pull-from-tag", action="store_true")
    args = parser.parse_args(argv)
    nodes = [
        Node(name=f"node-{i}", cpu_mhz=args.cpu_mhz, memory_mb=args.memory_mb)
        for i in range(args.nodes)
    ]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    double = NomadDouble(
        nodes,
        validate=not args.no_validate,
        image_pull_seconds=pull_from_tag if args.pull_from_tag else 0.3,
    )
    with double:
        print(f"NOMAD_ADDR={double.address}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
