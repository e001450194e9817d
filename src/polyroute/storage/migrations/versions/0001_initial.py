"""Agents, sessions and messages.

Revision ID: 0001
Revises:
Create Date: 2024-11-24

The table definitions are written out here rather than imported from
:mod:`polyroute.storage.schema`: a migration must keep creating what it created on the day
it was written, whatever the current schema says.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("model", JSON, nullable=False),
        sa.Column("tools", JSON, nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_agents_owner_hash", "agents", ["owner_hash"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("owner_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("last_error", JSON, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_sessions_agent_user", "sessions", ["agent_id", "user_id"])
    op.create_index("ix_sessions_owner_agent", "sessions", ["owner_hash", "agent_id"])
    op.create_table(
        "messages",
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


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_index("ix_sessions_owner_agent", table_name="sessions")
    op.drop_index("ix_sessions_agent_user", table_name="sessions")
    op.drop_table("sessions")
    op.drop_index("ix_agents_owner_hash", table_name="agents")
    op.drop_table("agents")
