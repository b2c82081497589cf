"""Alembic environment for both database kinds; the ini section (``-n gateway`` or
``-n bank``) chooses the models. The servers pass an open connection (``open_database``);
by hand the URL comes from ``-x url=...`` or the ini."""

from __future__ import annotations

from logging.config import fileConfig

from sqlalchemy import MetaData

from alembic import context
from server.bank.models import Base as BankBase
from server.common.db import make_engine
from server.gateway.models import Base as GatewayBase

config = context.config
METADATA: dict[str, MetaData] = {"gateway": GatewayBase.metadata, "bank": BankBase.metadata}
given_connection = config.attributes.get("connection")

if config.config_file_name is not None and given_connection is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = METADATA[config.config_ini_section]


def url() -> str:
    return str(
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
    )


def run_migrations_offline() -> None:
    context.configure(url=url(), target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    if given_connection is not None:
        context.configure(
            connection=given_connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url())
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
