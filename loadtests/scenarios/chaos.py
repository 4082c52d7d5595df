"""Chaos (issue 12): the mixed load, with writers that send an Idempotency-Key on every create and comment and
retry an unclear answer under it, while loadtests/chaos.py injects faults into the local stack."""

from __future__ import annotations

from loadtests import users


class Reader(users.ReaderUser):
    weight = 8


class Walker(users.WalkerUser):
    weight = 1


class Poller(users.PollerUser):
    weight = 3


class Writer(users.WriterUser):
    fixed_count = 3
    idempotency_keys = True


class Checker(users.CheckerUser):
    fixed_count = 2
