"""Streamers: N clients holding Server-Sent Events streams (forced reconnects with Last-Event-ID) while
an editor publishes, retitles and deletes posts: commit-to-event delay at every client, events lost, memory
per idle stream (loadtests/push_users.py)."""

from __future__ import annotations

from loadtests import push_users


class Streamer(push_users.StreamerUser):
    weight = 1


class Writer(push_users.PushWriterUser):
    fixed_count = 1
