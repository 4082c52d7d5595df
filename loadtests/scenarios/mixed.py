"""Mixed: readers, walkers and pollers, plus a few editors writing and checkers reading their writes back.

Every reader judges what it is served against the writes acknowledged so far (loadtests/consistency.py).
"""

from __future__ import annotations

from loadtests import users


class Reader(users.ReaderUser):
    weight = 8


class Walker(users.WalkerUser):
    weight = 1


class Poller(users.PollerUser):
    weight = 3


class Writer(users.WriterUser):
    fixed_count = 2


class Checker(users.CheckerUser):
    fixed_count = 2
