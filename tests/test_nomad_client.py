"""The thin Nomad client: headers, namespace/region, retries with backoff, errors, TLS."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from spawners.nomad.client import (
    NomadBadRequest,
    NomadClient,
    NomadConnection,
    NomadForbidden,
    NomadUnavailable,
)
from tests.nomad_double import NomadDouble
from tests.nomad_double.tls import make_pki

TOKEN = "9e1f-secret-acl-token"


class Recorder:
    """An httpx transport answering from a script, recording every request."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else httpx.Response(200, json={})
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer


def client_with(recorder: Recorder, **connection: object) -> tuple[NomadClient, list[float]]:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    conn = NomadConnection(**{"address": "http://nomad.test:4646", "token": TOKEN, **connection})
    client = NomadClient(
        conn, transport=httpx.MockTransport(recorder), sleep=sleep, jitter=lambda: 1.0
    )
    return client, sleeps


async def test_every_call_carries_token_namespace_and_region() -> None:
    recorder = Recorder(
        httpx.Response(200, json={"EvalID": "e1"}, headers={"X-Nomad-Index": "7"}),
        httpx.Response(200, json={"ID": "j"}),
        httpx.Response(200, json=[]),
        httpx.Response(200, json={}),
    )
    client, _ = client_with(recorder, namespace="research", region="dk")
    async with client:
        await client.register_job({"ID": "j", "Namespace": "research"})
        await client.read_job("j")
        await client.list_jobs("jupyter--", namespace="other")
        await client.put_variable("nomad/jobs/j", {"JUPYTERHUB_API_TOKEN": "t"})
    assert [r.url.path for r in recorder.requests] == [
        "/v1/jobs",
        "/v1/job/j",
        "/v1/jobs",
        "/v1/var/nomad/jobs/j",
    ]
    for request in recorder.requests:
        assert request.headers["X-Nomad-Token"] == TOKEN
        assert request.url.params["region"] == "dk"
    assert [r.url.params["namespace"] for r in recorder.requests] == [
        "research",
        "research",
        "other",
        "research",
    ]
    assert json.loads(recorder.requests[0].content) == {"Job": {"ID": "j", "Namespace": "research"}}
    assert recorder.requests[2].url.params["prefix"] == "jupyter--"


async def test_retries_5xx_and_connection_errors_with_capped_backoff() -> None:
    recorder = Recorder(
        httpx.Response(500, text="rpc error: No cluster leader"),
        httpx.ConnectError("connection refused"),
        httpx.Response(503, text="busy"),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, json={"ID": "j"}, headers={"X-Nomad-Index": "12"}),
    )
    client, sleeps = client_with(recorder, backoff_base=0.5, backoff_max=2.0, retries=4)
    async with client:
        assert await client.read_job("j") == {"ID": "j"}
    assert sleeps == [0.5, 1.0, 2.0, 2.0]
    assert client.calls["GET /job/:id"] == 5


