"""Per-event Avro decoding cost of each reader, in one run: fastavro, generated Python, compiled C.

Encodes the P2 generator's events (`projection_bench.generate`) with every shipped schema version
of their type, then decodes each set with fastavro's generic reader (`decode_generic`, which also
checks the header), the Python reader generated for the writer schema (`specialised.py`), the C
reader interpreting the same program (`_avro_reader`), and `decode_checked` (what the consumers call:
the C reader inside, with the header lookup and appended defaults). Prints the best of `--rounds`
(methods alternate within each round) in us per event, and the ratios against fastavro and Python.
No servers needed:

    python bench/decode_bench.py [--events 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from projection_bench import generate

from assetlog.schemas import registry
from assetlog.schemas.codec import HEADER_LENGTH
from assetlog.schemas.compiled import READER_KIND, compiled_reader
from assetlog.schemas.specialised import compile_reader


def per_event_us(decode: Callable[[bytes], object], messages: list[bytes]) -> float:
    started = time.perf_counter()
    for data in messages:
        decode(data)
    return (time.perf_counter() - started) / len(messages) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if READER_KIND != "compiled":
        raise SystemExit("the C extension is not built: `pip install -e .` first")
    reg = registry()
    events = generate(args.events)
    print(f"{len(events)} events, best of {args.rounds} rounds; load average at start "
          f"{os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    print(f"{'writer schema':<26}{'events':>8}{'bytes':>7}{'fastavro us':>13}{'python us':>11}{'C us':>8}"
          f"{'checked us':>12}{'C vs fastavro':>15}{'C vs python':>13}")
    for version in sorted(reg.by_fingerprint.values(), key=lambda v: v.source):
        messages = [reg.encode(version.event_type, record, version.version)
                    for event_type, record in events if event_type == version.event_type]
        python_read = compile_reader(version.schema, version.source)
        c_read = compiled_reader(version.schema)
        assert python_read is not None and c_read is not None
        methods: dict[str, Callable[[bytes], object]] = {
            "fastavro": reg.decode_generic,
            "python": lambda data, read=python_read: read(data, HEADER_LENGTH),
            "c": lambda data, read=c_read: read(data, HEADER_LENGTH),
            "checked": reg.decode_checked,
        }
        for data in messages[:200]:  # a guard: the tests compare them on random events and bytes
            record = methods["c"](data)
            assert record == methods["python"](data)
            assert version is not reg.latest[version.event_type] or record == reg.decode_generic(data)[1]
        best = {name: float("inf") for name in methods}
        for _ in range(args.rounds):
            for name, method in methods.items():
                best[name] = min(best[name], per_event_us(method, messages))
        size = sum(map(len, messages)) / len(messages)
        print(f"{version.source:<26}{len(messages):>8}{size:>7.0f}{best['fastavro']:>13.2f}{best['python']:>11.2f}"
              f"{best['c']:>8.2f}{best['checked']:>12.2f}{best['fastavro'] / best['c']:>14.1f}x"
              f"{best['python'] / best['c']:>12.1f}x")


if __name__ == "__main__":
    main()
