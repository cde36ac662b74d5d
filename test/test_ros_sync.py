"""Approximate-time synchroniser (pure Python, no ROS graph)."""

import math

import pytest

from syncmv4d_ros.sync import ApproximateTimeSynchronizer


def test_emits_a_set_when_all_streams_are_within_slop():
    sync = ApproximateTimeSynchronizer(["a", "b", "c"], slop=0.01)
    assert sync.add("a", 1.000, "a1") is None
    assert sync.add("b", 1.004, "b1") is None
    synced = sync.add("c", 1.008, "c1")
    assert synced is not None and synced.items == {"a": "a1", "b": "b1", "c": "c1"}
    assert synced.stamp == pytest.approx(1.0) and synced.spread == pytest.approx(0.008)
    assert sync.latest is synced


def test_no_set_beyond_slop_and_the_closest_messages_are_chosen():
    sync = ApproximateTimeSynchronizer(["a", "b"], slop=0.01)
    for t in (0.0, 0.1, 0.2):
        sync.add("a", t, f"a{t}")
    assert sync.add("b", 0.5, "b0.5") is None  # nothing of a within 10 ms
    synced = sync.add("b", 0.105, "b0.105")  # out of order, matches a at 0.1
    assert synced.items == {"a": "a0.1", "b": "b0.105"}
    # a0.0, a0.1 and b0.105 are consumed; a0.2 and b0.5 remain.
    assert sync.add("a", 0.5, "a0.5").items == {"a": "a0.5", "b": "b0.5"}


def test_latest_set_is_kept_until_a_newer_one_forms():
    sync = ApproximateTimeSynchronizer(["a", "b"], slop=0.0)
    sync.add("a", 2.0, 1)
    first = sync.add("b", 2.0, 2)
    assert sync.add("a", 3.0, 3) is None and sync.latest is first
    assert sync.add("b", 3.5, 4) is None and sync.latest is first
    assert sync.add("b", 3.0, 5).items == {"a": 3, "b": 5}


def test_queue_size_bounds_memory_and_drops_the_oldest():
    sync = ApproximateTimeSynchronizer(["a", "b"], slop=0.001, queue_size=3)
    for i in range(100):
        sync.add("a", float(i), i)
    assert sync.add("b", 96.0, "old") is None  # only a's 97, 98, 99 are kept
    assert sync.add("b", 98.0, "b").items == {"a": 98, "b": "b"}


def test_single_stream_emits_every_message():
    sync = ApproximateTimeSynchronizer(["only"], slop=0.0)
    assert sync.add("only", 1.0, "x").items == {"only": "x"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(names=[], slop=0.1), "non-empty"),
    (dict(names=["a", "a"], slop=0.1), "unique"),
    (dict(names=["a"], slop=-1.0), "slop"),
    (dict(names=["a"], slop=math.nan), "slop"),
    (dict(names=["a"], slop=0.1, queue_size=0), "queue_size"),
])
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ApproximateTimeSynchronizer(**kwargs)


def test_bad_add():
    sync = ApproximateTimeSynchronizer(["a"], slop=0.1)
    with pytest.raises(ValueError, match="unknown stream 'z'"):
        sync.add("z", 0.0, None)
    with pytest.raises(ValueError, match="finite"):
        sync.add("a", math.inf, None)
