"""What one `assetlog replay` run did: its phases, what it wrote, and (with --check) the drift per table
and the consumers behind the end of the topics; `as_dict()` is the `--json` report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from assetlog.consumers.behind import Behind
from assetlog.consumers.shadow_reader import Offsets
from assetlog.projections.compare import TableDrift


@dataclass
class ReplayResult:
    projection: str
    projections: list[str]
    mode: str
    since: str | None = None
    messages: int = 0
    seconds: float = 0.0
    read_seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    workers: int = 1
    swap_attempts: int = 0
    written: dict[str, dict[str, int]] = field(default_factory=dict)
    offsets: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)
    seeded_history_rows: int = 0
    tables: list[TableDrift] = field(default_factory=list)
    behind: list[Behind] = field(default_factory=list)
    warm: dict[str, Any] | None = None  # swap: what was loaded into shared buffers after it, or why not

    @property
    def drifted(self) -> list[TableDrift]:
        return [t for t in self.tables if t.drifted]

    @property
    def events_per_second(self) -> float:
        return self.messages / self.read_seconds if self.read_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "projection": self.projection, "projections": self.projections, "mode": self.mode, "since": self.since,
            "messages": self.messages, "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "phases": {k: round(v, 3) for k, v in self.phases.items()}, "catch_up_rounds": self.rounds,
            "workers": self.workers,
            "written": self.written, "offsets": self.offsets,
        }
        if self.mode == "swap":
            data.update(swap_attempts=self.swap_attempts, generations=self.generations, warm=self.warm)
        else:
            data.update(drift=bool(self.drifted), tables=[t.as_dict() for t in self.tables],
                        behind=[b.as_dict() for b in self.behind])
        if self.since is not None:
            data["seeded_history_rows"] = self.seeded_history_rows
        return data


def nested(offsets: Offsets) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        out.setdefault(topic, {})[str(partition)] = offset
    return out
