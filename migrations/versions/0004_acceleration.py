"""Acceleration: the verified ONNX conversion recorded on each version.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acceleration", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("accel_sha256", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_model_versions_accel_sha256"), ["accel_sha256"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_accel_sha256"))
        batch_op.drop_column("accel_sha256")
        batch_op.drop_column("acceleration")
