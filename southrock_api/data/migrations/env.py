"""Alembic environment: runs against the engine of the app being migrated."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from southrock_api.data import models  # noqa: F401  (registers the tables)
from southrock_api.data.db import Base
from southrock_api.data.migrations import include_name

config = context.config
connection = config.attributes.get("connection")


def run(connection: Connection) -> None:
    """Run the migrations on one connection."""
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,  # type: ignore[arg-type]  # Alembic types it with Literals
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    with create_engine(str(config.get_main_option("sqlalchemy.url"))).connect() as conn:
        run(conn)
        conn.commit()
