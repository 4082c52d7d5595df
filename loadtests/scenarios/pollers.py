"""Pollers: clients re-polling the first pages they follow with If-None-Match (mostly 304)."""

from __future__ import annotations

from loadtests import users


class Poller(users.PollerUser):
    pass
