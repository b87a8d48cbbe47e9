"""P2 A/B: one live consumer of two installations (and batch sizes), alternated on the same events.

Publishes N events once (P2's generator), then runs `assetlog consume NAME
--until-caught-up` with each interpreter (`--old` is, e.g., the virtualenv of
a checkout of the base commit) and each `--batch-sizes`, `--rounds` times,
starting from empty tables each time; prints events/s (first message to caught
up), CPU seconds per 1M events of the process and of its PostgreSQL backend,
and the load average at its start.

    eval "$(assetlog stack env)" && python bench/consume_ab.py --old ../base/.venv/bin/python \\
        [--name properties] [--events 200000] [--batch-sizes 5000,20000] [--rounds 3]

`--batch-sizes default` runs each side with its own default batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace

from cpu_probe import BackendSampler
from projection_bench import generate, publish
from support import child_env, scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True)
    parser.add_argument("--new", default=sys.executable)
    parser.add_argument("--name", default="properties", choices=("properties", "lineage"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-sizes", default="5000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with scratch("consume-ab", migrated=False) as work:
        settings = work.event_topics()
        events = generate(args.events)
        publish(settings, events)
        n = len(events)
        del events
        for index in range(args.rounds):
            sides = [("new", args.new), ("old", args.old)]
            for side, python in sides if index % 2 == 0 else sides[::-1]:
                for size in args.batch_sizes.split(","):
                    with work.database_copy(f"{side}_{index}_{size}") as dsn:
                        env = child_env(replace(settings, postgres_dsn=dsn))
                        subprocess.run([python, "-m", "assetlog", "db", "migrate", "--json"], env=env, check=True,
                                       stdout=subprocess.DEVNULL)
                        load = os.getloadavg()[0]
                        database = f"{work.database}_{side}_{index}_{size}"
                        with BackendSampler(dsn, database, f"assetlog.consume.{args.name}") as backends:
                            child = subprocess.Popen(
                                [python, "-m", "assetlog", "consume", args.name, "--until-caught-up", "--json",
                                 "--quiet", *(() if size == "default" else ("--batch-size", size))],
                                env=env, stdout=subprocess.PIPE, text=True)
                            _, _status, usage = os.wait4(child.pid, 0)
                    report = json.loads(child.stdout.read() if child.stdout else "{}")
                    per = 1e6 / n
                    print(f"round {index + 1} {side} batch {size}: load {load:.1f}, "
                          f"{n / report['busy_seconds']:,.0f} ev/s, CPU s/1M {(usage.ru_utime + usage.ru_stime) * per:.1f}"
                          f" + {(backends.seconds or 0) * per:.1f}", flush=True)


if __name__ == "__main__":
    main()
