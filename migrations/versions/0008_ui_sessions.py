"""Web UI sessions: a signed-in browser's server-side session (digests only).

Revision ID: 0008
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from registry.db import UTCDateTime

revision = "0008"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_ui_sessions")),
    )
    op.create_index(op.f("ix_ui_sessions_token_hash"), "ui_sessions", ["token_hash"])
    op.create_index(op.f("ix_ui_sessions_expires_at"), "ui_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_ui_sessions_expires_at"), table_name="ui_sessions")
    op.drop_index(op.f("ix_ui_sessions_token_hash"), table_name="ui_sessions")
    op.drop_table("ui_sessions")
