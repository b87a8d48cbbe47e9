"""What one run of a projection consumer did: the figures `assetlog consume --json` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from assetlog.consumers.batch import Batch


@dataclass
class RunStats:
    """What one run did; `offsets` are the next offsets it committed, per topic and partition."""

    projection: str
    group: str
    messages: int = 0
    events: int = 0
    dead_letters: int = 0
    batches: int = 0
    retries: int = 0
    seconds: float = 0.0
    busy_seconds: float = 0.0  # from the first message received to the last commit (no group join, no exit)
    stopped_by: str = ""
    resyncs: int = 0  # times a replay's swap made the runner drop its in-flight batches and re-seek
    reconnects: int = 0  # times the Kafka client had forgotten every broker and was replaced
    dead_letter_reconnects: int = 0  # the same, for the dead-letter producer
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)

    def count(self, batch: Batch) -> None:
        """Add one committed batch: its messages, events, dead letters and the offsets it stored."""
        self.batches += 1
        self.messages += batch.messages
        self.events += len(batch.events)
        self.dead_letters += len(batch.dead_letters)
        for (topic, partition), offset in batch.next_offsets.items():
            self.offsets.setdefault(topic, {})[partition] = offset

    @property
    def events_per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "projection": self.projection, "group": self.group, "messages": self.messages, "events": self.events,
            "dead_letters": self.dead_letters, "batches": self.batches, "retries": self.retries,
            "seconds": round(self.seconds, 3), "busy_seconds": round(self.busy_seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "stopped_by": self.stopped_by, "resyncs": self.resyncs,
            "reconnects": self.reconnects, "dead_letter_reconnects": self.dead_letter_reconnects,
            "offsets": {t: {str(p): o for p, o in sorted(parts.items())} for t, parts in sorted(self.offsets.items())},
        }
