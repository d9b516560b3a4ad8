"""Head-end scale-out: several ``gridhead serve`` processes, each owning a shard of the terminals.

A terminal belongs to shard ``shard_of(address, count)``: the splitmix64 hash of its address (the 698.45
server address SA, hex digits as the archive's ``terminal_address``) mod ``count`` — the same mixing as the
lake's buckets (:func:`storage.schema.bucket_of`).  A process started with ``shard_index = i`` and
``shard_count = n`` (``headend.config``) accepts the logins of its own terminals only: another terminal of
the archive is refused like an unknown one, LINK-Response result 2 (非法设备 illegal device) and the link
closed — it is not routed, so a terminal never has a session on two shards and each reading is written by
exactly one process.  How a terminal finds its shard: its master-station parameters (主站通信参数, OI
4500/4510: IP and port) name its shard's address, or a broker's topics do (MQTT: the shard subscribes to
its own terminals' topics).  :class:`headend.sim.simulator.ShardedSimulator` dials that way for tests and benchmarks.

Each shard writes through its own write-ahead log ``<lake>/_wal-shard-NN`` (``storage.wal.IngestWriter``:
the log is one-writer) and publishes into the shared lake under the lake's lock (``storage.lake.LakeLock``),
so the lake has one set of partitions whoever collected them; ``storage.wal.replay`` replays every shard's
log left by a process that is gone.
"""

from __future__ import annotations

from gridhead.storage.schema import bucket_of


def shard_of(address: str, count: int) -> int:
    """The shard owning terminal ``address`` (hex digits) among ``count``."""
    return bucket_of(int(address, 16), count) if count > 1 else 0


def owned(terminals, index: int, count: int):
    """The archive's terminals (a set of addresses, or a predicate) restricted to shard ``index``."""
    if callable(terminals):
        return lambda a: shard_of(a, count) == index and terminals(a)
    return frozenset(a for a in terminals if shard_of(a, count) == index)


def wal_name(index: int, count: int) -> str:
    """The shard's write-ahead log directory under the lake (``_wal`` when not sharded)."""
    return "_wal" if count <= 1 else f"_wal-shard-{index:02d}"
