"""The demo workbench on this machine: ``scripts/demo`` (or ``python -m demo.run``).

Builds the demo archive (real DICOM test files, fictitious patients), starts Orthanc with it,
then JupyterHub with the local spawner and the sample gateway, all on 127.0.0.1. Prints the
URL and the demo logins, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pydicom.data

from hub_config.loader import ConfigError, config_path, load_config
from hub_config.storage import StorageLayout, default_data_dir

from .archive import build_archive, load_archive
from .hub import HubProcess, write_demo_passwords
from .orthanc import OrthancError, OrthancServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="the hub's port on 127.0.0.1 (default 8000)")
    args = parser.parse_args(argv)
    _stop_on_signals()

    try:
        config = load_config(config_path())
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    storage = StorageLayout(default_data_dir().resolve())
    storage.root.mkdir(parents=True, exist_ok=True)
    archive_conf = config.archive
    if archive_conf is None or not archive_conf.dicomweb_url or not archive_conf.credentials_file:
        print("the demo needs an archive with dicomweb_url and credentials_file in the YAML", file=sys.stderr)
        return 2
    if shutil.which("Orthanc") is None:
        print("Orthanc is not installed. As root: apt-get install -y orthanc orthanc-dicomweb orthanc-gdcm",
              file=sys.stderr)
        return 2

    step("demo archive")
    archive_dir = storage.root / "demo-archive"
    archive = load_archive(archive_dir) if (archive_dir / "index.json").exists() else build_archive(archive_dir)
    archive_dir.chmod(0o700)  # identifying (fictitious) data: the hub's eyes only
    print(f"  {len(archive.entries)} DICOM files of {len({e.patient_id for e in archive.entries})} fictitious patients")

    user, password = _archive_credentials(storage.resolve(archive_conf.credentials_file))
    http_port = urlparse(archive_conf.dicomweb_url).port or 8042
    dicom_port = archive_conf.dimse.port if archive_conf.dimse else 4242
    step(f"Orthanc on 127.0.0.1:{http_port} (DICOM {dicom_port})")
    (storage.root / "orthanc").mkdir(mode=0o700, exist_ok=True)
    orthanc = OrthancServer(storage_dir=storage.root / "orthanc", http_port=http_port, dicom_port=dicom_port,
                            users={user: password}, aet=(archive_conf.dimse.called_aet if archive_conf.dimse else "RIPA"))
    try:
        orthanc.start()
    except OrthancError as error:
        print(f"Orthanc did not start: {error}", file=sys.stderr)
        return 1
    hub: HubProcess | None = None
    try:
        orthanc.upload(archive.paths())
        _demo_datasets(storage, config)
        passwords = write_demo_passwords(storage.root / "secrets" / "demo-passwords")
        step(f"JupyterHub on http://127.0.0.1:{args.port} (log: {storage.root / 'hub.log'})")
        started = time.monotonic()
        hub = HubProcess(data_dir=storage.root, workbench_yaml=config_path().resolve(), hub_port=args.port)
        hub.start(timeout=120)
        print(f"  ready in {time.monotonic() - started:.1f} s")
        _print_logins(hub.url, config, passwords)
        _wait_for_ctrl_c(hub)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        step("stopping (servers, services, hub, then Orthanc; up to a minute)")
        stopping = time.monotonic()
        if hub is not None:
            hub.stop()
        orthanc.stop()
        step(f"stopped in {time.monotonic() - stopping:.0f} s; nothing of the demo is left running")
    return 0


def step(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m", flush=True)


def _archive_credentials(path: Path) -> tuple[str, str]:
    """The gateway's archive login, generated once into a 0600 file the gateway reads."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(f"ripa-gateway:{secrets.token_urlsafe(18)}\n")
        path.chmod(0o600)
    user, _, password = path.read_text().strip().partition(":")
    return user, password


def _demo_datasets(storage: StorageLayout, config) -> None:  # noqa: ANN001 - WorkbenchConfig
    """Public phantom images from pydicom's test data as the demo's approved dataset."""
    for dataset in config.datasets:
        target = storage.resolve(dataset.path)
        if target.exists():
            continue
        target.mkdir(parents=True)
        for name in ("CT_small.dcm", "MR_small.dcm"):
            shutil.copy2(pydicom.data.get_testdata_file(name), target / name)
        (target / "README.txt").write_text(f"{dataset.title}: public test images shipped with pydicom.\n")


def _print_logins(url: str, config, passwords: dict[str, str]) -> None:  # noqa: ANN001
    print(f"\n  Open {url} and log in as one of:\n")
    shown = set()
    for project in config.projects:
        member = next((m for m in project.members if m not in config.admins and m not in shown), None)
        if member is None:
            continue
        shown.add(member)
        print(f"    {member:<8} password {passwords['user']:<16} project {project.id} ({project.title})")
    for steward in config.data_stewards:
        print(f"    {steward:<8} password {passwords['user']:<16} data steward (export airlock)")
    for session in config.teaching:
        for teacher in session.teachers[:1]:
            print(f"    {teacher:<8} password {passwords['user']:<16} teacher of {session.id}")
        for student in session.students[:1]:
            print(f"    {student:<8} password {passwords['user']:<16} student of {session.id} "
                  "(inside the session's window)")
    for admin in config.admins:
        print(f"    {admin:<8} password {passwords['admin']}  (admin)")
    print("\n  Ctrl-C stops the hub, the gateway, the servers and Orthanc.\n", flush=True)


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM stop the demo. Set before anything is started: a demo started in
    the background by a script inherits SIGINT ignored, and so would Orthanc, the hub and its
    services (a process keeps an ignored signal across exec, a handled one is reset), each
    then waiting out the hub's timeouts when told to stop."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))


def _wait_for_ctrl_c(hub: HubProcess) -> None:
    while hub.process is not None and hub.process.poll() is None:
        time.sleep(0.5)
    raise RuntimeError(f"JupyterHub stopped unexpectedly:\n{hub.log_tail()}")


if __name__ == "__main__":
    raise SystemExit(main())
