"""A throwaway PostgreSQL for the tests: Debian's initdb and pg_ctl in a temporary folder, trust
authentication on 127.0.0.1, a free port, no fsync; about a second to start. `make test`
needs no service running.

Without the binaries the PostgreSQL tests skip with a one-line reason, except under CI=true,
where a missing PostgreSQL fails the run (.ci/run installs it).
"""
from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import asyncpg
import pytest
import pytest_asyncio

# The unprivileged account initdb and postgres run as when the tests run as root (they refuse root).
SERVICE_USER = "postgres"


def find_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, or Debian's /usr/lib/postgresql/VERSION/bin (newest)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path
    port: int
    run_as: tuple[str, ...]  # ("runuser", "-u", "postgres", "--") when we are root
    durable: bool = False  # False: no fsync, for tests; True: the defaults, for benchmarks

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.run_as, str(self.bin_dir / tool), *args],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-o", options, "start")

    def restart(self) -> None:
        """A fast restart: every client connection is dropped, the data stays."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "restart")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop")

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.url())


def start_server(*, durable: bool = False) -> PostgresServer:
    """initdb and start a server in a new temporary folder; raises RuntimeError with the reason
    when there is no PostgreSQL to start."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql)")
    run_as: tuple[str, ...] = ()
    root = Path(tempfile.mkdtemp(prefix="quotebot-pg-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            shutil.rmtree(root)
            raise RuntimeError(f"running as root and there is no '{SERVICE_USER}' user to run PostgreSQL as") from None
        os.chown(root, account.pw_uid, account.pw_gid)
        run_as = ("runuser", "-u", SERVICE_USER, "--")
    server = PostgresServer(bin_dir, root, _free_port(), run_as, durable)
    try:
        server._run("initdb", "-D", str(server.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
        server.start()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {stderr.decode(errors='replace').strip()[-500:]}") from exc
    return server


def without_postgres(reason: str) -> NoReturn:
    """No PostgreSQL to test with: under CI=true the run fails, elsewhere the test skips."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs PostgreSQL for the store tests: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = start_server()
    except RuntimeError as exc:
        without_postgres(str(exc))
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(server.root, ignore_errors=True)


_database_numbers = itertools.count(1)


@pytest_asyncio.fixture
async def pg_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A new, empty database on the throwaway server; its URL."""
    name = f"quotebot_test_{os.getpid()}_{next(_database_numbers)}"
    admin = await postgres_server.admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_server.url(name)
    admin = await postgres_server.admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
