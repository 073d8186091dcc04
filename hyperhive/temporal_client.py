"""One way to connect to Temporal: pydantic payloads, the configured namespace, TLS and API key,
clear errors."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, TLSConfig

from hyperhive.errors import StartupError
from hyperhive.settings import HiveSettings


@dataclass(frozen=True)
class ConnectOptions:
    """What Client.connect needs besides the address and namespace."""

    # TLSConfig holds the client key: nothing logs these options, and the repr hides both.
    tls: TLSConfig | bool = field(repr=False)
    api_key: str | None = field(default=None, repr=False)


def _read(path: Path, setting: str) -> bytes:
    """A file a setting names, whole; read at every connect so a rotated certificate or key is
    picked up by the next start without a config change."""
    try:
        data = path.expanduser().read_bytes()
    except OSError as exc:
        raise StartupError(
            f"{setting}={path}: cannot read it ({exc.strerror or exc})",
            f"point {setting} at an existing file that hive-c0re's user may read, or unset it",
        ) from exc
    if not data.strip():
        raise StartupError(
            f"{setting}={path}: the file is empty",
            f"put the PEM data (or, for the API key, the key) in it, or unset {setting}",
        )
    return data


def connect_options(settings: HiveSettings) -> ConnectOptions:
    """The TLS configuration and API key the settings ask for, with their files read."""
    api_key: str | None = None
    if settings.temporal_api_key is not None:
        api_key = settings.temporal_api_key.get_secret_value().strip()
    elif settings.temporal_api_key_file is not None:
        raw = _read(settings.temporal_api_key_file, "HIVE_TEMPORAL_API_KEY_FILE")
        try:
            api_key = raw.decode().strip()
        except UnicodeDecodeError as exc:
            raise StartupError(
                f"HIVE_TEMPORAL_API_KEY_FILE={settings.temporal_api_key_file}: not UTF-8 text",
                "the file must hold the API key alone, as text",
            ) from exc

    if not settings.temporal_tls_enabled:
        return ConnectOptions(tls=False, api_key=api_key)
    ca, cert, key = (
        settings.temporal_tls_ca,
        settings.temporal_tls_cert,
        settings.temporal_tls_key,
    )
    if ca is None and cert is None and key is None and not settings.temporal_tls_server_name:
        return ConnectOptions(tls=True, api_key=api_key)  # the system CAs
    return ConnectOptions(
        tls=TLSConfig(
            server_root_ca_cert=_read(ca, "HIVE_TEMPORAL_TLS_CA") if ca else None,
            client_cert=_read(cert, "HIVE_TEMPORAL_TLS_CERT") if cert else None,
            client_private_key=_read(key, "HIVE_TEMPORAL_TLS_KEY") if key else None,
            domain=settings.temporal_tls_server_name or None,
        ),
        api_key=api_key,
    )


def _unreachable_hint(settings: HiveSettings) -> str:
    if settings.embedded_temporal:
        return (
            "`hive up` starts the embedded server there (see its log in the state dir); "
            "`hive c0re` alone needs one already running, or HIVE_TEMPORAL_ADDRESS"
        )
    hint = (
        "check the server is running and HIVE_TEMPORAL_ADDRESS is right (unset, hive uses the "
        "embedded server)"
    )
    if settings.temporal_tls_enabled:
        name = settings.temporal_tls_server_name or settings.temporal_target.rsplit(":", 1)[0]
        ca = (
            f"the CA in HIVE_TEMPORAL_TLS_CA ({settings.temporal_tls_ca})"
            if settings.temporal_tls_ca
            else "a system CA (HIVE_TEMPORAL_TLS_CA unset)"
        )
        hint += (
            f"; TLS is on: the server's certificate must be signed by {ca} and carry the name "
            f"{name!r} (HIVE_TEMPORAL_TLS_SERVER_NAME), and a server "
            "asking for a client certificate (mTLS) needs HIVE_TEMPORAL_TLS_CERT and "
            "HIVE_TEMPORAL_TLS_KEY"
        )
    else:
        hint += "; a server that speaks TLS needs HIVE_TEMPORAL_TLS=true (and maybe the CA)"
    if settings.temporal_api_key_set:
        hint += (
            f"; the API key (HIVE_TEMPORAL_API_KEY[_FILE]) must be valid for the namespace "
            f"{settings.temporal_namespace!r}"
        )
    return hint


async def connect(settings: HiveSettings, *, wait_s: float = 30.0) -> Client:
    """Connect, retrying for up to `wait_s` (a cluster may still be starting)."""
    options = connect_options(settings)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    delay = 0.1
    while True:
        try:
            return await Client.connect(
                settings.temporal_target,
                namespace=settings.temporal_namespace,
                data_converter=pydantic_data_converter,
                tls=options.tls,
                api_key=options.api_key,
            )
        except (RuntimeError, RPCError) as exc:
            if loop.time() + delay > deadline:
                where = "HIVE_TEMPORAL_ADDRESS" if settings.temporal_address else "embedded"
                raise StartupError(
                    f"cannot reach Temporal at {settings.temporal_target} ({where}): {exc}",
                    _unreachable_hint(settings),
                ) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
