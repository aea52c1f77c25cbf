"""Alembic environment: the connection comes from cds_service.stores.migrate (never a URL in
a config file), which runs the migrations in the transaction it opened."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
