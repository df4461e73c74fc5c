"""Consistent hashing of keys onto nodes (Redis shards, exchanges).

The ring itself is uhashring's (md5 points on a circle). Keys may carry a
Redis-Cluster-style hash tag: only the part inside the first `{…}` is hashed,
so `{u:42}:rl` and `{u:42}:last:#tpp` land on the same shard and one Lua
script can touch both in a single round trip.
"""
from __future__ import annotations

from collections.abc import Iterable

from uhashring import HashRing

# 500 points per node keeps three shards within a few percent of an even split.
VNODES = 500


def hash_tag(key: str) -> str:
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


class Ring:
    def __init__(self, nodes: Iterable[str]) -> None:
        self.nodes = list(dict.fromkeys(nodes))
        if not self.nodes:
            raise ValueError("a ring needs at least one node")
        self._ring = HashRing(nodes={node: {"vnodes": VNODES} for node in self.nodes})
        self._single = self.nodes[0] if len(self.nodes) == 1 else None

    def node_for(self, key: str) -> str:
        if self._single is not None:
            return self._single
        return self._ring.get_node(hash_tag(key))
