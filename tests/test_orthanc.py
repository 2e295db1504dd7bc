"""Orthanc as the stand-in PACS: the pure config builder, and a real server.

Tests that need the real Orthanc are marked ``orthanc`` and skip, saying why, when it is not
installed (the ``orthanc`` fixture and :func:`_require_orthanc`).
"""

from __future__ import annotations

import io
import os
import socket
import stat
from email.parser import BytesParser
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from demo.orthanc import (
    GDCM_TRANSFER_SYNTAXES,
    Modality,
    OrthancServer,
    OrthancStartError,
    OrthancUploadError,
    find_free_port,
    find_free_ports,
    orthanc_config,
)
from tests.fixtures.archive import RunningOrthanc, orthanc_missing_reason

J2K = set(GDCM_TRANSFER_SYNTAXES)
DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
DICOM_DEFAULT = 'multipart/related; type="application/dicom"'


def _require_orthanc() -> None:
    reason = orthanc_missing_reason()
    if reason:
        pytest.skip(reason)


def _parts(response: httpx.Response) -> list[bytes]:
    head = b"Content-Type: " + response.headers["content-type"].encode() + b"\r\n\r\n"
    message = BytesParser().parsebytes(head + response.content)
    assert message.is_multipart(), response.headers["content-type"]
    return [part.get_payload(decode=True) for part in message.get_payload()]


def _non_loopback_ipv4() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


# --------------------------------------------------------------------------- pure builder


def test_config_is_locked_down_literal() -> None:
    config = orthanc_config(
        8042, 4242, "/srv/orthanc", {"gateway": "s3cret"}, aet="RIPA",
        modalities={"gw": Modality(aet="RIPAGW", host="10.0.0.5", port=11112)},
    )
    assert config == {
        "Name": "RIPA",
        "StorageDirectory": "/srv/orthanc",
        "IndexDirectory": "/srv/orthanc",
        "StorageCompression": False,
        "MaximumStorageSize": 0,
        "MaximumPatientCount": 0,
        "SyncStorageArea": False,
        "Plugins": [
            "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
            "/usr/share/orthanc/plugins/libOrthancGdcm.so",
        ],
        "LuaScripts": [],
        "ExecuteLuaEnabled": False,
        "RestApiWriteToFileSystemEnabled": False,
        "ConcurrentJobs": 2,
        "SaveJobs": False,
        "HttpServerEnabled": True,
        "HttpPort": 8042,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {"gateway": "s3cret"},
        "SslEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "WebDavDeleteAllowed": False,
        "WebDavUploadAllowed": False,
        "HttpDescribeErrors": True,
        "HttpCompressionEnabled": False,
        "HttpThreadsCount": 16,
        "HttpRequestTimeout": 30,
        "HttpTimeout": 10,
        "HttpsVerifyPeers": True,
        "HttpProxy": "",
        "OrthancPeers": {},
        "OrthancPeersInDatabase": False,
        "DicomServerEnabled": True,
        "DicomAet": "RIPA",
        "DicomPort": 4242,
        "DicomCheckCalledAet": True,
        "StrictAetComparison": True,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {
            "gw": {
                "AET": "RIPAGW",
                "Host": "10.0.0.5",
                "Port": 11112,
                "Manufacturer": "Generic",
                "AllowEcho": True,
                "AllowFind": True,
                "AllowFindWorklist": False,
                "AllowGet": True,
                "AllowMove": True,
                "AllowStore": False,
                "AllowStorageCommitment": False,
                "AllowTranscoding": False,
            }
        },
        "DicomModalitiesInDatabase": False,
        "UnknownSopClassAccepted": False,
        "DicomTlsEnabled": False,
        "DicomScpTimeout": 30,
        "DicomScuTimeout": 10,
        "TranscodeDicomProtocol": False,
        "BuiltinDecoderTranscoderOrder": "After",
        "StableAge": 2,
        "OverwriteInstances": True,
        "DeidentifyLogs": True,
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Ssl": False,
        },
        "Gdcm": {
            "Enable": True,
            "Throttling": 1,
            "RestrictTransferSyntaxes": [
                "1.2.840.10008.1.2.4.90",
                "1.2.840.10008.1.2.4.91",
                "1.2.840.10008.1.2.4.92",
                "1.2.840.10008.1.2.4.93",
            ],
        },
    }


