"""Objects that arrive while the workers are busy are handed over together, within a bound:
one hand-over per object cost the event loop's thread and the worker a wake-up each (a
quarter of a one-thread pull's time), and an unbounded batch would hold a whole series in
memory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from services.sample_gateway import gateway as gateway_module
from services.sample_gateway import pipeline
from services.sample_gateway.pipeline import Workers
from tests.test_gateway_attack import archive_of, gateway_for, pull, study_keys


@pytest.fixture
def slow_worker(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each object takes 20 ms more (so parts pile up while the worker is busy); returns the
    size of every hand-over."""
    sizes: list[int] = []
    real_process, real_batch = pipeline.process, gateway_module.process_batch

    def slow_process(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.02)
        return real_process(*args, **kwargs)

    def recorded_batch(items: list[Any], *args: Any) -> Any:
        sizes.append(len(items))
        return real_batch(items, *args)

    monkeypatch.setattr(pipeline, "process", slow_process)
    monkeypatch.setattr(gateway_module, "process_batch", recorded_batch)
    return sizes


@pytest.mark.parametrize("cap", [gateway_module.BATCH_OBJECTS, 4])
async def test_objects_arriving_while_the_worker_is_busy_are_handed_over_together(
        tmp_path: Path, slow_worker: list[int], monkeypatch: pytest.MonkeyPatch, cap: int) -> None:
    monkeypatch.setattr(gateway_module, "BATCH_OBJECTS", cap)
    async with gateway_for(archive_of(1, 40), tmp_path, workers=Workers(0)) as gateway:
        result = await pull(gateway, await study_keys(gateway))
    assert result["status"] == "done" and result["instances_done"] == 40, result
    folder = gateway.storage.project_dir("magi") / result["path"]
    assert len(list(folder.rglob("*.dcm"))) == 40
    assert sum(slow_worker) == 40
    assert slow_worker[0] == 1  # the first object goes at once: the worker was free
    assert max(slow_worker) == cap  # they piled up, and no more than the bound waited
    assert len(slow_worker) <= 40 // cap + 3


async def test_a_refused_object_in_a_batch_costs_only_itself(tmp_path: Path, slow_worker: list[int],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real_process = pipeline.process
    calls: list[int] = []

    def one_refused(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 7:
            return pipeline.Refused("This image could not be read.", "unreadable_object")
        return real_process(*args, **kwargs)

    monkeypatch.setattr(pipeline, "process", one_refused)
    async with gateway_for(archive_of(1, 20), tmp_path, workers=Workers(0)) as gateway:
        result = await pull(gateway, await study_keys(gateway))
    assert result["status"] == "done", result
    assert (result["instances_done"], result["instances_refused"]) == (19, 1), result
    assert max(slow_worker) > 1
