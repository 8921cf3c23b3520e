"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temporary directory, on
127.0.0.1 and a free port, as an unprivileged user (initdb refuses to run as root).

``postgres_server()`` yields a URL to its ``postgres`` database, or skips the test with the reason
when the server programs (Debian's ``postgresql`` package) or psycopg are missing."""

from __future__ import annotations

import contextlib
import getpass
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _server_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: Debian keeps them under /usr/lib/postgresql/<major>/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A running server for the duration of the block; yields ``postgresql://...`` URL."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'psycopg[binary]'); PostgreSQL tests skipped")
    bin_dir = _server_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server programs not found (Debian: apt-get install postgresql); "
                    "PostgreSQL tests skipped")
    run_as: list[str] = []
    owner = getpass.getuser()
    if os.geteuid() == 0:
        # initdb refuses root: run the server as Debian's postgres user (or skip).
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start a PostgreSQL server")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user exists to run the PostgreSQL server")
        run_as = ["runuser", "-u", "postgres", "--"]
        owner = "postgres"
    directory = Path(tempfile.mkdtemp(prefix="musicrec-pg-"))
    data = directory / "data"
    port = _free_port()
    if run_as:
        shutil.chown(directory, user="postgres")
    try:
        subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "musicrec",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        options = f"-k {directory} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                        str(directory / "server.log"), "-w", "-t", "60", "start"],
                       check=True, capture_output=True, timeout=90)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = (directory / "server.log").read_text(errors="replace") if (directory / "server.log").exists() else ""
        shutil.rmtree(directory, ignore_errors=True)
        output = getattr(exc, "stderr", b"") or b""
        raise RuntimeError(f"cannot start a PostgreSQL test server as {owner}: {output.decode(errors='replace')}"
                           f"{log}") from exc
    try:
        yield f"postgresql://musicrec@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


def fresh_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server and return its URL."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"
