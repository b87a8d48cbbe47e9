"""O1: OpenLineage events/s through the HTTP receiver into the topics, against raw produce of the same bytes.

N COMPLETE RunEvents (each its own run: two inputs, one output, documentation,
schema and outputStatistics facets, about 1.5 KB of JSON) are POSTed by
`--clients` concurrent keep-alive HTTP clients, each a process of its own (so
the clients' own Python does not cap the rate), to `assetlog ingest openlineage
--listen` (a separate process, default settings). Each becomes 4 Assetlog events
(a materialization, two dependencies, a metadata event). The clock stops when
all of them are in the topics (end offsets), not at the last 201.

HTTP floor, same run: the same clients send as many `GET /healthz` to the
same receiver: what an HTTP round trip alone costs on this machine, the ceiling
of the receiver.

Physical baseline, same run, same broker: a raw confluent-kafka producer
(acks=all, idempotent, lz4) sends the same N JSON bodies to a topic of the same
partitions and flushes.

    eval "$(assetlog stack env)" && python bench/openlineage_bench.py [--events 5000] [--clients 8]
Prints a table and writes bench/results/openlineage_bench.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

from support import child_env, scratch

from assetlog.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"
ASSETLOG_EVENTS_PER_EVENT = 4
PARTITIONS = 3


def facet(url: str, **fields: object) -> dict[str, object]:
    return {"_producer": "https://example.com/bench", "_schemaURL": url, **fields}


def make_event(index: int) -> bytes:
    base = "https://openlineage.io/spec/facets"
    output_facets = {
        "documentation": facet(f"{base}/1-1-0/DocumentationDatasetFacet.json#/$defs/DocumentationDatasetFacet",
                               description=f"daily aggregate number {index}"),
        "schema": facet(f"{base}/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet",
                        fields=[{"name": f"col{i}", "type": "bigint"} for i in range(8)]),
    }
    return json.dumps({
        "eventType": "COMPLETE", "eventTime": "2026-03-01T12:00:00+00:00",
        "run": {"runId": str(uuid.uuid4())}, "job": {"namespace": "bench", "name": f"job_{index % 100}"},
        "inputs": [{"namespace": "postgres://db:5432", "name": f"shop.public.orders_{index % 50}"},
                   {"namespace": "s3://lake", "name": f"raw/customers/{index % 20}.parquet"}],
        "outputs": [{"namespace": "s3://lake", "name": f"reports/{index}.parquet", "facets": output_facets,
                     "outputFacets": {"outputStatistics": facet(
                         f"{base}/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/"
                         "OutputStatisticsOutputDatasetFacet", rowCount=index, size=index * 100)}}],
        "producer": "https://example.com/bench",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
    }).encode()


def end_offsets(settings: Settings, topics: list[str]) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(settings.kafka_client_config(defaults={"log_level": 3},
                                                     required={"group.id": "openlineage-bench"}))
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for topic in topics for p in range(PARTITIONS))
    finally:
        consumer.close()


def raw_produce(settings: Settings, topic: str, bodies: list[bytes]) -> float:
    from confluent_kafka import Producer

    producer = Producer(settings.kafka_client_config(defaults={"linger.ms": 5, "compression.type": "lz4"},
                                                     required={"enable.idempotence": True, "acks": "all"}))
    producer.produce(topic, b"warm-up")  # connections and metadata before the clock starts, as for the receiver
    assert producer.flush(30) == 0
    started = time.perf_counter()
    for body in bodies:
        while True:
            try:
                producer.produce(topic, body)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(60) == 0
    return time.perf_counter() - started


def post_chunk(port: int, path: str, chunk: list[bytes], status: int, ready, go, results) -> None:
    """One client process: when all are started, a keep-alive connection (made then: the server closes
    idle ones after 5 s), and every body of `chunk` POSTed in turn (`GET` without a body for /healthz)."""
    failures = []
    try:
        ready.release()
        go.wait()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for body in chunk:
            if path == "/healthz":
                connection.request("GET", path)
            else:
                connection.request("POST", path, body=body, headers={"content-type": "application/json"})
            response = connection.getresponse()
            text = response.read()
            if response.status != status:
                failures.append(f"{response.status} {text[:200]!r}")
    except Exception as exc:
        failures.append(repr(exc))
    results.put(failures[:3])


def post_all(port: int, path: str, bodies: list[bytes], clients: int, status: int) -> float:
    """Seconds for `clients` processes to send all `bodies` to `path`, each answered `status`."""
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Semaphore(0), context.Event(), context.Queue()
    processes = [context.Process(target=post_chunk, args=(port, path, bodies[i::clients], status, ready, go, results))
                 for i in range(clients)]
    for process in processes:
        process.start()
    for _ in processes:
        assert ready.acquire(timeout=60), "a client process did not start"
    started = time.perf_counter()
    go.set()
    failures = [failure for _ in processes for failure in results.get(timeout=300)]
    seconds = time.perf_counter() - started
    for process in processes:
        process.join()
    assert not failures, failures
    return seconds


def through_receiver(settings: Settings, bodies: list[bytes], clients: int,
                     workdir: Path) -> tuple[float, float, float]:
    env = child_env(settings)
    log_path = workdir / "receiver.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "assetlog", "ingest", "openlineage", "--listen",
                                    "127.0.0.1:0", "--no-auth"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        while not (match := re.search(r"http://127\.0\.0\.1:(\d+)/", log_path.read_text())):
            assert process.poll() is None, log_path.read_text()
            time.sleep(0.05)
        port = int(match.group(1))
        floor = post_all(port, "/healthz", bodies, clients, 200)
        expected = len(bodies) * ASSETLOG_EVENTS_PER_EVENT
        started = time.perf_counter()
        acknowledged = post_all(port, "/api/v1/lineage", bodies, clients, 201)
        while end_offsets(settings, list(settings.topics.events)) < expected:
            time.sleep(0.01)
        return floor, acknowledged, time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    bodies = [make_event(i) for i in range(args.events)]
    with scratch("openlineage", migrated=False) as work:  # the receiver needs Kafka only; the database stays empty
        settings = work.event_topics(partitions=PARTITIONS)
        floor, acknowledged, in_topics = through_receiver(settings, bodies, args.clients, work.workdir)
        raw = raw_produce(settings, work.plain_topic("raw", PARTITIONS), bodies)
    result = {
        "events": args.events, "clients": args.clients, "bytes_per_event": sum(map(len, bodies)) // len(bodies),
        "receiver_events_per_s_in_topics": args.events / in_topics,
        "receiver_events_per_s_acknowledged": args.events / acknowledged,
        "assetlog_events_per_s_in_topics": args.events * ASSETLOG_EVENTS_PER_EVENT / in_topics,
        "raw_produce_events_per_s": args.events / raw,
        "http_floor_requests_per_s": args.events / floor,
        "ratio_to_http_floor": floor / in_topics,
        "ratio": raw / in_topics,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "openlineage_bench.json").write_text(json.dumps(result, indent=2))
    print(f"O1 OpenLineage HTTP receiver, {args.events} events ({result['bytes_per_event']} B), {args.clients} clients")
    print(f"  into the topics   {result['receiver_events_per_s_in_topics']:>10,.0f} ev/s "
          f"({result['assetlog_events_per_s_in_topics']:,.0f} Assetlog events/s)")
    print(f"  acknowledged 201  {result['receiver_events_per_s_acknowledged']:>10,.0f} ev/s")
    print(f"  raw produce       {result['raw_produce_events_per_s']:>10,.0f} ev/s (same bytes, same broker)")
    print(f"  ratio             {result['ratio']:>10.3f}x")
    print(f"  HTTP floor        {result['http_floor_requests_per_s']:>10,.0f} req/s (GET /healthz, same clients; "
          f"receiver at {result['ratio_to_http_floor']:.2f}x of it)")


if __name__ == "__main__":
    main()
