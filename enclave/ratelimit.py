"""The model owner's per-requester rate limit, counted inside the enclave.

Every request costs gas and is on the record; this adds the owner's own brake on approximating
the protected head by queries: at most ``answers`` answers to one requester account per
``window_seconds`` (the rule's ``[output].max_answers_per_requester``, carried in the head graph
whose hash is on-chain, so the node cannot lift it). The requester is the account named in the
request's binding and in the signed result, so a node that names another one gets an answer the
contracts refuse.

A sliding window per requester: a deque of the answer times, at most ``answers`` long, so the
cost of one check does not grow with history. The stand-in counts on its own clock and keeps the
windows in memory (a restart forgets them: at most one extra window's worth per restart).
"""

from __future__ import annotations

import collections
import time
from typing import Callable, Mapping


class RateLimiter:
    """Answers per requester and model version within a sliding window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_requesters: int = 100_000) -> None:
        self._clock = clock
        self._max_requesters = max_requesters
        self._seen: collections.OrderedDict[tuple[bytes, int, str], collections.deque[float]] = \
            collections.OrderedDict()

    def allow(self, model: tuple[bytes, int], requester: str, limit: Mapping[str, int] | None) -> bool:
        """Count an answer and say whether it is within ``limit`` (``{"answers", "window_seconds"}``)."""
        if not limit or int(limit.get("answers", 0)) <= 0:
            return True
        answers, window = int(limit["answers"]), float(limit.get("window_seconds", 3600))
        key = (model[0], model[1], requester.lower())
        now = self._clock()
        times = self._seen.pop(key, None) or collections.deque(maxlen=answers)
        self._seen[key] = times  # most recently used last
        while times and now - times[0] >= window:
            times.popleft()
        if len(times) >= answers:
            return False
        times.append(now)
        while len(self._seen) > self._max_requesters:  # bounded memory: forget the stalest
            self._seen.popitem(last=False)
        return True
