"""Alembic environment, run programmatically by :func:`jointpay.storage.migrate.upgrade`.

The caller hands over an open connection in ``config.attributes["connection"]``; no
alembic.ini and no URL are read from disk.
"""

from alembic import context

from jointpay.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    compare_type=True,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
