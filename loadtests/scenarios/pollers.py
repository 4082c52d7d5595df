"""Pollers: clients re-polling the first pages they follow with If-None-Match (mostly 304). Their first fetch of
each feed is counted apart, so the 304 share is that of revalidations; bytes per poll are counted too."""

from __future__ import annotations

from loadtests import push_users


class Poller(push_users.RevalidatingPollerUser):
    pass