def test_config_accepts_modalities_as_mappings_and_options() -> None:
    config = orthanc_config(
        1, 2, "/x", {"u": "p"},
        modalities={"gw": {"aet": "GW", "port": 104, "allow_store": True}},
        plugin_dir="/opt/plugins", transcode_dicom_protocol=True,
    )
    gw = config["DicomModalities"]["gw"]
    assert (gw["AET"], gw["Host"], gw["Port"], gw["AllowStore"]) == ("GW", "127.0.0.1", 104, True)
    assert config["Plugins"] == ["/opt/plugins/libOrthancDicomWeb.so", "/opt/plugins/libOrthancGdcm.so"]
    assert config["TranscodeDicomProtocol"] is True
    assert orthanc_config(1, 2, "/x", {"u": "p"})["DicomModalities"] == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"http_port": 0}, "http_port must be an integer"),
        ({"dicom_port": 70000}, "dicom_port must be an integer"),
        ({"dicom_port": 8042}, "must differ"),
        ({"storage_dir": "relative/dir"}, "absolute path"),
        ({"users": {}}, "at least one user"),
        ({"users": {"a:b": "p"}}, "basic authentication"),
        ({"users": {"a": ""}}, "empty password"),
        ({"aet": "A" * 17}, "not a valid AE title"),
        ({"aet": "BAD\\AET"}, "not a valid AE title"),
        ({"modalities": {"gw": Modality(aet="GW", host="0.0.0.0")}}, "disable the host check"),
        ({"modalities": {"gw": Modality(aet="GW", host="*")}}, "disable the host check"),
        ({"modalities": {"gw": {"aet": "GW", "hots": "x"}}}, "unexpected keyword"),
        ({"modalities": {"gw": Modality(aet="", host="127.0.0.1")}}, "AE title"),
        ({"modalities": {"bad name": Modality(aet="GW")}}, "simple identifier"),
    ],
)
def test_config_rejects_unsafe_or_invalid_input(kwargs: dict, message: str) -> None:
    args = {"http_port": 8042, "dicom_port": 4242, "storage_dir": "/srv", "users": {"u": "p"}}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        orthanc_config(**args)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = find_free_ports(5)
    assert len(set(ports)) == 5
    with socket.socket() as s:
        s.bind(("0.0.0.0", find_free_port()))


# --------------------------------------------------------------------------- real server


@pytest.mark.orthanc
def test_requests_without_valid_credentials_get_401(orthanc: RunningOrthanc) -> None:
    for method, path in [("GET", "/system"), ("GET", "/dicom-web/studies"),
                         ("POST", "/instances"), ("GET", "/plugins")]:
        assert httpx.request(method, orthanc.base_url + path, timeout=10).status_code == 401
        wrong = httpx.request(method, orthanc.base_url + path, auth=(orthanc.username, "wrong"),
                              timeout=10)
        assert wrong.status_code == 401
    with orthanc.client() as client:
        system = client.get("/system").json()
        assert (system["Version"], system["DicomAet"]) == ("1.10.1", "RIPA")
        assert client.get("/plugins").json() == ["explorer.js", "dicom-web", "gdcm"]
        # Lua and the file system are out of reach through the REST API.
        assert client.post("/tools/execute-script", content=b"print(1)").status_code == 403
        instance = orthanc.instance_ids[0]
        assert client.post(f"/instances/{instance}/export", content=b"/tmp/x.dcm").status_code == 403


@pytest.mark.orthanc
def test_binds_all_interfaces_but_refuses_remote_http(orthanc: RunningOrthanc) -> None:
    address = _non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to test from")
    # Orthanc 1.10 cannot bind loopback only: the port answers on every interface ...
    with socket.create_connection((address, orthanc.server.http_port), timeout=5):
        pass
    # ... and RemoteAccessAllowed=false refuses the request, even with good credentials
    # (Orthanc 1.10 answers 401, as for a wrong password).
    response = httpx.get(f"http://{address}:{orthanc.server.http_port}/system",
                         auth=orthanc.auth, timeout=10)
    assert response.status_code == 401
    assert httpx.get(orthanc.base_url + "/system", auth=orthanc.auth, timeout=10).status_code == 200


