"""popular_snapshots and popular_ranks: the /popular ranking, one snapshot per interval

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 15:30:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('popular_snapshots',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_popular_snapshots'))
    )
    op.create_table('popular_ranks',
    sa.Column('snapshot_id', sa.BigInteger(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('post_id', sa.BigInteger(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['snapshot_id'], ['popular_snapshots.id'], name=op.f('fk_popular_ranks_snapshot_id_popular_snapshots'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('snapshot_id', 'rank', name=op.f('pk_popular_ranks'))
    )


def downgrade():
    op.drop_table('popular_ranks')
    op.drop_table('popular_snapshots')