async def test_jitter_spreads_delays_between_half_and_full() -> None:
    client = NomadClient(NomadConnection(backoff_base=1.0, backoff_max=8.0), jitter=lambda: 0.0)
    assert [client.backoff(a) for a in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    await client.aclose()


async def test_gives_up_after_the_retries_without_echoing_the_token() -> None:
    recorder = Recorder(*[httpx.Response(500, text="rpc error: No cluster leader")] * 3)
    client, sleeps = client_with(recorder, retries=2)
    async with client:
        with pytest.raises(NomadUnavailable) as raised:
            await client.read_job("j")
    assert len(recorder.requests) == 3 and len(sleeps) == 2
    assert raised.value.status == 500
    assert "No cluster leader" in str(raised.value)
    assert TOKEN not in str(raised.value)


@pytest.mark.parametrize(
    ("status", "error"), [(400, NomadBadRequest), (403, NomadForbidden), (409, NomadBadRequest)]
)
async def test_client_errors_are_not_retried(status: int, error: type[Exception]) -> None:
    recorder = Recorder(httpx.Response(status, text="Permission denied"))
    client, sleeps = client_with(recorder)
    async with client:
        with pytest.raises(error):
            await client.register_job({"ID": "j"})
    assert len(recorder.requests) == 1 and sleeps == []


async def test_not_found_is_an_answer_for_reads_and_deletes() -> None:
    recorder = Recorder(
        httpx.Response(404, text="job not found"),
        httpx.Response(404, text="job not found"),
        httpx.Response(404, text="variable not found"),
    )
    client, _ = client_with(recorder)
    async with client:
        assert await client.read_job("gone") is None
        assert await client.deregister_job("gone", purge=True) is None
        assert await client.delete_variable("nomad/jobs/gone") is False
    assert recorder.requests[1].url.params["purge"] == "true"


async def test_blocking_queries_send_index_and_wait_and_extend_the_timeout() -> None:
    recorder = Recorder(httpx.Response(200, json={"ID": "a"}, headers={"X-Nomad-Index": "42"}))
    client, _ = client_with(recorder, timeout=5.0)
    async with client:
        reply = await client.allocation("a", index=41, wait=30.0)
    assert reply.index == 42
    request = recorder.requests[0]
    assert request.url.params["index"] == "41"
    assert request.url.params["wait"] == "30000ms"
    assert request.extensions["timeout"]["read"] == pytest.approx(30 * 1.0625 + 5.0)


def test_connection_from_nomads_environment_variables() -> None:
    conn = NomadConnection.from_env(
        {
            "NOMAD_ADDR": "https://nomad:4646",
            "NOMAD_TOKEN": TOKEN,
            "NOMAD_NAMESPACE": "research",
            "NOMAD_REGION": "dk",
            "NOMAD_CACERT": "/ca.pem",
            "NOMAD_CLIENT_CERT": "/c.pem",
            "NOMAD_CLIENT_KEY": "/k.pem",
        },
        namespace="override",
    )
    assert (conn.address, conn.namespace, conn.region) == ("https://nomad:4646", "override", "dk")
    assert (conn.ca_cert, conn.client_cert, conn.client_key) == ("/ca.pem", "/c.pem", "/k.pem")
    assert TOKEN not in repr(conn)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_tls_with_ca_and_client_certificate(pki, tmp_path: Path) -> None:  # noqa: ANN001
    context = pki.server_context(require_client_cert=True)
    with NomadDouble(ssl_context=context, acl_token=TOKEN, root_dir=tmp_path) as nomad:
        good = NomadConnection(
            address=nomad.address,
            token=TOKEN,
            ca_cert=str(pki.ca_cert),
            client_cert=str(pki.client_cert),
            client_key=str(pki.client_key),
        )
        async with NomadClient(good) as client:
            assert await client.list_jobs("") == []
        no_client_cert = NomadConnection(
            address=nomad.address, token=TOKEN, ca_cert=str(pki.ca_cert), retries=1
        )
        async with NomadClient(no_client_cert) as client:
            with pytest.raises(NomadUnavailable):
                await client.list_jobs("")
        wrong_ca = NomadConnection(address=nomad.address, token=TOKEN, retries=0)
        async with NomadClient(wrong_ca) as client:
            with pytest.raises(NomadUnavailable, match="TLS"):
                await client.list_jobs("")
        assert nomad.violations == []


async def test_tls_with_ca_alone_and_acl_refusal(pki, tmp_path: Path) -> None:  # noqa: ANN001
    context = pki.server_context(require_client_cert=False)
    with NomadDouble(ssl_context=context, acl_token=TOKEN, root_dir=tmp_path) as nomad:
        conn = NomadConnection(address=nomad.address, token=TOKEN, ca_cert=str(pki.ca_cert))
        async with NomadClient(conn) as client:
            assert await client.list_jobs("") == []
        wrong_token = NomadConnection(
            address=nomad.address, token="other", ca_cert=str(pki.ca_cert)
        )
        async with NomadClient(wrong_token) as client:
            with pytest.raises(NomadForbidden, match="Permission denied"):
                await client.list_jobs("")
