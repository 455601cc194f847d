"""Fixtures for the agent layer: knowledge-store databases on SQLite and on PostgreSQL.

PostgreSQL runs as a private throw-away server on loopback (`TemporaryPostgres`), one per test
session (per xdist worker); every test gets its own fresh database in it. Where no server can be
started (binaries not installed), the PostgreSQL variants skip with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agenticrs.agents.knowledge.pgserver import TemporaryPostgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TemporaryPostgres]:
    """A running TemporaryPostgres for the session; skips the requesting tests if none can start."""
    server = TemporaryPostgres()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any failure to start means "no PostgreSQL here"
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: TemporaryPostgres) -> str:
    """URL of the session server's `postgres` database (superuser, trust auth, 127.0.0.1)."""
    return postgres_server.url


def create_postgres_database(server: TemporaryPostgres) -> str:
    """A fresh, empty database on the server; returns its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server.url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return server.database_url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty knowledge database: a SQLite file, or a new database on the test server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'knowledge.db'}"
    server: TemporaryPostgres = request.getfixturevalue("postgres_server")
    return create_postgres_database(server)
