"""Partition-parallel replay: worker processes, each rebuilding from its share of the partitions.

Decoding and validating events costs more Python time than anything else in
a replay, and one process runs Python on one core. The projections' merges
are commutative and idempotent (what lets several live consumers share a
group), so the partitions can be split between processes that all write into
the same shadow tables. Each worker owns its partitions for the whole replay
(balanced by the number of messages to read), runs an in-process
`ShadowReader` on them, and answers the parent's `read_to` rounds over a
pipe; the parent sees the same interface as a `ShadowReader`.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from assetlog.config import Settings
from assetlog.consumers.batch import tune_interpreter
from assetlog.consumers.progress import Progress
from assetlog.consumers.shadow_reader import Offsets, Partition, ShadowReader, WriterStats, lag
from assetlog.errors import AssetlogError

log = logging.getLogger("assetlog.replay")


class _SharedCounter(Progress):
    """A worker's progress: messages read, added to a counter the parent shows."""

    def __init__(self, counter: Any) -> None:
        super().__init__("worker", "off")
        self.counter = counter

    def advance(self, events: int) -> None:
        with self.counter.get_lock():
            self.counter.value += events


def _serve(pipe: Any, settings: Settings, names: list[str], schema: str, start: Offsets, batch_size: int,
           counter: Any) -> None:
    """A worker process: read_to rounds until told to close."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes the workers
    tune_interpreter()  # as `assetlog consume` does: batches of short-lived records, a committer thread
    reader: ShadowReader | None = None
    try:
        reader = ShadowReader(settings, names, schema, start, batch_size=batch_size, progress=_SharedCounter(counter))
        while True:
            command, targets, bulk = pipe.recv()
            if command == "close":
                break
            reader.read_to(targets, bulk=bulk)
            pipe.send(("done", {name: asdict(stats) for name, stats in reader.writer_stats().items()}))
    except AssetlogError as exc:
        pipe.send(("user", str(exc)))
    except EOFError:  # the parent went away
        pass
    except BaseException:  # a bug: the parent raises it with this traceback
        pipe.send(("error", traceback.format_exc()))
    finally:
        if reader is not None:
            reader.close()
        pipe.close()


class ParallelReader:
    """`ShadowReader`'s interface over `workers` processes."""

    def __init__(self, settings: Settings, names: list[str], schema: str, start: Offsets, *, workers: int,
                 batch_size: int = 5000, progress: Progress | None = None) -> None:
        self.settings = settings
        self.names = names
        self.schema = schema
        self.workers = workers
        self.batch_size = batch_size
        self.progress = progress or Progress("replay", "off")
        self.positions: dict[str, Offsets] = {name: dict(start) for name in names}
        self._context = multiprocessing.get_context("spawn")  # no inherited sockets or Kafka threads
        self._counter = self._context.Value("q", 0)
        self._shown = 0
        self._pool: list[tuple[Any, Any, list[Partition]]] = []  # (process, pipe, partitions)
        self._busy: list[int] = []  # workers in the middle of a round
        self._stats: list[dict[str, dict[str, int]]] = []

    def lag(self, targets: Mapping[str, Offsets]) -> int:
        return lag(self.positions, targets)

    def writer_stats(self) -> dict[str, WriterStats]:
        total = {name: WriterStats() for name in self.names}
        for stats in self._stats:
            for name, values in stats.items():
                for key, value in values.items():
                    setattr(total[name], key, getattr(total[name], key) + value)
        return total

    def _start(self, targets: Mapping[str, Offsets]) -> None:
        """Split the partitions by the messages each has to read, heaviest first, then start the workers."""
        partitions = sorted({tp for offsets in self.positions.values() for tp in offsets})
        work = {tp: max(targets[n].get(tp, 0) - self.positions[n].get(tp, 0) for n in self.names)
                for tp in partitions}
        count = max(1, min(self.workers, len(partitions)))
        groups: list[list[Partition]] = [[] for _ in range(count)]
        loads = [0] * count
        for tp in sorted(partitions, key=lambda tp: (-work[tp], tp)):
            lightest = loads.index(min(loads))
            groups[lightest].append(tp)
            loads[lightest] += max(0, work[tp])
        for group in groups:
            parent, child = self._context.Pipe()
            start = {tp: self.positions[self.names[0]][tp] for tp in group}  # all projections start together
            process = self._context.Process(
                target=_serve, name="assetlog-replay-worker",
                args=(child, self.settings, self.names, self.schema, start, self.batch_size, self._counter))
            process.start()
            child.close()
            self._pool.append((process, parent, group))
            self._stats.append({})

    def read_to(self, targets: Mapping[str, Offsets], stopping: Callable[[], bool] = lambda: False, *,
                bulk: bool = False) -> None:
        if not self._pool:
            self._start(targets)
        self.progress.expect(sum(max(0, max(targets[n].get(tp, 0) for n in self.names)
                                     - min(self.positions[n].get(tp, 0) for n in self.names))
                                 for tp in {tp for offsets in targets.values() for tp in offsets}))
        busy = self._busy = []
        for index, (_process, pipe, group) in enumerate(self._pool):
            pipe.send(("read", {n: {tp: t for tp, t in targets[n].items() if tp in group} for n in self.names},
                       bulk))
            busy.append(index)
        while busy:
            if stopping():
                raise KeyboardInterrupt
            for index in list(busy):
                process, pipe, _group = self._pool[index]
                if not pipe.poll(0.05 / len(busy)):
                    if not process.is_alive():
                        raise AssetlogError(f"replay worker {process.pid} died (exit code {process.exitcode})")
                    continue
                kind, payload = pipe.recv()
                if kind == "user":
                    raise AssetlogError(payload)
                if kind == "error":
                    raise RuntimeError(f"replay worker {process.pid} failed:\n{payload}")
                self._stats[index] = payload
                busy.remove(index)
            self._show()
        self._show()
        for name in self.names:
            for tp, target in targets[name].items():
                self.positions[name][tp] = max(self.positions[name].get(tp, 0), target)

    def _show(self) -> None:
        done = self._counter.value
        if done > self._shown:
            self.progress.advance(done - self._shown)
            self._shown = done

    def close(self) -> None:
        """Stop the workers: idle ones finish cleanly; one still in a round (an interrupted or failed
        replay, whose shadow tables are dropped anyway) is terminated at once."""
        for index, (process, pipe, _group) in enumerate(self._pool):
            if index in self._busy:
                process.terminate()
                continue
            try:
                pipe.send(("close", None, False))
            except (BrokenPipeError, OSError):
                pass
        for process, pipe, _group in self._pool:
            process.join(30)
            if process.is_alive():
                log.warning("replay worker %s did not stop; terminating it", process.pid)
                process.terminate()
                process.join(5)
            pipe.close()
        self._pool.clear()
