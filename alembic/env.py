"""Alembic environment for both database kinds; the ini section (``-n gateway`` or
``-n bank``) chooses the models, the URL comes from ``-x url=...``, the caller, or the ini."""

from __future__ import annotations

from logging.config import fileConfig

from sqlalchemy import MetaData

from alembic import context
from server.bank.models import Base as BankBase
from server.common.db import make_engine
from server.gateway.models import Base as GatewayBase

config = context.config
METADATA: dict[str, MetaData] = {"gateway": GatewayBase.metadata, "bank": BankBase.metadata}

if config.config_file_name is not None and not config.attributes.get("url"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

kind = config.config_ini_section
target_metadata = METADATA[kind]
url = (
    config.attributes.get("url")
    or context.get_x_argument(as_dictionary=True).get("url")
    or config.get_main_option("sqlalchemy.url")
)


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(str(url))
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
