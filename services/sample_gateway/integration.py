"""What the gateway needs from an archive, whichever DICOM integration reaches it.

Two integrations implement :class:`Archive`: :class:`.archive.DicomWebArchive` (QIDO-RS and
WADO-RS) and :class:`.dimse.DimseArchive` (C-FIND with C-GET, or C-MOVE to the gateway's own
storage SCP). The gateway only talks to this protocol, so the choice is one line of the
workbench YAML (``archive.integration``), made by :func:`build_archive`.

Search records and series records are DICOM JSON (PS3.18 F.2) whichever integration found
them; retrieved objects are :class:`.multipart.Part` (the bytes as the archive stored them,
a Content-Type naming the transfer syntax), so everything after retrieval is shared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .multipart import Part
from .queries import StudyQuery

if TYPE_CHECKING:
    from hub_config.model import ArchiveConnection


@dataclass(frozen=True)
class StudyPage:
    """One page of study records.

    ``more``: True when the archive said more results follow, False when it said these are
    all, None when it did not say (QIDO-RS without a Warning header). ``capped``: the archive
    has more matches than it will ever return for this query (a C-FIND cut at
    ``max_results``): narrowing the search is the only way to see them.
    """

    records: list[dict[str, Any]]
    more: bool | None = None
    capped: bool = False


@dataclass
class ArchiveTraits:
    """What the gateway knows or learns about how an archive matches text."""

    case_insensitive: bool = False
    learned: list[str] = field(default_factory=list)  # how each trait was found out, for the log


@runtime_checkable
class Archive(Protocol):
    """An archive the gateway can search and retrieve from."""

    name: str
    integration: str
    traits: ArchiveTraits

    async def find_studies(self, query: StudyQuery, *, limit: int, offset: int) -> StudyPage:
        """Study records matching ``query``, from the ``offset``-th on, at most ``limit``."""
        ...

    async def find_series(self, study_uid: str) -> list[dict[str, Any]]:
        """The series of a study: SeriesInstanceUID, Modality, SeriesDescription, counts."""
        ...

    async def find_instances(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """The instances of a series: SOPInstanceUID, SOPClassUID, InstanceNumber."""
        ...

    def retrieve_series(self, study_uid: str, series_uid: str) -> AsyncIterator[Part]:
        """Every instance of a series, as each arrives."""
        ...

    async def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> Part:
        ...

    async def aclose(self) -> None:
        ...


def build_archive(connection: ArchiveConnection, username: str | None = None,
                  password: str | None = None) -> Archive:
    """The archive client the configuration asks for (``archive.integration``)."""
    traits = ArchiveTraits(case_insensitive=connection.text_matching == "case-insensitive")
    if connection.used_integration == "dimse":
        from .dimse import DimseArchive, DimseSettings

        assert connection.dimse is not None  # the model checks this
        return DimseArchive(DimseSettings.from_config(connection), traits=traits)
    from .archive import ArchiveSettings, DicomWebArchive

    assert connection.dicomweb_url is not None
    return DicomWebArchive(
        ArchiveSettings(
            base_url=connection.dicomweb_url, username=username, password=password,
            timeout_seconds=connection.timeout_seconds, name=connection.name,
        ),
        traits=traits,
    )


__all__ = ["Archive", "ArchiveTraits", "StudyPage", "build_archive"]
