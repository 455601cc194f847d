"""Alembic environment: uses the engine the store passes in (or sqlalchemy.url)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from agenticrs.agents.knowledge.schema import Base

config = context.config
target_metadata = Base.metadata
MIGRATION_LOCK = 0x6167656E746963  # an arbitrary advisory-lock key (b"agentic")


def run_migrations_online() -> None:
    engine = config.attributes.get("engine") or create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        # SQLite: the whole upgrade is one transaction (the store's BEGIN IMMEDIATE takes the write
        # lock before the version table is read), so processes that open a fresh database at once
        # migrate one after the other; without it Alembic commits step by step and a second process
        # can read a half-migrated version table and create a table that already exists
        sqlite = connection.dialect.name == "sqlite"
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          transactional_ddl=True if sqlite else None)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # processes that open a fresh database at once migrate one after the other: the
                # later ones then read the version table the first one wrote and do nothing
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            context.run_migrations()
        if connection.in_transaction():
            connection.commit()


run_migrations_online()
