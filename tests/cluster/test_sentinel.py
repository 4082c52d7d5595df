"""Redis failover: SIGKILL of the primary, and the Sentinels promote the replica within a bounded
time; a write acknowledged by the replica too (WAIT 1) survives. Runs last: it leaves the
cluster with one Redis server."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from devstack.cluster import redis_client, redis_role, sentinel_primary
from tests.cluster.conftest import ClusterInfo
from tests.stack.conftest import wait_for

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
# down-after (1 s) + agreement (quorum) + leader election + promotion: a few seconds. A failed
# attempt is retried after 2 x failover-timeout (20 s), hence the generous bound.
FAILOVER_BOUND = 45.0


def test_sigkill_of_the_redis_primary_promotes_the_replica(cluster: ClusterInfo, record_property) -> None:  # type: ignore[no-untyped-def]
    master = cluster.settings["REDIS_SENTINEL_MASTER"]
    old, new = cluster.port("redis-1"), cluster.port("redis-2")
    sentinels = [cluster.port(name) for name in cluster.of_kind("sentinel")]
    assert all(sentinel_primary(port, master) == (HOST, old) for port in sentinels)
    with redis_client(old) as primary:
        primary.incr("gen:failover-probe")
        # Acknowledged by the replica as well: this write must survive the failover.
        assert primary.wait(1, 2000) == 1
        primary.set("unreplicated-probe", "may be lost")

    started = time.monotonic()
    os.kill(cluster.pid("redis-1"), signal.SIGKILL)
    assert wait_for(lambda: all(sentinel_primary(port, master) == (HOST, new) for port in sentinels), FAILOVER_BOUND), {
        port: sentinel_primary(port, master) for port in sentinels
    }
    elapsed = time.monotonic() - started
    record_property("redis_failover_seconds", round(elapsed, 2))
    print(f"redis failover: every Sentinel names the replica {elapsed:.2f} s after SIGKILL")
    assert wait_for(lambda: redis_role(new) == "master", 10)
    with redis_client(new) as promoted:
        assert promoted.get("gen:failover-probe") == "1"
        assert promoted.incr("gen:failover-probe") == 2  # it takes writes
    with pytest.raises(redis.ConnectionError), redis_client(old) as gone:
        gone.ping()
