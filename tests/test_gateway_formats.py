"""Every kind of object in the demo archive, pulled through real Orthanc: compressed transfer
syntaxes kept as stored and decodable, thumbnails of every study, enhanced multi-frame
objects opened with their spacing from the functional groups."""

from __future__ import annotations

import base64
import io
import json
import textwrap
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from demo.archive import DemoArchive
from extensions.loading import open_series
from hub_config.loader import parse_config
from hub_config.storage import StorageLayout
from services.sample_gateway.audit import AuditLog
from services.sample_gateway.gateway import Gateway
from services.sample_gateway.integration import build_archive
from services.sample_gateway.queries import StudyCriteria
from services.sample_gateway.state import GatewayState
from tests.fixtures.archive import RunningOrthanc

pytestmark = pytest.mark.orthanc


def make(orthanc: RunningOrthanc, tmp_path: Path) -> Gateway:
    config = parse_config(textwrap.dedent(f"""\
        archive: {{name: Test RIPA, dicomweb_url: "{orthanc.dicomweb_url}", timeout_seconds: 10,
                  text_matching: case-insensitive}}
        profiles: [{{slug: s, name: S, cpu: 1, memory: 1G}}]
        projects:
          - id: all
            title: Everything
            members: [anna]
            approval: {{reference: T-9, expires: 2099-12-31}}
            archive: {{enabled: true, allow_burned_in_annotation: true,
                      limits: {{max_studies_per_pull: 10, max_instances_per_pull: 200}}}}
        """))
    assert config.archive is not None
    private = tmp_path / "gw"
    return Gateway(
        config=lambda: config, storage=StorageLayout(tmp_path / "data"),
        archive=build_archive(config.archive, orthanc.username, orthanc.password),
        state=GatewayState.at(private), audit=AuditLog(private / "audit.jsonl"), keys_dir=private / "keys",
    )


async def test_every_study_pulls_decodes_and_previews(orthanc: RunningOrthanc, demo_archive: DemoArchive,
                                                      tmp_path: Path) -> None:
    gateway = make(orthanc, tmp_path)
    try:
        studies = (await gateway.search("anna", "all", StudyCriteria()))["studies"]
        assert len(studies) == len({e.study_instance_uid for e in demo_archive.entries})
        started = await gateway.start_pull("anna", "all", [s["study_key"] for s in studies])
        await gateway.wait_idle()
        done = gateway.pull_status("anna", started["id"])
        assert done["status"] == "done" and done["instances_done"] == len(demo_archive.entries), done
        folder = gateway.storage.project_dir("all") / done["path"]
        manifest = json.loads((folder / "manifest.json").read_text())

        # Kept as stored: the same transfer syntaxes as in the archive, each file decodable.
        assert sorted(r["transfer_syntax"] for r in manifest["instances"]) == sorted(
            e.transfer_syntax_uid for e in demo_archive.entries)
        for row in manifest["instances"]:
            if row["transfer_syntax"] == "1.2.840.10008.1.2.1" and row["series_description"].startswith("CT Thorax 5"):
                continue  # 50 copies of one uncompressed slice: one is enough
            pixels = pydicom.dcmread(folder / row["file"]).pixel_array
            assert (row["rows"], row["columns"]) in (pixels.shape[-2:], pixels.shape[-3:-1]), row["file"]

        previews = await gateway.thumbnails("anna", "all", [s["study_key"] for s in studies])
        for study in studies:
            shown = previews["thumbnails"][study["study_key"]]
            assert shown["png"], (study["description"], shown["message"])
            assert max(Image.open(io.BytesIO(base64.b64decode(shown["png"]))).size) <= 128

        # An enhanced multi-frame CT: spacing and positions from the functional groups, in mm.
        for description in ("CT Perfusion enhanced multi-frame",):
            row = next(r for r in manifest["instances"] if r["series_description"] == description)
            source = pydicom.dcmread(folder / row["file"])
            assert "PixelSpacing" not in source
            groups = [*(source.get("SharedFunctionalGroupsSequence") or [])[:1],
                      source.PerFrameFunctionalGroupsSequence[0]]
            measures = next(g.PixelMeasuresSequence[0] for g in groups if "PixelMeasuresSequence" in g)
            row_spacing, column_spacing = (float(v) for v in measures.PixelSpacing)
            image = open_series((folder / row["file"]).parent)
            assert image.sizes["x"] == row["columns"] and image.sizes["y"] == row["rows"]
            assert np.allclose(np.diff(image.coords["x"].values), column_spacing, atol=1e-4)
            assert np.allclose(np.diff(image.coords["y"].values), row_spacing, atol=1e-4)
            assert image.dims == ("z", "y", "x") and image.sizes["z"] == row["frames"]
        # pydicom's "enhanced" MR test file has no functional groups at all: frames in pixels.
        row = next(r for r in manifest["instances"] if r["series_description"] == "MR T1 3D enhanced multi-frame")
        image = open_series((folder / row["file"]).parent)
        assert image.dims == ("frame", "y", "x") and image.sizes["frame"] == row["frames"] == 10
        assert image.attrs["xy_units"] == "pixel"
    finally:
        await gateway.aclose()
