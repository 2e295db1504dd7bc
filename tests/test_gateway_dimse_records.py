"""DIMSE answers hold only the keys asked for, and C-MOVE sends what the archive finds: a
third adversarial trial showed a search over C-FIND leaving the patient's name in a study
description (the record had no name to clean it of; QIDO-RS answers carry one anyway), and
a C-MOVE failing whole because of one object of another study in the same series UID."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from demo.orthanc import Modality, OrthancServer, find_free_port
from tests.fixtures.archive import GATEWAY_AET, RunningOrthanc, orthanc_missing_reason
from tests.test_gateway_dimse import gateway, manifest_of, peer, pull, search

NAME, CPR = "SOEGAARD^KIRSTEN", "0101601234"


@dataclass(frozen=True)
class Planted:
    orthanc: RunningOrthanc
    series_uid: str


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Planted]:
    """An Orthanc of its own: a study whose description names its patient, and one object
    of another patient's study under the same SeriesInstanceUID (a broken archive)."""
    reason = orthanc_missing_reason()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("planted")
    series_uid = generate_uid()
    paths = []
    for index, (patient, name, study) in enumerate(
            [(CPR, NAME, "A"), (CPR, NAME, "A"), ("0202702345", "HANSEN^BO", "B")]):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PatientID, ds.PatientName = patient, name
        ds.StudyInstanceUID = generate_uid(entropy_srcs=[study, str(folder)])
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyDescription = f"CT THORAX Soegaard Kirsten {CPR}" if study == "A" else "CT HEAD"
        ds.InstanceNumber = index + 1
        paths.append(folder / f"{index}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    peer_ae = Modality(aet=GATEWAY_AET, host="127.0.0.1", port=find_free_port())
    server = OrthancServer(storage_dir=folder / "orthanc", users={"gw": secrets.token_urlsafe(12)},
                           modalities={"gateway": peer_ae})
    server.start()
    try:
        ids = server.upload(paths)
        yield Planted(RunningOrthanc(server=server, archive=None, instance_ids=tuple(ids),  # type: ignore[arg-type]
                                     gateway=peer_ae), series_uid)
    finally:
        server.stop()


@pytest.mark.orthanc
@pytest.mark.parametrize("integration", ["dimse", "dicomweb"])
async def test_a_c_find_record_is_cleaned_of_the_patients_name_as_a_qido_one_is(
        planted: Planted, tmp_path: Path, integration: str) -> None:
    async with gateway(planted.orthanc, tmp_path, integration, peer(planted.orthanc), integration) as gw:
        studies = await search(gw, description="thorax")
        assert [s["description"] for s in studies] == ["CT THORAX"], studies
        assert await search(gw, description="kirsten") == []


@pytest.mark.orthanc
async def test_c_move_delivers_a_study_despite_a_stray_object_of_another(planted: Planted, tmp_path: Path) -> None:
    extra = {"retrieve": "c-move", "storage_port": str(planted.orthanc.gateway.port)}
    async with gateway(planted.orthanc, tmp_path, "move", peer(planted.orthanc, **extra)) as gw:
        key, = [s["study_key"] for s in await search(gw, description="thorax")]
        done = await pull(gw, [key])
        assert done["status"] == "done", done
        assert (done["instances_done"], done["instances_refused"]) == (2, 1), done
        refused = manifest_of(gw, done)["refused"]
        assert list(refused.values()) == [1] and "another study" in next(iter(refused))
