"""Readers: browsing readers (Zipf over feeds, post detail, comments) and a few deep walkers."""

from __future__ import annotations

from loadtests import users


class Reader(users.ReaderUser):
    weight = 9


class Walker(users.WalkerUser):
    weight = 1
