"""Is a live consumer at the end of the topics? What `replay --check` reports besides drift.

Drift is measured at the live consumers' own offsets, so a consumer stuck on
one message (or stopped) shows no drift at all: the rows agree with the little
it read. The check therefore also compares each projection's stored offsets
with the topics' end offsets captured when the check started. A partition
short of that end once the check has waited a grace period is *behind*; one
whose offset did not move at all during the check is *stuck* (or its consumer
is not running).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

Partition = tuple[str, int]
Offsets = dict[Partition, int]


@dataclass(frozen=True)
class Behind:
    projection: str
    topic: str
    partition: int
    offset: int  # the next offset the live consumer will read
    end: int  # the end of the partition when the check started
    state: str  # "stuck": no progress during the check; "behind": progressing, not there yet

    @property
    def lag(self) -> int:
        return self.end - self.offset

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "lag": self.lag}


def behind_the_end(ends: Offsets, first: Mapping[str, Offsets], frozen: Mapping[str, Offsets]) -> list[Behind]:
    """Partitions whose frozen live offset is short of `ends`, per projection."""
    found = []
    for name, offsets in frozen.items():
        for tp, end in sorted(ends.items()):
            offset = offsets.get(tp, 0)
            if offset < end:
                moved = offset != first.get(name, {}).get(tp, 0)
                found.append(Behind(name, tp[0], tp[1], offset, end, "behind" if moved else "stuck"))
    return found


def wait_until_at(ends: Offsets, live: Callable[[], Mapping[str, Offsets]], grace: float,
                  stopping: Callable[[], bool] = lambda: False) -> None:
    """Give running consumers up to `grace` seconds to reach `ends` (they keep consuming while the
    shadow is read), so a healthy consumer a few messages behind is not reported."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not stopping():
        if not behind_the_end(ends, {}, live()):
            return
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def summary(behind: list[Behind]) -> str:
    """One line naming each projection behind, and where."""
    parts = []
    for name in sorted({b.projection for b in behind}):
        mine = [b for b in behind if b.projection == name]
        where = ", ".join(f"{b.topic}[{b.partition}] {b.state} at {b.offset} of {b.end}" for b in mine[:3])
        more = f" and {len(mine) - 3} more partitions" if len(mine) > 3 else ""
        parts.append(f"{name} is behind the end of the topics ({where}{more}, {sum(b.lag for b in mine)} "
                     f"messages in all)")
    return "; ".join(parts) + (": is its consumer running? (`assetlog consume NAME`; its log names the "
                               "message it waits on)")
