"""hyperhive against a Temporal behind TLS and mTLS, with an API key: the dev server has no TLS,
so a throwaway CA signs a certificate for `temporal.test`, and a TLS-terminating proxy in this
test (asking for a client certificate from that CA, ALPN h2) forwards to the dev server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.testing import WorkflowEnvironment

from hyperhive.errors import StartupError
from hyperhive.settings import HiveSettings
from hyperhive.temporal_client import connect
from tests.rig.c0re import StartC0re

pytestmark = pytest.mark.integration

SERVER_NAME = "temporal.test"

OPENSSL_CONFIG = f"""
[req]
distinguished_name = dn
prompt = no
[dn]
CN = hyperhive test
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:{SERVER_NAME}
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
"""


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _openssl(directory: Path, *args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl CLI is not installed (apt-get install openssl)")
    done = subprocess.run(
        [openssl, *args], cwd=directory, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"openssl {' '.join(args)}:\n{done.stderr}"


def _new_key(name: str) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", name]


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        directory,
        *("req", "-x509", "-new", "-config", "openssl.cnf", "-extensions", "ca", "-days", "2"),
        *_new_key(f"{name}.key"),
        *("-subj", f"/CN={name}", "-out", f"{name}.pem"),
    )


def _make_leaf(directory: Path, name: str, extensions: str) -> None:
    _openssl(
        directory,
        *("req", "-new", "-config", "openssl.cnf", "-subj", f"/CN={name}"),
        *_new_key(f"{name}.key"),
        *("-out", f"{name}.csr"),
    )
    _openssl(
        directory,
        *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-days", "2", "-extfile", "openssl.cnf", "-extensions", extensions),
        *("-out", f"{name}.pem"),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    (directory / "openssl.cnf").write_text(OPENSSL_CONFIG)
    _make_ca(directory, "ca")
    _make_ca(directory, "other-ca")
    _make_leaf(directory, "server", "server")
    _make_leaf(directory, "client", "client")
    return Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
    )


class TlsProxy:
    """TLS in front of a plain TCP server, on its own thread and event loop: hive c0re's rig
    waits for readiness synchronously, which would starve a proxy on the test's loop."""

    def __init__(self, upstream: str, context: ssl.SSLContext) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.context = context
        self.accepted = 0  # TLS connections that completed the handshake
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> TlsProxy:
        self._thread.start()
        assert self._ready.wait(30), "the TLS proxy did not start"
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        # A refused handshake is what some tests are about: not worth a traceback in the log.
        self._loop.set_exception_handler(lambda _loop, _context: None)
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            for writer in list(self._writers):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


@pytest.fixture(scope="module")
def proxy(pki: Pki, dev_server: WorkflowEnvironment) -> Iterator[TlsProxy]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED  # mTLS: a client without a certificate is refused
    context.set_alpn_protocols(["h2"])  # gRPC's HTTP/2, which the client asks for by ALPN
    with TlsProxy(dev_server.client.service_client.config.target_host, context) as running:
        yield running


@pytest.fixture
def no_hive_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("HIVE_"):
            monkeypatch.delenv(key)


def mtls_settings(pki: Pki, proxy: TlsProxy, **overrides: Any) -> HiveSettings:
    values: dict[str, Any] = {
        "temporal_address": proxy.address,
        "temporal_tls_ca": pki.ca,
        "temporal_tls_cert": pki.client_cert,
        "temporal_tls_key": pki.client_key,
        "temporal_tls_server_name": SERVER_NAME,
    }
    values.update(overrides)
    return HiveSettings(**{k: v for k, v in values.items() if v is not None})


@pytest.mark.usefixtures("no_hive_env")
async def test_connect_over_mtls_with_an_api_key(pki: Pki, proxy: TlsProxy, tmp_path: Path) -> None:
    api_key = tmp_path / "temporal-api-key"
    api_key.write_text("not-checked-by-the-dev-server\n")
    before = proxy.accepted
    client = await connect(mtls_settings(pki, proxy, temporal_api_key_file=api_key), wait_s=10)
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=client.namespace)
    )
    assert described.namespace_info.name == "default"
    assert [wf async for wf in client.list_workflows("WorkflowId = 'none-such'")] == []
    assert proxy.accepted > before  # it went through TLS, not around it


@pytest.mark.parametrize(
    ("overrides", "cause", "named"),
    [
        pytest.param(
            {"temporal_tls_ca": "other_ca"}, "UnknownIssuer", "HIVE_TEMPORAL_TLS_CA", id="wrong-ca"
        ),
        pytest.param(
            {"temporal_tls_server_name": "other.test"},
            "NotValidForName",
            "HIVE_TEMPORAL_TLS_SERVER_NAME",
            id="wrong-name",
        ),
        pytest.param(
            {"temporal_tls_cert": None, "temporal_tls_key": None},
            "",  # the proxy hangs up; how the client words that is rustls' business
            "HIVE_TEMPORAL_TLS_CERT",
            id="no-client-cert",
        ),
    ],
)
@pytest.mark.usefixtures("no_hive_env")
async def test_a_refused_handshake_names_the_tls_settings(
    pki: Pki, proxy: TlsProxy, overrides: dict[str, Any], cause: str, named: str
) -> None:
    # "other_ca" and the like name one of the test's files.
    resolved = {
        k: getattr(pki, v) if v in Pki.__dataclass_fields__ else v for k, v in overrides.items()
    }
    before = proxy.accepted
    with pytest.raises(StartupError) as raised:
        await connect(mtls_settings(pki, proxy, **resolved), wait_s=1)
    text = str(raised.value)
    assert f"cannot reach Temporal at {proxy.address}" in text
    assert cause in text and named in text and "HIVE_TEMPORAL_TLS_CA" in text, text
    assert proxy.accepted == before  # refused in the handshake, by one side or the other


async def test_hive_c0re_runs_through_the_tls_proxy(
    pki: Pki, proxy: TlsProxy, start_c0re: StartC0re
) -> None:
    before = proxy.accepted
    hive = await start_c0re(
        agents=[],
        temporal_address=proxy.address,
        temporal_tls_ca=str(pki.ca),
        temporal_tls_cert=str(pki.client_cert),
        temporal_tls_key=str(pki.client_key),
        temporal_tls_server_name=SERVER_NAME,
    )
    async with httpx.AsyncClient(timeout=60) as http:
        health = await http.get(f"{hive.env.dashboard}/health", params={"deep": "true"})
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["round_trip"]["ok"] is True and body["temporal"]["embedded"] is False
    assert proxy.accepted > before