@pytest.mark.orthanc
def test_dicom_associations_need_known_aet_from_known_host(orthanc: RunningOrthanc) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    def echo(calling: str, called: str = orthanc.aet, host: str = "127.0.0.1",
             bind: str = "127.0.0.1") -> int | None:
        ae = AE(ae_title=calling)
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.network_timeout = 5
        assoc = ae.associate(host, orthanc.dicom_port, ae_title=called, bind_address=(bind, 0))
        if not assoc.is_established:
            return None
        status = assoc.send_c_echo()
        assoc.release()
        return int(status.Status) if status else None

    assert echo(orthanc.gateway.aet) == 0x0000
    assert echo("STRANGER") is None  # unknown AET
    assert echo(orthanc.gateway.aet, called="NOT-RIPA") is None  # wrong called AET
    address = _non_loopback_ipv4()
    if address is not None:  # the right AET from another host address is rejected too
        assert echo(orthanc.gateway.aet, host=address, bind=address) is None


@pytest.mark.orthanc
def test_qido_lists_the_demo_studies(orthanc: RunningOrthanc) -> None:
    accessions = {e.accession_number for e in orthanc.archive.entries}
    with orthanc.client() as client:
        studies = client.get("/dicom-web/studies", headers={"Accept": "application/dicom+json"})
        assert studies.status_code == 200
        found = {s["00080050"]["Value"][0] for s in studies.json()}
        assert found == accessions
        one = client.get("/dicom-web/studies", params={"PatientID": "DEMO-0001"})
        assert sorted(s["00080050"]["Value"][0] for s in one.json()) == ["DEMOACC0001", "DEMOACC0002"]
        bench = orthanc.archive.benchmark_series()[0]
        instances = client.get(
            f"/dicom-web/studies/{bench.study_instance_uid}/series/{bench.series_instance_uid}/instances")
        assert len(instances.json()) == 50
        assert client.get("/statistics").json()["CountInstances"] == len(orthanc.archive.entries)


@pytest.mark.orthanc
def test_wado_rs_returns_each_transfer_syntax_as_stored(orthanc: RunningOrthanc) -> None:
    archive = orthanc.archive
    by_syntax = {}
    for entry in archive.entries:
        by_syntax.setdefault(entry.transfer_syntax_uid, entry)
    assert len(by_syntax) == 9
    with orthanc.client() as client:
        for syntax, entry in by_syntax.items():
            url = (f"/dicom-web/studies/{entry.study_instance_uid}/series/"
                   f"{entry.series_instance_uid}/instances/{entry.sop_instance_uid}")
            response = client.get(url, headers={"Accept": DICOM_ANY})
            assert response.status_code == 200, (entry.path, response.text[:200])
            [part] = _parts(response)
            got = pydicom.dcmread(io.BytesIO(part))
            original = pydicom.dcmread(archive.root / entry.path)
            assert got.SOPInstanceUID == entry.sop_instance_uid
            assert got.file_meta.TransferSyntaxUID == syntax
            assert got.PixelData == original.PixelData, entry.path
    orthanc.check_alive()


