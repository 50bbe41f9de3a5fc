"""What both ends of a stream's readers share (no Ray here): remembering the batches a reader yielded.

Delivery is at-least-once: a hub that restarted delivers again what no consumer had acknowledged
when it died, and a consumer group hands a quiet consumer's leases to another. A reader keeps the
``(producer, seq)`` of the batches it yielded lately (:class:`SeenBatches`) and skips a batch it
sees again, so a hub restart neither loses nor repeats what one reader sees. Only exact repeats
are skipped (a lower seq from a consumer that died is not a repeat).
"""

from __future__ import annotations

from collections import OrderedDict

SEEN_MAX = 100_000


class SeenBatches:
    """The ``(producer, seq)`` of the batches a consumer was done with lately (bounded)."""

    def __init__(self, limit: int = SEEN_MAX):
        self.limit = limit
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, producer: str, seq: int) -> None:
        """Remember a batch once its consumer is done with it (not before: a consumer that failed on
        it must get it again)."""
        self._seen[(producer, seq)] = None
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
