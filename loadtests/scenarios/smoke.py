"""Smoke (CI): a short, low-rate pass over every user kind, writes and read-back checks included."""

from __future__ import annotations

from loadtests import users


class Reader(users.ReaderUser):
    weight = 5


class Walker(users.WalkerUser):
    weight = 1


class Poller(users.PollerUser):
    weight = 2


class Writer(users.WriterUser):
    fixed_count = 1


class Checker(users.CheckerUser):
    fixed_count = 1
