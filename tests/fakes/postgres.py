"""A throwaway PostgreSQL server for tests, from the distribution's own binaries.

`postgres_url` (session scope) starts one server: `initdb` + `pg_ctl` in a temp dir, listening
on a free loopback port (and a unix socket in that dir only), fsync off, trust auth; it is
stopped and removed at the end of the session. When running as root the server runs as the
`postgres` OS user (PostgreSQL refuses to run as root).

`fresh_postgres_url` (function scope) gives each test its own empty database on that server.

`own_postgres_server` (function scope) starts a server for one test, which may stop it and start
it again (`stop_server`, `start_server_again`) to see what its clients do when it restarts.

Missing binaries or driver fail the test (they never skip it): `make test` installs both.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_INSTALL_HINT = (
    "run `make test`, which installs them (Debian: apt-get install postgresql; "
    "driver: pip install 'psycopg[binary]')"
)
_USER = "hive"
_DB = "hive"


@dataclass(frozen=True)
class PostgresServer:
    bin_dir: Path
    data_dir: Path
    port: int
    run_as: str | None

    def url(self, database: str = _DB) -> str:
        return f"postgresql+psycopg://{_USER}@127.0.0.1:{self.port}/{database}"


def find_postgres_bin_dir() -> Path | None:
    """Debian/Ubuntu's /usr/lib/postgresql/<major>/bin (newest), else initdb on PATH."""

    def major(path: str) -> int:
        try:
            return int(Path(path).parent.parent.name)
        except ValueError:
            return -1

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=major, reverse=True)
    for initdb in candidates:
        bin_dir = Path(initdb).parent
        if (bin_dir / "pg_ctl").exists():
            return bin_dir
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(server_user: str | None, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        user=server_user,
        group=server_user,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "LC_ALL": "C", "LANG": "C"},
    )


def _log_tail(log_file: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _start_server() -> tuple[PostgresServer, Path]:
    bin_dir = find_postgres_bin_dir()
    if bin_dir is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) were not found under "
            f"/usr/lib/postgresql/*/bin or on PATH: {_INSTALL_HINT}",
            pytrace=False,
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail(
            f"the PostgreSQL driver psycopg is not installed: {_INSTALL_HINT}", pytrace=False
        )

    run_as: str | None = None
    if os.geteuid() == 0:
        run_as = "postgres"
        try:
            pw = pwd.getpwnam(run_as)
        except KeyError:
            pytest.fail(
                "running as root and there is no `postgres` OS user to run the test server as: "
                f"{_INSTALL_HINT}",
                pytrace=False,
            )

    base = Path(tempfile.mkdtemp(prefix="hive-pg-"))
    if run_as is not None:
        os.chown(base, pw.pw_uid, pw.pw_gid)
    data_dir = base / "data"
    log_file = base / "server.log"

    init = _run(
        run_as,
        [
            str(bin_dir / "initdb"),
            "-D", str(data_dir),
            "-U", _USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ],
        base,
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(
            f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}", pytrace=False
        )

    port = _free_port()
    start = _run(
        run_as,
        [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(log_file),
         "-o", _server_options(port, base), "-w", "-t", "60", "start"],
        base,
    )  # fmt: skip
    server = PostgresServer(bin_dir=bin_dir, data_dir=data_dir, port=port, run_as=run_as)
    if start.returncode != 0:
        tail = _log_tail(log_file)
        _stop_server(server, base)
        pytest.fail(
            f"pg_ctl start failed ({start.returncode}):\n{start.stdout}\n{start.stderr}\n{tail}",
            pytrace=False,
        )
    _admin_sql(server, f'CREATE DATABASE "{_DB}"')
    return server, base


def _server_options(port: int, base: Path) -> str:
    return (
        f"-h 127.0.0.1 -p {port} -k {base} -F "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
    )


def _stop_server(server: PostgresServer, base: Path) -> None:
    if (server.data_dir / "postmaster.pid").exists():
        _run(
            server.run_as,
            [str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-m", "immediate",
             "-w", "-t", "30", "stop"],
            base,
        )  # fmt: skip
    shutil.rmtree(base, ignore_errors=True)


def _admin_sql(server: PostgresServer, sql: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE) on the `postgres` db."""
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=server.port, user=_USER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(sql.encode())


# ---------------------------------------------------------------------------------------------
# a server to stop and start again (what a client does when its database restarts)


def stop_server(server: PostgresServer) -> None:
    """Stop `server` the way a restart does (`-m fast`: its connections are closed), keeping
    its data for `start_server_again`."""
    base = server.data_dir.parent
    done = _run(
        server.run_as,
        [str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-m", "fast",
         "-w", "-t", "60", "stop"],
        base,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"pg_ctl stop failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def start_server_again(server: PostgresServer) -> None:
    """Start a server stopped by `stop_server`, on the same port and with the same options."""
    base = server.data_dir.parent
    log_file = base / "server.log"
    done = _run(
        server.run_as,
        [str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-l", str(log_file),
         "-o", _server_options(server.port, base), "-w", "-t", "60", "start"],
        base,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(
            f"pg_ctl start failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
            f"{_log_tail(log_file)}"
        )


@pytest.fixture
def own_postgres_server() -> Iterator[PostgresServer]:
    """A throwaway server for this test alone, which it may stop and start again."""
    server, base = _start_server()
    try:
        yield server
    finally:
        _stop_server(server, base)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server, base = _start_server()
    try:
        yield server
    finally:
        _stop_server(server, base)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL (postgresql+psycopg://…) of the session's throwaway server's `hive` db."""
    return postgres_server.url()


@pytest.fixture
def fresh_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database on the session's server for this test only; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin_sql(postgres_server, f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.url(name)
    finally:
        with contextlib.suppress(Exception):
            _admin_sql(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
