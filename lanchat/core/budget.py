"""Budgets: token buckets by key, so one sender (or one recipient's inbox) gets a bounded
share of what a node stores or shows, whatever the sender does. Pure; time is passed in."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Bucket", "Budgets"]

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class Bucket:
    """``burst`` at once, then ``rate`` a second."""

    rate: float
    burst: float
    tokens: float
    at: float

    def take(self, now: float, cost: float = 1.0) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


@dataclass(slots=True)
class Budgets(Generic[K]):
    """One bucket per key, at most ``max_keys`` of them: the least recently used goes first.

    A forgotten key starts again with a full bucket, so ``max_keys`` must exceed the
    number of keys that can be active within the time a bucket takes to refill.
    """

    rate: float
    burst: float
    max_keys: int = 10_000
    _buckets: OrderedDict[K, Bucket] = field(default_factory=OrderedDict)

    def take(self, key: K, now: float, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = Bucket(self.rate, self.burst, self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, cost)

    def __len__(self) -> int:
        return len(self._buckets)
