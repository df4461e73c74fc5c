"""The consistent-hash ring that places keys on Redis shards."""
from collections import Counter

from common.ring import Ring, hash_tag

SHARDS = ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
KEYS = [f"{{u:{user_id}}}:rate" for user_id in range(30_000)]


def test_keys_spread_evenly_over_three_shards():
    ring = Ring(SHARDS)
    counts = Counter(ring.node_for(key) for key in KEYS)
    assert set(counts) == set(SHARDS)
    for shard in SHARDS:
        share = counts[shard] / len(KEYS)
        assert abs(share - 1 / 3) < 0.05, (shard, share)


def test_adding_a_fourth_shard_moves_about_a_quarter_of_the_keys():
    before = Ring(SHARDS)
    after = Ring([*SHARDS, "127.0.0.1:7003"])
    moved = [key for key in KEYS if before.node_for(key) != after.node_for(key)]
    assert 0.18 < len(moved) / len(KEYS) < 0.32
    # Keys only ever move to the new shard, never between old ones.
    assert {after.node_for(key) for key in moved} == {"127.0.0.1:7003"}


def test_keys_with_one_hash_tag_share_a_shard():
    ring = Ring(SHARDS)
    assert hash_tag("{u:42}:ban:#tpp") == "u:42"
    assert hash_tag("plain") == "plain" and hash_tag("{}x") == "{}x"
    for user_id in range(200):
        nodes = {ring.node_for(f"{{u:{user_id}}}:{suffix}") for suffix in ("rate", "last:#a", "ban:#b", "chatted")}
        assert len(nodes) == 1


def test_placement_does_not_depend_on_listing_order():
    forward, backward = Ring(SHARDS), Ring(list(reversed(SHARDS)))
    assert all(forward.node_for(key) == backward.node_for(key) for key in KEYS[:2000])
