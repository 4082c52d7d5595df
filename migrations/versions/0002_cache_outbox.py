"""cache_outbox: invalidations committed with their write, drained into Redis

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 16:30:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('cache_outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('namespaces', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cache_outbox'))
    )


def downgrade():
    op.drop_table('cache_outbox')
