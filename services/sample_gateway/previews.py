"""Thumbnails for search results: one de-identified image per study, rendered small.

For each study the gateway picks the series of an approved modality with the most images,
retrieves its middle image through the configured integration, de-identifies it under the
project's policy (so an image that may show text in its pixels is refused for a project not
approved for that, with the refusal's message instead of a picture) and renders it with
:mod:`.thumbnails`. A failure for one study (the archive, an undecodable image) says so for
that study only. Rendered thumbnails are kept in memory per project and policy.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import OrderedDict
from typing import Any

from hub_config.model import Project

from . import access
from .deidentify import DeidError, DeidPolicy, deidentify
from .errors import GatewayError
from .instances import dataset_from_part
from .integration import Archive
from .multipart import Part
from .pipeline import drop_private
from .pseudonyms import ProjectKeys
from .thumbnails import ThumbnailError, render_png

log = logging.getLogger("sample_gateway")


class Previews:
    MAX_PER_REQUEST = 50
    CONCURRENCY = 4
    CACHE_SIZE = 512

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._cache: OrderedDict[tuple[str, str, bool], dict[str, Any]] = OrderedDict()
        self._slots = asyncio.Semaphore(self.CONCURRENCY)

    async def render(self, project: Project, keys: ProjectKeys, policy: DeidPolicy,
                     studies: dict[str, str]) -> dict[str, dict[str, Any]]:
        """``{study key: {"png": base64 or None, "message": why not or None}}``."""
        keys_in_order = list(studies)
        results = await asyncio.gather(
            *(self._one(project, keys, policy, key, studies[key]) for key in keys_in_order)
        )
        return dict(zip(keys_in_order, results, strict=True))

    async def _one(self, project: Project, keys: ProjectKeys, policy: DeidPolicy, study_key: str,
                   study_uid: str) -> dict[str, Any]:
        cache_key = (project.id, study_key, policy.allow_burned_in_annotation)
        if cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            return self._cache[cache_key]
        async with self._slots:
            try:
                result = await self._fetch_and_render(project, keys, policy, study_uid)
            except GatewayError as error:
                log.warning("thumbnail of %s: %s", study_key, error.log_message)
                return {"png": None, "message": f"No preview: {error.message}"}
        self._cache[cache_key] = result
        while len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return result

    async def _fetch_and_render(self, project: Project, keys: ProjectKeys, policy: DeidPolicy,
                                study_uid: str) -> dict[str, Any]:
        series = [s for s in await self.archive.find_series(study_uid)
                  if access.series_allowed(project, _first(s, "00080060"))]
        series = [s for s in series if _first(s, "00080060") not in _NOT_IMAGES]
        if not series:
            return {"png": None, "message": "No preview: the study has no images this project may see."}
        chosen = max(series, key=lambda s: _int(_first(s, "00201209")))
        series_uid = _first(chosen, "0020000E")
        instances = await self.archive.find_instances(study_uid, series_uid)
        if not instances:
            return {"png": None, "message": "No preview: the series is empty."}
        instances.sort(key=lambda i: (_int(_first(i, "00200013")), _first(i, "00080018")))
        middle = _first(instances[len(instances) // 2], "00080018")
        part = await self.archive.retrieve_instance(study_uid, series_uid, middle)
        return await asyncio.to_thread(_render, part, study_uid, keys, policy)


def _render(part: Part, study_uid: str, keys: ProjectKeys, policy: DeidPolicy) -> dict[str, Any]:
    ds = dataset_from_part(part)
    if str(ds.get("StudyInstanceUID", "")).strip() != study_uid:
        return {"png": None, "message": "No preview: the archive sent an image of another study."}
    drop_private(ds)
    try:
        clean = deidentify(ds, keys, policy).dataset  # only de-identified pixels are shown
        png = render_png(clean)
    except DeidError as refusal:
        return {"png": None, "message": f"No preview: {refusal.message}"}
    except ThumbnailError as problem:
        return {"png": None, "message": f"No preview: {problem}."}
    return {"png": base64.b64encode(png).decode("ascii"), "message": None}


_NOT_IMAGES = {"SR", "PR", "KO", "REG", "RWV", "DOC", "AU", "ECG"}


def _first(item: dict[str, Any], tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else ""


def _int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


__all__ = ["Previews"]
