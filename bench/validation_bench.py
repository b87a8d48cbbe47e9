"""Validation's cost per event as the number of distinct assets grows, against decoding in the same run.

What a consumer does with each decoded record: the C fast path (`accept_checked`), and `to_event`
where it declines. The P2 generator's events (`projection_bench.generate`) get their asset keys
spread over `--assets` distinct values; the records are decoded once by `decode_checked` (timed as
the baseline: what the consumer pays per event before validation), then validated in order from a
cold start (nothing remembered). Until 2026-11-27 the fast path accepted only keys that `to_event`
had validated before, a cache that forgets at 100,000 keys: at a million assets it declined most
first events of a run. Prints us per event and the share the fast path declined, best of `--rounds`.
No servers needed:

    python bench/validation_bench.py [--events 200000] [--assets 1000,100000,1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import time

from projection_bench import generate

from assetlog.projections import events as validation
from assetlog.schemas import MATERIALIZATION, registry


def spread(events: list[tuple[str, dict]], assets: int) -> list[tuple[str, dict]]:
    """The events with their keys renamed in turn through `assets` names; a run's events (its
    materialization and what follows it) keep naming one asset alike, as a producer's do."""
    counter = itertools.count()
    in_run: dict[str, str] = {}

    def key(old: str) -> str:
        if old not in in_run:
            in_run[old] = f"s3://lake/zone{len(in_run) % 13}/asset_{next(counter) % assets}.parquet"
        return in_run[old]

    out = []
    for event_type, record in events:
        if event_type == MATERIALIZATION:
            in_run.clear()
        record = dict(record)
        for field in ("asset_key", "downstream_key", "upstream_key"):
            if field in record:
                record[field] = key(record[field])
        if "upstream_keys" in record:
            record["upstream_keys"] = [key(k) for k in record["upstream_keys"]]
        out.append((event_type, record))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--assets", default="1000,100000,1000000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    reg = registry()
    base = generate(args.events)
    position = validation.Position("bench.t", 0, 0)
    print(f"validation: {validation.VALIDATION_KIND}; {args.events} events; best of {args.rounds}")
    print(f"{'assets':>10} {'decode us':>10} {'validate us':>12} {'declined':>9}")
    for assets in (int(a) for a in args.assets.split(",")):
        messages = [reg.encode(t, r) for t, r in spread(base, assets)]
        best_decode = best_validate = float("inf")
        declined = 0
        for _ in range(args.rounds):
            started = time.process_time()
            decoded = [reg.decode_checked(m) for m in messages]
            best_decode = min(best_decode, time.process_time() - started)
            validation._VALID_KEYS.clear()  # a consumer's cold start
            accept, to_event = validation.accept_checked, validation.to_event
            declined = 0
            started = time.process_time()
            for event_type, record, text_checked in decoded:
                if accept is None or accept(event_type, record, position) is None:
                    declined += 1
                    to_event(event_type, record, position, text_checked=text_checked)
            best_validate = min(best_validate, time.process_time() - started)
        n = len(messages)
        print(f"{assets:>10} {best_decode / n * 1e6:>10.2f} {best_validate / n * 1e6:>12.2f} {declined / n:>9.1%}")


if __name__ == "__main__":
    main()
