"""post_events: pushed changes to posts (Server-Sent Events), ids in commit order

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 16:30:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('post_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('post_id', sa.BigInteger(), nullable=False),
    sa.Column('scopes', sa.Text(), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_post_events'))
    )


def downgrade():
    op.drop_table('post_events')
