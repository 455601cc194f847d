"""paper autotrain: method-card reproductions, their trained arms, lessons linked to a reproduction

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reproductions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('card_name', sa.String(length=80), nullable=False),
    sa.Column('card_hash', sa.String(length=64), nullable=False),
    sa.Column('card', sa.JSON(), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('verdicts', sa.JSON(), nullable=False),
    sa.Column('wall_s', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key', name='uq_reproduction_key')
    )
    op.create_table('reproduction_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reproduction_id', sa.Integer(), nullable=False),
    sa.Column('dataset', sa.String(length=200), nullable=False),
    sa.Column('arm', sa.String(length=80), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('run_path', sa.Text(), nullable=True),
    sa.Column('cost_s', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['reproduction_id'], ['reproductions.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('reproduction_id', 'dataset', 'arm', 'seed', name='uq_reproduction_run')
    )
    with op.batch_alter_table('lessons') as batch:
        batch.add_column(sa.Column('reproduction_id', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_lessons_reproduction_id', 'reproductions', ['reproduction_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('lessons') as batch:
        batch.drop_constraint('fk_lessons_reproduction_id', type_='foreignkey')
        batch.drop_column('reproduction_id')
    op.drop_table('reproduction_runs')
    op.drop_table('reproductions')
