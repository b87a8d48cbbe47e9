"""Which group membership gets a SIGKILLed and restarted consumer its partitions back soonest?

A bare confluent-kafka consumer (no Assetlog code: auto-commit, automatic
assignment, so the KIP-848 protocol's incremental assignment works without a
rebalance callback) runs as a child process in one of four memberships; the
loop SIGKILLs it, restarts it at once, produces one message per partition and
times the kill -> the first message the new process receives:

- `classic`: group.protocol=classic, no group.instance.id (session.timeout.ms 10 s)
- `classic-static`: classic with a stable group.instance.id
- `consumer`: group.protocol=consumer (KIP-848), no group.instance.id
  (the session timeout is the broker's group.consumer.session.timeout.ms, 45 s by default)
- `consumer-static`: KIP-848 with a stable group.instance.id

    eval "$(assetlog stack env)" && python bench/membership_probe.py [--kills 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic
from freshness_bench import percentile

from assetlog.config import Settings
from assetlog.topics import admin_client

PARTITIONS = 3
MEMBERSHIPS = {
    "classic": {"group.protocol": "classic", "session.timeout.ms": 10000},
    "classic-static": {"group.protocol": "classic", "session.timeout.ms": 10000, "group.instance.id": "probe-0"},
    "consumer": {"group.protocol": "consumer"},
    "consumer-static": {"group.protocol": "consumer", "group.instance.id": "probe-0"},
}


def child(topic: str, group: str, membership: str) -> None:
    """Print every message value received, one a line, until killed."""
    settings = Settings.from_env()
    consumer = Consumer(settings.kafka_client_config(
        defaults={"log_level": 3},
        required={"group.id": group, "auto.offset.reset": "earliest", "auto.commit.interval.ms": 100,
                  **MEMBERSHIPS[membership]}))
    consumer.subscribe([topic])
    while True:
        message = consumer.poll(0.1)
        if message is not None and message.error() is None:
            print(message.value().decode(), flush=True)


class Child:
    def __init__(self, topic: str, group: str, membership: str) -> None:
        self.seen: dict[str, float] = {}
        self.process = subprocess.Popen([sys.executable, __file__, "--child", topic, group, membership],
                                        stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.seen.setdefault(line.strip(), time.monotonic())

    def wait_for(self, marks: list[str], timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [self.seen[m] for m in marks if m in self.seen]
            if got:
                return min(got)
            time.sleep(0.005)
        raise SystemExit(f"membership_probe: nothing of {marks} received in {timeout:.0f}s")


def produce(producer: Producer, topic: str, mark: str) -> list[str]:
    marks = [f"{mark}/{p}" for p in range(PARTITIONS)]
    for partition, value in enumerate(marks):
        producer.produce(topic, value=value.encode(), partition=partition)
    producer.flush(30)
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, choices=range(1, 101), metavar="1..100", default=5)
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    settings = Settings.from_env()
    admin = admin_client(settings)
    producer = Producer(settings.kafka_client_config(required={"acks": "all"}))
    rows = {}
    for membership in MEMBERSHIPS:
        topic = f"probe.{uuid.uuid4().hex[:8]}"
        for future in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS)]).values():
            future.result()
        group = f"{topic}.group"
        process = Child(topic, group, membership)
        times = []
        try:
            process.wait_for(produce(producer, topic, "warm"), args.timeout)
            for kill in range(args.kills):
                time.sleep(1.0)
                killed_at = time.monotonic()
                process.process.kill()
                process.process.wait(10)
                process = Child(topic, group, membership)
                times.append((process.wait_for(produce(producer, topic, f"k{kill}"), args.timeout) - killed_at)
                             * 1000)
                print(f"  {membership} kill {kill + 1}: {times[-1]:.0f} ms", flush=True)
        finally:
            process.process.kill()
            admin.delete_topics([topic], operation_timeout=30)
        rows[membership] = times
    print(f"{'membership':<17}{'p50 ms':>8}{'max ms':>8}")
    for membership, times in rows.items():
        print(f"{membership:<17}{percentile(times, 0.5):>8.0f}{max(times):>8.0f}")


if __name__ == "__main__":
    main()
