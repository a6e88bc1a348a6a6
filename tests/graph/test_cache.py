"""GraphCache: hits/misses, LRU eviction, config in the key, thread safety."""
import threading

import pytest
import torch

from sosm.graph.cache import GraphCache, cache_key


def test_hits_misses_and_lru():
    cache = GraphCache(max_entries=2)
    a, b, c = torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([5, 6])
    assert cache.get(a) is None
    cache.put(a, "A")
    cache.put(b, "B")
    assert cache.get(a) == "A"  # a is now most recent
    cache.put(c, "C")  # evicts b
    assert cache.get(b) is None and cache.get(c) == "C"
    assert cache.stats() == {"hits": 2, "misses": 2, "hit_rate": 0.5, "size": 2, "max_entries": 2, "evictions": 1}
    cache.clear()
    assert cache.stats()["hit_rate"] == 0.0 and len(cache) == 0


def test_key_covers_ids_shape_dtype_and_config():
    ids = torch.tensor([[1, 2, 3]])
    assert cache_key(ids[0]) == cache_key([1, 2, 3]) != cache_key(ids)  # the shape is part of the key
    assert cache_key(ids) == cache_key(ids.clone()) == cache_key(ids.int())
    assert cache_key(ids) != cache_key(ids.reshape(3, 1))
    assert cache_key(ids, '{"k": 8}') != cache_key(ids, '{"k": 4}')
    with pytest.raises(TypeError, match="token_ids"):
        cache_key(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="max_entries"):
        GraphCache(0)


def test_get_or_build_counts_and_builds_once():
    cache = GraphCache(4)
    calls = []
    for _ in range(5):
        cache.get_or_build([7, 8, 9], lambda: calls.append(1) or "G", config="cfg")
    assert calls == [1] and cache.stats()["hits"] == 4 and cache.stats()["misses"] == 1


def test_threads():
    cache = GraphCache(8)

    def worker(offset):
        for i in range(200):
            cache.get_or_build([i % 10 + offset], lambda: i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = cache.stats()
    assert s["hits"] + s["misses"] == 800 and s["size"] <= 8
