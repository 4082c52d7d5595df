"""Streamers: N clients holding Server-Sent Events streams (forced reconnects with Last-Event-ID) while
an editor publishes, retitles and deletes posts: commit-to-event delay at every client, events lost, memory
per idle stream (loadtests/push_users.py)."""

from __future__ import annotations

import os

from loadtests import push_users

# The generator at the lowest CPU priority. Every write reaches all its streams at once, and this one
# process then parses every copy (~0.1 s of CPU per write for 500 streams, as much as the whole stack's
# fan-out) on the same two cores as the app and Nginx: at normal priority that burst competed with the
# fan-out it measures. Delays are taken from the kernel's receive timestamps (ArrivalReader), so parsing
# later changes no figure; real clients parse on their own machines.
os.nice(19)


class Streamer(push_users.StreamerUser):
    weight = 1


class Writer(push_users.PushWriterUser):
    fixed_count = 1
