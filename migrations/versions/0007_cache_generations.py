"""cache_generations: the page cache's generations kept in the database too, bumped inside each
write's transaction, so readers can validate their near copies while Redis is away

Create Date: 2026-12-01 21:45:00

Self-contained: one table and its epoch row, nothing else refers to them. To renumber this
revision (another branch's revisions landing first), rename the file and change `revision` and
`down_revision` below: nothing else names it.

The `@epoch` row holds a random number chosen when the table is made: it is part of every key a
degraded-mode reader builds (app/cache/generations.py), so a table dropped and made again (its
generations back at 0) never matches a page kept under the old one's numbers.
"""
import secrets

from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table('cache_generations',
    sa.Column('namespace', sa.Text(), nullable=False),
    sa.Column('generation', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('namespace', name=op.f('pk_cache_generations'))
    )
    op.bulk_insert(table, [{'namespace': '@epoch', 'generation': secrets.randbits(62)}])


def downgrade():
    op.drop_table('cache_generations')
