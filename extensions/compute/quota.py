"""Dask workers placed on Nomad are charged to the project, like servers.

The quota ledger belongs to the quota service (``services/quota``); a user's server reaches
it only through the service's API, with its own hub token (the hub grants servers
``access:services!service=quota`` and passes ``WORKBENCH_QUOTA_URL``):

  POST   api/allocations             {"project", "kind": "dask-worker", "gpus", "cpu", "name"}
                                     201 reserved; 429 refused by a budget (the message says
                                     which limit, the usage and when it resets)
  POST   api/allocations/ID/start    the worker runs: its CPU-/GPU-hours count from now
  POST   api/allocations/ID/heartbeat  still running (the service closes silent allocations)
                                     -> the record, with ``stop_requested_at`` when the
                                     budget is used up and the worker must go
  DELETE api/allocations/ID          ended (or: the reservation is released)

:class:`QuotaService` is that client. A refusal is :class:`QuotaRefused` (the cluster stops
growing and says why); a service that cannot be reached is :class:`QuotaUnavailable` and no
worker starts, as the spawner refuses servers it cannot account. :class:`Unaccounted` is for
servers without a quota service (local mode with quotas off): it records nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx


class QuotaError(Exception):
    """A quota outcome that stops a worker from starting; ``message`` is for the user."""

    def __init__(self, message: str, *, reason: str, log_message: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.log_message = log_message or message


class QuotaRefused(QuotaError):
    """The project's budget does not allow another worker now."""


class QuotaUnavailable(QuotaError):
    """The quota service cannot be reached or answered unexpectedly; nothing was charged."""


class Accounting(Protocol):
    """What a cluster needs from the ledger, one call per worker event."""

    async def reserve(self, name: str, *, cpu: float, gpus: int) -> str: ...

    async def started(self, allocation_id: str) -> None: ...

    async def heartbeat(self, allocation_ids: Iterable[str]) -> set[str]:
        """Ids whose stop the quota service has asked for."""
        ...

    async def ended(self, allocation_id: str) -> None: ...

    async def aclose(self) -> None: ...


class Unaccounted:
    """No quota service: workers are not charged (said once in the cluster's log)."""

    description = "not accounted (no quota service configured)"

    async def reserve(self, name: str, *, cpu: float, gpus: int) -> str:
        return ""

    async def started(self, allocation_id: str) -> None:
        return None

    async def heartbeat(self, allocation_ids: Iterable[str]) -> set[str]:
        return set()

    async def ended(self, allocation_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


@dataclass
class QuotaService:
    """The quota service's allocations API, as the user's server calls it."""

    base_url: str
    token: str
    project: str
    timeout: float = 10.0
    retries: int = 2
    kind: str = "dask-worker"  # what the ledger records; batch runs send "batch"

    def __post_init__(self) -> None:
        self.description = f"charged to project {self.project} through {self.base_url}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url.rstrip("/") + "/api/",
            headers={"Authorization": f"token {self.token}"},
            timeout=self.timeout,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> QuotaService | None:
        url, token, project = (env.get(k, "") for k in
                               ("WORKBENCH_QUOTA_URL", "JUPYTERHUB_API_TOKEN", "WORKBENCH_PROJECT"))
        if not (url and token and project):
            return None
        return cls(url, token, project)

    async def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                answer = await self._http.request(method, path, json=body)
            except httpx.TransportError as exc:
                last = exc
            else:
                if answer.status_code < 500:
                    return answer
                last = RuntimeError(f"HTTP {answer.status_code}: {answer.text[:200]}")
            if attempt < self.retries:
                await asyncio.sleep(0.5 * 2**attempt)
        raise QuotaUnavailable(
            "The quota service cannot be reached, so no Dask worker can be accounted for; no "
            "worker was started. Try again in a minute or tell the workbench admins.",
            reason="quota_unavailable",
            log_message=f"{method} {self.base_url}api/{path}: {last}",
        )

    @staticmethod
    def _message(answer: httpx.Response) -> str:
        try:
            return str(answer.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            return answer.text[:300] or answer.reason_phrase

    def _unexpected(self, what: str, answer: httpx.Response) -> QuotaUnavailable:
        return QuotaUnavailable(
            f"The quota service refused to {what}: {self._message(answer)}",
            reason=f"quota_http_{answer.status_code}",
            log_message=f"{what}: HTTP {answer.status_code} {answer.text[:300]}",
        )

    async def reserve(self, name: str, *, cpu: float, gpus: int) -> str:
        answer = await self._call("POST", "allocations", {
            "project": self.project, "kind": self.kind, "cpu": cpu, "gpus": gpus, "name": name,
        })
        if answer.status_code == 429:
            body = answer.json().get("error", {})
            raise QuotaRefused(self._message(answer), reason=str(body.get("limit") or "quota_exceeded"))
        if answer.status_code != 201:
            raise self._unexpected("reserve a worker", answer)
        return str(answer.json()["id"])

    async def started(self, allocation_id: str) -> None:
        answer = await self._call("POST", f"allocations/{allocation_id}/start", {})
        if answer.status_code != 200:
            raise self._unexpected("start the worker's accounting", answer)

    async def heartbeat(self, allocation_ids: Iterable[str]) -> set[str]:
        async def one(allocation_id: str) -> str | None:
            answer = await self._call("POST", f"allocations/{allocation_id}/heartbeat", {})
            if answer.status_code == 200 and answer.json().get("stop_requested_at"):
                return allocation_id
            return None

        results = await asyncio.gather(*(one(i) for i in allocation_ids if i))
        return {r for r in results if r}

    async def ended(self, allocation_id: str) -> None:
        if not allocation_id:
            return
        answer = await self._call("DELETE", f"allocations/{allocation_id}")
        if answer.status_code not in (200, 404):
            raise self._unexpected("end the worker's accounting", answer)

    async def aclose(self) -> None:
        await self._http.aclose()
