"""The tables, as SQLAlchemy Core metadata.

Core (not the ORM) because every query here is a handful of columns in and out; mapping
rows to ORM objects and tracking them in a unit of work would cost more than the queries.
The Alembic migrations in :mod:`polyroute.storage.migrations` create exactly these tables;
a test compares the two so they cannot drift apart.

Ids are time-ordered strings (see :func:`new_id`), so ``ORDER BY id`` is creation order and
an id doubles as a pagination cursor.
"""

from __future__ import annotations

import os
import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

__all__ = ["agents", "messages", "metadata", "new_id", "sessions"]

metadata = sa.MetaData()

#: JSON everywhere, stored as JSONB on PostgreSQL (smaller, and indexable if ever needed)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
#: always timezone-aware UTC in Python; SQLite stores text, PostgreSQL ``timestamptz``
TIMESTAMP = sa.DateTime(timezone=True)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("owner_hash", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("model", JSON, nullable=False),
    sa.Column("tools", JSON, nullable=False),
    sa.Column("config", JSON, nullable=False),
    sa.Column("created_at", TIMESTAMP, nullable=False),
    sa.Column("updated_at", TIMESTAMP, nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("owner_hash", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(200), nullable=True),
    sa.Column("metadata", JSON, nullable=False, key="meta"),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("last_seq", sa.Integer(), nullable=False),
    sa.Column("last_error", JSON, nullable=True),
    sa.Column("created_at", TIMESTAMP, nullable=False),
    sa.Column("updated_at", TIMESTAMP, nullable=False),
    sa.Index("ix_sessions_agent_user", "agent_id", "user_id"),
    sa.Index("ix_sessions_owner_agent", "owner_hash", "agent_id"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("session_id", sa.String(40), sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", JSON, nullable=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("tool_calls", JSON, nullable=True),
    sa.Column("tool_call_id", sa.String(200), nullable=True),
    sa.Column("finish_reason", sa.String(32), nullable=True),
    sa.Column("usage", JSON, nullable=True),
    sa.Column("provider", sa.String(100), nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("attempts", JSON, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", JSON, nullable=True),
    sa.Column("created_at", TIMESTAMP, nullable=False),
    sa.UniqueConstraint("session_id", "seq", name="uq_messages_session_seq"),
)


def new_id(prefix: str) -> str:
    """A sortable id: ``<prefix>_`` + 12 hex digits of milliseconds + 16 random hex digits.

    Sorting by id gives creation order (to the millisecond; ties are broken randomly), which
    lets list endpoints page with ``WHERE id > :cursor`` instead of an OFFSET scan.
    """
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{os.urandom(8).hex()}"