@pytest.mark.orthanc
def test_wado_rs_transcodes_lossless_non_j2k_to_explicit_little_endian(orthanc: RunningOrthanc) -> None:
    """DCMTK's transcoder (RLE, JPEG lossless, JPEG-LS): values identical to pydicom's decoding.

    JPEG 2000 is left out on purpose: GDCM's transcoder can segfault Orthanc 1.10.
    """
    lossless = {"1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80"}
    chosen = {}
    for entry in orthanc.archive.entries:
        if entry.transfer_syntax_uid in lossless:
            chosen.setdefault(entry.transfer_syntax_uid, entry)
    assert set(chosen) == lossless
    with orthanc.client() as client:
        for entry in chosen.values():
            url = (f"/dicom-web/studies/{entry.study_instance_uid}/series/"
                   f"{entry.series_instance_uid}/instances/{entry.sop_instance_uid}")
            response = client.get(url, headers={"Accept": DICOM_DEFAULT})
            assert response.status_code == 200, (entry.path, response.text[:200])
            got = pydicom.dcmread(io.BytesIO(_parts(response)[0]))
            assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
            expected = pydicom.dcmread(orthanc.archive.root / entry.path).pixel_array
            np.testing.assert_array_equal(got.pixel_array, expected, err_msg=entry.path)
    orthanc.check_alive()


@pytest.mark.orthanc
def test_gdcm_decodes_monochrome_jpeg2000_for_previews(orthanc: RunningOrthanc) -> None:
    """GDCM decodes JPEG 2000 (DCMTK cannot); the plugin refuses YBR_RCT colour (415)."""
    j2k = [(i, e) for i, e in zip(orthanc.instance_ids, orthanc.archive.entries)
           if e.transfer_syntax_uid in J2K]
    assert len(j2k) == 5
    with orthanc.client() as client:
        for instance, entry in j2k:
            response = client.get(f"/instances/{instance}/preview")
            if entry.source == "US1_J2KR.dcm":  # YBR_RCT: "Unsupported output photometric"
                assert response.status_code == 415
            else:
                assert response.status_code == 200 and response.content[:4] == b"\x89PNG", entry.path
    orthanc.check_alive()


@pytest.mark.orthanc
def test_upload_reports_every_failed_file(orthanc: RunningOrthanc, tmp_path: Path) -> None:
    bogus = tmp_path / "not-dicom.dcm"
    bogus.write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    missing = tmp_path / "missing.dcm"
    good = orthanc.archive.root / orthanc.archive.entries[0].path
    with pytest.raises(OrthancUploadError) as caught:
        orthanc.server.upload([good, bogus, missing])
    failures = {f.path: f for f in caught.value.failures}
    assert set(failures) == {bogus, missing}
    assert failures[bogus].status_code == 400
    assert failures[missing].status_code is None and "cannot read" in failures[missing].message
    assert caught.value.stored == {good: orthanc.instance_ids[0]}  # re-upload: same id
    assert "2 of 3 file(s)" in str(caught.value) and orthanc.password not in str(caught.value)


@pytest.mark.orthanc
def test_lifecycle_ports_storage_and_private_config(tmp_path: Path) -> None:
    _require_orthanc()
    server = OrthancServer()
    with server:
        assert server.running
        workdir = server.log_path.parent
        config = workdir / "orthanc.json"
        assert stat.S_IMODE(os.stat(config).st_mode) == 0o600  # it holds the passwords
        storage = server.storage_dir
        assert storage is not None and storage.is_dir()
        assert httpx.get(server.base_url + "/system", auth=server.auth).status_code == 200
        # A second server on the same HTTP port fails fast and says why.
        with pytest.raises(OrthancStartError, match="already in use") as busy:
            OrthancServer(http_port=server.http_port).start()
        assert busy.value.port_in_use
    assert not server.running and server.stop() is None  # stopping twice is fine
    assert not workdir.exists() and not storage.exists()
    kept = tmp_path / "kept"
    with OrthancServer(storage_dir=kept, users={"a": "b"}) as again:
        assert again.username == "a"
    assert (kept / "index").exists()  # a given storage folder is kept


@pytest.mark.orthanc
def test_start_fails_with_log_tail_when_plugins_are_missing(tmp_path: Path) -> None:
    _require_orthanc()
    server = OrthancServer(plugin_dir=tmp_path / "no-plugins")
    with pytest.raises(OrthancStartError, match=r"without the plugin\(s\) \['dicom-web', 'gdcm'\]") as caught:
        server.start()
    assert "Orthanc version: 1.10" in caught.value.log_tail
    assert not server.running
    with pytest.raises(OrthancStartError, match="not found on PATH"):
        OrthancServer(executable="no-such-orthanc").start()
