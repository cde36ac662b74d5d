"""Approximate-time synchronisation of several named message streams (pure Python, no ROS).

``message_filters`` is not available with the pip ROS 2 wheels, so the generation node groups
its camera images with this small synchroniser: one message per stream whose stamps lie within
``slop`` seconds of each other.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class SyncedSet:
    """One message per stream whose stamps lie within the synchroniser's slop.

    Attributes:
        stamps: stream name -> stamp in seconds.
        items: stream name -> the message (any object) added with that stamp.
    """

    stamps: dict[str, float]
    items: dict[str, Any]

    @property
    def stamp(self) -> float:
        """Earliest stamp of the set, seconds (the time the set represents)."""
        return min(self.stamps.values())

    @property
    def spread(self) -> float:
        """Largest minus smallest stamp of the set, seconds."""
        return max(self.stamps.values()) - min(self.stamps.values())


class ApproximateTimeSynchronizer:
    """Groups messages of N named streams into sets whose stamps differ by at most ``slop`` seconds.

    Every stream keeps its ``queue_size`` most recent messages (sorted by stamp, so out-of-order
    arrivals are fine). When a message arrives, it is matched with the message of every other
    stream whose stamp is closest to it; if the whole set lies within ``slop`` it is emitted and
    every message up to the chosen ones is dropped (a later set can only use newer messages).
    """

    def __init__(self, names: Sequence[str], slop: float, queue_size: int = 10) -> None:
        """
        Args:
            names: stream names (unique, at least one).
            slop: largest allowed stamp difference within a set, seconds (>= 0).
            queue_size: messages kept per stream (>= 1).
        """
        names = list(names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"stream names must be unique and non-empty, got {names}")
        if not (math.isfinite(slop) and slop >= 0):
            raise ValueError(f"slop must be a finite number of seconds >= 0, got {slop}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.names = names
        self.slop = float(slop)
        self.queue_size = int(queue_size)
        # Per stream: stamps ascending and the items in the same order.
        self._stamps: dict[str, list[float]] = {n: [] for n in names}
        self._items: dict[str, list[Any]] = {n: [] for n in names}
        self.latest: SyncedSet | None = None
        # Newest stamp seen per stream (also of messages no set used): explains a missing set.
        self.last_stamps: dict[str, float] = {}

    def add(self, name: str, stamp: float, item: Any) -> SyncedSet | None:
        """Add one message; return the set it completes (also kept as ``latest``) or None.

        Args:
            name: the stream the message belongs to.
            stamp: message time, seconds.
            item: the message itself (stored as is).
        """
        if name not in self._stamps:
            raise ValueError(f"unknown stream {name!r}; streams are {self.names}")
        if not math.isfinite(stamp):
            raise ValueError(f"stamp of stream {name!r} must be finite, got {stamp}")
        self.last_stamps[name] = max(stamp, self.last_stamps.get(name, -math.inf))
        stamps, items = self._stamps[name], self._items[name]
        index = bisect.bisect_right(stamps, stamp)
        stamps.insert(index, stamp)
        items.insert(index, item)
        if len(stamps) > self.queue_size:
            del stamps[0], items[0]
            if index == 0:  # the new message was the oldest and has just been dropped
                return None
            index -= 1

        chosen: dict[str, int] = {name: index}
        for other in self.names:
            if other == name:
                continue
            other_stamps = self._stamps[other]
            if not other_stamps:
                return None
            chosen[other] = _closest(other_stamps, stamp)
        set_stamps = {n: self._stamps[n][i] for n, i in chosen.items()}
        if max(set_stamps.values()) - min(set_stamps.values()) > self.slop:
            return None
        result = SyncedSet(stamps=set_stamps, items={n: self._items[n][i] for n, i in chosen.items()})
        for n, i in chosen.items():
            del self._stamps[n][: i + 1], self._items[n][: i + 1]
        self.latest = result
        return result


def _closest(sorted_stamps: list[float], stamp: float) -> int:
    """Index of the entry of ``sorted_stamps`` (ascending, non-empty) closest to ``stamp``."""
    i = bisect.bisect_left(sorted_stamps, stamp)
    if i == 0:
        return 0
    if i == len(sorted_stamps):
        return i - 1
    return i if sorted_stamps[i] - stamp < stamp - sorted_stamps[i - 1] else i - 1
