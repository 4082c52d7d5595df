"""Cold cache: readers spread uniformly over a wide key space right after the runner flushed Redis."""

from __future__ import annotations

from loadtests import users


class ColdReader(users.ColdReaderUser):
    pass
